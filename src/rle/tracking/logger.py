"""MLflow run lifecycle and the Lightning logger that writes into one run.

``rle`` creates the run itself (in the launching process, before any DDP worker starts), so there
is exactly one run per training job whatever the number of ranks, the URI is the absolute one from
:mod:`rle.paths`, and MLflow's built-in system-metrics monitor never starts (no fluent run with
``log_system_metrics``). :class:`MLflowRunLogger` logs from global rank 0 into that run by id; its
client is created lazily in the process that uses it, so the logger survives ``ddp_spawn`` pickling.

Tracking never slows or kills training: the logger hands everything to a background sender that
batches, spools to disk and retries (:mod:`rle.tracking.spool`); what cannot be sent before the
run ends stays in the spool directory for ``python -m rle.sync``. Calls that set up or end a run
retry transient failures (a restarting server, a locked SQLite database) with backoff.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import json
import logging
import os
import time
import urllib.error
import urllib.request
from argparse import Namespace
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers.logger import Logger
from lightning.pytorch.utilities import rank_zero_only

from rle.errors import TrackingError
from rle.paths import TrackingLocation
from rle.tracking.keys import TAG_TELEMETRY_REFUSED_KEYS
from rle.tracking.redact import Redactor
from rle.tracking.spool import (
    MAX_KEY_CHARS,
    MAX_METRICS_PER_BATCH,
    MAX_PARAM_VALUE_CHARS,
    MAX_PARAMS_PER_BATCH,
    METRIC_KEY_RULE,
    BackgroundSender,
    Point,
    Spool,
    health_probe,
    metric_key_problem,
    replay,
    retry_call,
    strip_userinfo,
)

__all__ = [
    "MAX_KEY_CHARS",
    "MAX_METRICS_PER_BATCH",
    "MAX_PARAMS_PER_BATCH",
    "MLflowRunLogger",
    "check_reachable",
    "client_for",
    "create_run",
    "default_spool_dir",
    "ensure_store",
    "end_run",
    "log_params",
    "log_tags",
    "run_context_tags",
]

log = logging.getLogger(__name__)

SETUP_RETRY_S = 30.0
"""How long run setup calls (create run, log params) retry transient failures, s."""


def client_for(location: TrackingLocation) -> Any:
    """Return an ``mlflow.MlflowClient`` bound to ``location.uri``."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=location.uri)


def check_reachable(location: TrackingLocation, timeout_s: float = 5.0) -> None:
    """Fail fast when the tracking store cannot be used, before any training starts.

    A server is probed at ``/health`` with a short timeout (MLflow's own client would retry for
    minutes); a local store is opened, which creates or migrates the SQLite schema (retried for
    ``timeout_s`` while another job holds the database).

    Args:
        location: The resolved tracking location.
        timeout_s: Seconds to wait for a server's answer.

    Raises:
        rle.errors.TrackingError: If the server does not answer or the store cannot be opened; the
            message holds the URI (without credentials).
    """
    if location.uri.startswith(("http://", "https://")):
        shown = strip_userinfo(location.uri)
        url = location.uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 (http(s) only)
                if resp.status != 200:
                    raise TrackingError(
                        f"MLflow tracking server {shown} answered {resp.status} at /health."
                    )
        except (urllib.error.URLError, http.client.HTTPException, ValueError, OSError) as e:
            raise TrackingError(
                f"Cannot reach the MLflow tracking server at {shown} ({e}). Start it (e.g. "
                "`mlflow server --host 127.0.0.1 --port 5000 --backend-store-uri sqlite:///mlflow.db`), "
                "fix MLFLOW_TRACKING_URI / tracking.uri, or unset them to use the local SQLite store."
            ) from e
        return
    try:
        retry_call(
            lambda: _open_store(location),
            what=f"opening {location.uri}",
            timeout_s=max(timeout_s, 1.0),
        )
    except Exception as e:  # MLflow raises many types here (sqlalchemy, MlflowException)
        raise TrackingError(f"Cannot open the MLflow tracking store {location.uri}: {e}") from e


def ensure_store(uri: str, timeout_s: float = 30.0) -> None:
    """Create (or migrate) a store's schema once, safely when several processes start together.

    Call it before building Lightning's ``MLFlowLogger`` on every rank of a ``torchrun`` job with
    a new SQLite file: MLflow creates the schema the first time a client opens the database, and
    two processes doing that at once corrupt it (alembic "expected to match one row"). The
    exclusive lock of :func:`check_reachable` makes the first process create it while the others
    wait.

    Args:
        uri: A tracking URI (``sqlite:///...``, a database URI or an ``http(s)://`` server).
        timeout_s: How long to wait for the lock or the server, s.

    Raises:
        rle.errors.TrackingError: If the store cannot be opened or the server does not answer.
    """
    from rle.paths import resolve_tracking

    saved = os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        location = resolve_tracking(uri)
    finally:
        if saved is not None:
            os.environ["MLFLOW_TRACKING_URI"] = saved
    check_reachable(location, timeout_s)


def _open_store(location: TrackingLocation) -> None:
    """Open the store once (creating or migrating its schema), one process at a time.

    Several jobs starting together on a new SQLite file would otherwise run MLflow's schema
    migrations concurrently, which leaves the database half-migrated for good; an exclusive lock
    on ``<db>.lock`` makes the first job create the schema while the others wait.
    """
    if not location.uri.startswith("sqlite:///"):
        client_for(location).search_experiments(max_results=1)
        return
    db = Path(location.uri.removeprefix("sqlite:///"))
    try:
        import fcntl
    except ImportError:  # Windows: no lock
        client_for(location).search_experiments(max_results=1)
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            client_for(location).search_experiments(max_results=1)
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


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


def run_context_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """``tags`` plus MLflow's standard run context, resolved by MLflow's own context providers.

    ``mlflow.user``, ``mlflow.source.name`` / ``mlflow.source.type`` (and the git commit where
    MLflow finds one) come from ``mlflow.tracking.context.registry.resolve_tags``, as for a fluent
    run, so the UI's User, Source and Version columns are filled; ``tags`` win on a clash.
    """
    try:
        from mlflow.tracking.context.registry import resolve_tags

        return {str(k): str(v) for k, v in resolve_tags(dict(tags)).items()}
    except Exception as e:  # a context provider failing must not stop the run
        log.warning("MLflow's run context could not be resolved (%s); tags kept as given", e)
        return dict(tags)


def create_run(
    location: TrackingLocation,
    experiment_name: str,
    run_name: str | None,
    tags: Mapping[str, str],
) -> tuple[str, str]:
    """Create the job's MLflow run (status RUNNING); transient failures are retried.

    Args:
        location: Where to track.
        experiment_name: Experiment to create or reuse (artifacts under
            ``location.artifact_location`` when it is created here).
        run_name: Run name shown in the UI.
        tags: Run tags.

    Returns:
        ``(experiment_id, run_id)``.

    Raises:
        rle.errors.TrackingError: If the store refuses the request or stays unreachable for
            :data:`SETUP_RETRY_S` seconds.
    """
    client = client_for(location)
    full_tags = run_context_tags(tags)

    def attempt() -> tuple[str, str]:
        exp_id = _experiment_id(client, experiment_name, location.artifact_location)
        run = client.create_run(exp_id, run_name=run_name, tags=full_tags)
        return exp_id, str(run.info.run_id)

    try:
        return retry_call(attempt, what="creating the run", timeout_s=SETUP_RETRY_S)
    except TrackingError:
        raise
    except Exception as e:
        raise TrackingError(
            f"The tracking store {strip_userinfo(location.uri)} refused to create a run: {e}"
        ) from e


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def log_params(client: Any, run_id: str, params: Mapping[str, Any]) -> None:
    """Log params in ``log_batch`` chunks, values stringified and cut to MLflow's length limit.

    Transient failures are retried for :data:`SETUP_RETRY_S` seconds.
    """
    from mlflow.entities import Param

    entries = [Param(str(k), str(v)[:MAX_PARAM_VALUE_CHARS]) for k, v in params.items()]
    for chunk in _chunks(entries, MAX_PARAMS_PER_BATCH):
        retry_call(
            functools.partial(client.log_batch, run_id, params=chunk, synchronous=True),
            what="logging params",
            timeout_s=SETUP_RETRY_S,
        )


def log_tags(client: Any, run_id: str, tags: Mapping[str, Any]) -> None:
    """Set run tags in ``log_batch`` chunks (values stringified); transient failures are retried."""
    from mlflow.entities import RunTag

    entries = [RunTag(str(k), str(v)) for k, v in tags.items()]
    for chunk in _chunks(entries, MAX_PARAMS_PER_BATCH):
        retry_call(
            functools.partial(client.log_batch, run_id, tags=chunk, synchronous=True),
            what="setting tags",
            timeout_s=SETUP_RETRY_S,
        )


def end_run(location: TrackingLocation, run_id: str, status: str) -> None:
    """Mark the run terminated with ``status`` (``FINISHED``, ``FAILED`` or ``KILLED``).

    Transient failures are retried for :data:`SETUP_RETRY_S` seconds.
    """
    client = client_for(location)
    retry_call(
        lambda: client.set_terminated(run_id, status=status),
        what="ending the run",
        timeout_s=SETUP_RETRY_S,
    )


def default_spool_dir(run_id: str) -> Path:
    """``<project root>/outputs/spool/<run_id>``: where a run's unsent batches are kept."""
    from rle.paths import project_root

    return project_root() / "outputs" / "spool" / run_id


class MLflowRunLogger(Logger):
    """A Lightning logger that writes into an existing MLflow run, from rank 0 only.

    Metric points carry an explicit ``step`` (the caller passes
    ``rle.callbacks.steps.current_step``) and the wall-clock time of the call in milliseconds.
    They go through a background sender (:class:`rle.tracking.spool.BackgroundSender`, started
    in the process that logs): ``log_metrics`` only queues them; every ``flush_interval_s`` the
    sender writes them to the spool directory in batches of at most 1000 and sends the batches in
    order, retrying with backoff while the store is unreachable.

    A key MLflow would refuse (``acc@1``, ``a//b``, longer than 250 characters; MLflow's own
    rule, :func:`rle.tracking.spool.metric_key_problem`) or a value that is not a number is not
    logged: the first time, a warning names the key and the rule and the run's tag
    ``telemetry.refused_keys`` lists the refused keys (a JSON list); every other point is kept,
    so one bad key never makes the store refuse a whole batch.

    Spooled writes for the run: :meth:`log_metrics`, :meth:`log_hyperparams` and
    :meth:`submit` (params, tags), :meth:`submit_artifact` (the file is copied into the spool
    when called, so the caller may delete it). Params and tags are redacted
    (:class:`rle.tracking.redact.Redactor`). :attr:`experiment` (as for Lightning's
    ``MLFlowLogger``) and :attr:`client` are the plain ``mlflow.MlflowClient`` of this process:
    use them to read; what is written through them goes straight to MLflow, synchronously,
    without the spool, the retries or redaction.

    Args:
        tracking_uri: The run's tracking URI.
        run_id: The run to write into (created by :func:`create_run`).
        experiment_id: Its experiment.
        synchronous: Wait after each call until the sender has spooled and tried to send it
            (for direct use and tests; a failed send still ends in the spool). ``rle.train``
            passes ``False``: calls return at once and never wait for the network.
        spool_dir: The run's spool directory; :func:`default_spool_dir` by default.
        flush_interval_s: How often the sender spools and sends, s (also the most that a
            ``SIGKILL`` can lose).
        drain_timeout_s: How long :meth:`finish` (and a synchronous call) waits for the store, s.
        secret_pattern: ``tracking.secret_pattern`` for the redactor (``None``: the default).

    Raises:
        ValueError: If ``flush_interval_s`` is not positive or ``drain_timeout_s`` is negative.
    """

    def __init__(
        self,
        tracking_uri: str,
        run_id: str | None,
        experiment_id: str | None,
        *,
        synchronous: bool = True,
        spool_dir: str | Path | None = None,
        flush_interval_s: float = 1.0,
        drain_timeout_s: float = 60.0,
        secret_pattern: str | None = None,
    ) -> None:
        super().__init__()
        if not flush_interval_s > 0:
            raise ValueError(f"flush_interval_s must be positive, got {flush_interval_s}.")
        if drain_timeout_s < 0:
            raise ValueError(f"drain_timeout_s must be >= 0, got {drain_timeout_s}.")
        self.tracking_uri = tracking_uri
        self.run_id = run_id
        self.experiment_id = experiment_id
        self.synchronous = synchronous
        self._spool_dir = Path(spool_dir) if spool_dir is not None else None
        self.flush_interval_s = float(flush_interval_s)
        self.drain_timeout_s = float(drain_timeout_s)
        self.redactor = Redactor(secret_pattern)
        self._client: Any = None
        self._spool: Spool | None = None
        self._sender: BackgroundSender | None = None
        self._checked_keys: set[str] = set()
        self.refused_keys: dict[str, str] = {}
        """Metric keys not logged in this process, with MLflow's reason."""

    def attach(self, run_id: str, experiment_id: str) -> None:
        """Point a logger built before its run (``run_id=None``) at the run, once it exists.

        ``rle.train`` builds the Trainer (and so this logger) before creating the run, so that
        Lightning validates every Trainer argument first; processes of other ranks never attach.
        """
        self.run_id, self.experiment_id = run_id, experiment_id

    @property
    def spool_dir(self) -> Path:
        """The run's spool directory (``<project root>/outputs/spool/<run_id>`` by default)."""
        if self._spool_dir is not None:
            return self._spool_dir
        if self.run_id is None:
            raise RuntimeError("MLflowRunLogger has no run yet (attach() was not called).")
        return default_spool_dir(self.run_id)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        # database engines, threads and locks do not pickle; rebuilt in the worker
        state.update(_client=None, _spool=None, _sender=None)
        return state

    # ------------------------------------------------------------------------------ clients

    def _mlflow_client(self) -> Any:
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    @property
    def client(self) -> Any:
        """This process's ``mlflow.MlflowClient`` for the run's store (created on first use).

        Writes through it bypass the spool, the background sender and redaction (they are sent
        at once and raise when the store is down); use :meth:`submit` and
        :meth:`submit_artifact` for spooled writes.
        """
        return self._mlflow_client()

    @property
    def experiment(self) -> Any:
        """The ``mlflow.MlflowClient`` (what Lightning's ``MLFlowLogger.experiment`` returns).

        As for :attr:`client`, writes through it go straight to MLflow, not through the spool.
        """
        return self._mlflow_client()

    @property
    def name(self) -> str:
        """The experiment id (empty before :meth:`attach`)."""
        return self.experiment_id or ""

    @property
    def version(self) -> str:
        """The run id (empty before :meth:`attach` and on ranks other than 0)."""
        return self.run_id or ""

    @property
    def spool(self) -> Spool:
        """The run's spool directory."""
        if self._spool is None:
            if self.run_id is None or self.experiment_id is None:
                raise RuntimeError("MLflowRunLogger has no run yet (attach() was not called).")
            self._spool = Spool(self.spool_dir, self.run_id, self.tracking_uri, self.experiment_id)
        return self._spool

    def _ensure_sender(self) -> BackgroundSender:
        if self._sender is None:
            uri = self.tracking_uri

            def factory() -> Any:
                from mlflow import MlflowClient

                return MlflowClient(tracking_uri=uri)

            self._sender = BackgroundSender(
                self.spool,
                factory,
                flush_interval_s=self.flush_interval_s,
                probe=health_probe(uri),
            )
        return self._sender

    def _after_submit(self) -> None:
        if self.synchronous and self._sender is not None:
            self._sender.flush(self.drain_timeout_s)

    def submit(self, kind: str, items: Mapping[str, Any]) -> None:
        """Queue params or tags for the run (values redacted and stringified)."""
        if not items:
            return
        clean = self.redactor.mapping(items)
        self._ensure_sender().submit(kind, [{"k": k, "v": str(v)} for k, v in clean.items()])
        self._after_submit()

    def submit_artifact(self, local_path: str | Path, artifact_path: str | None = None) -> None:
        """Copy a file or folder into the spool and queue its upload.

        Raises:
            OSError: If it cannot be copied into the spool.
        """
        self._ensure_sender().submit_artifact(local_path, artifact_path)
        self._after_submit()

    # ------------------------------------------------------------------------------ Lightning

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Queue metrics at ``step`` for the background sender (no network I/O here).

        Args:
            metrics: Key to value (anything ``float()`` accepts). A key MLflow refuses or a
                value that is not a number is not logged (warned once per key and listed in the
                tag ``telemetry.refused_keys``); the other points are.
            step: Step value; ``None`` is an error, so no metric lands on Lightning's own counter.

        Raises:
            ValueError: If ``step`` is ``None``.
        """
        if step is None:
            raise ValueError(
                "MLflowRunLogger.log_metrics needs an explicit step (rle.callbacks.steps)."
            )
        ts_ms = int(time.time() * 1000)
        s = int(step)
        points: list[Point] = []
        for k, v in metrics.items():
            if k not in self._checked_keys:
                problem = metric_key_problem(k) if isinstance(k, str) else f"{k!r} is not a str"
                if problem is not None:
                    self._refuse(k, f"{problem} ({METRIC_KEY_RULE})")
                    continue
                self._checked_keys.add(k)
            try:
                value = float(v)
            except (TypeError, ValueError) as e:
                self._refuse(k, f"value {v!r} at step {s} is not a number ({e})")
                continue
            points.append((k, value, ts_ms, s))
        self._ensure_sender().submit_metrics(points)
        self._after_submit()

    def _refuse(self, key: Any, reason: str) -> None:
        """Leave ``key`` out; the first time, warn and list it in ``telemetry.refused_keys``."""
        name = str(key)
        if name in self.refused_keys:
            return
        self.refused_keys[name] = reason
        log.warning("Metric %r not logged: %s", name, reason)
        listed = json.dumps(sorted(self.refused_keys))  # JSON escapes control characters
        self.submit("tags", {TAG_TELEMETRY_REFUSED_KEYS: listed[:MAX_PARAM_VALUE_CHARS]})

    @rank_zero_only
    def log_hyperparams(
        self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any
    ) -> None:
        """Log hyperparameters as params (``rle`` logs the resolved config itself at run start)."""
        items = vars(params) if isinstance(params, Namespace) else params
        if items:
            self.submit("params", {str(k): v for k, v in items.items()})

    def flush(self, timeout_s: float | None = None) -> bool:
        """Spool what is queued, try to send it and wait for that pass.

        Args:
            timeout_s: Longest wait, s (default ``drain_timeout_s``).

        Returns:
            Whether everything queued in this process reached the store.
        """
        if self._sender is None:
            return True
        return self._sender.flush(self.drain_timeout_s if timeout_s is None else timeout_s)

    def finalize(self, status: str) -> None:
        """Spool what is queued, make one last attempt to send it, and stop the sender.

        Lightning calls this at the end of ``fit`` (and on an exception) in every process; the
        spool directory is removed when nothing is left in it. Waiting for an unreachable store
        and ending the run are :meth:`finish`'s job.
        """
        if self._sender is not None:
            self._sender.close(self.drain_timeout_s)
            self._sender = None
            self.spool.remove_if_empty()  # everything reached the store: no spool left behind

    def finish(self, status: str, *, should_stop: Callable[[], bool] = lambda: False) -> bool:
        """Drain the spool for at most ``drain_timeout_s`` seconds, then end the run.

        Sends what every process of the job left in the spool, then sets the run's status; if
        the store stays unreachable, the status is spooled too and a warning says how to replay
        the spool. Never raises (the training outcome matters more).

        Args:
            status: ``FINISHED``, ``FAILED`` or ``KILLED``.
            should_stop: Polled while waiting; ``True`` stops waiting (e.g. a second signal).

        Returns:
            Whether everything, the status included, reached the store.
        """
        deadline = time.monotonic() + self.drain_timeout_s
        try:
            self.finalize(status)
            spool = self.spool
            client = self._mlflow_client()
            report = replay(
                spool,
                client,
                timeout_s=max(0.0, deadline - time.monotonic()),
                keep_sent=False,
                should_stop=should_stop,
            )
            end_ms = int(time.time() * 1000)
            terminated = False
            if report.left == 0:
                try:
                    retry_call(
                        lambda: client.set_terminated(self.run_id, status=status, end_time=end_ms),
                        what="ending the run",
                        timeout_s=max(2.0, deadline - time.monotonic()),
                    )
                    terminated = True
                except Exception as e:
                    log.warning("Could not set the status of run %s: %s", self.run_id, e)
            if not terminated:
                spool.write("terminate", [{"status": status, "end_time": end_ms}])
            left = spool.pending()
            if not left:
                spool.remove()
                return True
            n_points = 0
            for p in left:
                if p.name.endswith(".metrics.jsonl"):
                    with contextlib.suppress(OSError, ValueError):
                        n_points += spool.read(p).n_items
            log.warning(
                "%d tracking batches of run %s (%d metric points%s) could not be sent to %s "
                "within tracking.drain_timeout_s=%.0f s (%s); they are kept in %s. When the "
                "server is back, replay them with: python -m rle.sync %s",
                len(left),
                self.run_id,
                n_points,
                ", and the run status" if not terminated else "",
                strip_userinfo(self.tracking_uri),
                self.drain_timeout_s,
                report.last_error or "stopped",
                spool.directory,
                spool.directory,
            )
            return False
        except Exception:
            log.exception(
                "Ending run %s failed; what was not sent is in %s (replay: python -m rle.sync %s)",
                self.run_id,
                self.spool_dir,
                self.spool_dir,
            )
            return False
