"""``TelemetryCallback``: training dynamics, hardware telemetry and RLE on one step axis.

The one-line way to get both monitors into one MLflow run::

    trainer = L.Trainer(logger=MLFlowLogger(...), callbacks=[TelemetryCallback()])

It is a :class:`~rle.callbacks.dynamics.TrainingDynamicsMonitor` (``train/*``: loss, grad_norm,
LR, throughput) and a :class:`~rle.callbacks.hardware.HardwareMonitor` (``system/*``, ``rle/*``,
energy, raw samples) sharing one :class:`~rle.callbacks.route.RunRoute`, so each logging step is
one batched call with every key at the same ``step``. Either monitor can also be used on its own.
Tags and artifacts go to the job's MLflow run through a :class:`~rle.callbacks.sink.RunSink`:
rle's logger, Lightning's ``MLFlowLogger`` or an active fluent run. A key the module logs itself
(``self.log("train/loss", ...)``) is never written by rle; when MLflow's own system-metrics monitor
writes into the run, rle leaves its keys to it (tag ``telemetry.mlflow_system_metrics``).

The keys, units and sources are listed in the two monitors' module docstrings and in the README
("What a run logs").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import lightning as L
import torch
from typing_extensions import override

from rle.callbacks.dynamics import TrainingDynamicsMonitor, learning_rates
from rle.callbacks.hardware import HardwareMonitor, rle_metric_key
from rle.callbacks.route import RunRoute
from rle.callbacks.steps import current_step

__all__ = ["TelemetryCallback", "learning_rates", "rle_metric_key"]


class TelemetryCallback(L.Callback):
    """Log ``train/*``, ``system/*`` and ``rle/*`` metrics on ``trainer.global_step``.

    Use it in any Lightning script: ``Trainer(logger=MLFlowLogger(...),
    callbacks=[TelemetryCallback()])``, or inside ``with mlflow.start_run():``.

    Args:
        sources: ``telemetry.sources`` (see :class:`~rle.callbacks.hardware.HardwareMonitor`);
            ``None`` samples the real hardware; an empty mapping logs ``train/*`` only.
        sample_hz: Sampling rate of the background sampler, Hz (0 < ``sample_hz`` <= 100).
        rle: ``telemetry.rle`` node: ``profile`` plus overrides (docs/rle-metric.md §10).
        cpu_rated_w: Rated CPU package power, W, for α when RAPL gives no long-term limit.
        tokens_per_sample: Tokens per training sample, for the ``tokens_per_*`` metrics.
        write_artifacts: Upload the raw samples (``telemetry/samples/``), their preview and
            schema, and ``telemetry/events.jsonl``.
        upload_every_s: Each rank closes and uploads its sample part this often, s.
        batch_size_fn: ``batch -> samples`` (default: ``input_ids`` rows or first tensor rows).
        length_fn: ``batch -> tokens`` (default: ``tokens_per_sample`` x samples, if given).

    Raises:
        ValueError: If ``sample_hz``, ``upload_every_s`` or ``tokens_per_sample`` is out of range.
        rle.errors.MetricInputError: If the ``rle`` node names an unknown profile or key.
        lightning.fabric.utilities.exceptions.MisconfigurationException: At ``setup`` if there is
            no MLflow run to write into (see :func:`rle.callbacks.sink.resolve_sink`).
    """

    def __init__(
        self,
        sources: Mapping[str, Any] | None = None,
        sample_hz: float = 1.0,
        rle: Mapping[str, Any] | None = None,
        cpu_rated_w: float | None = None,
        tokens_per_sample: int | None = None,
        write_artifacts: bool = True,
        upload_every_s: float = 300.0,
        batch_size_fn: Callable[[Any], int] | None = None,
        length_fn: Callable[[Any], int] | None = None,
    ) -> None:
        super().__init__()
        self.route = RunRoute()
        self.dynamics = TrainingDynamicsMonitor(
            batch_size_fn=batch_size_fn,
            length_fn=length_fn,
            tokens_per_sample=tokens_per_sample,
            route=self.route,
        )
        self.hardware = HardwareMonitor(
            sources=sources,
            sample_hz=sample_hz,
            rle=rle,
            cpu_rated_w=cpu_rated_w,
            write_artifacts=write_artifacts,
            upload_every_s=upload_every_s,
            batch_size_fn=batch_size_fn,
            length_fn=length_fn,
            tokens_per_sample=tokens_per_sample,
            route=self.route,
        )

    @property
    def profile(self) -> Any:
        """The resolved metric profile (:class:`rle.metric.MetricProfile`)."""
        return self.hardware.profile

    @property
    def sample_hz(self) -> float:
        """Sampling rate, Hz."""
        return self.hardware.sample_hz

    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self.route.setup(trainer)
        self.hardware._setup(trainer, pl_module)

    @override
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.dynamics.train_start(pl_module)
        self.hardware.on_train_start(trainer, pl_module)

    @override
    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        self.dynamics.before_optimizer_step(pl_module)
        self.hardware.on_before_optimizer_step(trainer, pl_module, optimizer)

    @override
    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        train = self.dynamics.batch_end(trainer, pl_module, outputs, batch)
        system = self.hardware.batch_end(trainer, batch)
        if train is not None or system is not None:
            self.route.log_metrics(
                trainer, {**(train or {}), **(system or {})}, current_step(trainer)
            )

    @override
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = {**self.dynamics.train_end(), **self.hardware.train_end(trainer)}
        self.route.log_metrics(trainer, metrics, current_step(trainer))
        self.hardware.shutdown(trainer, close_route=True)

    @override
    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self.hardware.after_exception(trainer)

    @override
    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.hardware.teardown(trainer, pl_module, stage)
