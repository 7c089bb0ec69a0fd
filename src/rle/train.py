"""``python -m rle.train`` / ``rle-train``: a training job as one tracked MLflow run.

A thin ``@hydra.main`` over :func:`run_training`, which tests call directly with a composed config.
Examples::

    python -m rle.train                                   # DistilGPT-2, one process
    python -m rle.train workload=distilgpt2 trainer.devices=2 trainer.max_steps=20   # 2-process DDP
    MLFLOW_TRACKING_URI=http://127.0.0.1:5000 python -m rle.train
"""

from __future__ import annotations

import contextlib
import copy
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
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from rle import paths
from rle.errors import ConfigError, RLEError, TrackingError
from rle.workloads import Workload, build_workload, workload_name

__all__ = [
    "RunResult",
    "Workload",
    "applicable_config",
    "check_ranges",
    "flatten_config",
    "main",
    "run_training",
]

log = logging.getLogger(__name__)

if not OmegaConf.has_resolver("rle_root"):
    OmegaConf.register_new_resolver("rle_root", lambda: paths.project_root().as_posix())


@dataclass
class RunResult:
    """Outcome of :func:`run_training`.

    Attributes:
        run_id: The MLflow run id.
        experiment_id: Its experiment id.
        tracking_uri: Where it was tracked.
        status: ``FINISHED``, ``FAILED`` or ``KILLED``.
        global_step: Optimizer steps taken.
        drained: Whether everything, the status included, reached the store; ``False`` leaves the
            rest in ``spool_dir`` for ``python -m rle.sync`` (the store still shows RUNNING).
        spool_dir: The run's spool directory.
    """

    run_id: str
    experiment_id: str
    tracking_uri: str
    status: str
    global_step: int
    drained: bool = True
    spool_dir: str = ""


def flatten_config(cfg: Mapping[str, Any] | DictConfig, prefix: str = "") -> dict[str, Any]:
    """Flatten a nested config into dotted keys (``trainer.devices``), lists kept as values.

    Args:
        cfg: A resolved config.
        prefix: Key prefix (for recursion).

    Returns:
        ``{"a.b.c": value}`` for every leaf that is set: ``None`` leaves, empty mappings and keys
        starting with ``_`` (``_target_``) are left out; enums are their names.
    """
    container = (
        OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
        if isinstance(cfg, DictConfig)
        else cfg
    )
    out: dict[str, Any] = {}
    assert isinstance(container, Mapping)  # noqa: S101 (DictConfig always gives a mapping)
    for k, v in container.items():
        if v is None or str(k).startswith("_"):  # unset leaves and Hydra's _target_ keys
            continue
        key = f"{prefix}{k!s}"
        if isinstance(v, Mapping):
            if v:
                out.update(flatten_config(v, key + "."))
        else:
            out[key] = v
    return out


WORKLOAD_GROUPS: tuple[str, ...] = ("data",)
"""Top-level config groups that only some workloads read (the others always apply)."""
GROUPS_KEY = "_groups_"
"""Workload config key: the :data:`WORKLOAD_GROUPS` this workload reads (``[data]``, ``[]``)."""
ONLY_WITH_KEY = "_only_with_"
"""Workload config key: ``{selector: {value: [keys]}}``, workload keys that apply only while the
workload's ``selector`` key has that value (synthetic: ``pattern: {ramp: [ramp], ...}``)."""


def profile_params(profile: Any) -> dict[str, Any]:
    """The resolved RLE metric profile as flat params ``rle.profile.<section>.<key>``.

    Args:
        profile: A :class:`rle.metric.profiles.Profile` (nested frozen dataclasses).

    Returns:
        Leaf name to value; ``None`` leaves (a part the formula does not use) are left out.
    """
    import dataclasses

    tree = dataclasses.asdict(profile)
    return {f"rle.profile.{k}": v for k, v in flatten_config(tree).items() if v is not None}


def applicable_config(cfg: Mapping[str, Any] | DictConfig) -> dict[str, Any]:
    """The resolved config without the settings that do not apply to this run.

    The rule, declared by the workload config itself (``conf/workload/*.yaml``):

    * a group of :data:`WORKLOAD_GROUPS` (``data``) applies only when the workload lists it in
      ``_groups_``. Without ``_groups_``, a ``module``/``datamodule`` workload reads none of them
      (it is instantiated from its own node) and a builder workload (``_target_``, which receives
      the whole config) is assumed to read them all;
    * a workload key listed under ``_only_with_: {selector: {value: [keys]}}`` applies only while
      ``workload.<selector>`` equals that value (synthetic: ``intensity`` with
      ``pattern=constant``, the ``ramp``/``sine``/``step`` nodes with their own pattern);
    * with ``telemetry.enabled=false`` only ``telemetry.enabled`` itself applies.

    Args:
        cfg: The composed ``train`` config (or its container).

    Returns:
        A plain nested dict (resolved, enums as names), ready for :func:`flatten_config`.
    """
    container = (
        OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
        if isinstance(cfg, DictConfig)
        else copy.deepcopy(dict(cfg))
    )
    assert isinstance(container, dict)  # noqa: S101 (a mapping node gives a dict)
    workload = container.get("workload")
    workload = workload if isinstance(workload, dict) else {}
    groups = workload.get(GROUPS_KEY)
    if groups is None:
        groups = [] if workload.get("module") is not None else list(WORKLOAD_GROUPS)
    for group in WORKLOAD_GROUPS:
        if group not in groups:
            container.pop(group, None)
    for selector, options in (workload.get(ONLY_WITH_KEY) or {}).items():
        chosen = str(workload.get(selector))
        keep = {str(k) for v, ks in options.items() if str(v) == chosen for k in ks or []}
        for value, ks in options.items():
            if str(value) != chosen:
                for k in ks or []:
                    if str(k) not in keep:
                        workload.pop(str(k), None)
    telemetry = container.get("telemetry")
    if isinstance(telemetry, dict) and telemetry.get("enabled") is False:
        container["telemetry"] = {"enabled": False}
    return {str(k): v for k, v in container.items()}


# ------------------------------------------------------------------------------------- context


def _environment_tags(trainer: Any) -> dict[str, str]:
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
        "trainer.accelerator": _accelerator_name(trainer),
        "trainer.devices": str(trainer.num_devices),
        "trainer.num_nodes": str(trainer.num_nodes),
        "trainer.strategy": _strategy_name(trainer.strategy),
    }
    if _accelerator_name(trainer) == "gpu":
        for i in trainer.device_ids:
            tags[f"device.gpu_{i}"] = torch.cuda.get_device_name(i)
    src = paths.source_root()
    commit = _git_commit(src) if src is not None else None
    if commit:
        tags["mlflow.source.git.commit"] = commit
    return tags


def _default_run_name(workload: str, trainer: Any, swept: Mapping[str, str]) -> str:
    """Return a readable run name that tells runs apart.

    A sweep child is named by its swept values (``synthetic intensity=0.3``), any other run by its
    hardware and start time (``distilgpt2 2xcpu 1202-081530``).
    """
    if swept:
        return workload + " " + " ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in swept.items())
    import datetime

    when = datetime.datetime.now().strftime("%m%d-%H%M%S")
    n = trainer.num_devices * trainer.num_nodes
    return f"{workload} {n}x{_accelerator_name(trainer)} {when}"


def _strategy_name(strategy: Any) -> str:
    """Lightning's registry name of a strategy (``ddp``, ``ddp_spawn``, ``single_device``, ...)."""
    from lightning.pytorch.strategies import DDPStrategy

    default = "ddp" if isinstance(strategy, DDPStrategy) else type(strategy).__name__
    name = str(getattr(type(strategy), "strategy_name", default))
    start = getattr(strategy, "_start_method", "popen")
    return name if start == "popen" else f"{name}_{start}"


def _accelerator_name(trainer: Any) -> str:
    from lightning.pytorch.accelerators import CUDAAccelerator

    return "gpu" if isinstance(trainer.accelerator, CUDAAccelerator) else "cpu"


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
    mode = getattr(t.cpu_power, "name", str(t.cpu_power))  # an enum (rle.schema.CpuPower)
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
        upload_every_s=float(t.upload_every_s),
    )


# ------------------------------------------------------------------------------------- signals


class _Preemption:
    """SIGTERM/SIGINT while the run is open: stop training, flush, end the run ``KILLED``.

    Inside the training loop :class:`rle.callbacks.stop.StopOnSignal` owns the signals: every
    rank stops after the same step, callbacks finish and the logger flushes normally, and it
    tells this object (:meth:`note_signal`). Under ``ddp_spawn`` this process is the launcher and
    passes the first signal on to the workers through :attr:`shared_signum`. Elsewhere a signal
    before the loop (building the workload, a DDP rendezvous) or a repeat more than
    :attr:`REPEAT_WINDOW_S` after the first interrupts at once (``KeyboardInterrupt``). While the
    run is being ended, a signal only cuts the wait for the tracking store short (what is not
    sent stays spooled). The process then exits with ``128 + signal number``.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)
    REPEAT_WINDOW_S = 2.0
    """A repeat of the signal within this many seconds is the same request (launchers forward to
    each process the signal its group already got); only a later one interrupts at once. The same
    window as :data:`rle.callbacks.stop.REPEAT_WINDOW_S` (this module imports Lightning lazily)."""
    STUCK_GRACE_S = 3.0
    """How long the main thread may stay inside C code (a DDP rendezvous) after a signal before
    the watchdog ends the run ``KILLED`` and exits ``128 + signal`` itself."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.trainer: Any = None
        self.in_loop = False
        self.finishing = False
        self.shared_signum: Any = None
        """``ddp_spawn``: a ``multiprocessing.Value("i")`` the workers' :class:`StopOnSignal`
        reads; while it is set (during ``fit``) a signal to this launcher process is passed on
        through it instead of interrupting."""
        self._first_at_s = 0.0
        self._abort = False
        self._previous: dict[int, Any] = {}
        self._wakeup: tuple[int, int] | None = None
        self._previous_wakeup_fd = -1
        self.on_stuck: Callable[[int], None] | None = None

    def install(self, on_stuck: Callable[[int], None] | None = None) -> None:
        """Install the handlers (main thread only; elsewhere signals stay as they are).

        Python runs signal handlers only between bytecodes, so a main thread blocked inside C
        code (a torch.distributed rendezvous waiting for peers) would not see SIGTERM until the
        call times out. The C-level handler also writes the signal number to a wake-up pipe
        (:func:`signal.set_wakeup_fd`); a watchdog thread reading it calls ``on_stuck(signum)``
        (end the run ``KILLED``) and exits the process when the Python handler has not run within
        :attr:`STUCK_GRACE_S` seconds.

        Args:
            on_stuck: Called from the watchdog thread with the signal number before it exits.
        """
        if threading.current_thread() is not threading.main_thread():
            return
        for s in self.SIGNALS:
            self._previous[s] = signal.signal(s, self._handle)
        self.on_stuck = on_stuck
        r, w = os.pipe()
        os.set_blocking(w, False)
        self._wakeup = (r, w)
        self._previous_wakeup_fd = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        threading.Thread(
            target=self._watch, args=(r,), name="rle-signal-watchdog", daemon=True
        ).start()

    def _watch(self, fd: int) -> None:
        while True:
            try:
                data = os.read(fd, 1)
            except OSError:
                return
            if not data:
                return  # the pipe was closed by restore()
            signum = data[0]
            deadline = time.monotonic() + self.STUCK_GRACE_S
            while time.monotonic() < deadline:
                if self.signum is not None or self.finishing or self._wakeup is None:
                    break  # the main thread handled it
                if self.in_loop:
                    break  # inside the training loop Lightning's and our handlers stop it
                time.sleep(0.05)
            else:
                log.warning(
                    "Received %s while the main thread is blocked (e.g. waiting for DDP peers): "
                    "ending the run KILLED and exiting.",
                    signal.Signals(signum).name,
                )
                try:
                    if self.on_stuck is not None:
                        self.on_stuck(signum)
                finally:
                    os._exit(128 + signum)

    def restore(self) -> None:
        """Put back the handlers found by :meth:`install`."""
        for s, handler in self._previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()
        if self._wakeup is not None:
            signal.set_wakeup_fd(self._previous_wakeup_fd)
            r, w = self._wakeup
            self._wakeup = None
            os.close(w)
            os.close(r)

    def abort_requested(self) -> bool:
        """Whether a signal arrived while the run was being ended."""
        return self._abort

    def note_signal(self, signum: int) -> None:
        """Record a signal handled elsewhere (:class:`StopOnSignal`): the run ends ``KILLED``."""
        if self.signum is None:
            self.signum = signum
            self._first_at_s = time.monotonic()

    def _handle(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.finishing:
            self._abort = True
            log.warning(
                "Received %s while ending the run: no more waiting for the tracking store.", name
            )
            return
        first = self.signum is None
        now = time.monotonic()
        if first:
            self.signum = signum
            self._first_at_s = now
        elif now - self._first_at_s < self.REPEAT_WINDOW_S:
            return  # the same request, forwarded by a launcher
        if first and self.shared_signum is not None:
            log.warning(
                "Received %s: every ddp_spawn worker stops after the current step; the run ends "
                "KILLED once its metrics are flushed (send it again to interrupt at once).",
                name,
            )
            self.shared_signum.value = signum
            return
        if first and self.trainer is not None and self.in_loop:
            # only reached where StopOnSignal could not install its handler (not the main thread)
            log.warning("Received %s: stopping after the current step.", name)
            self.trainer.should_stop = True
            return
        log.warning("Received %s: interrupting.", name)
        raise KeyboardInterrupt(name)


# ------------------------------------------------------------------------------------- ranges

_RANGES: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("seed", lambda v: v >= 0, "an integer >= 0"),
    ("trainer.max_steps", lambda v: v >= 1 or v == -1, "an integer >= 1, or -1 (no limit)"),
    (
        "trainer.max_epochs",
        lambda v: v is None or v >= 1 or v == -1,
        "an integer >= 1, -1 (no limit) or null",
    ),
    ("trainer.log_every_n_steps", lambda v: v >= 1, "an integer >= 1"),
    ("trainer.accumulate_grad_batches", lambda v: v >= 1, "an integer >= 1"),
    ("trainer.gradient_clip_val", lambda v: v is None or v >= 0, "null or a number >= 0"),
    ("data.num_workers", lambda v: v >= 0, "an integer >= 0"),
    ("telemetry.sample_hz", lambda v: 0 < v <= 1000, "a rate in Hz, 0 < sample_hz <= 1000"),
    ("telemetry.upload_every_s", lambda v: v > 0, "seconds between sample uploads, > 0"),
    ("tracking.connect_timeout_s", lambda v: v > 0, "a number of seconds > 0"),
    ("tracking.flush_interval_s", lambda v: v > 0, "a number of seconds > 0"),
    ("tracking.drain_timeout_s", lambda v: v >= 0, "a number of seconds >= 0"),
    ("tracking.http_timeout_s", lambda v: v > 0, "a number of seconds > 0"),
    ("tracking.http_max_retries", lambda v: v >= 0, "an integer >= 0"),
)
"""Ranges that neither the schema's types (Hydra) nor Lightning check: (key, test, allowed)."""


def check_ranges(cfg: DictConfig) -> None:
    """Refuse values that compose and that Lightning would accept but that cannot work.

    Types are the schema's job (:mod:`rle.schema`, at compose time) and Trainer arguments are
    Lightning's; this covers what neither checks (``max_steps=0`` trains nothing and ends
    FINISHED; ``drain_timeout_s=-1``; a secret pattern that is not a regular expression).

    Raises:
        rle.errors.ConfigError: Naming the key, the value, the allowed range and the fix.
    """
    for key, ok, allowed in _RANGES:
        value = OmegaConf.select(cfg, key, default=None)
        if value is None and OmegaConf.select(cfg, key, default="absent") == "absent":
            continue  # the key is not part of this config (e.g. no data node)
        try:
            good = ok(value)
        except TypeError:
            good = False
        if not good:
            raise ConfigError(
                f"{key}={value!r} is out of range: it must be {allowed}. "
                f"Fix it on the command line, e.g. {key}=<value in range>."
            )
    pattern = cfg.tracking.get("secret_pattern")
    if pattern is not None:
        try:
            re.compile(str(pattern))
        except re.error as e:
            raise ConfigError(
                f"tracking.secret_pattern={pattern!r} is not a valid regular expression ({e})."
            ) from e


def _loop_flag(preempt: _Preemption) -> Any:
    """A callback that tells ``preempt`` when the training loop runs (``in_loop``)."""
    import lightning as L

    class _LoopFlag(L.Callback):
        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            preempt.in_loop = True

        def on_train_end(self, trainer: Any, pl_module: Any) -> None:
            preempt.in_loop = False

        def __reduce__(self) -> Any:  # ddp_spawn pickles callbacks: the flag lives in the launcher
            return (_inert_callback, ())

    return _LoopFlag()


def _inert_callback() -> Any:
    import lightning as L

    return L.Callback()


def _config_yaml(cfg: DictConfig, redactor: Any) -> str:
    """The resolved config as YAML, secrets redacted."""
    return OmegaConf.to_yaml(
        redactor.tree(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))
    )


# ------------------------------------------------------------------------------------- run_training


def run_training(cfg: DictConfig) -> RunResult | None:
    """Run one training job as one MLflow run.

    Steps: build the Trainer with :func:`hydra.utils.instantiate` from ``cfg.trainer`` (Lightning
    validates its own arguments; the strategy follows the launch environment, see
    :mod:`rle.launch`); resolve and probe the tracking store (fail fast, before any training);
    build the workload; on global rank 0 only, create the run with tags, flattened params and the
    resolved config (``config/train.yaml``), secrets redacted (``tracking.secret_pattern``); fit;
    end the run ``FINISHED``, or ``FAILED`` (traceback in ``error/traceback.txt``) / ``KILLED``
    (interrupt) and re-raise. Processes of other ranks (started by torchrun, SLURM or Lightning's
    subprocess launcher) train and send their telemetry to rank 0 through the callback's gather;
    they never create a run.

    Everything after the run is created goes through :class:`~rle.tracking.logger.MLflowRunLogger`
    (background sender, on-disk spool): training never waits for the store. At the end the run
    waits up to ``tracking.drain_timeout_s`` for the store, then leaves what is unsent in
    ``outputs/spool/<run_id>`` and logs the ``python -m rle.sync`` command that replays it.
    SIGTERM/SIGINT stop training after the current step, flush, end the run ``KILLED`` and exit
    with ``128 + signal``.

    Args:
        cfg: The composed ``conf/train.yaml`` config.

    Returns:
        The :class:`RunResult` on global rank 0; ``None`` on the other ranks.

    Raises:
        rle.errors.ConfigError: On a workload or Trainer setting that cannot work (Lightning's and
            Hydra's messages are passed on), or an impossible launch (``num_nodes > 1`` with no
            multi-node launcher).
        rle.errors.TrackingError: If the tracking store cannot be reached or created.
        rle.errors.DataError: If the training data is missing or malformed.
        SystemExit: ``128 + signal number`` after a SIGTERM/SIGINT (the run ended ``KILLED``).
    """
    import lightning as L
    from lightning.pytorch.accelerators import CPUAccelerator

    from rle.launch import detect_launch, external_world, resolve_strategy
    from rle.tracking.logger import MLflowRunLogger, check_reachable, create_run
    from rle.tracking.redact import Redactor
    from rle.tracking.spool import configure_http_retries

    check_ranges(cfg)
    tc = cfg.trainer
    devices, num_nodes = tc.devices, int(tc.num_nodes)
    announced = external_world(detect_launch())
    forced: dict[str, Any] = {}
    if announced is not None:  # torchrun said how many processes there are
        if devices in (1, "auto"):
            devices = forced["devices"] = announced[0]
        if num_nodes == 1:
            num_nodes = forced["num_nodes"] = announced[1]
    launch = detect_launch(devices if isinstance(devices, int) else 1)
    launch_cfg = cfg.get("launch") or {}
    strategy = resolve_strategy(
        tc.strategy,
        devices,
        num_nodes,
        launch,
        float(launch_cfg.get("rendezvous_timeout_s", 120)),
    )

    tracking = cfg.tracking
    secret_pattern = tracking.get("secret_pattern")
    redactor = Redactor(secret_pattern)
    try:
        location = paths.resolve_tracking(tracking.uri)
    except OSError as e:  # the folder of a SQLite store cannot be created
        raise TrackingError(f"Cannot create the local tracking store ({e}).") from e
    configure_http_retries(int(tracking.http_max_retries), float(tracking.http_timeout_s))
    if launch.is_rank_zero:
        log.info("Tracking URI %s (from %s)", redactor.text(location.uri), location.reason)
        check_reachable(location, float(tracking.connect_timeout_s))

    # The logger exists before the run: the Trainer is built (and Lightning validates every
    # argument) before anything is written to the store.
    mlflow_logger = MLflowRunLogger(
        location.uri,
        None,
        None,
        synchronous=False,
        flush_interval_s=float(tracking.flush_interval_s),
        drain_timeout_s=float(tracking.drain_timeout_s),
        secret_pattern=secret_pattern,
    )
    preempt = _Preemption()
    try:
        trainer = _instantiate_trainer(
            tc,
            logger=mlflow_logger,
            callbacks=[_loop_flag(preempt)],
            strategy=strategy,
            **forced,
        )
    except RLEError:
        raise
    except Exception as e:  # Lightning's MisconfigurationException, ValueError, TypeError
        cause = e.__cause__ or e  # hydra wraps the Trainer's own exception
        raise ConfigError(f"The Trainer refused the trainer.* settings: {cause}") from e
    on_cpu = isinstance(trainer.accelerator, CPUAccelerator)
    cores = os.cpu_count() or 1
    if on_cpu and trainer.num_devices > cores:
        raise ConfigError(
            f"trainer.devices={trainer.num_devices} but this machine offers {cores} CPU cores "
            f"(one DDP process per core at most). Use trainer.devices={cores} or fewer."
        )

    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    intra_op = max(1, cores // trainer.num_devices) if on_cpu else None
    workload = build_workload(cfg, intra_op)
    try:  # validates before the run exists
        telemetry = _telemetry_callback(cfg, workload.tokens_per_sample)
    except ValueError as e:
        if isinstance(e, RLEError):
            raise
        raise ConfigError(str(e)) from e
    trainer.callbacks.append(telemetry)
    # SIGTERM/SIGINT during the loop: every rank stops after the same step (rle.callbacks.stop)
    from rle.callbacks.stop import StopOnSignal

    shared_signum = _spawn_stop_value(trainer)
    trainer.callbacks.append(StopOnSignal(preempt.note_signal, shared_signum))
    # a workload with a duration of its own (synthetic duration_s) sets the step count
    duration_steps = getattr(workload.module, "steps_for_duration", None)
    if duration_steps:
        trainer.fit_loop.max_steps = int(duration_steps)

    if not launch.is_rank_zero:
        _fit(trainer, workload)
        return None

    name = workload_name(cfg)
    experiment_name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or str(tracking.experiment_name)
    from rle.sync import owner_tags
    from rle.tracking.sweep import (
        TAG_SWEEP_JOB,
        job_number,
        job_overrides,
        parent_run_for_job,
        swept_values,
    )

    run_name = redactor.text(str(cfg.run_name or _default_run_name(name, trainer, swept_values())))
    tags = {
        "workload": name,
        "tracking.uri_reason": location.reason,
        "rle.launcher": launch.launcher,
        **_environment_tags(trainer),
        **workload.tags,
        **{str(k): str(v) for k, v in (tracking.tags or {}).items()},
        **owner_tags(),  # host and pid: `rle.sync --close-dead` ends the run if this process dies
    }
    sweep = parent_run_for_job()
    if sweep is not None:
        tags.update(
            {
                "mlflow.parentRunId": sweep[0],
                "rle.sweep_id": sweep[1],
                "rle.role": "sweep_child",
                TAG_SWEEP_JOB: str(job_number()),
            }
        )
        tags["rle.overrides"] = " ".join(redactor.override(o) for o in job_overrides())[:5000]
    tags = {k: str(v) for k, v in redactor.mapping(tags).items()}
    experiment_id, run_id = create_run(location, experiment_name, str(run_name), tags)
    mlflow_logger.attach(run_id, experiment_id)
    log.info("MLflow run %s in experiment %r (%s)", run_id, experiment_name, experiment_id)

    # Everything below reaches MLflow through the logger's background sender and spool.
    status = "FAILED"
    drained = False
    try:
        preempt.install(
            on_stuck=lambda signum: _end_stuck_run(location, run_id, mlflow_logger, signum)
        )
        params = flatten_config(applicable_config(cfg))
        if telemetry is not None:
            # the metric profile once, resolved (profile defaults + overrides, rle.profile.*),
            # instead of the override leaves telemetry.rle.* it was built from
            params = {k: v for k, v in params.items() if not k.startswith("telemetry.rle.")}
            params.update(profile_params(telemetry.profile))
        mlflow_logger.submit("params", {**params, **workload.params})
        with tempfile.TemporaryDirectory() as tmp:
            cfg_path = Path(tmp) / "train.yaml"
            cfg_path.write_text(_config_yaml(cfg, redactor))
            mlflow_logger.submit_artifact(cfg_path, artifact_path="config")
        preempt.trainer = trainer
        preempt.shared_signum = shared_signum
        try:
            _fit(trainer, workload)
        finally:
            preempt.shared_signum = None
        status = "FINISHED" if preempt.signum is None else "KILLED"
    except (KeyboardInterrupt, SystemExit):  # Lightning turns Ctrl+C into SystemExit(1)
        status = "KILLED"
        if preempt.signum is not None:
            raise SystemExit(128 + preempt.signum) from None
        raise
    except BaseException:
        if preempt.signum is not None:  # e.g. a DDP worker stopped by the same signal
            status = "KILLED"
        _log_traceback(mlflow_logger, run_id)
        raise
    finally:
        preempt.finishing = True
        if preempt.signum is not None:
            from rle.tracking import keys

            mlflow_logger.submit(
                "tags",
                {
                    keys.TAG_END_REASON: keys.END_REASON_SIGNAL,
                    keys.TAG_SIGNAL: signal.Signals(preempt.signum).name,
                },
            )
        drained = mlflow_logger.finish(status, should_stop=preempt.abort_requested)
        preempt.restore()
        if drained:
            log.info("MLflow run %s ended %s", run_id, status)
    if preempt.signum is not None:
        raise SystemExit(128 + preempt.signum)
    return RunResult(
        run_id,
        experiment_id,
        location.uri,
        status,
        int(trainer.global_step),
        drained=drained,
        spool_dir=str(mlflow_logger.spool_dir),
    )


def _spawn_stop_value(trainer: Any) -> Any:
    """A shared signal number for ``ddp_spawn``-style launchers, else ``None``.

    Under those launchers the ranks run in worker processes that this (launcher) process starts
    and waits for; a signal sent only to this process reaches the workers' :class:`StopOnSignal`
    through this ``multiprocessing.Value("i")`` (pickled into them with the callback).
    """
    import multiprocessing

    from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher

    launcher = getattr(trainer.strategy, "launcher", None)
    if not isinstance(launcher, _MultiProcessingLauncher):
        return None
    method = str(getattr(launcher, "_start_method", "spawn"))
    return multiprocessing.get_context(method).Value("i", 0)


def _end_stuck_run(location: Any, run_id: str, logger: Any, signum: int) -> None:
    """From the signal watchdog: end the run ``KILLED`` directly (the main thread is blocked)."""
    from rle.tracking.logger import end_run

    with contextlib.suppress(Exception):
        logger.finalize("KILLED")
    end_run(location, run_id, "KILLED")


def _instantiate_trainer(tc: DictConfig, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate(cfg.trainer, **kwargs)``: every key is a Trainer argument."""
    from hydra.utils import instantiate

    return instantiate(tc, _convert_="all", **kwargs)


def _fit(trainer: Any, workload: Workload) -> None:
    if workload.datamodule is None:
        trainer.fit(workload.module)
    else:
        trainer.fit(workload.module, datamodule=workload.datamodule)


def _log_traceback(mlflow_logger: Any, run_id: str) -> None:
    """Spool the current exception's traceback as the run's ``error/traceback.txt``."""
    try:
        with tempfile.TemporaryDirectory() as tmp:
            p = Path(tmp) / "traceback.txt"
            p.write_text(traceback.format_exc())
            mlflow_logger.submit_artifact(p, artifact_path="error")
    except Exception:  # the original error matters more than a failed upload
        log.exception("Could not upload the traceback of run %s", run_id)


# --------------------------------------------------------------------------------------- entry point


@hydra.main(version_base="1.3", config_path=str(paths.CONF_DIR), config_name="train")
def _hydra_main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from rle.tracking.sweep import record_failed_job

    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        result = run_training(cfg)
        if result is not None and not result.drained:
            log.error(
                "Training ended %s, but the tracking store did not receive everything: run %s "
                "stays RUNNING there until you replay the spool with: python -m rle.sync %s",
                result.status,
                result.run_id,
                result.spool_dir,
            )
            if not multirun:
                sys.exit(3)
    except RLEError as e:
        log.error("%s", e)
        if not multirun:
            sys.exit(2)
        record_failed_job()  # counted by the sweep parent even when no run was created
    except Exception:
        if not multirun:
            raise
        # the job's run is already FAILED with its traceback; the sweep goes on
        log.exception("Job failed; the sweep goes on")
        record_failed_job()


def main() -> None:
    """Console entry point (``rle-train``)."""
    from rle.cli import exit_on_override_error

    paths.pin_project_root()
    # like `python -m rle.train`: a user's own workload modules (`_target_: my_model.Module`)
    # import from the launch directory under the `rle-train` console script too
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    exit_on_override_error("train")
    _hydra_main()
    from rle.tracking.sweep import LAST_SWEEP

    if LAST_SWEEP and LAST_SWEEP[0].failed:  # a multirun with failed jobs (they were logged)
        sys.exit(1)


if __name__ == "__main__":
    main()
