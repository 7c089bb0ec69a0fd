"""Where the telemetry callback's tags and artifacts go: any of the three MLflow routes.

A :class:`RunSink` is the small protocol the callback writes through (``set_tags``,
``log_artifact``, and ``log_metrics`` where the route has no Lightning logger). :func:`resolve_sink`
picks one at ``setup`` on global rank 0, in this order:

1. rle's own :class:`~rle.tracking.logger.MLflowRunLogger` among ``trainer.loggers`` (what
   ``python -m rle.train`` passes);
2. Lightning's :class:`~lightning.pytorch.loggers.MLFlowLogger`: tags and artifacts through
   ``logger.experiment`` (an ``MlflowClient``) and ``logger.run_id``;
3. a fluent run (``mlflow.start_run()``) active in this process and no Lightning MLflow logger:
   everything goes into the active run, through rle's spooling logger (never blocks training).

With none of these a :class:`~lightning.fabric.utilities.exceptions.MisconfigurationException`
names the three ways.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Protocol

__all__ = ["MLFLOW_MONITOR_KEY_PATTERN", "RunSink", "mlflow_monitor_active", "resolve_sink"]

log = logging.getLogger(__name__)

MLFLOW_MONITOR_KEY_PATTERN = (
    r"^system/(?:[^/]+/)?(?:cpu_utilization_percentage|system_memory_usage_(?:megabytes|percentage)"
    r"|disk_\w+|network_\w+|gpu_\d+_(?:memory_usage_(?:percentage|megabytes)|utilization_percentage"
    r"|power_usage_(?:watts|percentage)))$"
)
"""Keys that MLflow's own system-metrics monitor writes (mlflow/system_metrics/metrics/*.py)."""


class RunSink(Protocol):
    """What the telemetry callback needs from an MLflow run besides Lightning's ``log_metrics``."""

    run_id: str
    metrics_via_loggers: bool
    """Whether metrics reach the run through ``trainer.loggers`` (else :meth:`log_metrics`)."""

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Log metric values at ``step`` (used when ``metrics_via_loggers`` is false)."""

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Set run tags."""

    def log_artifact(self, local_path: str, artifact_path: str | None = None) -> None:
        """Upload a file into the run's artifacts."""

    def close(self) -> None:
        """Flush what is pending (called at the end of training)."""


class _RunLoggerSink:
    """rle's :class:`~rle.tracking.logger.MLflowRunLogger` (spooled, asynchronous)."""

    metrics_via_loggers = True

    def __init__(self, logger: Any) -> None:
        self.logger = logger
        self.run_id = str(logger.run_id)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self.logger.log_metrics(metrics, step=step)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self.logger.submit("tags", tags)

    def log_artifact(self, local_path: str, artifact_path: str | None = None) -> None:
        self.logger.submit_artifact(local_path, artifact_path)

    def close(self) -> None:
        """Nothing to do: the logger's owner finishes it."""


class _LightningMLflowSink:
    """Lightning's ``MLFlowLogger``: its client and run id."""

    metrics_via_loggers = True

    def __init__(self, logger: Any) -> None:
        self.logger = logger
        self.client = logger.experiment
        self.run_id = str(logger.run_id)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self.logger.log_metrics(dict(metrics), step=step)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        from rle.tracking.logger import log_tags

        log_tags(self.client, self.run_id, tags)

    def log_artifact(self, local_path: str, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, local_path, artifact_path)

    def close(self) -> None:
        """Nothing pending: every call above is synchronous."""


class _FluentSink(_RunLoggerSink):
    """The active fluent run, written through an rle spooling logger of its own."""

    metrics_via_loggers = False

    def close(self) -> None:
        self.logger.finalize("FINISHED")  # sends what is queued; the run stays the user's to end


def mlflow_monitor_active(run_id: str) -> bool:
    """Whether MLflow's own system-metrics monitor writes into ``run_id`` in this process.

    ``mlflow.start_run(log_system_metrics=True)`` (or ``MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING=true``)
    starts a ``SystemMetricsMonitor`` for the fluent run, kept in
    ``mlflow.tracking.fluent.run_id_to_system_metrics_monitor``.
    """
    try:
        from mlflow.tracking import fluent
    except ImportError:  # pragma: no cover - mlflow is a dependency
        return False
    return run_id in getattr(fluent, "run_id_to_system_metrics_monitor", {})


def resolve_sink(trainer: Any) -> RunSink:
    """Pick the run the callback writes into (call on global rank 0 only).

    Args:
        trainer: The Lightning trainer.

    Returns:
        The :class:`RunSink`.

    Raises:
        lightning.fabric.utilities.exceptions.MisconfigurationException: If there is neither an
            rle or Lightning MLflow logger nor an active fluent run.
    """
    from lightning.fabric.utilities.exceptions import MisconfigurationException
    from lightning.pytorch.loggers import MLFlowLogger

    from rle.tracking.logger import MLflowRunLogger

    for logger in trainer.loggers:
        if isinstance(logger, MLflowRunLogger) and logger.run_id:
            return _RunLoggerSink(logger)
    for logger in trainer.loggers:
        if isinstance(logger, MLFlowLogger):
            return _LightningMLflowSink(logger)
    import mlflow

    active = mlflow.active_run()
    if active is not None:
        fluent_logger = MLflowRunLogger(
            mlflow.get_tracking_uri(),
            active.info.run_id,
            active.info.experiment_id,
            synchronous=False,
        )
        return _FluentSink(fluent_logger)
    raise MisconfigurationException(
        "TelemetryCallback has no MLflow run to write into. Use one of: "
        "(1) Lightning's MLFlowLogger: Trainer(logger=MLFlowLogger(...), callbacks=[TelemetryCallback()]); "
        "(2) a fluent run: `with mlflow.start_run(): trainer.fit(...)`; "
        "(3) `python -m rle.train`, which passes rle's MLflowRunLogger."
    )
