"""Synthetic duty-cycle load as a LightningModule: one period per optimizer step (rle-metric.md §7.2).

Each optimizer step of :class:`SyntheticLoadModule` is one duty-cycle period of ``period_s``
seconds: a real training step (forward and backward of a two-layer matmul MLP, gradient clipping,
optimizer update) followed by more forward/backward chunks of the same MLP until
``intensity * period_s`` of the period has been busy, then sleep until the period's deadline.
Synthetic runs therefore share the ``trainer.global_step`` axis, the telemetry callback and the
``train/*`` keys of real runs, plus ``synthetic/intensity_target`` and
``synthetic/duty_cycle_achieved`` from :meth:`SyntheticLoadModule.step_metrics`.

On the CPU the training process works on one core (one intra-op thread) and ``workers - 1``
spawned processes (:class:`rle.workloads.load.CpuWorkerPool`) load the other cores on the same
grid. On a GPU the work is CUDA kernels bounded by ``torch.cuda.synchronize()``; a GPU load without
CUDA is a :class:`~rle.errors.ConfigError`, never a silent CPU fallback.

Config (``conf/workload/synthetic*.yaml``): ``device`` (cpu|gpu|auto), ``pattern``
(constant|ramp|sine|step), ``intensity``, ``ramp``, ``sine``, ``step``, ``period_s``,
``matrix_size``, ``workers``, ``duration_s``, ``lr``.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import lightning as L
import torch
from torch import nn
from typing_extensions import override

from rle.errors import ConfigError
from rle.tracking import keys
from rle.workloads.load import (
    CpuWorkerPool,
    DutyCycleScheduler,
    Pattern,
    available_cores,
    intensity_at,
    pattern_from_config,
    steps_for_duration,
)

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from rle.workloads import Workload

__all__ = [
    "DEVICES",
    "SyntheticDataModule",
    "SyntheticLoadModule",
    "build_synthetic_workload",
]

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "gpu")
"""Valid values of ``workload.device``."""

DEFAULT_MATRIX_SIZE = {"cpu": 256, "gpu": 2048}
"""Matrix side used when ``workload.matrix_size`` is null: about 2 ms per forward/backward on one
CPU core, and a few ms on a data-centre GPU."""

_STOP_TIMEOUT_S = 5.0


class _Ticks:
    """An endless iterable of one-element batches (the step's index as float32)."""

    def __iter__(self) -> Iterator[torch.Tensor]:
        i = 0
        while True:
            yield torch.tensor([float(i)])
            i += 1


class SyntheticDataModule(L.LightningDataModule):
    """Dummy data for the synthetic load: one 1-element batch per step, forever, no downloads.

    The trainer's ``max_steps`` (or the module's duration) ends the run. The loader is a plain
    iterable, not a ``DataLoader``: there is nothing to shard or prefetch.
    """

    def train_dataloader(self) -> Any:
        """An endless iterable of 1-element tensors."""
        return _Ticks()


class _LoadGuard(L.Callback):
    """Stops the module's worker processes when training fails (Lightning skips ``teardown`` then)."""

    @override
    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        if isinstance(pl_module, SyntheticLoadModule):
            pl_module.close_load()
            pl_module.restore_threads()


class SyntheticLoadModule(L.LightningModule):
    """A training step that is one duty-cycle period of real matmul work and idle time.

    The model is ``Linear(n, n) -> ReLU -> Linear(n, n)`` (no biases) on a fixed random input of
    shape ``(n, n)``; the loss is the MSE against a fixed random target, so a loss, gradients and
    ``grad_norm`` exist and Adam steps the parameters. One forward/backward costs about
    ``5 * 2 * n**3`` FLOP.

    Args:
        pattern: The intensity pattern (see :func:`rle.workloads.load.intensity_at`).
        period_s: Period (= optimizer step) length in seconds.
        matrix_size: ``n``; ``None`` picks 256 on the CPU and 2048 on a GPU.
        device: ``cpu``, ``gpu`` or ``auto`` (follow the trainer's accelerator). A mismatch with
            where Lightning places the module is a :class:`~rle.errors.ConfigError` at ``setup``.
        workers: CPU cores to load, the training process included (``workers - 1`` extra
            processes); ``None`` = every core this process may use. Ignored on a GPU.
        duration_s: Run duration in seconds: patterns ``ramp``/``step`` span it, and the run stops
            after :attr:`steps_for_duration` steps. ``None``: no duration of its own.
        pattern_duration_s: Duration the patterns span when ``duration_s`` is ``None`` (the
            builder passes ``trainer.max_steps * period_s``).
        lr: Adam learning rate.
        seed: Seed of the fixed input and target.

    Attributes:
        steps_for_duration: ``ceil(duration_s / period_s)`` when ``duration_s`` is set, else
            ``None``; set ``trainer.max_steps`` to it (the module also stops the run there).
        intensity_target: Commanded duty cycle of the last finished period.
        duty_cycle_achieved: Measured busy time / measured period of the last finished period
            (training process, monotonic clock).

    Raises:
        rle.errors.ConfigError: On a non-positive period or duration, ``matrix_size < 1``,
            ``workers < 1``, an unknown device, or ``device="gpu"`` without CUDA.
    """

    x: torch.Tensor
    target: torch.Tensor

    def __init__(
        self,
        pattern: Pattern,
        period_s: float = 0.1,
        matrix_size: int | None = None,
        device: str = "auto",
        workers: int | None = None,
        duration_s: float | None = None,
        pattern_duration_s: float | None = None,
        lr: float = 1e-3,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if device not in DEVICES:
            raise ConfigError(f"workload.device={device!r} is not one of {', '.join(DEVICES)}.")
        if device == "gpu" and not torch.cuda.is_available():
            raise ConfigError(
                "workload.device=gpu but no CUDA GPU is visible (torch.cuda.is_available() is False); "
                "the synthetic GPU load never falls back to the CPU. Use workload=synthetic_cpu or "
                "run on a machine with a CUDA build of torch and a GPU."
            )
        if not (isinstance(period_s, int | float) and math.isfinite(period_s) and period_s > 0):
            raise ConfigError(
                f"workload.period_s must be a positive number of seconds, got {period_s!r} "
                "(e.g. workload.period_s=0.1)."
            )
        if matrix_size is not None and (not isinstance(matrix_size, int) or matrix_size < 1):
            raise ConfigError(
                f"workload.matrix_size must be an integer >= 1 (side of the square matrices), "
                f"got {matrix_size!r}; e.g. 256 on a CPU, 2048 on a GPU, or null for that default."
            )
        if workers is not None and (not isinstance(workers, int) or workers < 1):
            raise ConfigError(
                f"workload.workers must be an integer >= 1 (CPU cores to load, this process "
                f"included), or null for every available core; got {workers!r}."
            )
        for name, value in (("duration_s", duration_s), ("pattern_duration_s", pattern_duration_s)):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ConfigError(
                    f"workload.{name} must be a positive number of seconds or null, got {value}."
                )
        span_s = duration_s if duration_s is not None else pattern_duration_s
        if pattern.needs_duration and span_s is None:
            raise ConfigError(
                f"workload.pattern={pattern.kind} spans the run duration, which is unknown: set "
                "workload.duration_s or a positive trainer.max_steps."
            )
        if lr <= 0:
            raise ConfigError(f"workload.lr must be positive, got {lr}.")
        self.pattern = pattern
        self.period_s = float(period_s)
        self.device_kind = device
        self.workers = workers
        self.duration_s = duration_s
        self.pattern_duration_s = span_s
        self.steps_for_duration = (
            steps_for_duration(duration_s, self.period_s) if duration_s else None
        )
        self.lr = lr
        self.matrix_size_cfg = matrix_size
        self.seed = seed
        # Sized for the device expected now; with matrix_size=None and device=auto, ``setup``
        # resizes for the device Lightning actually chose (before the optimizer exists).
        expected = device if device != "auto" else ("gpu" if torch.cuda.is_available() else "cpu")
        self.matrix_size = 0
        self._build(matrix_size if matrix_size is not None else DEFAULT_MATRIX_SIZE[expected])

        self.intensity_target = math.nan
        self.duty_cycle_achieved = math.nan
        self.chunk_s = math.nan
        self._on_gpu = False
        self._pool: CpuWorkerPool | None = None
        self._sched: DutyCycleScheduler | None = None
        self._t_start_s = 0.0
        self._next_intensity = math.nan
        self._saved_threads: int | None = None

    # ----------------------------------------------------------------------------- public API

    def step_metrics(self) -> dict[str, float]:
        """Return the synthetic metrics of the last optimizer step (empty before the first one).

        Returns:
            ``{"synthetic/intensity_target": target, "synthetic/duty_cycle_achieved": achieved}``,
            both duty cycles in [0, 1].
        """
        if math.isnan(self.duty_cycle_achieved):
            return {}
        return {
            keys.SYNTHETIC_INTENSITY_TARGET: self.intensity_target,
            keys.SYNTHETIC_DUTY_CYCLE_ACHIEVED: self.duty_cycle_achieved,
        }

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the running CPU worker processes (empty when none run)."""
        return self._pool.pids if self._pool is not None else []

    def worker_duty_cycles(self) -> list[float]:
        """Each CPU worker's measured duty cycle since it started (empty when none run)."""
        return self._pool.duty_cycles() if self._pool is not None else []

    def close_load(self) -> None:
        """Stop the CPU worker processes (idempotent; called on train end, teardown and errors)."""
        if self._pool is not None:
            self._pool.close(_STOP_TIMEOUT_S)
            self._pool = None

    def restore_threads(self) -> None:
        """Give back the intra-op thread count changed at ``setup`` (idempotent)."""
        if self._saved_threads is not None:
            torch.set_num_threads(self._saved_threads)
            self._saved_threads = None

    # ----------------------------------------------------------------------------- Lightning

    @override
    def configure_callbacks(self) -> list[L.Callback]:
        return [_LoadGuard()]

    @override
    def setup(self, stage: str) -> None:
        """Check the device Lightning chose; on the CPU use one intra-op thread (one core)."""
        if stage != "fit":
            return
        on_gpu = self.device.type == "cuda"
        if self.device_kind == "gpu" and not on_gpu:
            raise ConfigError(
                f"workload.device=gpu but the trainer placed the module on {self.device}; use a GPU "
                "trainer (trainer=gpu or trainer.accelerator=gpu)."
            )
        if self.device_kind == "cpu" and on_gpu:
            raise ConfigError(
                f"workload.device=cpu but the trainer placed the module on {self.device}; use "
                "trainer=cpu (trainer.accelerator=cpu) or workload=synthetic_gpu."
            )
        self._on_gpu = on_gpu
        if self.matrix_size_cfg is None:
            self._build(DEFAULT_MATRIX_SIZE["gpu" if on_gpu else "cpu"])
        if not on_gpu:
            self._saved_threads = torch.get_num_threads()
            torch.set_num_threads(1)

    @override
    def on_train_start(self) -> None:
        self.chunk_s = self._calibrate()
        if self.chunk_s > 0.1 * self.period_s:
            log.warning(
                "One forward/backward at workload.matrix_size=%d takes %.1f ms, more than a tenth of "
                "workload.period_s=%.3f s: the duty cycle will be coarse. Lower matrix_size.",
                self.matrix_size,
                self.chunk_s * 1e3,
                self.period_s,
            )
        log.info(
            "Synthetic load on %s: pattern=%s, period %.3f s, matrix %d, %.2f ms per chunk",
            self.device,
            self.pattern.kind,
            self.period_s,
            self.matrix_size,
            self.chunk_s * 1e3,
        )
        if not self._on_gpu:
            cores = self.workers if self.workers is not None else available_cores()
            if cores - 1 > 0:
                self._pool = CpuWorkerPool(cores - 1, self.period_s, self.matrix_size)
                self._pool.start()
        self._sched = DutyCycleScheduler(self.period_s)

    @override
    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        """Forward the MLP once and return the MSE loss (0-d tensor); Lightning does the backward."""
        return self._loss()

    @override
    def optimizer_step(
        self,
        epoch: int,
        batch_idx: int,
        optimizer: Any,
        optimizer_closure: Any = None,
    ) -> None:
        """Run one duty-cycle period around the real optimizer step.

        The period starts where the previous one ended (so Lightning's own per-step work counts as
        busy). The closure (training step, backward, clipping) and the update run first, then more
        forward/backward chunks until the target busy time, then the idle part until the deadline.
        """
        sched = self._sched
        if sched is None:  # optimizer_step outside fit (e.g. called by hand)
            optimizer.step(closure=optimizer_closure)
            return
        if not sched.started:
            start_s = sched.start_s  # anchors the grid
            self._t_start_s = start_s
            self._next_intensity = self._target_at(start_s)
            self._publish(self._next_intensity, sched)
        target = self._next_intensity
        optimizer.step(closure=optimizer_closure)
        self._sync()
        with torch.enable_grad():
            sched.work(target, self._chunk)
        # Command the next period before idling so that workers pick it up at its start; publish
        # the grid again afterwards in case the period overran and the grid was re-anchored.
        self._next_intensity = self._target_at(sched.deadline_s)
        self._publish(self._next_intensity, sched)
        result = sched.finish()
        self._publish(self._next_intensity, sched)
        self.intensity_target = target
        self.duty_cycle_achieved = result.duty_cycle

    @override
    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if (
            self.steps_for_duration is not None
            and self.trainer.global_step >= self.steps_for_duration
        ):
            self.trainer.should_stop = True

    @override
    def on_train_end(self) -> None:
        self.close_load()

    @override
    def teardown(self, stage: str) -> None:
        self.close_load()
        self.restore_threads()

    @override
    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr)

    # ----------------------------------------------------------------------------- internals

    def _build(self, n: int) -> None:
        """Create the ``n x n`` MLP, input and target (no-op when already that size)."""
        if n == self.matrix_size:
            return
        self.matrix_size = n
        self.net = nn.Sequential(
            nn.Linear(n, n, bias=False), nn.ReLU(), nn.Linear(n, n, bias=False)
        )
        g = torch.Generator().manual_seed(self.seed)
        self.register_buffer("x", torch.randn(n, n, generator=g), persistent=False)
        self.register_buffer("target", torch.randn(n, n, generator=g), persistent=False)

    def _loss(self) -> torch.Tensor:
        return nn.functional.mse_loss(self.net(self.x), self.target)

    def _chunk(self) -> None:
        """One forward/backward of the MLP (gradients computed and discarded; ``.grad`` untouched)."""
        loss = self._loss()
        torch.autograd.grad(loss, list(self.net.parameters()))
        self._sync()

    def _sync(self) -> None:
        if self._on_gpu:
            torch.cuda.synchronize(self.device)

    def _calibrate(self, repeats: int = 5) -> float:
        """Median seconds of one forward/backward chunk on the module's device (after a warm-up)."""
        with torch.enable_grad():
            self._chunk()
            times = []
            for _ in range(repeats):
                t0 = time.monotonic()
                self._chunk()
                times.append(time.monotonic() - t0)
        return statistics.median(times)

    def _target_at(self, t_s: float) -> float:
        return intensity_at(t_s - self._t_start_s, self.pattern, self.pattern_duration_s)

    def _publish(self, intensity: float, sched: DutyCycleScheduler) -> None:
        if self._pool is not None and sched.anchor_s is not None:
            self._pool.publish(intensity, sched.anchor_s)


# ------------------------------------------------------------------------------------------ builder


def _resolve_device(device: str, accelerator: str) -> str:
    """Check ``workload.device`` against ``trainer.accelerator``; return ``cpu`` or ``gpu``."""
    cuda = torch.cuda.is_available()
    acc = accelerator.lower()
    trainer_on = {"cpu": "cpu", "gpu": "gpu", "cuda": "gpu"}.get(acc, "gpu" if cuda else "cpu")
    if device == "gpu":
        if not cuda:
            raise ConfigError(
                "workload.device=gpu (workload=synthetic_gpu) but no CUDA GPU is visible "
                "(torch.cuda.is_available() is False); the synthetic GPU load never falls back to the "
                "CPU. Use workload=synthetic_cpu, or a machine with a GPU and a CUDA build of torch."
            )
        if trainer_on != "gpu":
            raise ConfigError(
                f"workload.device=gpu but trainer.accelerator={accelerator}; use trainer=gpu "
                "(trainer.accelerator=gpu) so the load runs on the GPU."
            )
        return "gpu"
    if device == "cpu" and trainer_on == "gpu":
        raise ConfigError(
            f"workload.device=cpu but trainer.accelerator={accelerator} places the module on a GPU; "
            "use trainer=cpu (trainer.accelerator=cpu), or workload=synthetic_gpu."
        )
    return trainer_on


def _opt_int(node: Mapping[str, Any], key: str) -> int | None:
    value = node.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"workload.{key} must be an integer or null, got {value!r}.")
    return value


def _opt_float(node: Mapping[str, Any], key: str) -> float | None:
    value = node.get(key)
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"workload.{key} must be a number or null, got {value!r}.") from e


def build_synthetic_workload(cfg: DictConfig, intra_op_threads: int | None) -> Workload:
    """Build the synthetic duty-cycle workload from the composed ``train`` config.

    Every config value is validated here, before anything runs.

    Args:
        cfg: The composed config (``workload``, ``trainer`` nodes are read).
        intra_op_threads: CPU cores given to this process by the trainer plan (``None`` on a GPU);
            the default of ``workload.workers``.

    Returns:
        The workload. ``module.steps_for_duration`` is the step count for ``workload.duration_s``
        (``None`` without one): set ``trainer.max_steps`` to it.

    Raises:
        rle.errors.ConfigError: On an intensity outside [0, 1], a non-positive period,
            ``matrix_size < 1``, an unknown pattern or device, a GPU load without CUDA or on a CPU
            trainer, or a ``ramp``/``step`` pattern without a known duration.
    """
    from rle.workloads import Workload

    w = cfg.workload
    device = str(w.get("device", "auto") or "auto")
    if device not in DEVICES:
        raise ConfigError(f"workload.device={device!r} is not one of {', '.join(DEVICES)}.")
    pattern = pattern_from_config(w)
    period_s = _opt_float(w, "period_s")
    if period_s is None or not (math.isfinite(period_s) and period_s > 0):
        raise ConfigError(
            f"workload.period_s must be a positive number of seconds, got {w.get('period_s')!r} "
            "(e.g. workload.period_s=0.1)."
        )
    matrix_size = _opt_int(w, "matrix_size")
    if matrix_size is not None and matrix_size < 1:
        raise ConfigError(
            f"workload.matrix_size must be >= 1 (side of the square matrices), got {matrix_size}; "
            "e.g. 256 on a CPU, 2048 on a GPU, or null for that default."
        )
    resolved = _resolve_device(device, str(cfg.trainer.get("accelerator", "auto")))
    workers = _opt_int(w, "workers")
    if workers is None and resolved == "cpu":
        workers = intra_op_threads if intra_op_threads is not None else available_cores()
    duration_s = _opt_float(w, "duration_s")
    max_steps = int(cfg.trainer.get("max_steps", -1) or -1)
    pattern_duration_s = max_steps * period_s if max_steps > 0 else None
    module = SyntheticLoadModule(
        pattern,
        period_s=period_s,
        matrix_size=matrix_size,
        device=resolved,
        workers=workers,
        duration_s=duration_s,
        pattern_duration_s=pattern_duration_s,
        lr=float(w.get("lr", 1e-3)),
        seed=int(cfg.get("seed", 0) or 0),
    )
    params: dict[str, Any] = {
        "synthetic.device": resolved,
        "synthetic.matrix_size": module.matrix_size,
        "synthetic.cpu_workers": workers if resolved == "cpu" else 0,
    }
    if module.steps_for_duration is not None:
        params["synthetic.steps_for_duration"] = module.steps_for_duration
    return Workload(
        module=module,
        datamodule=SyntheticDataModule(),
        tags={"synthetic.device": resolved, "synthetic.pattern": pattern.kind},
        params=params,
        tokens_per_sample=None,
    )
