"""An on-disk spool of tracking requests, the background sender that drains it, and replay.

Everything a training run sends to MLflow while it trains (metric points, tags, params,
artifacts, the final status) goes through here, so that a slow or absent tracking server never
slows training and never loses a measurement:

* the training thread only **enqueues** (:meth:`BackgroundSender.submit`, O(1), no I/O);
* a background thread wakes every ``flush_interval_s``, cuts what was queued into batches within
  MLflow's ``log_batch`` limits (1000 metrics, 100 params/tags), writes each batch to the spool
  directory (write-ahead: file written, fsynced and renamed into place **before** it is sent),
  then sends the spooled batches in order and deletes each one the store accepted;
* a failed request is retried with exponential backoff (:class:`RetryPolicy`, the one policy of
  the tracking layer); while the server is unreachable new batches pile up on disk and are sent,
  oldest first, when it returns;
* a request the store refuses for good (an invalid value, a deleted run) is renamed
  ``*.rejected`` and reported, so one bad batch never blocks the others.

After a ``SIGKILL`` every batch flushed so far is either in the store or in the spool, and
:func:`replay` (``python -m rle.sync SPOOL_DIR``) sends what is left. Replaying is idempotent:
batches that were sent are marked ``*.sent`` and skipped, and MLflow's SQL stores ignore a metric
point identical to one they hold (same key, step, timestamp and value), so a batch sent twice
(a crash between "sent" and "marked") adds nothing.

Spool layout (one directory per run, ``<project root>/outputs/spool/<run_id>/``)::

    manifest.json                                   run id, experiment id, tracking URI
    <time_ns>-<pid>-<n>.<kind>.jsonl                pending batch (kind: metrics, params, tags,
                                                    artifact, terminate), oldest name first
    <...>.jsonl.sent / <...>.jsonl.rejected         replayed / refused for good
    artifacts/<batch name>/<file>                   copies of artifact files not yet uploaded
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import posixpath
import random
import re
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "KINDS",
    "MANIFEST",
    "MAX_KEY_CHARS",
    "METRIC_KEY_RULE",
    "TRACKING_RETRY",
    "BackgroundSender",
    "Backoff",
    "Point",
    "ReplayReport",
    "RetryPolicy",
    "Spool",
    "SpoolEntry",
    "configure_http_retries",
    "health_probe",
    "is_transient",
    "metric_key_problem",
    "replay",
    "retry_call",
    "send_entry",
    "strip_userinfo",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

Point = tuple[str, float, int, int]
"""A metric point as the sender queues it: key, value, timestamp (ms since the epoch), step."""

MAX_METRICS_PER_BATCH = 1000
"""MLflow ``log_batch`` limit on metrics per request."""
MAX_PARAMS_PER_BATCH = 100
"""MLflow ``log_batch`` limit on params plus tags per request."""
MAX_PARAM_VALUE_CHARS = 6000
"""MLflow 3 limit on a param value's length, in characters."""
MAX_TAG_VALUE_CHARS = 8000
"""MLflow 3 limit on a tag value's length, in characters."""

KINDS = ("metrics", "params", "tags", "artifact", "terminate")
"""Kinds of spooled batch, in the file name: ``<stem>.<kind>.jsonl``."""

MANIFEST = "manifest.json"
FORMAT = "rle-spool/1"

_PERMANENT_CODES = frozenset(
    {
        "INVALID_PARAMETER_VALUE",
        "RESOURCE_DOES_NOT_EXIST",
        "BAD_REQUEST",
        "INVALID_STATE",
        "MALFORMED_REQUEST",
        "ENDPOINT_NOT_FOUND",
        "NOT_FOUND",
    }
)
"""MLflow error codes that no retry can fix (anything else, connection errors included, is
treated as transient: a restarting server, a locked SQLite database, a timeout)."""

_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)[^/@\s]+@")


# ------------------------------------------------------------------------------------- retrying


def strip_userinfo(uri: str) -> str:
    """Drop ``user:password@`` from a URI (credentials never go into files or logs)."""
    return _USERINFO.sub(r"\g<scheme>", uri)


def is_transient(exc: BaseException) -> bool:
    """Whether a failed tracking call may succeed if retried.

    Args:
        exc: The exception a tracking call raised.

    Returns:
        ``False`` for an ``rle`` error and for an ``MlflowException`` whose error code means the
        request itself is wrong (invalid value, unknown run, bad request); ``True`` otherwise (connection refused,
        timeouts, HTTP 5xx/429, SQLite "database is locked", ...).
    """
    from rle.errors import RLEError

    if isinstance(exc, RLEError):  # our own verdict (e.g. a deleted experiment)
        return False
    code = getattr(exc, "error_code", None)
    return not (isinstance(code, str) and code in _PERMANENT_CODES)


@dataclass(frozen=True)
class RetryPolicy:
    """How the tracking layer waits between attempts: exponential backoff with jitter.

    The one policy behind every retry in ``rle.tracking`` (run set-up calls through
    :func:`retry_call`, :func:`replay`, and the :class:`BackgroundSender` while the store is
    down). The ``n``-th wait (``n`` from 0) is ``min(initial_s * 2**n, max_backoff_s)``, multiplied
    by a random factor in ``[1 - jitter, 1 + jitter]`` so that jobs that lost the same server do
    not come back in lockstep. How long to keep trying is the caller's deadline, passed to
    :meth:`Backoff.next_delay`.

    Attributes:
        initial_s: First wait, s (> 0).
        max_backoff_s: Longest wait, s (>= ``initial_s``).
        jitter: Relative jitter, 0 <= jitter < 1 (0: exact waits).

    Raises:
        ValueError: If a field is out of range.
    """

    initial_s: float = 0.25
    max_backoff_s: float = 5.0
    jitter: float = 0.25

    def __post_init__(self) -> None:
        if not self.initial_s > 0:
            raise ValueError(f"RetryPolicy.initial_s must be > 0 s, got {self.initial_s}.")
        if not self.max_backoff_s >= self.initial_s:
            raise ValueError(
                f"RetryPolicy.max_backoff_s must be >= initial_s={self.initial_s} s, "
                f"got {self.max_backoff_s}."
            )
        if not 0 <= self.jitter < 1:
            raise ValueError(f"RetryPolicy.jitter must be in [0, 1), got {self.jitter}.")

    def nominal(self, n: int) -> float:
        """The ``n``-th wait before jitter, s (``n`` from 0)."""
        return float(min(self.initial_s * 2.0 ** min(n, 64), self.max_backoff_s))

    def delays(self, rng: random.Random | None = None) -> Iterator[float]:
        """The waits of one outage, jittered, s (an endless iterator).

        Args:
            rng: Source of jitter (``random`` by default; pass a seeded one in tests).
        """
        n = 0
        while True:
            yield self._jittered(self.nominal(n), rng)
            n += 1

    def _jittered(self, delay: float, rng: random.Random | None) -> float:
        if not self.jitter:
            return delay
        u = (rng or random).uniform(1.0 - self.jitter, 1.0 + self.jitter)  # noqa: S311 (jitter)
        return delay * u

    def backoff(self, rng: random.Random | None = None) -> Backoff:
        """A fresh :class:`Backoff` (the state of one sequence of attempts)."""
        return Backoff(self, rng)


class Backoff:
    """The state of one retry sequence under a :class:`RetryPolicy`.

    ``next_delay`` gives the next wait (growing), ``reset`` starts over after a success.

    Args:
        policy: The policy.
        rng: Source of jitter (``random`` by default).
    """

    def __init__(self, policy: RetryPolicy, rng: random.Random | None = None) -> None:
        self.policy = policy
        self._rng = rng
        self.failures = 0
        """Consecutive failures so far (calls to :meth:`next_delay` since the last reset)."""

    def next_delay(self, deadline: float | None = None) -> float | None:
        """Record a failure and return how long to wait before the next attempt, s.

        Args:
            deadline: ``time.monotonic()`` value after which no attempt should start
                (``None``: no limit). The wait is cut to end at the deadline.

        Returns:
            The wait, s, or ``None`` when the deadline has passed (give up).
        """
        delay = self.policy._jittered(self.policy.nominal(self.failures), self._rng)
        self.failures += 1
        if deadline is None:
            return delay
        left = deadline - time.monotonic()
        return None if left <= 0 else min(delay, left)

    def reset(self) -> None:
        """Start over from the first wait (after a success)."""
        self.failures = 0


TRACKING_RETRY = RetryPolicy()
"""The default policy of the tracking layer: 0.25 s doubling to 5 s, +-25 % jitter."""


def retry_call(
    fn: Callable[[], T],
    *,
    what: str,
    timeout_s: float,
    policy: RetryPolicy = TRACKING_RETRY,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call ``fn`` until it succeeds, retrying transient failures as ``policy`` says.

    Args:
        fn: The tracking call.
        what: What it does, for log messages.
        timeout_s: Give up once this many seconds have passed since the first attempt (the last
            attempt may start just before the limit).
        policy: The waits between attempts (:data:`TRACKING_RETRY`).
        sleep: Sleep function (injectable for tests).

    Returns:
        What ``fn`` returns.

    Raises:
        Exception: The last error, when it is permanent (see :func:`is_transient`) or the time
            is up.
    """
    deadline = time.monotonic() + timeout_s
    backoff = policy.backoff()
    while True:
        try:
            return fn()
        except Exception as e:
            delay = backoff.next_delay(deadline) if is_transient(e) else None
            if delay is None:
                raise
            log.debug(
                "%s failed (attempt %d, retrying in %.1f s): %s", what, backoff.failures, delay, e
            )
            sleep(delay)


def health_probe(uri: str, timeout_s: float = 2.0) -> Callable[[], bool] | None:
    """A function that says whether an MLflow server answers ``/health`` (``None`` for a database).

    Args:
        uri: The tracking URI.
        timeout_s: Seconds to wait for the answer.
    """
    if not uri.startswith(("http://", "https://")):
        return None
    url = uri.rstrip("/") + "/health"

    def probe() -> bool:
        import urllib.request

        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 (http(s))
                return bool(resp.status == 200)
        except Exception:  # any failure means "not yet"
            return False

    return probe


def configure_http_retries(max_retries: int, timeout_s: float) -> None:
    """Shorten MLflow's own HTTP retries for this process so an outage is seen in seconds.

    MLflow's REST client retries a failed request for minutes by default (7 retries with
    exponential backoff, 120 s timeout); ``rle`` retries and spools by itself, so it sets
    ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` and ``MLFLOW_HTTP_REQUEST_TIMEOUT`` unless the user set
    them.

    Args:
        max_retries: MLflow's retries per request.
        timeout_s: Connect/read timeout of one request, s (rounded up to whole seconds).
    """
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(int(max_retries)))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(max(1, math.ceil(timeout_s))))


# --------------------------------------------------------------------------------- metric keys


MAX_KEY_CHARS = 250
"""MLflow limit on a metric key's length, in characters (``MAX_ENTITY_KEY_LENGTH``)."""

METRIC_KEY_RULE = (
    "MLflow metric keys may only contain alphanumerics, underscores (_), dashes (-), periods (.), "
    "spaces, colons (:) and slashes (/), must be a normalised relative path (no leading '/', no "
    f"'//', '.' or '..' parts) and at most {MAX_KEY_CHARS} characters"
)
"""MLflow's rule for metric keys, in words (``mlflow.utils.validation._validate_metric_name``)."""


@functools.lru_cache(maxsize=8192)
def metric_key_problem(key: str) -> str | None:
    r"""Why the tracking store would refuse ``key`` as a metric key, or ``None`` if it accepts it.

    MLflow validates every metric of a ``log_batch`` request and refuses the whole request for
    one bad key, so keys are checked before they enter a batch. The check is MLflow's own
    (``mlflow.utils.validation._validate_metric_name``: the characters ``[/\w.\- :]`` and a
    name that does not change under ``posixpath.normpath``; no colon on Windows) plus its length
    limit; where that private function cannot be imported the same rule is applied here.
    Results are cached (keys repeat every step).

    Args:
        key: A metric key.

    Returns:
        MLflow's reason (it names the key), or ``None``.
    """
    if not isinstance(key, str) or not key:
        return f"metric key {key!r} is not a non-empty string"
    if len(key) > MAX_KEY_CHARS:
        return f"metric key {key[:40]!r}... is {len(key)} characters, longer than {MAX_KEY_CHARS}"
    try:
        from mlflow.exceptions import MlflowException
        from mlflow.utils.validation import _validate_metric_name
    except ImportError:  # pragma: no cover - a future MLflow moved it: the same rule, here
        norm = posixpath.normpath(key)
        if not re.fullmatch(r"[/\w.\- :]*", key) or (
            norm != key or norm == "." or norm.startswith(("..", "/"))
        ):
            return f"metric key {key!r} is invalid"
        return None
    try:
        _validate_metric_name(key)  # type: ignore[no-untyped-call]
    except MlflowException as e:
        return str(e.message)
    return None


# ------------------------------------------------------------------------------------- the spool


@dataclass(frozen=True)
class SpoolEntry:
    """One spooled batch.

    Attributes:
        path: Its file.
        kind: One of :data:`KINDS`.
        payload: Its lines: metrics ``{"k", "v", "t", "s"}`` (key, value, timestamp in ms,
            step); params/tags ``{"k", "v"}``; artifact ``{"file", "artifact_path"}`` (file
            relative to the spool directory); terminate ``{"status", "end_time"}``.
    """

    path: Path
    kind: str
    payload: list[dict[str, Any]]

    @property
    def n_items(self) -> int:
        """Metric points, params or tags in the batch (1 for an artifact or a status)."""
        return len(self.payload)


class Spool:
    """The spool directory of one run.

    Args:
        directory: The run's spool directory (created on the first write).
        run_id: The MLflow run id.
        tracking_uri: Where the run lives (stored without credentials).
        experiment_id: Its experiment, if known.
    """

    def __init__(
        self,
        directory: str | Path,
        run_id: str | None = None,
        tracking_uri: str | None = None,
        experiment_id: str | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.run_id = run_id
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self._counter = 0
        self._lock = threading.Lock()
        self._key_json: dict[str, str] = {}

    @classmethod
    def open(cls, directory: str | Path) -> Spool:
        """Open an existing spool directory (reads ``manifest.json``).

        Raises:
            FileNotFoundError: If ``directory`` has no ``manifest.json``.
            ValueError: If the manifest is not an ``rle`` spool manifest.
        """
        directory = Path(directory)
        manifest = directory / MANIFEST
        data = json.loads(manifest.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("format") != FORMAT or "run_id" not in data:
            raise ValueError(f"{manifest} is not an rle spool manifest ({FORMAT}).")
        return cls(
            directory,
            str(data["run_id"]),
            data.get("tracking_uri"),
            None if data.get("experiment_id") is None else str(data["experiment_id"]),
        )

    # ---------------------------------------------------------------------------- writing

    def _ensure(self) -> None:
        if (self.directory / MANIFEST).exists():
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        manifest = {
            "format": FORMAT,
            "run_id": self.run_id,
            "experiment_id": self.experiment_id,
            "tracking_uri": None
            if self.tracking_uri is None
            else strip_userinfo(self.tracking_uri),
            "created_unix_s": time.time(),
            "replay": f"python -m rle.sync {self.directory}",
        }
        _atomic_write(self.directory / MANIFEST, json.dumps(manifest, indent=2) + "\n")

    def _stem(self) -> str:
        with self._lock:
            self._counter += 1
            n = self._counter
        return f"{time.time_ns():020d}-{os.getpid()}-{n:06d}"

    def write(
        self, kind: str, payload: Sequence[Mapping[str, Any]], stem: str | None = None
    ) -> SpoolEntry:
        """Write one batch (fsynced, then renamed into place) and return it.

        Args:
            kind: One of :data:`KINDS`.
            payload: The batch's lines (see :class:`SpoolEntry`).
            stem: File name stem; a new, time-ordered one by default.

        Raises:
            ValueError: On an unknown kind.
            OSError: If the file cannot be written.
        """
        if kind not in KINDS:
            raise ValueError(f"unknown spool batch kind {kind!r}; one of {KINDS}")
        self._ensure()
        path = self.directory / f"{stem or self._stem()}.{kind}.jsonl"
        rows = [p if isinstance(p, dict) else dict(p) for p in payload]
        self._write_file(path, "".join(json.dumps(p, allow_nan=True) + "\n" for p in rows))
        return SpoolEntry(path, kind, rows)

    def _write_file(self, path: Path, text: str) -> None:
        try:
            _atomic_write(path, text)
        except FileNotFoundError:  # the directory was removed meanwhile (an idle spool): again
            self._ensure()
            _atomic_write(path, text)

    def write_metrics(self, points: Sequence[Point]) -> SpoolEntry:
        """Write one batch of metric points ``(key, value, timestamp_ms, step)`` (fast path).

        Raises:
            OSError: If the file cannot be written.
        """
        self._ensure()
        keys = self._key_json
        lines = []
        rows = []
        for k, v, t, st in points:
            kj = keys.get(k)
            if kj is None:
                kj = keys[k] = json.dumps(k)
            vj = repr(v) if math.isfinite(v) else json.dumps(v)
            lines.append(f'{{"k":{kj},"v":{vj},"t":{t},"s":{st}}}\n')
            rows.append({"k": k, "v": v, "t": t, "s": st})
        path = self.directory / f"{self._stem()}.metrics.jsonl"
        self._write_file(path, "".join(lines))
        return SpoolEntry(path, "metrics", rows)

    def write_artifact(self, local_path: str | Path, artifact_path: str | None) -> SpoolEntry:
        """Copy a file into the spool and write an artifact batch pointing at the copy.

        Raises:
            OSError: If the file cannot be copied.
        """
        self._ensure()
        stem = self._stem()
        src = Path(local_path)
        dest_dir = self.directory / "artifacts" / stem
        dest_dir.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dest_dir / src.name)
        else:
            shutil.copy2(src, dest_dir / src.name)
        rel = (dest_dir / src.name).relative_to(self.directory).as_posix()
        return self.write("artifact", [{"file": rel, "artifact_path": artifact_path}], stem=stem)

    # ---------------------------------------------------------------------------- reading

    def pending(self, include_sent: bool = False, include_rejected: bool = False) -> list[Path]:
        """Batch files still to send, oldest first.

        Args:
            include_sent: Also list batches already marked sent (``*.sent``).
            include_rejected: Also list batches the store refused (``*.rejected``).
        """
        if not self.directory.is_dir():
            return []
        suffixes = [".jsonl"]
        if include_sent:
            suffixes.append(".jsonl.sent")
        if include_rejected:
            suffixes.append(".jsonl.rejected")
        out = [
            p
            for p in self.directory.iterdir()
            if p.is_file()
            and not p.name.startswith(".")
            and any(p.name.endswith(s) for s in suffixes)
        ]
        return sorted(out, key=lambda p: p.name)

    @staticmethod
    def read(path: Path) -> SpoolEntry:
        """Read one batch file (pending, sent or rejected).

        Raises:
            ValueError: If the file name or a line is not a spool batch.
        """
        name = path.name
        for suffix in (".sent", ".rejected"):
            name = name.removesuffix(suffix)
        parts = name.split(".")
        if len(parts) < 3 or parts[-1] != "jsonl" or parts[-2] not in KINDS:
            raise ValueError(f"{path} is not a spool batch file")
        payload: list[dict[str, Any]] = []
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from e
            payload.append(row)
        return SpoolEntry(path, parts[-2], payload)

    # ---------------------------------------------------------------------------- marking

    def mark_sent(self, entry: SpoolEntry, keep: bool = True) -> None:
        """Record that ``entry`` reached the store.

        Args:
            entry: The batch.
            keep: Rename it ``*.sent`` (replays skip it; an artifact's copy is kept for
                ``--force``); else delete it and any artifact copy.
        """
        base = _base_name(entry.path)
        with contextlib.suppress(FileNotFoundError):
            (self.directory / (base + ".rejected.error")).unlink()
        if keep:
            target = entry.path.with_name(base + ".sent")
            if entry.path != target:
                with contextlib.suppress(FileNotFoundError):
                    entry.path.rename(target)
            return
        with contextlib.suppress(FileNotFoundError):
            entry.path.unlink()
        if entry.kind == "artifact":
            for row in entry.payload:
                copy_dir = (self.directory / str(row.get("file", ""))).parent
                if copy_dir.parent.name == "artifacts":
                    shutil.rmtree(copy_dir, ignore_errors=True)

    def mark_rejected(self, entry: SpoolEntry, error: BaseException) -> None:
        """Rename ``entry`` to ``*.rejected`` and record why in ``*.rejected.error``."""
        base = _base_name(entry.path)
        with contextlib.suppress(OSError):
            entry.path.rename(entry.path.with_name(base + ".rejected"))
            (self.directory / (base + ".rejected.error")).write_text(f"{error}\n", encoding="utf-8")

    def remove(self) -> None:
        """Delete the spool directory (when everything was sent)."""
        shutil.rmtree(self.directory, ignore_errors=True)

    def remove_if_empty(self) -> bool:
        """Delete the directory if it holds no pending or refused batch; return whether it did."""
        if self.pending(include_rejected=True):
            return False
        self.remove()
        return True


def _base_name(path: Path) -> str:
    name = path.name
    for suffix in (".sent", ".rejected"):
        name = name.removesuffix(suffix)
    return name


def _atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that a crash leaves either nothing or the whole file."""
    tmp = path.with_name(f".tmp-{path.name}")
    with tmp.open("w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    with contextlib.suppress(OSError):  # persist the rename (not supported everywhere)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# ------------------------------------------------------------------------------------ sending


def send_entry(client: Any, run_id: str, entry: SpoolEntry, spool_dir: Path) -> int:
    """Send one spooled batch with an ``MlflowClient``.

    Metric points whose key MLflow would refuse (:func:`metric_key_problem`; only in spools
    written before keys were checked) are left out with an error log, so the rest is accepted.

    Args:
        client: An ``mlflow.MlflowClient``.
        run_id: The run to write into.
        entry: The batch.
        spool_dir: The spool directory (artifact copies are relative to it).

    Returns:
        The items sent: metric points (without refused keys), params, tags; 1 for an artifact
        or a status.

    Raises:
        Exception: Whatever the client raises (see :func:`is_transient`).
        FileNotFoundError: If an artifact's copy is missing from the spool.
    """
    from mlflow.entities import Metric, Param, RunTag

    if entry.kind == "metrics":
        metrics = []
        refused: dict[str, int] = {}
        for p in entry.payload:
            key = str(p["k"])
            if metric_key_problem(key) is not None:  # one bad key would sink the whole batch
                refused[key] = refused.get(key, 0) + 1
                continue
            metrics.append(Metric(key, float(p["v"]), int(p["t"]), int(p["s"])))
        if refused:
            log.error(
                "%s: %d metric point(s) not sent, their keys break MLflow's rule (%s): %s",
                entry.path.name,
                sum(refused.values()),
                METRIC_KEY_RULE,
                ", ".join(repr(k) for k in sorted(refused)),
            )
        for chunk in _chunks(metrics, MAX_METRICS_PER_BATCH):
            client.log_batch(run_id, metrics=chunk, synchronous=True)
        return len(metrics)
    if entry.kind == "params":
        params = [Param(str(p["k"]), str(p["v"])[:MAX_PARAM_VALUE_CHARS]) for p in entry.payload]
        for param_chunk in _chunks(params, MAX_PARAMS_PER_BATCH):
            client.log_batch(run_id, params=param_chunk, synchronous=True)
    elif entry.kind == "tags":
        tags = [RunTag(str(p["k"]), str(p["v"])[:MAX_TAG_VALUE_CHARS]) for p in entry.payload]
        for tag_chunk in _chunks(tags, MAX_PARAMS_PER_BATCH):
            client.log_batch(run_id, tags=tag_chunk, synchronous=True)
    elif entry.kind == "artifact":
        for row in entry.payload:
            local = spool_dir / str(row["file"])
            if not local.exists():
                raise FileNotFoundError(f"artifact copy {local} is missing from the spool")
            artifact_path = row.get("artifact_path")
            if local.is_dir():
                client.log_artifacts(run_id, str(local), artifact_path=artifact_path)
            else:
                client.log_artifact(run_id, str(local), artifact_path=artifact_path)
    elif entry.kind == "terminate":
        for row in entry.payload:
            client.set_terminated(run_id, status=str(row["status"]), end_time=row.get("end_time"))
    else:  # pragma: no cover (read() validates kinds)
        raise ValueError(f"unknown spool batch kind {entry.kind!r}")
    return entry.n_items


def _chunks(items: list[T], size: int) -> Iterable[list[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


@dataclass
class ReplayReport:
    """What :func:`replay` did.

    Attributes:
        sent: Batches sent (by kind).
        points: Metric points sent.
        rejected: Batches the store refused for good (renamed ``*.rejected``).
        left: Batches still pending (the store was unreachable when time ran out).
        last_error: The last transient error, if any.
    """

    sent: dict[str, int] = field(default_factory=dict)
    points: int = 0
    rejected: int = 0
    left: int = 0
    last_error: str | None = None

    @property
    def n_sent(self) -> int:
        """Batches sent, all kinds."""
        return sum(self.sent.values())


def replay(
    spool: Spool,
    client: Any,
    *,
    timeout_s: float = 0.0,
    keep_sent: bool = True,
    include_sent: bool = False,
    include_rejected: bool = False,
    should_stop: Callable[[], bool] = lambda: False,
    policy: RetryPolicy = TRACKING_RETRY,
) -> ReplayReport:
    """Send a spool's pending batches in order; retry transient failures until ``timeout_s``.

    Args:
        spool: The spool (its ``run_id`` must be set).
        client: An ``mlflow.MlflowClient``.
        timeout_s: How long to keep retrying while the store is unreachable, s (0: one pass).
        keep_sent: Rename sent batches ``*.sent`` (else delete them).
        include_sent: Send batches already marked sent too (the store ignores duplicates).
        include_rejected: Retry batches the store refused before.
        should_stop: Polled between batches and while waiting; ``True`` stops the replay.
        policy: The waits after a transient failure (:data:`TRACKING_RETRY`).

    Returns:
        A :class:`ReplayReport`.

    Raises:
        ValueError: If the spool has no run id.
    """
    if not spool.run_id:
        raise ValueError(f"spool {spool.directory} has no run id")
    report = ReplayReport()
    deadline = time.monotonic() + timeout_s
    backoff = policy.backoff()
    queue = deque(spool.pending(include_sent=include_sent, include_rejected=include_rejected))
    while queue and not should_stop():
        path = queue[0]
        try:
            entry = spool.read(path)
        except (OSError, ValueError) as e:
            log.error("Skipping unreadable spool file %s: %s", path, e)
            queue.popleft()
            report.rejected += 1
            continue
        try:
            n_sent = send_entry(client, spool.run_id, entry, spool.directory)
        except Exception as e:
            if isinstance(e, FileNotFoundError) or not is_transient(e):
                log.error("The tracking store refused %s: %s", path.name, e)
                spool.mark_rejected(entry, e)
                report.rejected += 1
                queue.popleft()
                continue
            report.last_error = str(e)
            delay = backoff.next_delay(deadline)
            if delay is None:
                break
            _interruptible_sleep(delay, should_stop)
            continue
        backoff.reset()
        spool.mark_sent(entry, keep=keep_sent)
        queue.popleft()
        report.sent[entry.kind] = report.sent.get(entry.kind, 0) + 1
        if entry.kind == "metrics":
            report.points += n_sent
    report.left = len(spool.pending(include_rejected=False))
    return report


def _interruptible_sleep(duration_s: float, should_stop: Callable[[], bool]) -> None:
    end = time.monotonic() + duration_s
    while not should_stop():
        left = end - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, 0.1))


# ------------------------------------------------------------------------------------ the sender


@dataclass
class _Item:
    kind: str
    payload: list[dict[str, Any]]
    entry: SpoolEntry | None = None  # artifacts are spooled when submitted


class BackgroundSender:
    """A daemon thread that spools submitted items and sends them to the tracking store.

    Args:
        spool: Where batches are written before they are sent.
        client_factory: Builds the ``MlflowClient`` (called in the sender thread).
        flush_interval_s: How often queued items are spooled and sent, s. Metric points taken
            since the last flush are lost on ``SIGKILL``; earlier ones are in the store or the
            spool.
        policy: The waits between attempts while the store is unreachable
            (:data:`TRACKING_RETRY`).
        probe: Cheap reachability check tried before resending while the store is down (e.g.
            a server's ``/health``); ``None`` resends directly.
    """

    def __init__(
        self,
        spool: Spool,
        client_factory: Callable[[], Any],
        *,
        flush_interval_s: float = 1.0,
        policy: RetryPolicy = TRACKING_RETRY,
        probe: Callable[[], bool] | None = None,
    ) -> None:
        if not flush_interval_s > 0:
            raise ValueError(f"flush_interval_s must be positive, got {flush_interval_s}")
        self.spool = spool
        self._client_factory = client_factory
        self.probe = probe
        self._client: Any = None
        self.flush_interval_s = float(flush_interval_s)
        self.policy = policy
        self._cond = threading.Condition()
        self._items: deque[_Item] = deque()
        self._n_points = 0
        self._mine: deque[SpoolEntry] = deque()  # batches spooled here and not sent yet
        self._requested = 0  # flush generation asked for
        self._done = 0  # flush generation completed
        self._stop = False
        self._stop_deadline: float | None = None
        self._down_since: float | None = None
        self._next_attempt = 0.0
        self._backoff = policy.backoff()
        self.points_sent = 0
        self.batches_sent = 0
        self.rejected = 0
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name="rle-tracking-sender", daemon=True)
        self._thread.start()

    # ---------------------------------------------------------------------------- producer side

    def submit_metrics(self, points: list[Point]) -> None:
        """Queue metric points ``(key, value, timestamp_ms, step)`` (O(1) for the caller, no I/O)."""
        if not points:
            return
        with self._cond:
            self._items.append(_Item("metrics", points))  # type: ignore[arg-type]
            self._n_points += len(points)
            if self._n_points >= MAX_METRICS_PER_BATCH:
                self._cond.notify_all()

    def submit(self, kind: str, payload: list[dict[str, Any]]) -> None:
        """Queue params, tags or a terminate status."""
        with self._cond:
            self._items.append(_Item(kind, payload))

    def submit_artifact(self, local_path: str | Path, artifact_path: str | None) -> None:
        """Copy a file into the spool now (the caller may delete it) and queue its upload.

        Raises:
            OSError: If the file cannot be copied.
        """
        entry = self.spool.write_artifact(local_path, artifact_path)
        with self._cond:
            self._items.append(_Item("artifact", entry.payload, entry))
            self._cond.notify_all()

    def flush(self, timeout_s: float | None = None) -> bool:
        """Spool everything queued, try to send it, and wait for that pass to finish.

        Args:
            timeout_s: Longest wait, s (``None``: no limit).

        Returns:
            Whether nothing this sender spooled is still waiting to be sent.
        """
        with self._cond:
            self._requested += 1
            target = self._requested
            self._cond.notify_all()
            self._cond.wait_for(
                lambda: self._done >= target or not self._thread.is_alive(), timeout_s
            )
            return not self._mine and not self._items

    def close(self, timeout_s: float) -> bool:
        """Spool everything queued, make a last attempt to send, and stop the thread.

        Args:
            timeout_s: Longest wait for the last pass, s.

        Returns:
            Whether everything reached the store (else it is in the spool).
        """
        with self._cond:
            self._stop = True
            self._stop_deadline = time.monotonic() + timeout_s
            self._cond.notify_all()
        self._thread.join(timeout_s + 1.0)
        if self._thread.is_alive():
            log.warning(
                "The tracking sender did not stop within %.0f s; what it holds is in %s",
                timeout_s,
                self.spool.directory,
            )
        with self._cond:
            return not self._mine and not self._items

    @property
    def is_down(self) -> bool:
        """Whether the last attempt to reach the store failed."""
        return self._down_since is not None

    # ---------------------------------------------------------------------------- sender thread

    def _run(self) -> None:
        next_flush = time.monotonic() + self.flush_interval_s
        while True:
            with self._cond:
                self._cond.wait_for(
                    lambda: (
                        self._stop
                        or self._requested > self._done
                        or self._n_points >= MAX_METRICS_PER_BATCH
                    ),
                    max(0.0, next_flush - time.monotonic()),
                )
                items = list(self._items)
                self._items.clear()
                self._n_points = 0
                generation = self._requested
                stop = self._stop
            next_flush = time.monotonic() + self.flush_interval_s
            try:
                self._spool_items(items)
                self._send_mine(force=stop or generation > self._done, deadline=self._stop_deadline)
            except Exception:  # never let the thread die: the spool keeps what was not sent
                log.exception(
                    "Tracking sender error; unsent batches stay in %s", self.spool.directory
                )
            with self._cond:
                self._done = generation
                self._cond.notify_all()
            if stop:
                return

    def _spool_items(self, items: list[_Item]) -> None:
        points: list[Point] = []

        def spool_points() -> None:
            for chunk in _chunks(points, MAX_METRICS_PER_BATCH):
                self._mine.append(self.spool.write_metrics(chunk))
            points.clear()

        for item in items:
            if item.kind == "metrics":
                points.extend(item.payload)  # type: ignore[arg-type]
                continue
            spool_points()
            if item.entry is not None:
                self._mine.append(item.entry)
            else:
                for chunk in _chunks(item.payload, MAX_PARAMS_PER_BATCH):
                    self._mine.append(self.spool.write(item.kind, chunk))
        spool_points()

    def _send_mine(self, force: bool, deadline: float | None) -> None:
        now = time.monotonic()
        if self._down_since is not None and self._mine:
            if now < self._next_attempt and not force:
                return
            # a cheap check first: building a 1000-point request only to be refused costs CPU
            if self.probe is not None and not self.probe():
                self._on_failure(ConnectionError("the tracking server does not answer /health"))
                return
        while self._mine:
            if deadline is not None and time.monotonic() > deadline:
                return
            entry = self._mine[0]
            path = entry.path
            if not path.exists():  # replayed and removed meanwhile (rle.sync)
                log.debug("Spool file %s vanished", path)
                self._mine.popleft()
                continue
            try:
                if self._client is None:
                    self._client = self._client_factory()
                assert self.spool.run_id is not None  # noqa: S101 (set by the logger)
                n_sent = send_entry(self._client, self.spool.run_id, entry, self.spool.directory)
            except Exception as e:
                if isinstance(e, FileNotFoundError) or not is_transient(e):
                    self.rejected += 1
                    log.error(
                        "The tracking store refused a %s batch (%s); kept as %s.rejected",
                        entry.kind,
                        e,
                        path.name,
                    )
                    self.spool.mark_rejected(entry, e)
                    self._mine.popleft()
                    continue
                self._on_failure(e)
                return
            self.spool.mark_sent(entry, keep=False)
            self._mine.popleft()
            self.batches_sent += 1
            if entry.kind == "metrics":
                self.points_sent += n_sent
            self._on_success()

    def _on_failure(self, e: BaseException) -> None:
        now = time.monotonic()
        self.last_error = str(e)
        if self._down_since is None:
            self._down_since = now
            self._backoff.reset()
            log.warning(
                "Tracking store unreachable (%s); training goes on, batches are kept in %s and "
                "sent when it returns.",
                _short(e),
                self.spool.directory,
            )
        self._next_attempt = now + float(self._backoff.next_delay() or 0.0)

    def _on_success(self) -> None:
        if self._down_since is not None:
            log.warning(
                "Tracking store reachable again after %.1f s; sending the spooled batches.",
                time.monotonic() - self._down_since,
            )
            self._down_since = None
            self._backoff.reset()


def _short(e: BaseException, limit: int = 300) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
