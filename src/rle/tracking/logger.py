"""MLflow run lifecycle and the Lightning logger that writes into one run.

``rle`` creates the run itself (in the launching process, before any DDP worker starts), so there
is exactly one run per training job whatever the number of ranks, the URI is the absolute one from
:mod:`rle.paths`, and MLflow's built-in system-metrics monitor never starts (no fluent run with
``log_system_metrics``). :class:`MLflowRunLogger` logs from global rank 0 into that run by id; its
client is created lazily in the process that uses it, so the logger survives ``ddp_spawn`` pickling.
"""

from __future__ import annotations

import logging
import os
import time
import urllib.error
import urllib.request
from argparse import Namespace
from collections.abc import Iterable, Mapping
from typing import Any

from lightning.pytorch.loggers.logger import Logger
from lightning.pytorch.utilities import rank_zero_only

from rle.errors import TrackingError
from rle.paths import TrackingLocation

__all__ = [
    "MAX_METRICS_PER_BATCH",
    "MAX_PARAMS_PER_BATCH",
    "MLflowRunLogger",
    "check_reachable",
    "client_for",
    "create_run",
    "end_run",
    "log_params",
    "log_tags",
]

log = logging.getLogger(__name__)

MAX_METRICS_PER_BATCH = 1000
"""MLflow ``log_batch`` limit on metrics per request."""
MAX_PARAMS_PER_BATCH = 100
"""MLflow ``log_batch`` limit on params plus tags per request."""
MAX_PARAM_VALUE_CHARS = 6000
"""MLflow 3 limit on a param value's length, in characters."""

# Our runs never get MLflow's own system-metrics monitor, so no system/ key has two writers.
os.environ.setdefault("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "false")


def client_for(location: TrackingLocation) -> Any:
    """Return an ``mlflow.MlflowClient`` bound to ``location.uri``."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=location.uri)


def check_reachable(location: TrackingLocation, timeout_s: float = 5.0) -> None:
    """Fail fast when the tracking store cannot be used, before any training starts.

    A server is probed at ``/health`` with a short timeout (MLflow's own client would retry for
    minutes); a local store is opened, which creates or migrates the SQLite schema.

    Args:
        location: The resolved tracking location.
        timeout_s: Seconds to wait for a server's answer.

    Raises:
        rle.errors.TrackingError: If the server does not answer or the store cannot be opened; the
            message holds the URI.
    """
    if location.uri.startswith(("http://", "https://")):
        url = location.uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 (http(s) only)
                if resp.status != 200:
                    raise TrackingError(
                        f"MLflow tracking server {location.uri} answered {resp.status} at /health."
                    )
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
            raise TrackingError(
                f"Cannot reach the MLflow tracking server at {location.uri} ({e}). Start it (e.g. "
                "`mlflow server --host 127.0.0.1 --port 5000 --backend-store-uri sqlite:///mlflow.db`), "
                "fix MLFLOW_TRACKING_URI / tracking.uri, or unset them to use the local SQLite store."
            ) from e
        return
    try:
        client_for(location).search_experiments(max_results=1)
    except Exception as e:  # MLflow raises many types here (sqlalchemy, MlflowException)
        raise TrackingError(f"Cannot open the MLflow tracking store {location.uri}: {e}") from e


def _experiment_id(client: Any, name: str, artifact_location: str | None) -> str:
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            raise TrackingError(
                f"Experiment {name!r} is deleted in the tracking store; restore it in the MLflow UI "
                "or choose another with tracking.experiment_name / MLFLOW_EXPERIMENT_NAME."
            )
        return str(exp.experiment_id)
    try:
        return str(client.create_experiment(name, artifact_location=artifact_location))
    except MlflowException:  # created concurrently by another job
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return str(exp.experiment_id)


def create_run(
    location: TrackingLocation,
    experiment_name: str,
    run_name: str | None,
    tags: Mapping[str, str],
) -> tuple[str, str]:
    """Create the job's MLflow run (status RUNNING).

    Args:
        location: Where to track.
        experiment_name: Experiment to create or reuse (artifacts under
            ``location.artifact_location`` when it is created here).
        run_name: Run name shown in the UI.
        tags: Run tags.

    Returns:
        ``(experiment_id, run_id)``.

    Raises:
        rle.errors.TrackingError: If the store refuses the request.
    """
    from mlflow.exceptions import MlflowException

    client = client_for(location)
    try:
        exp_id = _experiment_id(client, experiment_name, location.artifact_location)
        run = client.create_run(exp_id, run_name=run_name, tags=dict(tags))
    except MlflowException as e:
        raise TrackingError(
            f"The tracking store {location.uri} refused to create a run: {e}"
        ) from e
    return exp_id, str(run.info.run_id)


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def log_params(client: Any, run_id: str, params: Mapping[str, Any]) -> None:
    """Log params in ``log_batch`` chunks, values stringified and cut to MLflow's length limit."""
    from mlflow.entities import Param

    entries = [Param(str(k), str(v)[:MAX_PARAM_VALUE_CHARS]) for k, v in params.items()]
    for chunk in _chunks(entries, MAX_PARAMS_PER_BATCH):
        client.log_batch(run_id, params=chunk, synchronous=True)


def log_tags(client: Any, run_id: str, tags: Mapping[str, Any]) -> None:
    """Set run tags in ``log_batch`` chunks (values stringified)."""
    from mlflow.entities import RunTag

    entries = [RunTag(str(k), str(v)) for k, v in tags.items()]
    for chunk in _chunks(entries, MAX_PARAMS_PER_BATCH):
        client.log_batch(run_id, tags=chunk, synchronous=True)


def end_run(location: TrackingLocation, run_id: str, status: str) -> None:
    """Mark the run terminated with ``status`` (``FINISHED``, ``FAILED`` or ``KILLED``)."""
    client_for(location).set_terminated(run_id, status=status)


class MLflowRunLogger(Logger):
    """A Lightning logger that writes metrics into an existing MLflow run, from rank 0 only.

    Every call is one ``log_batch`` request per 1000 metrics, with an explicit ``step`` (the caller
    passes ``rle.callbacks.steps.current_step``) and one wall-clock timestamp in milliseconds.

    Args:
        tracking_uri: The run's tracking URI.
        run_id: The run to write into (created by :func:`create_run`).
        experiment_id: Its experiment.
    """

    def __init__(self, tracking_uri: str, run_id: str, experiment_id: str) -> None:
        super().__init__()
        self.tracking_uri = tracking_uri
        self.run_id = run_id
        self.experiment_id = experiment_id
        self._client: Any = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_client"] = None  # database engines do not pickle; rebuilt in the worker
        return state

    @property
    def client(self) -> Any:
        """The ``MlflowClient`` of this process (created on first use)."""
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    @property
    def experiment(self) -> Any:
        """The ``MlflowClient`` (Lightning's name for a logger's backend object)."""
        return self.client

    @property
    def name(self) -> str:
        """The experiment id."""
        return self.experiment_id

    @property
    def version(self) -> str:
        """The run id."""
        return self.run_id

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log metrics at ``step`` in batched requests.

        Args:
            metrics: Key to value; non-numeric values are rejected.
            step: Step value; ``None`` is an error, so no metric lands on Lightning's own counter.

        Raises:
            ValueError: If ``step`` is ``None``.
        """
        if step is None:
            raise ValueError(
                "MLflowRunLogger.log_metrics needs an explicit step (rle.callbacks.steps)."
            )
        from mlflow.entities import Metric

        ts_ms = int(time.time() * 1000)
        entries = [Metric(k, float(v), ts_ms, int(step)) for k, v in metrics.items()]
        for chunk in _chunks(entries, MAX_METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=chunk, synchronous=True)

    @rank_zero_only
    def log_hyperparams(
        self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any
    ) -> None:
        """Log hyperparameters as params (``rle`` logs the resolved config itself at run start)."""
        items = vars(params) if isinstance(params, Namespace) else params
        if items:
            log_params(self.client, self.run_id, items)
