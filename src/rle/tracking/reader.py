"""Read ``rle`` runs back from MLflow as tidy pandas frames: the only module that queries MLflow.

Used by the evaluation (:mod:`rle.evaluate`); it does no maths. Three things are read:

* **runs** (:meth:`RunReader.select_runs`): by experiment, filter string, explicit ids or a sweep
  parent's children, with evaluation runs and sweep parents excluded by default; one row per run
  (tags, params and latest metric values as dict columns) plus a frame of skipped runs and why;
* **metric histories** (:meth:`RunReader.metric_histories`): long format ``run_id, key, step,
  timestamp_s, value``. On an SQL store (SQLite, PostgreSQL, MySQL) all runs and keys come from a
  few ``SELECT`` statements on MLflow's own ``metrics`` table (chunks of runs, only the keys asked for),
  which is what makes the evaluation fast; on a tracking server one ``get_metric_history`` call per
  run and key, issued from a small thread pool. :meth:`RunReader.metric_histories_per_call` is the
  one-call-per-history path on any store (the benchmark's baseline);
* **artifacts**: ``telemetry/samples.parquet`` (:meth:`RunReader.samples`),
  ``telemetry/events.jsonl`` (:meth:`RunReader.events`) and an imported run's original files
  (``original/``, :meth:`RunReader.original_files`); local artifact stores are read in place,
  others downloaded to a temporary directory.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from rle.errors import TrackingError
from rle.paths import TrackingLocation
from rle.tracking import keys

__all__ = [
    "HISTORY_COLUMNS",
    "ORIGINAL_ARTIFACT_DIR",
    "RUN_COLUMNS",
    "SKIPPED_COLUMNS",
    "RunReader",
    "Selection",
    "SelectedRuns",
    "read_samples",
]

log = logging.getLogger(__name__)

# Artifact downloads must not draw progress bars into the evaluation's terminal output.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

ORIGINAL_ARTIFACT_DIR = "original"
"""Artifact folder of an imported run's original files (written by :mod:`rle.ingest`)."""

HISTORY_COLUMNS: tuple[str, ...] = ("run_id", "key", "step", "timestamp_s", "value")
"""Columns of :meth:`RunReader.metric_histories`: ``timestamp_s`` is MLflow's wall-clock
timestamp (UTC epoch seconds, millisecond resolution); ``value`` is NaN where MLflow stored NaN."""

RUN_COLUMNS: tuple[str, ...] = (
    "run_id",
    "run_name",
    "experiment_id",
    "status",
    "start_time_s",
    "end_time_s",
    "artifact_uri",
    "workload",
    "tags",
    "params",
    "metrics",
)
"""Columns of :attr:`SelectedRuns.runs`; ``tags``/``params``/``metrics`` hold dicts (latest
metric values), ``start_time_s``/``end_time_s`` UTC epoch seconds (NaN while running)."""

SKIPPED_COLUMNS: tuple[str, ...] = ("run_id", "run_name", "reason")
"""Columns of :attr:`SelectedRuns.skipped`."""

_SEARCH_PAGE = 1000


@dataclass(frozen=True)
class Selection:
    """Which runs to read.

    Exactly one way of choosing is used, in this order: ``run_ids``, ``parent_run_id`` (the sweep
    parent's children), else the experiments. ``filter_string`` narrows the last two.

    Attributes:
        experiment_names: Experiments to search (an empty tuple means the default experiment).
        filter_string: An MLflow search filter, e.g. ``"tags.workload = 'synthetic'"``.
        run_ids: Explicit run ids.
        parent_run_id: A sweep parent run whose children are selected.
        include_evaluations: Keep runs tagged ``rle.role=evaluation`` (skipped by default).
        include_sweep_parents: Keep runs tagged ``rle.role=sweep_parent`` (skipped by default).
        include_running: Keep runs whose status is still ``RUNNING`` (their data is partial).
        max_runs: Stop after this many runs (``None``: all).
    """

    experiment_names: tuple[str, ...] = ()
    filter_string: str = ""
    run_ids: tuple[str, ...] = ()
    parent_run_id: str | None = None
    include_evaluations: bool = False
    include_sweep_parents: bool = False
    include_running: bool = True
    max_runs: int | None = None

    def describe(self) -> str:
        """Return a one-line description for logs, params and the report."""
        if self.run_ids:
            what = f"run ids {', '.join(self.run_ids)}"
        elif self.parent_run_id:
            what = f"children of sweep parent {self.parent_run_id}"
        else:
            what = f"experiment(s) {', '.join(self.experiment_names) or '(default)'}"
        if self.filter_string and not self.run_ids:
            what += f" matching {self.filter_string!r}"
        return what


@dataclass
class SelectedRuns:
    """Outcome of :meth:`RunReader.select_runs`.

    Attributes:
        runs: One row per selected run (:data:`RUN_COLUMNS`), ordered by start time.
        skipped: Runs found but not selected, with the reason (:data:`SKIPPED_COLUMNS`).
        experiment_ids: Experiments that were searched (or that hold the explicit runs).
        notes: Human-readable remarks (unknown experiments, runs still running).
    """

    runs: pd.DataFrame
    skipped: pd.DataFrame
    experiment_ids: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _empty_history() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "run_id": pd.Series(dtype=object),
            "key": pd.Series(dtype=object),
            "step": pd.Series(dtype="int64"),
            "timestamp_s": pd.Series(dtype="float64"),
            "value": pd.Series(dtype="float64"),
        }
    )


def _local_path(uri: str) -> Path | None:
    """The filesystem path of a ``file:`` URI or plain path, else ``None``."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme == "file":
        return Path(urllib.request.url2pathname(parsed.path))
    if parsed.scheme == "" and uri:
        return Path(uri)
    return None


class RunReader:
    """Reads runs, metric histories and telemetry artifacts from one tracking store.

    Args:
        location: The tracking location (from :func:`rle.paths.resolve_tracking`) or a URI.
        max_workers: Threads for per-call history reads against a tracking server.
    """

    def __init__(self, location: TrackingLocation | str, max_workers: int = 8) -> None:
        from mlflow import MlflowClient

        from rle.tracking.spool import strip_userinfo

        self.uri = location.uri if isinstance(location, TrackingLocation) else str(location)
        self.shown_uri = strip_userinfo(self.uri)
        """The URI without credentials, for messages."""
        self.client = MlflowClient(tracking_uri=self.uri)
        self.max_workers = max(1, int(max_workers))
        self._engine: Any = None
        self._engine_checked = False

    # ---------------------------------------------------------------------------------- runs

    def select_runs(self, selection: Selection) -> SelectedRuns:
        """Find the runs of a selection.

        Args:
            selection: What to select.

        Returns:
            The selected runs and the skipped ones with reasons. An empty selection is not an
            error: ``runs`` is empty and ``notes`` say why.

        Raises:
            rle.errors.TrackingError: If the store refuses a search (e.g. a malformed filter).
        """
        from mlflow.exceptions import MlflowException

        notes: list[str] = []
        found: list[Any] = []
        skipped: list[dict[str, str]] = []
        experiment_ids: list[str] = []
        try:
            if selection.run_ids:
                for run_id in selection.run_ids:
                    try:
                        found.append(self.client.get_run(run_id))
                    except MlflowException:
                        skipped.append({"run_id": run_id, "run_name": "", "reason": "not found"})
                experiment_ids = sorted({r.info.experiment_id for r in found})
            elif selection.parent_run_id:
                try:
                    parent = self.client.get_run(selection.parent_run_id)
                except MlflowException:
                    notes.append(f"sweep parent run {selection.parent_run_id} not found")
                    parent = None
                if parent is not None:
                    experiment_ids = [parent.info.experiment_id]
                    flt = f"tags.`{keys.TAG_PARENT_RUN_ID}` = '{selection.parent_run_id}'"
                    if selection.filter_string:
                        flt += f" AND {selection.filter_string}"
                    found = self._search(experiment_ids, flt)
                    if not found:
                        notes.append(f"sweep parent {selection.parent_run_id} has no child runs")
            else:
                names = selection.experiment_names or (self._default_experiment_name(),)
                for name in names:
                    exp = self.client.get_experiment_by_name(name)
                    if exp is None or exp.lifecycle_stage == "deleted":
                        notes.append(f"experiment {name!r} does not exist in {self.shown_uri}")
                    else:
                        experiment_ids.append(str(exp.experiment_id))
                if experiment_ids:
                    found = self._search(experiment_ids, selection.filter_string)
        except MlflowException as e:
            raise TrackingError(f"Run search failed in {self.shown_uri}: {e}") from e

        rows: list[dict[str, Any]] = []
        for run in found:
            tags = dict(run.data.tags)
            name = str(run.info.run_name or tags.get("mlflow.runName", ""))
            role = tags.get(keys.TAG_ROLE, "")
            reason = None
            if not selection.include_evaluations and (
                role == keys.ROLE_EVALUATION or tags.get(keys.TAG_KIND) == keys.ROLE_EVALUATION
            ):
                reason = "evaluation run (include with selection.include_evaluations=true)"
            elif not selection.include_sweep_parents and role == keys.ROLE_SWEEP_PARENT:
                reason = "sweep parent (its children are selected instead; select them with selection.parent_run_id)"
            elif run.info.status == "RUNNING" and not selection.include_running:
                reason = "still RUNNING (include with selection.include_running=true)"
            if reason is not None:
                skipped.append({"run_id": run.info.run_id, "run_name": name, "reason": reason})
                continue
            if run.info.status == "RUNNING":
                notes.append(
                    f"run {run.info.run_id} ({name}) is still RUNNING: its data is partial and it "
                    "has no telemetry artifact until it ends"
                )
            rows.append(
                {
                    "run_id": run.info.run_id,
                    "run_name": name,
                    "experiment_id": str(run.info.experiment_id),
                    "status": run.info.status,
                    "start_time_s": _ms_to_s(run.info.start_time),
                    "end_time_s": _ms_to_s(run.info.end_time),
                    "artifact_uri": str(run.info.artifact_uri or ""),
                    "workload": tags.get(keys.TAG_WORKLOAD, "unknown"),
                    "tags": tags,
                    "params": dict(run.data.params),
                    "metrics": dict(run.data.metrics),
                }
            )
        runs = pd.DataFrame(rows, columns=list(RUN_COLUMNS))
        if len(runs):
            runs = runs.sort_values(["start_time_s", "run_id"], kind="stable").reset_index(
                drop=True
            )
        if selection.max_runs is not None:
            runs = runs.iloc[: selection.max_runs].reset_index(drop=True)
        return SelectedRuns(
            runs=runs,
            skipped=pd.DataFrame(skipped, columns=list(SKIPPED_COLUMNS)),
            experiment_ids=experiment_ids,
            notes=notes,
        )

    @staticmethod
    def _default_experiment_name() -> str:
        return os.environ.get("MLFLOW_EXPERIMENT_NAME") or "Default"

    def _search(self, experiment_ids: list[str], filter_string: str) -> list[Any]:
        out: list[Any] = []
        token: str | None = None
        while True:
            page = self.client.search_runs(
                experiment_ids,
                filter_string=filter_string or "",
                max_results=_SEARCH_PAGE,
                page_token=token,
            )
            out.extend(page)
            token = page.token
            if not token:
                return out

    def experiment_name(self, experiment_id: str) -> str:
        """Return the name of an experiment id."""
        return str(self.client.get_experiment(experiment_id).name)

    # ------------------------------------------------------------------------ metric histories

    def metric_histories(self, run_ids: Sequence[str], metric_keys: Iterable[str]) -> pd.DataFrame:
        """Read the full histories of some metrics of some runs.

        Args:
            run_ids: Runs to read.
            metric_keys: Metric keys to read (absent keys simply give no rows).

        Returns:
            Long frame with :data:`HISTORY_COLUMNS`, sorted by run, key, step and timestamp.
            Every logged point is kept (a step logged twice gives two rows).

        Raises:
            rle.errors.TrackingError: If the store cannot be read.
        """
        wanted = sorted(set(metric_keys))
        ids = list(dict.fromkeys(run_ids))
        if not ids or not wanted:
            return _empty_history()
        engine = self._sql_engine()
        if engine is not None:
            frame = self._histories_sql(engine, ids, wanted)
        else:
            pairs = [(r, k) for r in ids for k in wanted]
            frame = self._histories_calls(pairs, threads=self.max_workers)
        return frame

    def metric_histories_per_call(
        self, run_ids: Sequence[str], metric_keys: Iterable[str], threads: int = 1
    ) -> pd.DataFrame:
        """Read the same as :meth:`metric_histories` with one ``get_metric_history`` per history.

        The straightforward way (and the benchmark's baseline); works on every store.

        Args:
            run_ids: Runs to read.
            metric_keys: Metric keys to read.
            threads: Concurrent calls (1: strictly one after another).

        Returns:
            As :meth:`metric_histories`.

        Raises:
            rle.errors.TrackingError: If the store cannot be read.
        """
        pairs = [(r, k) for r in dict.fromkeys(run_ids) for k in sorted(set(metric_keys))]
        return self._histories_calls(pairs, threads=threads)

    def _sql_engine(self) -> Any:
        """The SQLAlchemy engine of an SQL tracking store, or ``None`` (server, other stores)."""
        if self._engine_checked:
            return self._engine
        self._engine_checked = True
        try:
            from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

            # MlflowClient keeps its store on the tracking client; there is no public accessor.
            store = getattr(getattr(self.client, "_tracking_client", None), "store", None)
            if isinstance(store, SqlAlchemyStore):
                self._engine = store.engine
        except Exception:  # any import/attribute change in MLflow: fall back to per-call reads
            log.debug("No SQL fast path for %s", self.shown_uri, exc_info=True)
            self._engine = None
        if self._engine is None:
            log.info("Reading metric histories one call per run and key from %s", self.shown_uri)
        return self._engine

    @staticmethod
    def _histories_sql(engine: Any, run_ids: list[str], metric_keys: list[str]) -> pd.DataFrame:
        """One indexed ``SELECT`` per run on MLflow's ``metrics`` table, fetched as numbers.

        The statement is built with SQLAlchemy Core from MLflow's own table definition and
        compiled for the store's dialect; it returns the key as its position in ``metric_keys``
        (a ``CASE``), so every fetched row is numeric and becomes one float64 array without
        per-row Python objects. It runs on the raw DB-API cursor (SQLAlchemy's row wrappers
        would double the time).
        """
        import numpy as np
        from mlflow.store.tracking.dbmodels.models import SqlMetric
        from sqlalchemy import bindparam, case, select
        from sqlalchemy.exc import SQLAlchemyError

        cols = SqlMetric.__table__.c
        metric_keys = sorted(metric_keys)
        key_code = case({k: i for i, k in enumerate(metric_keys)}, value=cols.key, else_=-1)
        stmt = select(key_code, cols.step, cols.timestamp, cols.value, cols.is_nan).where(
            cols.run_uuid == bindparam("rle_run_id", value=""), cols.key.in_(metric_keys)
        )
        compiled = stmt.compile(dialect=engine.dialect, compile_kwargs={"render_postcompile": True})
        sql, base_params, order = compiled.string, dict(compiled.params), compiled.positiontup
        key_names = np.asarray(metric_keys, dtype=object)
        codes, steps, stamps, values, runs = [], [], [], [], []
        try:
            raw = engine.raw_connection()
            try:
                cursor = raw.cursor()
                for run_id in sorted(run_ids):
                    params = {**base_params, "rle_run_id": run_id}
                    cursor.execute(sql, tuple(params[n] for n in order) if order else params)
                    rows = cursor.fetchall()
                    if not rows:
                        continue
                    a = np.asarray(rows, dtype=np.float64)
                    # MLflow's order for equal (step, timestamp): by value
                    a = a[np.lexsort((a[:, 3], a[:, 2], a[:, 1], a[:, 0]))]
                    v = a[:, 3].copy()
                    v[a[:, 4] != 0] = np.nan  # MLflow stores NaN as 0 with is_nan set
                    codes.append(a[:, 0].astype(np.int64))
                    steps.append(a[:, 1].astype(np.int64))
                    stamps.append(a[:, 2] / 1000.0)
                    values.append(v)
                    runs.append(np.full(a.shape[0], run_id, dtype=object))
                cursor.close()
            finally:
                raw.close()
        except SQLAlchemyError as e:
            raise TrackingError(f"Cannot read metric histories from the tracking store: {e}") from e
        except Exception as e:  # DB-API errors of the driver (sqlite3.Error, psycopg2.Error, ...)
            if type(e).__module__.split(".")[0] in (
                "sqlite3",
                "psycopg2",
                "psycopg",
                "pymysql",
                "MySQLdb",
                "pyodbc",
            ):
                raise TrackingError(
                    f"Cannot read metric histories from the tracking store: {e}"
                ) from e
            raise
        if not codes:
            return _empty_history()
        return pd.DataFrame(
            {
                "run_id": np.concatenate(runs),
                "key": key_names[np.concatenate(codes)],
                "step": np.concatenate(steps),
                "timestamp_s": np.concatenate(stamps),
                "value": np.concatenate(values),
            }
        )

    def _histories_calls(self, pairs: list[tuple[str, str]], threads: int) -> pd.DataFrame:
        from mlflow.exceptions import MlflowException

        def one(pair: tuple[str, str]) -> list[tuple[str, str, int, float, float]]:
            run_id, key = pair
            try:
                history = self.client.get_metric_history(run_id, key)
            except MlflowException as e:
                raise TrackingError(f"Cannot read {key!r} of run {run_id}: {e}") from e
            return [
                (run_id, key, int(m.step), m.timestamp / 1000.0, float(m.value)) for m in history
            ]

        if threads > 1 and len(pairs) > 1:
            with ThreadPoolExecutor(max_workers=threads) as pool:
                results = list(pool.map(one, pairs))
        else:
            results = [one(p) for p in pairs]
        rows = [row for part in results for row in part]
        if not rows:
            return _empty_history()
        frame = pd.DataFrame(rows, columns=list(HISTORY_COLUMNS))
        frame["step"] = frame["step"].astype("int64")
        return frame.sort_values(
            ["run_id", "key", "step", "timestamp_s"], kind="stable"
        ).reset_index(drop=True)

    # ------------------------------------------------------------------------------ artifacts

    def _exists(self, run_id: str, artifact_uri: str, path: str) -> bool:
        from mlflow.exceptions import MlflowException

        local_root = _local_path(artifact_uri) if artifact_uri else None
        if local_root is not None and local_root.is_dir():
            return (local_root / path).is_file()
        folder = path.rpartition("/")[0]
        try:
            return path in {a.path for a in self.client.list_artifacts(run_id, folder or None)}
        except (MlflowException, OSError) as e:
            log.warning("Cannot list the artifacts of run %s: %s", run_id, e)
            return False

    def _artifact(self, run_id: str, artifact_uri: str, path: str, tmp: Path) -> Path | None:
        """Local path of a run artifact (in place on local stores), or ``None`` if absent."""
        from mlflow.exceptions import MlflowException

        local_root = _local_path(artifact_uri) if artifact_uri else None
        if local_root is not None and local_root.is_dir():
            candidate = local_root / path
            return candidate if candidate.is_file() else None
        if not self._exists(run_id, artifact_uri, path):
            return None
        try:
            return Path(self.client.download_artifacts(run_id, path, str(tmp)))
        except (MlflowException, OSError) as e:
            log.warning("Cannot read artifact %s of run %s: %s", path, run_id, e)
            return None

    def _sample_parts(self, run_id: str, artifact_uri: str, tmp: Path) -> list[Path]:
        """Local paths of a run's streamed sample parts (``telemetry/samples/rank_<r>/*.parquet``)."""
        from mlflow.exceptions import MlflowException

        local_root = _local_path(artifact_uri) if artifact_uri else None
        if local_root is not None and local_root.is_dir():
            return sorted((local_root / keys.SAMPLES_DIR).glob("rank_*/*.parquet"))
        try:
            if not self.client.list_artifacts(run_id, keys.SAMPLES_DIR):
                return []
            folder = Path(self.client.download_artifacts(run_id, keys.SAMPLES_DIR, str(tmp)))
        except (MlflowException, OSError) as e:
            log.warning("Cannot read %s of run %s: %s", keys.SAMPLES_DIR, run_id, e)
            return []
        return sorted(folder.glob("rank_*/*.parquet"))

    def has_samples(self, run_id: str, artifact_uri: str = "") -> bool:
        """Whether the run has raw samples: streamed parts or one ``telemetry/samples.parquet``.

        Args:
            run_id: The run.
            artifact_uri: Its artifact URI (from :attr:`SelectedRuns.runs`); looked up if empty.

        Returns:
            ``True`` if either artifact exists.
        """
        from mlflow.exceptions import MlflowException

        uri = artifact_uri or str(self.client.get_run(run_id).info.artifact_uri)
        if self._exists(run_id, uri, keys.SAMPLES_ARTIFACT):
            return True
        local_root = _local_path(uri) if uri else None
        if local_root is not None and local_root.is_dir():
            return any((local_root / keys.SAMPLES_DIR).glob("rank_*/*.parquet"))
        try:
            return bool(self.client.list_artifacts(run_id, keys.SAMPLES_DIR))
        except (MlflowException, OSError):
            return False

    def samples(self, run_id: str, artifact_uri: str = "") -> pd.DataFrame | None:
        """Read a run's raw telemetry samples, whichever layout the run has.

        Training runs stream one Parquet part file per rank and upload interval
        (``telemetry/samples/rank_<r>/part-<k>.parquet``, :mod:`rle.telemetry.samples_file`);
        imported recordings hold one ``telemetry/samples.parquet``. Either reads as one table.

        Args:
            run_id: The run.
            artifact_uri: Its artifact URI (from :attr:`SelectedRuns.runs`); looked up if empty.

        Returns:
            One row per sample and device (``wall_time_s`` UTC epoch s, ``rank``, ``node_rank``,
            ``host``, the quantities and RLE terms), or ``None`` if the run has no samples or they
            cannot be read (logged as a warning).
        """
        from rle.telemetry.samples_file import read_sample_files

        uri = artifact_uri or str(self.client.get_run(run_id).info.artifact_uri)
        with tempfile.TemporaryDirectory() as tmp:
            path = self._artifact(run_id, uri, keys.SAMPLES_ARTIFACT, Path(tmp))
            paths = [path] if path is not None else self._sample_parts(run_id, uri, Path(tmp))
            if not paths:
                return None
            try:
                return read_sample_files(paths)
            except (OSError, ValueError) as e:
                log.warning("Cannot read the samples of run %s: %s", run_id, e)
                return None

    def original_files(self, run_id: str, dest: Path, artifact_uri: str = "") -> Path | None:
        """The folder of an imported run's original files (``original/``, :mod:`rle.ingest`).

        Local artifact stores are read in place; otherwise the folder is downloaded into
        ``dest`` (which must outlive the use of the returned path).

        Args:
            run_id: The run.
            dest: Directory for a download.
            artifact_uri: Its artifact URI (from :attr:`SelectedRuns.runs`); looked up if empty.

        Returns:
            The local folder holding the original files (e.g. a joint session's
            ``rle_data_<id>.csv``, ``training_log_<id>.json`` and ``analysis_<id>.json``), or
            ``None`` if the run has none or they cannot be read (logged as a warning).
        """
        from mlflow.exceptions import MlflowException

        uri = artifact_uri or str(self.client.get_run(run_id).info.artifact_uri)
        local_root = _local_path(uri) if uri else None
        if local_root is not None and local_root.is_dir():
            folder = local_root / ORIGINAL_ARTIFACT_DIR
            return folder if folder.is_dir() else None
        try:
            if not self.client.list_artifacts(run_id, ORIGINAL_ARTIFACT_DIR):
                return None
            return Path(self.client.download_artifacts(run_id, ORIGINAL_ARTIFACT_DIR, str(dest)))
        except (MlflowException, OSError) as e:
            log.warning("Cannot read the original files of run %s: %s", run_id, e)
            return None

    def events(self, run_id: str, artifact_uri: str = "") -> pd.DataFrame | None:
        """Read a run's collapse events (``telemetry/events.jsonl``).

        Args:
            run_id: The run.
            artifact_uri: Its artifact URI; looked up if empty.

        Returns:
            One row per event (``device``, ``start_wall_time_s``, ``duration_s``, ...), an empty
            frame for a run without events, or ``None`` if the artifact is absent.
        """
        uri = artifact_uri or str(self.client.get_run(run_id).info.artifact_uri)
        with tempfile.TemporaryDirectory() as tmp:
            path = self._artifact(run_id, uri, keys.EVENTS_ARTIFACT, Path(tmp))
            if path is None:
                return None
            records: list[Mapping[str, Any]] = []
            for i, line in enumerate(path.read_text().splitlines()):
                if not line.strip():
                    continue
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    log.warning(
                        "Run %s: line %d of %s is not JSON; skipped",
                        run_id,
                        i + 1,
                        keys.EVENTS_ARTIFACT,
                    )
            return pd.DataFrame(records)


def _ms_to_s(ms: int | None) -> float:
    return math.nan if ms is None else float(ms) / 1000.0


def read_samples(run_id: str, tracking_uri: str) -> pd.DataFrame | None:
    """Read one run's raw telemetry samples from any store (see :meth:`RunReader.samples`).

    Args:
        run_id: The run.
        tracking_uri: The tracking URI (``sqlite:///mlruns/mlflow.db``, ``http://host:5000``).

    Returns:
        One table of every rank's samples (streamed parts or one ``samples.parquet``), or
        ``None`` if the run has none.
    """
    return RunReader(tracking_uri).samples(run_id)
