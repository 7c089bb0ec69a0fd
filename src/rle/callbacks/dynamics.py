"""``TrainingDynamicsMonitor``: grad_norm, loss, learning rates and throughput per logging step.

Logged at Lightning's logging step and cadence (:mod:`rle.callbacks.steps`), into the job's MLflow
run through a :class:`~rle.callbacks.route.RunRoute`:

=============================== ============ ===============================================
key                             unit         source
=============================== ============ ===============================================
``train/loss``                  nats/token   the step's loss, mean over ranks
``train/grad_norm``             grad units   total L2 norm of all gradients after unscaling,
                                             before clipping (Lightning's ``grad_norm``)
``train/lr-<Optimizer>[/pg<i>]`` 1           LR per optimizer and param group, named as
                                             LearningRateMonitor names them
``train/samples_per_second``    samples/s    all ranks, over the window
``train/tokens_per_second``     tokens/s     all ranks, over the window
``<module step_metrics()>``     in the name  what the module's ``step_metrics()`` returns
``summary/<key>_mean``          in the name  at the end: mean of each step metric and of the
                                             throughput over the logged steps
=============================== ============ ===============================================

Throughput is timed as Lightning's ``ThroughputMonitor`` does: samples and tokens per batch come
from ``batch_size_fn`` and ``length_fn``, and on a CUDA device the stream is synchronized before
the clock is read, so asynchronous kernels are counted in the window they ran in.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor
from typing_extensions import override

from rle.callbacks.hardware import batch_size
from rle.callbacks.route import RunRoute
from rle.callbacks.steps import current_step, should_log
from rle.callbacks.summary import step_metric_means
from rle.tracking import keys

__all__ = ["TrainingDynamicsMonitor", "learning_rates"]


class TrainingDynamicsMonitor(L.Callback):
    """Log ``train/*`` (loss, grad_norm, LR, throughput) on ``trainer.global_step``.

    Args:
        batch_size_fn: ``batch -> samples`` (default: ``input_ids`` rows or the first tensor's
            rows; see :func:`rle.callbacks.hardware.batch_size`).
        length_fn: ``batch -> tokens`` for ``train/tokens_per_second`` (default: none, or
            ``tokens_per_sample`` x samples).
        tokens_per_sample: Tokens per training sample (when ``length_fn`` is not given).
        route: A :class:`~rle.callbacks.route.RunRoute` shared with other monitors (internal).

    Raises:
        ValueError: If ``tokens_per_sample`` < 1.
        lightning.fabric.utilities.exceptions.MisconfigurationException: At ``setup`` if there is
            no MLflow run to write into.
    """

    def __init__(
        self,
        batch_size_fn: Callable[[Any], int] | None = None,
        length_fn: Callable[[Any], int] | None = None,
        tokens_per_sample: int | None = None,
        route: RunRoute | None = None,
    ) -> None:
        super().__init__()
        if tokens_per_sample is not None and tokens_per_sample < 1:
            raise ValueError(f"tokens_per_sample must be positive, got {tokens_per_sample}.")
        self.batch_size_fn = batch_size_fn or batch_size
        self.length_fn = length_fn
        self.tokens_per_sample = tokens_per_sample
        self.route = route if route is not None else RunRoute()
        self._owns_route = route is None
        self._grad_norm: float | None = None
        self._stepped = False
        self._window_samples = 0
        self._window_tokens = 0
        self._window_start_s = 0.0
        self._sums: dict[str, tuple[float, int]] = {}

    # ------------------------------------------------------------------------------ Lightning

    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":
            self.route.setup(trainer)

    @override
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.train_start(pl_module)

    @override
    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        self.before_optimizer_step(pl_module)

    @override
    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        metrics = self.batch_end(trainer, pl_module, outputs, batch)
        if metrics is not None:
            self.route.log_metrics(trainer, metrics, current_step(trainer))

    @override
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.route.log_metrics(trainer, self.train_end(), current_step(trainer))
        if self._owns_route:
            self.route.close()

    # ------------------------------------------------------------------------------ parts API

    def train_start(self, pl_module: L.LightningModule) -> None:
        """Start the first throughput window."""
        self._window_start_s = _now(pl_module)
        self._window_samples = 0
        self._window_tokens = 0

    def before_optimizer_step(self, pl_module: L.LightningModule) -> None:
        """Total gradient norm, as Lightning's ``grad_norm`` utility computes it."""
        from lightning.pytorch.utilities import grad_norm

        # Lightning's own utility, so the value equals a module's self.log(grad_norm(self, 2))
        norms = grad_norm(pl_module, norm_type=2.0)
        total = norms.get("grad_2.0_norm_total")
        self._grad_norm = None if total is None else float(total)
        self._stepped = True

    def batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any
    ) -> dict[str, float] | None:
        """Count the batch; at a logging step reduce loss and throughput over ranks.

        Every rank must call it (the reductions are collectives at the same steps).

        Returns:
            On rank 0 at a logging step, the metrics to log; else ``None``.
        """
        n = self.batch_size_fn(batch)
        self._window_samples += n
        if self.length_fn is not None:
            self._window_tokens += self.length_fn(batch)
        elif self.tokens_per_sample is not None:
            self._window_tokens += n * self.tokens_per_sample
        if not self._stepped:
            return None  # gradient accumulation: no optimizer step in this batch
        self._stepped = False
        if not should_log(trainer):
            return None
        t = _now(pl_module)
        elapsed_s = max(t - self._window_start_s, 1e-9)
        device = pl_module.device
        loss = _loss_of(outputs)
        # Manual optimization may return no loss: then every rank sends NaN and none is logged.
        loss_t = (
            loss.detach().float().reshape(())
            if loss is not None
            else torch.tensor(math.nan, device=device)
        )
        loss_mean = trainer.strategy.reduce(loss_t, reduce_op="mean")
        counts = trainer.strategy.reduce(
            torch.tensor([float(self._window_samples), float(self._window_tokens)], device=device),
            reduce_op="sum",
        )
        self._window_samples = 0
        self._window_tokens = 0
        self._window_start_s = t
        if not trainer.is_global_zero:
            return None
        metrics: dict[str, float] = {}
        if math.isfinite(float(loss_mean)):
            metrics[keys.TRAIN_LOSS] = float(loss_mean)
        if self._grad_norm is not None:
            metrics[keys.TRAIN_GRAD_NORM] = self._grad_norm
        if not any(isinstance(c, LearningRateMonitor) for c in trainer.callbacks):  # type: ignore[attr-defined]
            metrics.update(learning_rates(trainer))
        metrics[keys.TRAIN_SAMPLES_PER_SECOND] = float(counts[0]) / elapsed_s
        if self.length_fn is not None or self.tokens_per_sample is not None:
            metrics[keys.TRAIN_TOKENS_PER_SECOND] = float(counts[1]) / elapsed_s
        averaged = [keys.TRAIN_SAMPLES_PER_SECOND, keys.TRAIN_TOKENS_PER_SECOND]
        step_metrics = getattr(pl_module, "step_metrics", None)
        if callable(step_metrics):
            extra = {str(k): float(v) for k, v in step_metrics().items()}
            metrics.update(extra)
            averaged += list(extra)
        for k in averaged:
            v = metrics.get(k, math.nan)
            if math.isfinite(v):
                s, c = self._sums.get(k, (0.0, 0))
                self._sums[k] = (s + v, c + 1)
        return metrics

    def train_end(self) -> dict[str, float]:
        """Summary means of the step metrics and throughput over the logged steps (rank 0)."""
        return step_metric_means(self._sums)


def _now(pl_module: L.LightningModule) -> float:
    """``time.perf_counter()`` after the module's CUDA stream finished (ThroughputMonitor's rule)."""
    device = pl_module.device
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _loss_of(outputs: Any) -> torch.Tensor | None:
    """The batch's loss from ``training_step``'s output (a tensor or ``{"loss": ...}``), if any."""
    if isinstance(outputs, torch.Tensor):
        return outputs
    if isinstance(outputs, Mapping):
        loss = outputs.get("loss")
        return loss if isinstance(loss, torch.Tensor) else None
    return None


def learning_rates(trainer: L.Trainer) -> dict[str, float]:
    """LR of every optimizer and param group, keyed as Lightning's ``LearningRateMonitor`` names them.

    Names come from a ``LearningRateMonitor`` itself (``lr-<Optimizer>``, ``/pg<i>`` or the group's
    ``name`` with several groups, ``-<n>`` for repeated optimizer types, a scheduler's ``name``),
    prefixed ``train/``.

    Returns:
        ``{"train/lr-AdamW": 0.001, ...}``; empty without optimizers.
    """
    monitor = LearningRateMonitor(logging_interval="step")
    sched_names, with_sched, with_sched_types = monitor._find_names_from_schedulers(
        trainer.lr_scheduler_configs
    )
    opt_names, without_sched = monitor._find_names_from_optimizers(
        trainer.optimizers, seen_optimizers=with_sched, seen_optimizer_types=with_sched_types
    )
    out: dict[str, float] = {}
    pairs = [
        (c.scheduler.optimizer, n)
        for c, n in zip(trainer.lr_scheduler_configs, sched_names, strict=True)
    ]
    pairs += list(zip(without_sched, opt_names, strict=True))
    for optimizer, names in pairs:
        for group, name in zip(optimizer.param_groups, names, strict=True):
            out[f"train/{name}"] = float(group["lr"])
    return out
