"""One job's route into its MLflow run, shared by the telemetry monitors.

:class:`RunRoute` resolves the run once at ``setup`` (on global rank 0, through
:func:`rle.callbacks.sink.resolve_sink`), tells every rank the run id and tracking URI (so each
rank can upload its own sample files), and logs metrics on rank 0, leaving out keys another writer
owns: a key the module logs itself (it is in ``trainer.callback_metrics``) and, when MLflow's own
system-metrics monitor writes into the run, that monitor's keys.

:class:`BackgroundUploader` uploads files from a thread of its own, so an upload never blocks the
training loop; its :meth:`~BackgroundUploader.close` waits a bounded time.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from rle.callbacks.sink import MLFLOW_MONITOR_KEY_PATTERN, mlflow_monitor_active, resolve_sink

__all__ = ["BackgroundUploader", "RunRoute"]

log = logging.getLogger(__name__)


class RunRoute:
    """The run a job's telemetry goes into, and the rules for writing into it.

    Attributes:
        sink: Rank 0's :class:`~rle.callbacks.sink.RunSink` (``None`` on other ranks).
        run_id: The run's id, on every rank after :meth:`setup` (``None`` before).
        tracking_uri: The tracking URI rank 0 writes to, on every rank after :meth:`setup`.
    """

    def __init__(self) -> None:
        self.sink: Any = None
        self.run_id: str | None = None
        self.tracking_uri: str | None = None
        self._skip_keys: re.Pattern[str] | None = None
        self._ready = False

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(sink=None, _ready=False)
        return state

    @property
    def ready(self) -> bool:
        """Whether :meth:`setup` has run in this process."""
        return self._ready

    def setup(self, trainer: Any) -> None:
        """Resolve the run on rank 0 and share its id and URI with every rank (idempotent).

        Every rank must call this at the same point (it broadcasts when ``world_size > 1``).

        Raises:
            lightning.fabric.utilities.exceptions.MisconfigurationException: On every rank, if
                rank 0 has no MLflow run to write into.
        """
        if self._ready:
            return
        from lightning.fabric.utilities.exceptions import MisconfigurationException

        info: tuple[str | None, str | None, str | None] = (None, None, None)
        if trainer.is_global_zero:
            try:
                self.sink = resolve_sink(trainer)
                info = (self.sink.run_id, _tracking_uri(self.sink), None)
            except MisconfigurationException as e:
                info = (None, None, str(e))
        if trainer.world_size > 1:
            info = trainer.strategy.broadcast(info, src=0)
        run_id, uri, error = info
        if error is not None:
            raise MisconfigurationException(error)
        self.run_id, self.tracking_uri = run_id, uri
        if self.sink is not None and mlflow_monitor_active(self.sink.run_id):
            self._skip_keys = re.compile(MLFLOW_MONITOR_KEY_PATTERN)
            log.warning(
                "MLflow's own system-metrics monitor writes into run %s: rle leaves its keys "
                "(system/cpu_utilization_percentage, system/gpu_<i>_utilization_percentage, ...) "
                "to it and logs the rest on the step axis.",
                self.sink.run_id,
            )
            self.sink.set_tags(
                {"telemetry.mlflow_system_metrics": "on: its keys are left to MLflow's monitor"}
            )
        self._ready = True

    def log_metrics(self, trainer: Any, metrics: Mapping[str, float], step: int) -> None:
        """Rank 0: log ``metrics`` at ``step``, leaving out keys that another writer owns."""
        if not trainer.is_global_zero:
            return
        own = set(trainer.callback_metrics)
        out = {k: v for k, v in metrics.items() if k not in own}
        if self._skip_keys is not None:
            out = {k: v for k, v in out.items() if not self._skip_keys.match(k)}
        if not out:
            return
        if self.sink is not None and not self.sink.metrics_via_loggers:
            self.sink.log_metrics(out, step)
        for logger in trainer.loggers:
            logger.log_metrics(out, step=step)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Rank 0: set run tags (no-op elsewhere)."""
        if self.sink is not None and tags:
            self.sink.set_tags(tags)

    def close(self) -> None:
        """Rank 0: flush the sink (the fluent route sends what is queued)."""
        if self.sink is not None:
            self.sink.close()


def _tracking_uri(sink: Any) -> str | None:
    """The tracking URI behind a sink, for other ranks' uploads."""
    logger = getattr(sink, "logger", None)
    for attr in ("tracking_uri", "_tracking_uri"):
        uri = getattr(logger, attr, None)
        if isinstance(uri, str) and uri:
            return uri
    location = getattr(logger, "location", None)
    uri = getattr(location, "uri", None)
    if isinstance(uri, str) and uri:
        return uri
    import mlflow

    return str(mlflow.get_tracking_uri())


class BackgroundUploader:
    """Upload files from a daemon thread, in order; failures are reported once and kept.

    The files are left in place (the caller reads them again and removes their folder).

    Args:
        upload: ``upload(local_path, artifact_path)``; may raise (the file is then listed in
            :attr:`failed`).
    """

    def __init__(self, upload: Callable[[str, str], None]) -> None:
        self._upload = upload
        self._queue: queue.Queue[tuple[str, str] | None] = queue.Queue()
        self.failed: list[str] = []
        self.uploaded = 0
        self._warned = False
        self._thread = threading.Thread(target=self._run, name="rle-sample-upload", daemon=True)
        self._thread.start()

    def submit(self, local_path: str | Path, artifact_path: str) -> None:
        """Queue one file (never blocks)."""
        self._queue.put((str(local_path), artifact_path))

    def close(self, timeout_s: float = 60.0) -> bool:
        """Upload what is queued, waiting at most ``timeout_s`` seconds.

        Returns:
            ``True`` if every queued file was handled (uploaded or failed) in time.
        """
        self._queue.put(None)
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            path, artifact_path = item
            try:
                self._upload(path, artifact_path)
                self.uploaded += 1
            except Exception as e:  # noqa: BLE001 - an upload failure must not kill the thread
                self.failed.append(path)
                if not self._warned:
                    self._warned = True
                    log.warning(
                        "Could not upload %s to the run's artifacts (%s); the file stays on disk "
                        "(further failures are not repeated).",
                        path,
                        e,
                    )
