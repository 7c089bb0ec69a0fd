"""``python -m rle.train`` / ``rle-train``: a training job as one tracked MLflow run.

A thin ``@hydra.main`` over :func:`run_training`, which tests call directly with a composed config.
Examples::

    python -m rle.train                                   # DistilGPT-2, one process
    python -m rle.train workload=distilgpt2 trainer.devices=2 trainer.max_steps=20   # 2-process DDP
    MLFLOW_TRACKING_URI=http://127.0.0.1:5000 python -m rle.train
"""

from __future__ import annotations

import logging
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from rle import paths
from rle.errors import ConfigError, RLEError, TrackingError

__all__ = ["RunResult", "Workload", "flatten_config", "main", "run_training"]

log = logging.getLogger(__name__)

if not OmegaConf.has_resolver("rle_root"):
    OmegaConf.register_new_resolver("rle_root", lambda: paths.project_root().as_posix())


@dataclass
class Workload:
    """What a workload builder hands to the trainer.

    Attributes:
        module: The LightningModule to fit.
        datamodule: Its datamodule.
        tags: Run tags describing the workload (``workload``, ``model.init``, ...).
        params: Extra run params (e.g. ``model.n_parameters``).
        tokens_per_sample: Tokens per training sample, or ``None`` when not a token workload.
    """

    module: Any
    datamodule: Any
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    tokens_per_sample: int | None = None


@dataclass
class RunResult:
    """Outcome of :func:`run_training`.

    Attributes:
        run_id: The MLflow run id.
        experiment_id: Its experiment id.
        tracking_uri: Where it was tracked.
        status: ``FINISHED``, ``FAILED`` or ``KILLED``.
        global_step: Optimizer steps taken.
    """

    run_id: str
    experiment_id: str
    tracking_uri: str
    status: str
    global_step: int


def flatten_config(cfg: Mapping[str, Any] | DictConfig, prefix: str = "") -> dict[str, Any]:
    """Flatten a nested config into dotted keys (``trainer.devices``), lists kept as values.

    Args:
        cfg: A resolved config.
        prefix: Key prefix (for recursion).

    Returns:
        ``{"a.b.c": value}`` for every leaf.
    """
    container = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    out: dict[str, Any] = {}
    assert isinstance(container, Mapping)  # noqa: S101 (DictConfig always gives a mapping)
    for k, v in container.items():
        key = f"{prefix}{k!s}"
        if isinstance(v, Mapping) and v:
            out.update(flatten_config(v, key + "."))
        else:
            out[key] = v
    return out


# ---------------------------------------------------------------------------------------- workloads


def _build_distilgpt2(cfg: DictConfig, intra_op_threads: int | None) -> Workload:
    from rle.workloads.data import TextDataModule, load_documents
    from rle.workloads.distilgpt2 import DistilGPT2Module, build_model_and_tokenizer

    docs = load_documents(cfg.data.path, list(cfg.data.text_suffixes))
    cache_dir = paths.project_root() / "outputs" / ".cache" / "tokenizers"
    bundle = build_model_and_tokenizer(
        OmegaConf.to_container(cfg.workload.model, resolve=True),  # type: ignore[arg-type]
        docs,
        int(cfg.data.tokenizer_vocab_size),
        cache_dir,
    )
    dm = TextDataModule(
        docs,
        bundle.tokenizer,
        int(cfg.data.block_size),
        int(cfg.data.batch_size),
        int(cfg.data.num_workers),
    )
    optim = cfg.workload.optim
    module = DistilGPT2Module(
        bundle.model,
        lr=float(optim.lr),
        weight_decay=float(optim.weight_decay),
        betas=list(optim.betas),
        eps=float(optim.eps),
        warmup_ratio=float(optim.warmup_ratio),
        intra_op_threads=intra_op_threads,
    )
    return Workload(
        module=module,
        datamodule=dm,
        tags={
            "model.init": bundle.model_init,
            "tokenizer": bundle.tokenizer_kind,
            "model.source": bundle.source,
        },
        params={
            "model.n_parameters": bundle.n_parameters,
            "data.n_documents": len(docs),
            "data.n_blocks": len(dm.blocks),
        },
        tokens_per_sample=int(cfg.data.block_size),
    )


def _build_synthetic(cfg: DictConfig, intra_op_threads: int | None) -> Workload:
    from rle.workloads.synthetic import build_synthetic_workload

    return build_synthetic_workload(cfg, intra_op_threads)


WORKLOADS: dict[str, Callable[[DictConfig, int | None], Workload]] = {
    "distilgpt2": _build_distilgpt2,
    "distilgpt2_tiny": _build_distilgpt2,
    "synthetic": _build_synthetic,
    "synthetic_cpu": _build_synthetic,
    "synthetic_gpu": _build_synthetic,
}
"""Workload builders by ``workload.name``."""


# ------------------------------------------------------------------------------------------ trainer


def _trainer_plan(tcfg: DictConfig) -> tuple[str, int, str]:
    """Validate accelerator/devices/strategy and return ``(accelerator, devices, strategy)``."""
    import torch

    accelerator = str(tcfg.accelerator).lower()
    if accelerator not in ("auto", "cpu", "gpu", "cuda"):
        raise ConfigError(f"trainer.accelerator={accelerator!r} is not one of auto, cpu, gpu.")
    cuda = torch.cuda.is_available()
    if accelerator in ("gpu", "cuda") and not cuda:
        raise ConfigError(
            "trainer.accelerator=gpu but no CUDA GPU is visible (torch.cuda.is_available() is False). "
            "Use trainer.accelerator=cpu or auto, or install a CUDA build of torch."
        )
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and cuda)
    try:
        devices = int(tcfg.devices)
    except (TypeError, ValueError) as e:
        raise ConfigError(
            f"trainer.devices must be a positive integer, got {tcfg.devices!r}."
        ) from e
    if devices < 1:
        raise ConfigError(f"trainer.devices must be a positive integer, got {devices}.")
    available = torch.cuda.device_count() if on_gpu else (os.cpu_count() or 1)
    if devices > available:
        what = "CUDA GPUs" if on_gpu else "CPU cores (one DDP process per core at most)"
        raise ConfigError(
            f"trainer.devices={devices} but this machine offers {available} {what}. "
            f"Use trainer.devices={available} or fewer."
        )
    strategy = str(tcfg.strategy)
    if strategy == "auto" and devices > 1:
        strategy = "ddp_spawn"
    return ("gpu" if on_gpu else "cpu"), devices, strategy


def _environment_tags(accelerator: str, devices: int) -> dict[str, str]:
    import lightning
    import mlflow
    import torch
    import transformers

    tags = {
        "host": socket.gethostname(),
        "python.version": platform.python_version(),
        "torch.version": torch.__version__,
        "lightning.version": lightning.__version__,
        "mlflow.version": mlflow.__version__,
        "transformers.version": transformers.__version__,
        "rle.version": __import__("rle").__version__,
        "device.cpu": _cpu_name(),
        "trainer.accelerator": accelerator,
        "trainer.devices": str(devices),
    }
    if accelerator == "gpu":
        for i in range(devices):
            tags[f"device.gpu_{i}"] = torch.cuda.get_device_name(i)
    src = paths.source_root()
    commit = _git_commit(src) if src is not None else None
    if commit:
        tags["mlflow.source.git.commit"] = commit
    return tags


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit(root: Path) -> str | None:
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


# ---------------------------------------------------------------------------------------- telemetry


def _telemetry_callback(cfg: DictConfig, tokens_per_sample: int | None) -> Any:
    """Build the :class:`~rle.callbacks.telemetry.TelemetryCallback` from ``cfg.telemetry``."""
    from rle.callbacks.telemetry import TelemetryCallback

    t = cfg.telemetry
    mode = str(t.cpu_power)
    if mode not in ("measured", "estimated"):
        raise ConfigError(f"telemetry.cpu_power={mode!r} is not one of measured, estimated.")
    sources: dict[str, Any] = {}
    if bool(t.enabled):
        container = OmegaConf.to_container(t.sources, resolve=True) or {}
        assert isinstance(container, dict)  # noqa: S101 (a mapping node gives a dict)
        sources = {str(k): v for k, v in container.items() if v}
        if mode == "estimated":
            sources["cpu_power_estimated"] = {
                "_target_": "rle.telemetry.cpu.EstimatedCpuPowerSource",
                "rated_w": float(t.cpu_rated_w),
            }
    rle_node = OmegaConf.to_container(t.rle, resolve=True)
    assert isinstance(rle_node, dict)  # noqa: S101
    return TelemetryCallback(
        sources=sources,
        sample_hz=float(t.sample_hz),
        rle={str(k): v for k, v in rle_node.items()},
        cpu_rated_w=None if t.cpu_rated_w is None else float(t.cpu_rated_w),
        tokens_per_sample=tokens_per_sample,
        write_artifacts=bool(t.write_artifacts),
    )


# ------------------------------------------------------------------------------------- validation

_PRECISIONS = (
    "16-true",
    "16-mixed",
    "bf16-true",
    "bf16-mixed",
    "32-true",
    "64-true",
    "transformer-engine",
    "transformer-engine-float16",
    "16",
    "32",
    "64",
    "bf16",
)
"""``trainer.precision`` values Lightning accepts."""


def _int_at_least(value: Any, key: str, minimum: int, extra: tuple[int, ...] = ()) -> int:
    """``value`` as an int >= ``minimum`` (or one of ``extra``), else a ConfigError naming ``key``."""
    also = f" (or {', '.join(map(str, extra))})" if extra else ""
    message = f"{key}={value!r} must be an integer >= {minimum}{also}."
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ConfigError(message)
    try:
        number = int(value)
    except ValueError as e:
        raise ConfigError(message) from e
    if number < minimum and number not in extra:
        raise ConfigError(message)
    return number


def _seconds(value: Any, key: str, *, positive: bool) -> float:
    """``value`` as seconds (> 0, or >= 0), else a ConfigError naming ``key``."""
    bound = "> 0" if positive else ">= 0"
    try:
        seconds = float(value)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{key}={value!r} must be a number of seconds {bound}.") from e
    if not (seconds > 0 if positive else seconds >= 0):  # NaN fails both
        raise ConfigError(f"{key}={value!r} must be a number of seconds {bound}.")
    return seconds


def _validate_config(cfg: DictConfig) -> None:
    """Check the values that would otherwise fail late (after the run exists) or obscurely.

    Raises:
        rle.errors.ConfigError: Naming the key, the bad value and what is allowed.
    """
    from lightning.pytorch.strategies import StrategyRegistry

    _int_at_least(cfg.get("seed"), "seed", 0)
    tc = cfg.trainer
    _int_at_least(tc.max_steps, "trainer.max_steps", 1, extra=(-1,))
    _int_at_least(tc.max_epochs, "trainer.max_epochs", 1, extra=(-1,))
    _int_at_least(tc.log_every_n_steps, "trainer.log_every_n_steps", 1)
    _int_at_least(tc.accumulate_grad_batches, "trainer.accumulate_grad_batches", 1)
    _int_at_least(tc.num_nodes, "trainer.num_nodes", 1)
    if str(tc.precision) not in _PRECISIONS:
        raise ConfigError(
            f"trainer.precision={tc.precision!r} is not one of {', '.join(_PRECISIONS)}."
        )
    clip = tc.get("gradient_clip_val")
    if clip is not None and (
        isinstance(clip, bool) or not isinstance(clip, int | float) or clip < 0
    ):
        raise ConfigError(f"trainer.gradient_clip_val={clip!r} must be null or a number >= 0.")
    if str(tc.get("gradient_clip_algorithm", "norm")) not in ("norm", "value"):
        raise ConfigError(
            f"trainer.gradient_clip_algorithm={tc.gradient_clip_algorithm!r} is not one of norm, value."
        )
    strategies = ["auto", *StrategyRegistry.available_strategies()]
    if str(tc.strategy) not in strategies:
        raise ConfigError(
            f"trainer.strategy={tc.strategy!r} is not a Lightning strategy; choose one of "
            f"{', '.join(strategies)}."
        )
    data = cfg.get("data")
    if isinstance(data, DictConfig):
        if "num_workers" in data:
            _int_at_least(data.num_workers, "data.num_workers", 0)
        if "batch_size" in data:
            _int_at_least(data.batch_size, "data.batch_size", 1)
        if "block_size" in data:
            _int_at_least(data.block_size, "data.block_size", 2)
    t = cfg.tracking
    _seconds(t.connect_timeout_s, "tracking.connect_timeout_s", positive=True)
    if "flush_interval_s" in t:
        _seconds(t.flush_interval_s, "tracking.flush_interval_s", positive=True)
    if "drain_timeout_s" in t:
        _seconds(t.drain_timeout_s, "tracking.drain_timeout_s", positive=False)
    if "http_timeout_s" in t:
        _seconds(t.http_timeout_s, "tracking.http_timeout_s", positive=True)
    if "http_max_retries" in t:
        _int_at_least(t.http_max_retries, "tracking.http_max_retries", 0)
    pattern = t.get("secret_pattern")
    if pattern is not None:
        try:
            re.compile(str(pattern))
        except re.error as e:
            raise ConfigError(
                f"tracking.secret_pattern={pattern!r} is not a valid regular expression ({e})."
            ) from e


def _validate_context(cfg: DictConfig) -> None:
    """A token workload's blocks must fit the model's context (else an IndexError mid-step).

    Raises:
        rle.errors.ConfigError: If ``data.block_size`` exceeds ``workload.model.n_positions``.
    """
    data, model = cfg.get("data"), cfg.workload.get("model")
    if not isinstance(data, DictConfig) or not isinstance(model, DictConfig):
        return
    block, limit = data.get("block_size"), model.get("n_positions")
    if isinstance(block, int) and isinstance(limit, int) and block > limit:
        raise ConfigError(
            f"data.block_size={block} is longer than the model's context "
            f"(workload.model.n_positions={limit}); use data.block_size<={limit}."
        )


# ------------------------------------------------------------------------------------- signals


class _Preemption:
    """SIGTERM/SIGINT while the run is open: stop training, flush, end the run ``KILLED``.

    The first signal during ``fit`` asks the trainer to stop after the current step
    (``trainer.should_stop``; on SIGTERM Lightning's own handler also raises its SIGTERM exit at
    the next batch end), so callbacks finish and the logger flushes normally; a second signal, or
    one before ``fit``, interrupts at once (``KeyboardInterrupt``). While the run is being ended,
    a signal only cuts the wait for the tracking store short (what is not sent stays spooled).
    The process then exits with ``128 + signal number``.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.signum: int | None = None
        self.trainer: Any = None
        self.finishing = False
        self._abort = False
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        """Install the handlers (main thread only; elsewhere signals stay as they are)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for s in self.SIGNALS:
            self._previous[s] = signal.signal(s, self._handle)

    def restore(self) -> None:
        """Put back the handlers found by :meth:`install`."""
        for s, handler in self._previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()

    def abort_requested(self) -> bool:
        """Whether a signal arrived while the run was being ended."""
        return self._abort

    def _handle(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.finishing:
            self._abort = True
            log.warning(
                "Received %s while ending the run: no more waiting for the tracking store.", name
            )
            return
        first = self.signum is None
        if first:
            self.signum = signum
        if first and self.trainer is not None:
            log.warning(
                "Received %s: stopping after the current step; the run ends KILLED once its "
                "metrics are flushed (send it again to interrupt at once).",
                name,
            )
            self.trainer.should_stop = True
            return
        log.warning("Received %s: interrupting.", name)
        raise KeyboardInterrupt(name)


def _config_yaml(cfg: DictConfig, redactor: Any) -> str:
    """The resolved config as YAML, secrets redacted."""
    return OmegaConf.to_yaml(redactor.tree(OmegaConf.to_container(cfg, resolve=True)))


# ------------------------------------------------------------------------------------- run_training


def run_training(cfg: DictConfig) -> RunResult:
    """Run one training job as one MLflow run.

    Steps: validate the config; resolve and probe the tracking store (fail fast, before any
    training); build the workload; create the run with tags, flattened params and the resolved
    config (``config/train.yaml``), secrets redacted (``tracking.secret_pattern``); fit with
    Lightning; end the run ``FINISHED``, or ``FAILED`` (traceback in ``error/traceback.txt``) /
    ``KILLED`` (interrupt) and re-raise.

    Everything after the run is created goes through :class:`~rle.tracking.logger.MLflowRunLogger`
    (background sender, on-disk spool): training never waits for the store. At the end the run
    waits up to ``tracking.drain_timeout_s`` for the store, then leaves what is unsent in
    ``outputs/spool/<run_id>`` and logs the ``python -m rle.sync`` command that replays it.
    SIGTERM/SIGINT stop training after the current step, flush, end the run ``KILLED`` and exit
    with ``128 + signal``.

    Args:
        cfg: The composed ``conf/train.yaml`` config.

    Returns:
        The :class:`RunResult`.

    Raises:
        rle.errors.ConfigError: On an unknown workload, impossible device request or bad value.
        rle.errors.TrackingError: If the tracking store cannot be reached or created.
        rle.errors.DataError: If the training data is missing or malformed.
        SystemExit: ``128 + signal number`` after a SIGTERM/SIGINT (the run ended ``KILLED``).
    """
    import lightning as L

    from rle.tracking.logger import (
        MLflowRunLogger,
        check_reachable,
        create_run,
        log_params,
        log_tags,
    )
    from rle.tracking.redact import Redactor
    from rle.tracking.spool import configure_http_retries

    name = str(cfg.workload.name)
    if name not in WORKLOADS:
        raise ConfigError(
            f"Unknown workload {name!r}; valid choices: {', '.join(sorted(WORKLOADS))}."
        )
    _validate_config(cfg)
    accelerator, devices, strategy = _trainer_plan(cfg.trainer)
    tracking = cfg.tracking
    secret_pattern = tracking.get("secret_pattern")
    redactor = Redactor(secret_pattern)
    try:
        location = paths.resolve_tracking(tracking.uri)
    except OSError as e:  # the folder of a SQLite store cannot be created
        raise TrackingError(f"Cannot create the local tracking store ({e}).") from e
    log.info("Tracking URI %s (from %s)", redactor.text(location.uri), location.reason)
    configure_http_retries(
        int(tracking.get("http_max_retries", 0)), float(tracking.get("http_timeout_s", 10))
    )
    check_reachable(location, float(tracking.connect_timeout_s))
    _validate_context(cfg)

    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    intra_op = max(1, (os.cpu_count() or 1) // devices) if accelerator == "cpu" else None
    workload = WORKLOADS[name](cfg, intra_op)

    try:  # validates before the run exists
        telemetry = _telemetry_callback(cfg, workload.tokens_per_sample)
    except ValueError as e:
        if isinstance(e, RLEError):
            raise
        raise ConfigError(str(e)) from e

    experiment_name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or str(cfg.tracking.experiment_name)
    run_name = redactor.text(str(cfg.run_name or f"{name}-{devices}x{accelerator}"))
    tags = {
        "workload": name,
        "tracking.uri_reason": location.reason,
        **_environment_tags(accelerator, devices),
        **workload.tags,
        **{str(k): str(v) for k, v in (cfg.tracking.tags or {}).items()},
    }
    from rle.tracking.sweep import job_overrides, parent_run_for_job

    sweep = parent_run_for_job()
    if sweep is not None:
        tags.update(
            {"mlflow.parentRunId": sweep[0], "rle.sweep_id": sweep[1], "rle.role": "sweep_child"}
        )
        tags["rle.overrides"] = " ".join(redactor.override(o) for o in job_overrides())[:5000]
    tags = {k: str(v) for k, v in redactor.mapping(tags).items()}
    experiment_id, run_id = create_run(location, experiment_name, str(run_name), tags)

    log.info("MLflow run %s in experiment %r (%s)", run_id, experiment_name, experiment_id)
    # Everything below reaches MLflow through the logger's background sender and spool.
    mlflow_logger = MLflowRunLogger(
        location.uri,
        run_id,
        experiment_id,
        synchronous=False,
        flush_interval_s=float(tracking.get("flush_interval_s", 1.0)),
        drain_timeout_s=float(tracking.get("drain_timeout_s", 60.0)),
        secret_pattern=secret_pattern,
    )
    client = mlflow_logger.client
    status = "FAILED"
    trainer: L.Trainer | None = None
    preempt = _Preemption()
    try:
        preempt.install()
        log_params(client, run_id, redactor.mapping({**flatten_config(cfg), **workload.params}))
        with tempfile.TemporaryDirectory() as tmp:
            cfg_path = Path(tmp) / "train.yaml"
            cfg_path.write_text(_config_yaml(cfg, redactor))
            client.log_artifact(run_id, str(cfg_path), artifact_path="config")
        log_tags(client, run_id, {"trainer.strategy": strategy})

        tc = cfg.trainer
        # a workload with a duration of its own (synthetic duration_s) sets the step count
        duration_steps = getattr(workload.module, "steps_for_duration", None)
        max_steps = int(duration_steps) if duration_steps else int(tc.max_steps)
        trainer = L.Trainer(
            accelerator=accelerator,
            devices=devices,
            strategy=strategy,
            num_nodes=int(tc.num_nodes),
            max_steps=max_steps,
            max_epochs=int(tc.max_epochs),
            log_every_n_steps=int(tc.log_every_n_steps),
            precision=tc.precision,
            gradient_clip_val=tc.gradient_clip_val,
            gradient_clip_algorithm=str(tc.gradient_clip_algorithm),
            accumulate_grad_batches=int(tc.accumulate_grad_batches),
            enable_progress_bar=bool(tc.enable_progress_bar),
            deterministic=bool(tc.deterministic),
            logger=mlflow_logger,
            callbacks=[telemetry],
            enable_checkpointing=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            default_root_dir=str(paths.project_root() / "outputs" / "lightning"),
        )
        preempt.trainer = trainer
        trainer.fit(workload.module, datamodule=workload.datamodule)
        status = "FINISHED" if preempt.signum is None else "KILLED"
    except (KeyboardInterrupt, SystemExit):  # Lightning turns Ctrl+C into SystemExit(1)
        status = "KILLED"
        if preempt.signum is not None:
            raise SystemExit(128 + preempt.signum) from None
        raise
    except BaseException:
        if preempt.signum is not None:  # e.g. a DDP worker stopped by the same signal
            status = "KILLED"
        _log_traceback(client, run_id)
        raise
    finally:
        preempt.finishing = True
        mlflow_logger.finish(status, should_stop=preempt.abort_requested)
        preempt.restore()
        log.info("MLflow run %s ended %s", run_id, status)
    if preempt.signum is not None:
        raise SystemExit(128 + preempt.signum)
    return RunResult(run_id, experiment_id, location.uri, status, int(trainer.global_step))


def _log_traceback(client: Any, run_id: str) -> None:
    try:
        with tempfile.TemporaryDirectory() as tmp:
            p = Path(tmp) / "traceback.txt"
            p.write_text(traceback.format_exc())
            client.log_artifact(run_id, str(p), artifact_path="error")
    except Exception:  # the original error matters more than a failed upload
        log.exception("Could not upload the traceback of run %s", run_id)


# --------------------------------------------------------------------------------------- entry point


@hydra.main(version_base="1.3", config_path=str(paths.CONF_DIR), config_name="train")
def _hydra_main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        run_training(cfg)
    except RLEError as e:
        log.error("%s", e)
        if not multirun:
            sys.exit(2)
    except Exception:
        if not multirun:
            raise
        # the job's run is already FAILED with its traceback; the sweep goes on
        log.exception("Job failed; the sweep goes on")


def main() -> None:
    """Console entry point (``rle-train``)."""
    from rle.cli import exit_on_override_error

    exit_on_override_error("train")
    _hydra_main()


if __name__ == "__main__":
    main()
