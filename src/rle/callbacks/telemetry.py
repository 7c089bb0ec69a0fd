"""``TelemetryCallback``: training dynamics and hardware telemetry on one step axis.

Logged metrics (all with ``step = trainer.global_step`` from :mod:`rle.callbacks.steps`, at every
logging step, in one batched call per step):

============================== ======================= ==========================================
key                            unit                    source
============================== ======================= ==========================================
``train/loss``                 nats/token              the step's loss, mean over DDP ranks
``train/grad_norm``            (gradient units)        total L2 norm of all gradients after
                                                       unscaling, before clipping
                                                       (``on_before_optimizer_step``)
``train/lr``                   1                       LR of parameter group 0 used by the step
``train/samples_per_second``   samples/s               all ranks, over the logging window
``train/tokens_per_second``    tokens/s                all ranks, over the logging window
============================== ======================= ==========================================
"""

from __future__ import annotations

import logging
import time
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from typing_extensions import override

from rle.callbacks.steps import current_step, should_log
from rle.tracking import keys

__all__ = ["TelemetryCallback"]

log = logging.getLogger(__name__)


class TelemetryCallback(L.Callback):
    """Log ``train/*`` dynamics (and, where configured, telemetry) on ``trainer.global_step``.

    The gradient norm is computed once per optimizer step on the device
    (``torch.nn.utils.get_total_norm``: no host sync per parameter) and becomes a Python float
    once per logged step.

    Args:
        tokens_per_sample: Tokens in one training sample (``block_size``), for
            ``train/tokens_per_second``; ``None`` omits that key.

    Raises:
        lightning.pytorch.utilities.exceptions.MisconfigurationException: At ``setup`` if the
            trainer has no logger.
    """

    def __init__(self, tokens_per_sample: int | None = None) -> None:
        super().__init__()
        if tokens_per_sample is not None and tokens_per_sample < 1:
            raise ValueError(f"tokens_per_sample must be positive, got {tokens_per_sample}.")
        self.tokens_per_sample = tokens_per_sample
        self._grad_norm: torch.Tensor | None = None
        self._lr: float | None = None
        self._stepped = False
        self._window_samples = 0
        self._window_start_s = 0.0

    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if not trainer.loggers:
            raise MisconfigurationException(
                "TelemetryCallback needs a logger (rle passes MLflowRunLogger)."
            )

    @override
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._window_start_s = time.perf_counter()
        self._window_samples = 0

    @override
    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        self._grad_norm = torch.nn.utils.get_total_norm(grads, norm_type=2.0) if grads else None
        self._lr = float(optimizer.param_groups[0]["lr"])
        self._stepped = True

    @override
    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        self._window_samples += _batch_size(batch)
        if not self._stepped:
            return  # gradient accumulation: no optimizer step in this batch
        self._stepped = False
        if should_log(trainer):
            self._log_step(trainer, outputs)

    def _log_step(self, trainer: L.Trainer, outputs: Any) -> None:
        now = time.perf_counter()
        elapsed_s = max(now - self._window_start_s, 1e-9)
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        # Collective on every rank at the same steps (the cadence depends on global_step only).
        loss_mean = trainer.strategy.reduce(loss.detach(), reduce_op="mean")
        samples = trainer.strategy.reduce(
            torch.tensor(float(self._window_samples), device=loss.device), reduce_op="sum"
        )
        metrics: dict[str, float] = {keys.TRAIN_LOSS: float(loss_mean)}
        if self._grad_norm is not None:
            metrics[keys.TRAIN_GRAD_NORM] = float(self._grad_norm)
        if self._lr is not None:
            metrics[keys.TRAIN_LR] = self._lr
        samples_per_s = float(samples) / elapsed_s
        metrics[keys.TRAIN_SAMPLES_PER_SECOND] = samples_per_s
        if self.tokens_per_sample is not None:
            metrics[keys.TRAIN_TOKENS_PER_SECOND] = samples_per_s * self.tokens_per_sample
        step = current_step(trainer)
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=step)
        self._window_samples = 0
        self._window_start_s = time.perf_counter()


def _batch_size(batch: Any) -> int:
    if isinstance(batch, dict) and "input_ids" in batch:
        return int(batch["input_ids"].shape[0])
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0])
    if isinstance(batch, list | tuple) and batch and isinstance(batch[0], torch.Tensor):
        return int(batch[0].shape[0])
    return 1
