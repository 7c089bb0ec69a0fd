"""``python -m rle.ingest PATH [PATH ...]`` / ``rle-ingest``: import RLE lab recordings into MLflow.

Each path is a monitor CSV (v0.3 with 19 or 16 columns, v2 with 42 columns) or a folder, searched
recursively for monitor CSVs and joint-session bundles (``rle_data_<id>.csv`` +
``training_log_<id>.json``). Every recording becomes one MLflow run (``docs/rle-metric.md``
§6.5): one per segment of a monitor file (a segment is one monitor process between restarts;
interleaved writers are separated) and one per joint session. Runs hold:

* tags ``rle.source``, ``rle.profile``, ``rle.legacy_format``, ``rle.devices``,
  ``rle.original_file``, ``rle.content_sha256``, ``step.kind=sample_index``,
  ``power_source.<device>``/``temp_source.<device>`` and the skipped/repaired row counts
  (``import.skipped.<reason>``, ``import.repaired.<reason>``; written NaN/±inf values are
  counted per column as ``import.repaired.non_finite_as_nan.<column>`` and stored as NaN),
  and ``workload`` from the session type (a joint session's training mode, else
  ``joint_training``; a monitor file alone: ``monitor_only``);
* telemetry and the stored RLE columns as metrics (§5 names, step = sample index per device,
  timestamps from the file), joint sessions also ``train/loss``, ``train/grad_norm``,
  ``train/lr`` on their steps; estimated and placeholder inputs are not logged as measurements;
* artifacts: the original files (``original/``), all samples (``telemetry/samples.parquet``),
  the import report (``import/report.json``) and the recomputation agreement
  (``import/recompute_agreement.csv``); joint sessions also the reproduced analysis
  (``analysis/legacy_joint_session.json``).

The stored RLE columns are recomputed with the matching legacy profile and compared per column;
``--profile default`` also computes our corrected metric (``rle_default/<device>/...``).
A file that cannot be parsed is reported and the others are still imported (exit status 1);
a file whose rows are all dropped is reported with the reason. Re-importing a file is a
no-op: runs are found by ``rle.content_sha256`` (and segment) in the experiment, and
concurrent imports of one file make one run. Examples::

    rle-ingest sessions/recent/                         # every recording below the folder
    rle-ingest rle_20251028_08.csv rle_20251028_09.csv --profile default
    rle-ingest joint_session_20251028_181500/ --experiment lab-joint
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rle import paths
from rle.errors import ConfigError, ImportFormatError, RLEError
from rle.importers.recompute import StreamRecompute, recompute_files
from rle.importers.rle_lab import (
    JOINT_SOURCE,
    DeviceStream,
    ParsedFile,
    ParsedSession,
    Segment,
    find_sessions,
    printable,
    read_joint_session,
    read_monitor_csv,
)
from rle.tracking import keys

__all__ = [
    "DEFAULT_EXPERIMENT",
    "ImportResult",
    "ImportedRun",
    "format_summary",
    "main",
    "run_ingest",
]

log = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "rle-lab-import"
"""Experiment the importer writes to unless told otherwise."""
PROFILE_CHOICES = ("default", "legacy_v03", "legacy_v2")
_DEFAULT_TERMS = (
    ("rle_raw", "rle_raw"),
    ("rle_smoothed", "rle_smoothed"),
    ("E_th", "e_th"),
    ("E_pw", "e_pw"),
    ("stability", "stability"),
    ("a_load", "a_load"),
    ("t_sustain_s", "t_sustain_seconds"),
    ("rolling_peak", "rolling_peak"),
    ("collapse", "collapse"),
)


@dataclass
class ImportedRun:
    """One recording and its MLflow run.

    Attributes:
        run_id: The run.
        path: The imported file, or the bundle's folder.
        source: ``rle.source`` value.
        segment: Segment index in the file (``None`` for a joint session).
        devices: Device labels.
        n_samples: Samples over all devices.
        created: ``False`` when the run already existed (re-import) and nothing was written.
        counts: Skipped and repaired rows of the file by reason.
        flags: File-level observations (interleaved writers, restarts, ...).
        agreement: Recomputation agreement table (see :mod:`rle.importers.recompute`).
        seeded_from: Device → ``"<file>#<segment>"`` whose state seeded the recomputation
            (hourly rotation).
        analysis_agreement: Joint sessions: stored vs reproduced ``analysis_<id>.json`` fields.
    """

    run_id: str
    path: Path
    source: str
    segment: int | None
    devices: tuple[str, ...]
    n_samples: int
    created: bool
    counts: dict[str, int]
    flags: dict[str, str] = field(default_factory=dict)
    agreement: pd.DataFrame | None = None
    seeded_from: dict[str, str] = field(default_factory=dict)
    analysis_agreement: dict[str, Any] | None = None


@dataclass
class ImportResult:
    """Outcome of :func:`run_ingest`.

    Attributes:
        experiment_name: The experiment.
        experiment_id: Its id.
        tracking_uri: Where it was tracked.
        runs: One entry per recording, in input order.
        ignored: Files found in folders that are neither monitor CSVs nor part of a bundle.
        failed: ``(path, reason)`` of every recording that could not be read or parsed (the
            others were imported).
        no_run: ``(path, reason)`` of every file that was read but produced no run (e.g.
            ``all 1000 rows dropped: unknown_device 1000``).
    """

    experiment_name: str
    experiment_id: str
    tracking_uri: str
    runs: list[ImportedRun]
    ignored: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    no_run: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def created(self) -> list[ImportedRun]:
        """Runs created by this call."""
        return [r for r in self.runs if r.created]

    @property
    def reused(self) -> list[ImportedRun]:
        """Recordings that were already imported."""
        return [r for r in self.runs if not r.created]

    @property
    def agreement(self) -> pd.DataFrame:
        """All agreement tables together."""
        tables = [
            r.agreement for r in self.runs if r.agreement is not None and not r.agreement.empty
        ]
        return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


# ----------------------------------------------------------------------------------- discovery


def _discover(items: Iterable[str | Path]) -> tuple[list[Path], list[tuple[Path, str]], list[Path]]:
    """Expand paths into monitor CSVs, joint sessions ``(folder, id)`` and ignored files."""
    files: list[Path] = []
    sessions: list[tuple[Path, str]] = []
    ignored: list[Path] = []
    seen: set[Path] = set()

    def add_file(p: Path) -> None:
        if p.resolve() not in seen:
            seen.add(p.resolve())
            files.append(p)

    for item in items:
        p = Path(item)
        if not p.exists():
            raise ImportFormatError(
                f"{p}: no such file or folder; expected a monitor CSV (rle_*.csv, "
                "rle_enhanced_*.csv) or a folder of recordings."
            )
        if p.is_file():
            add_file(p)
            continue
        for folder in sorted([p, *(d for d in p.rglob("*") if d.is_dir())]):
            ids = find_sessions(folder)
            consumed: set[str] = set()
            for sid in ids:
                if (folder.resolve(), sid) not in {(f.resolve(), s) for f, s in sessions}:
                    sessions.append((folder, sid))
                consumed |= {
                    f"rle_data_{sid}.csv",
                    f"rle_data_{sid}_metadata.json",
                    f"training_log_{sid}.json",
                    f"analysis_{sid}.json",
                    f"version_{sid}.json",
                    f"report_{sid}.txt",
                }
            for f in sorted(x for x in folder.iterdir() if x.is_file()):
                if f.name in consumed:
                    continue
                if f.suffix.lower() == ".csv":
                    add_file(f)
                elif (
                    f.name.endswith("_metadata.json")
                    and f.with_name(f.name.removesuffix("_metadata.json") + ".csv").is_file()
                ):
                    continue  # read with its CSV
                else:
                    ignored.append(f)
    return files, sessions, ignored


# ----------------------------------------------------------------------------------- helpers


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> dict[str, Any]:
    if isinstance(value, Mapping):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(value, list):
        out[prefix] = json.dumps(value)
    else:
        out[prefix] = value
    return out


def _ms(ts: pd.Series) -> np.ndarray:
    ns = pd.DatetimeIndex(ts).as_unit("ns").asi8
    return np.asarray(ns // 1_000_000, dtype=np.int64)


def _metrics_for_stream(
    stream: DeviceStream, recomputed: StreamRecompute | None, step_offset: int = 0
) -> list[tuple[str, float, int, int]]:
    """``(key, value, timestamp ms, step)`` for one device stream; NaN values are skipped."""
    f = stream.frame
    ts = _ms(f["timestamp"])
    steps = f["sample_index"].to_numpy(dtype=np.int64) + step_offset
    out: list[tuple[str, float, int, int]] = []

    def add(key: str, values: np.ndarray) -> None:
        ok = np.isfinite(values)
        out.extend(
            (key, float(v), int(t), int(s))
            for v, t, s in zip(values[ok], ts[ok], steps[ok], strict=True)
        )

    for col in f.columns:
        key = keys.legacy_column_key(stream.device, col)
        if key is None:
            continue
        if col == "power_w" and stream.power_source in ("estimated", "placeholder", "none"):
            continue  # not a measurement (§6.5): kept in the samples table only
        if col == "temp_c" and stream.temp_source in ("placeholder", "none"):
            continue
        if key.startswith("rle/") and stream.exclude_from_aggregates:
            continue  # older builds' CPU α = 0 (§2.7, M3)
        add(key, f[col].to_numpy(dtype=np.float64))
    if recomputed is not None and recomputed.default is not None:
        d = recomputed.default
        for col, name in _DEFAULT_TERMS:
            if col in d.columns:
                add(
                    keys.profile_rle_key("default", stream.device, name),
                    d[col].to_numpy(dtype=np.float64),
                )
    return out


def _log_metrics(client: Any, run_id: str, rows: Sequence[tuple[str, float, int, int]]) -> None:
    from mlflow.entities import Metric

    from rle.tracking.logger import MAX_METRICS_PER_BATCH

    for i in range(0, len(rows), MAX_METRICS_PER_BATCH):
        chunk = [Metric(k, v, t, s) for k, v, t, s in rows[i : i + MAX_METRICS_PER_BATCH]]
        client.log_batch(run_id, metrics=chunk, synchronous=True)


def _samples_table(
    streams: Sequence[DeviceStream],
    recomputes: Mapping[str, StreamRecompute | None],
    source_file: str,
    step_offsets: Mapping[tuple[int, str], int] | None = None,
) -> pd.DataFrame:
    tables = []
    for s in streams:
        t = s.frame.copy()
        t.insert(1, "device", s.device)
        t.insert(2, "segment", s.segment)
        if step_offsets:
            t["sample_index"] = t["sample_index"] + step_offsets.get((s.segment, s.device), 0)
        t["source_file"] = source_file
        t["power_source"] = s.power_source
        t["temp_source"] = s.temp_source
        rc = recomputes.get(f"{s.segment}:{s.device}")
        if rc is not None:
            for col in rc.legacy.columns:
                if col not in ("timestamp", "util_pct", "temp_c", "power_w", "cpu_freq_ghz"):
                    t[f"recomputed_{col}"] = rc.legacy[col].to_numpy()
            if rc.default is not None:
                for col in rc.default.columns:
                    if col not in ("timestamp", "util_pct", "temp_c", "power_w", "cpu_freq_ghz"):
                        t[f"default_{col}"] = rc.default[col].to_numpy()
        tables.append(t)
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


def _recompute_status(table: pd.DataFrame) -> str:
    if table.empty:
        return "not_compared"
    bad = table.loc[table["rows_within_tolerance"] < table["rows_compared"], "column"].tolist()
    return "agrees" if not bad else "mismatch: " + ",".join(bad)


def _error_metrics(
    device: str, table: pd.DataFrame, step: int = 0
) -> list[tuple[str, float, int, int]]:
    out = []
    for row in table.itertuples():
        err = float(row.max_abs_error)
        key = keys.legacy_column_key(device, str(row.column))
        name = key.rsplit("/", 1)[-1] if key else str(row.column)
        if math.isfinite(err):
            out.append((keys.recompute_error_key(device, name), err, 0, step))
    return out


MONITOR_ONLY_WORKLOAD = "monitor_only"
"""``workload`` tag of a recording without a training log (a monitor file on its own)."""
JOINT_DEFAULT_WORKLOAD = "joint_training"
"""``workload`` tag of a joint session whose metadata names no training mode."""


def _workload_label(text: Any) -> str | None:
    if not isinstance(text, str):
        return None
    label = re.sub(r"[^A-Za-z0-9_.\-]+", "_", text.strip()).strip("_").lower()
    return label[:100] or None


def _workload_tags(parsed: ParsedFile, session: ParsedSession | None) -> dict[str, str]:
    """``workload`` (and where it came from, ``rle.workload_source``) from the session type.

    A joint session is labelled by its training type: the v2 metadata's ``training_mode``
    (``--training-mode``), else its ``model_name``, else the analysis' ``model``, else
    :data:`JOINT_DEFAULT_WORKLOAD`. A monitor file on its own is ``synthetic_load`` when its v2
    metadata says the monitor ran its synthetic load, its ``training_mode`` if it names one,
    else :data:`MONITOR_ONLY_WORKLOAD`. Labels are lower-cased, other characters than letters,
    digits, ``_.-`` become ``_``. The evaluation groups and checks runs by this tag (identical
    training curves under different workload labels are flagged).
    """
    meta = parsed.metadata or {}
    monitoring = meta.get("monitoring") if isinstance(meta.get("monitoring"), dict) else {}
    candidates: list[tuple[str, Any]] = [("metadata.training_mode", meta.get("training_mode"))]
    if session is not None:
        candidates += [
            ("metadata.model_name", meta.get("model_name")),
            ("analysis.model", (session.analysis or {}).get("model")),
        ]
    elif (monitoring or {}).get("synthetic_load") is True:
        return {keys.TAG_WORKLOAD: "synthetic_load", "rle.workload_source": "metadata.monitoring"}
    for source, value in candidates:
        label = _workload_label(value)
        if label is not None:
            return {keys.TAG_WORKLOAD: label, "rle.workload_source": source}
    default = JOINT_DEFAULT_WORKLOAD if session is not None else MONITOR_ONLY_WORKLOAD
    return {keys.TAG_WORKLOAD: default, "rle.workload_source": "session_type"}


def _stream_tags(streams: Iterable[DeviceStream]) -> dict[str, str]:
    tags: dict[str, str] = {}
    for s in streams:
        tags[keys.power_source_tag(s.device)] = s.power_source
        tags[keys.temp_source_tag(s.device)] = s.temp_source
        if s.exclude_from_aggregates:
            tags[f"rle.excluded.{s.device}"] = "alpha_zero"
    return tags


def _stream_params(streams: Iterable[DeviceStream]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for s in streams:
        if s.rated_w is not None:
            params[f"legacy.rated_w.{s.device}"] = s.rated_w
            params[f"legacy.rated_w_source.{s.device}"] = s.rated_w_source
    return params


def _write_json(path: Path, value: Any) -> Path:
    path.write_text(json.dumps(value, indent=2, default=str, allow_nan=True))
    return path


# ----------------------------------------------------------------------------------- runs


class _Store:
    """The experiment, run lookup by content hash, and one run's lifecycle.

    Opening checks the store first (:func:`rle.tracking.logger.check_reachable`): a server that
    does not answer fails within seconds with the URI and how to fix it, and a new SQLite file
    gets its schema created under the same ``<db>.lock`` file lock that training and evaluation
    use, so concurrent jobs never race MLflow's migrations.

    Concurrent imports of one recording create one run: on SQLite the lookup-or-create (and the
    whole import of the recording) runs under an exclusive lock on ``<db>.import.lock``; on any
    store, right after creating a run, and again before ending it ``FINISHED``, the importer
    looks for other live or finished runs of the same content and segment and, if an earlier
    one exists, deletes its own and reuses that one.

    Raises:
        rle.errors.TrackingError: The store cannot be reached or opened.
    """

    def __init__(self, tracking_uri: str | None, experiment_name: str) -> None:
        from rle.tracking.logger import check_reachable, client_for

        self.location = paths.resolve_tracking(tracking_uri)
        check_reachable(self.location)
        self.client = client_for(self.location)
        self.experiment_name = experiment_name
        exp = self.client.get_experiment_by_name(experiment_name)
        self.experiment_id: str | None = None if exp is None else str(exp.experiment_id)

    @contextlib.contextmanager
    def import_lock(self) -> Iterator[None]:
        """Hold the store's import lock (SQLite: ``<db>.import.lock``; servers: no lock).

        Blocks while another importer holds it (its import of one recording takes seconds).
        """
        uri = self.location.uri
        try:
            import fcntl
        except ImportError:  # Windows: the post-create check alone
            yield
            return
        if not uri.startswith("sqlite:///"):
            yield
            return
        db = Path(uri.removeprefix("sqlite:///"))
        with open(db.with_name(db.name + ".import.lock"), "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _runs_of(self, sha256: str) -> list[Any]:
        if self.experiment_id is None:
            return []
        return list(
            self.client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.`{keys.TAG_CONTENT_SHA256}` = '{sha256}'",
                max_results=1000,
            )
        )

    def existing(self, sha256: str) -> dict[str, str]:
        """Finished runs with this content hash: segment tag → run id."""
        found: dict[str, str] = {}
        for run in self._runs_of(sha256):
            seg = run.data.tags.get(keys.TAG_SEGMENT, "")
            if run.info.status == "FINISHED":
                found.setdefault(seg, run.info.run_id)
            elif not _live(run):
                log.warning(
                    "run %s (%s) holds an earlier, unfinished import of the same content; a new run "
                    "is created",
                    run.info.run_id,
                    run.info.status,
                )
        return found

    def create(self, run_name: str, tags: Mapping[str, str]) -> tuple[str, bool]:
        """Create the recording's run unless another importer got there first.

        Returns:
            ``(run_id, created)``: ``created`` is ``False`` when an earlier live run of the same
            content and segment exists (a concurrent import); this call's run is then deleted
            and the earlier one returned.
        """
        from rle.sync import owner_tags
        from rle.tracking.logger import create_run

        # owner tags: `rle.sync --close-dead` ends the run if this import is killed
        owned = {**tags, **owner_tags()}
        exp_id, run_id = create_run(self.location, self.experiment_name, run_name, owned)
        self.experiment_id = exp_id
        first = self._earlier_rival(run_id, tags)
        if first is None:
            return run_id, True
        log.info(
            "another import of the same content created run %s first; run %s deleted", first, run_id
        )
        self.client.delete_run(run_id)
        return first, False

    def _earlier_rival(self, run_id: str, tags: Mapping[str, str]) -> str | None:
        """An earlier finished or live run of the same content and segment than ``run_id``."""
        seg = tags.get(keys.TAG_SEGMENT, "")
        rivals = [
            r
            for r in self._runs_of(tags[keys.TAG_CONTENT_SHA256])
            if r.data.tags.get(keys.TAG_SEGMENT, "") == seg
            and (r.info.run_id == run_id or r.info.status == "FINISHED" or _live(r))
        ]
        if not rivals:
            return None
        first = min(rivals, key=lambda r: (r.info.start_time or 0, r.info.run_id))
        return None if first.info.run_id == run_id else str(first.info.run_id)

    def end(self, run_id: str, status: str, tags: Mapping[str, str] | None = None) -> str:
        """End the run; with ``tags``, first give way to an earlier run of the same recording.

        The check of :meth:`create` can miss a rival whose run was not visible yet (two runs
        created within moments; start times come from the clients), so both imports would go
        on. Looking again at the end, when every rival is visible, the later run is deleted and
        the earlier one's id returned: whatever the interleaving, one run is left.

        Returns:
            The recording's run: ``run_id``, or the earlier rival's when ``run_id`` was deleted.
        """
        from rle.tracking.logger import end_run

        if status == "FINISHED" and tags is not None:
            first = self._earlier_rival(run_id, tags)
            if first is not None:
                log.info(
                    "another import of the same content made run %s first; run %s deleted",
                    first,
                    run_id,
                )
                self.client.delete_run(run_id)
                return first
        end_run(self.location, run_id, status)
        return run_id


_LIVE_IMPORT_S = 600.0
"""A RUNNING import run younger than this (s) is taken to be a concurrent import in progress;
an older one was left by an import that died, and is replaced."""


def _live(run: Any) -> bool:
    """Whether a run is an import in progress.

    ``RUNNING`` and its owner process (:func:`rle.sync.owner_status`) alive on this host; for an
    owner on another host, or none recorded, started less than 10 min ago.
    """
    from rle.sync import OWNER_ALIVE, OWNER_GONE, owner_status

    if run.info.status != "RUNNING":
        return False
    owner = owner_status(run.data.tags)
    if owner in (OWNER_ALIVE, OWNER_GONE):
        return owner == OWNER_ALIVE
    start_ms = run.info.start_time or 0
    return (time.time() * 1000.0 - start_ms) < _LIVE_IMPORT_S * 1000.0


def _import_segment(
    store: _Store,
    parsed: ParsedFile,
    seg: Segment,
    recomputes: Mapping[str, StreamRecompute],
    *,
    with_default: bool,
) -> tuple[str, bool]:
    """Create and fill the run of one segment; ``(run_id, created)`` (see :meth:`_Store.create`)."""
    from rle.tracking.logger import log_params, log_tags

    n_seg = len(parsed.segments)
    name = parsed.path.name if n_seg == 1 else f"{parsed.path.name} #{seg.index + 1}/{n_seg}"
    streams = [seg.streams[d] for d in seg.devices]
    tags = {
        keys.TAG_SOURCE: parsed.source,
        keys.TAG_PROFILE: parsed.profile,
        keys.TAG_LEGACY_FORMAT: parsed.format,
        keys.TAG_CONTENT_SHA256: parsed.content_sha256,
        keys.TAG_SEGMENT: str(seg.index),
        keys.TAG_STEP_KIND: "sample_index",
        "rle.devices": ",".join(seg.devices),
        "rle.original_file": parsed.path.name,
        "rle.original_folder": parsed.path.resolve().parent.name,
        "rle.segments_in_file": str(n_seg),
        "rle.segment_start_reason": seg.start_reason,
        "rle.starts_fresh": str(seg.starts_fresh).lower(),
        **_workload_tags(parsed, None),
        **_stream_tags(streams),
    }
    run_id, created = store.create(name, tags)
    if not created:
        return run_id, False
    status = "FAILED"
    try:
        table = pd.concat(
            [
                recomputes[f"{seg.index}:{d}"].agreement
                for d in seg.devices
                if f"{seg.index}:{d}" in recomputes
            ]
            or [pd.DataFrame()],
            ignore_index=True,
        )
        extra_tags = {f"import.{k}": str(v) for k, v in parsed.counts.items()}
        extra_tags.update({f"import.{k}": v for k, v in parsed.flags.items()})
        for d in seg.devices:
            rc = recomputes.get(f"{seg.index}:{d}")
            if rc is not None:
                extra_tags[f"rle.recompute.{d}"] = _recompute_status(rc.agreement)
                if rc.seeded_from:
                    extra_tags[f"rle.seeded_from.{d}"] = rc.seeded_from
        if with_default:
            extra_tags["rle.profile.extra"] = "default"
        log_tags(store.client, run_id, extra_tags)
        params = {
            "legacy.file_name": parsed.path.name,
            "legacy.format": parsed.format,
            "legacy.columns": len(parsed.columns),
            "legacy.segment": seg.index,
            **_stream_params(streams),
        }
        if parsed.metadata:
            params.update(_flatten("legacy.metadata", parsed.metadata, {}))
        log_params(store.client, run_id, params)

        rows: list[tuple[str, float, int, int]] = []
        for s in streams:
            rc = recomputes.get(f"{seg.index}:{s.device}")
            rows += _metrics_for_stream(s, rc)
            if rc is not None:
                rows += _error_metrics(s.device, rc.agreement)
        _log_metrics(store.client, run_id, rows)

        with tempfile.TemporaryDirectory() as tmp:
            t = Path(tmp)
            samples = _samples_table(streams, recomputes, parsed.path.name)
            samples.to_parquet(t / "samples.parquet", index=False)
            store.client.log_artifact(run_id, str(t / "samples.parquet"), artifact_path="telemetry")
            for f in [parsed.path, parsed.metadata_path]:
                if f is not None and f.is_file():
                    store.client.log_artifact(run_id, str(f), artifact_path="original")
            report = _file_report(parsed, seg)
            store.client.log_artifact(
                run_id, str(_write_json(t / "report.json", report)), artifact_path="import"
            )
            if not table.empty:
                table.to_csv(t / "recompute_agreement.csv", index=False)
                store.client.log_artifact(
                    run_id, str(t / "recompute_agreement.csv"), artifact_path="import"
                )
        status = "FINISHED"
    finally:
        final_id = store.end(run_id, status, tags)
    return final_id, final_id == run_id


def _file_report(parsed: ParsedFile, seg: Segment | None) -> dict[str, Any]:
    return {
        "file": parsed.path.name,
        "format": parsed.format,
        "source": parsed.source,
        "profile": parsed.profile,
        "content_sha256": parsed.content_sha256,
        "rows_accepted": len(parsed.rows),
        "counts": parsed.counts,
        "skipped_lines": [{"line": ln, "reason": r} for ln, r in parsed.skipped_lines],
        "flags": parsed.flags,
        "segments": [
            {
                "index": s.index,
                "writer": s.writer,
                "start": s.start.isoformat(),
                "end": s.end.isoformat(),
                "starts_fresh": s.starts_fresh,
                "start_reason": s.start_reason,
                "streams": {
                    d: {
                        "samples": st.n_samples,
                        "power_source": st.power_source,
                        "temp_source": st.temp_source,
                        "rated_w": st.rated_w,
                        "rated_w_source": st.rated_w_source,
                        "exclude_from_aggregates": st.exclude_from_aggregates,
                    }
                    for d, st in s.streams.items()
                },
            }
            for s in parsed.segments
        ],
        "this_segment": None if seg is None else seg.index,
    }


def _import_session(
    store: _Store,
    session: ParsedSession,
    recomputes: Mapping[str, StreamRecompute],
    *,
    with_default: bool,
) -> tuple[str, dict[str, Any] | None, bool]:
    from rle.analysis.compare import agreement as analysis_agreement
    from rle.analysis.legacy import legacy_joint_session
    from rle.tracking.logger import log_params, log_tags

    mon = session.monitor
    streams = mon.streams
    devices = tuple(sorted({s.device for s in streams}, key=lambda d: (d != "gpu_0", d)))
    reproduced = legacy_joint_session(session.training_entries, mon.rows)
    agreement = analysis_agreement(session.analysis, reproduced)
    tags = {
        keys.TAG_SOURCE: JOINT_SOURCE,
        keys.TAG_PROFILE: mon.profile,
        keys.TAG_LEGACY_FORMAT: mon.format,
        keys.TAG_CONTENT_SHA256: session.content_sha256,
        keys.TAG_SEGMENT: "",
        keys.TAG_STEP_KIND: "sample_index",
        "step.kind.train": "training_step",
        "rle.devices": ",".join(devices),
        "rle.original_file": mon.path.name,
        "rle.original_folder": session.folder.resolve().name,
        "rle.session_id": session.session_id,
        "rle.segments_in_file": str(len(mon.segments)),
        **_workload_tags(mon, session),
        **_stream_tags(streams),
    }
    run_id, created = store.create(f"joint {session.session_id}", tags)
    if not created:
        return run_id, None, False
    status = "FAILED"
    try:
        extra = {f"import.{k}": str(v) for k, v in session.counts.items()}
        extra.update({f"import.{k}": v for k, v in mon.flags.items()})
        extra["rle.legacy_analysis"] = (
            "agrees"
            if agreement.get("agrees")
            else ("not_compared" if not agreement["compared"] else "mismatch")
        )
        if with_default:
            extra["rle.profile.extra"] = "default"
        log_tags(store.client, run_id, extra)
        params: dict[str, Any] = {
            "legacy.session_id": session.session_id,
            **_stream_params(streams),
        }
        if session.analysis:
            params.update(_flatten("legacy.analysis", session.analysis, {}))
        if session.version:
            params.update(_flatten("legacy.version", session.version, {}))
        if mon.metadata:
            params.update(_flatten("legacy.metadata", mon.metadata, {}))
        log_params(store.client, run_id, params)

        # Telemetry: segments one after another on one sample-index axis per device.
        offsets: dict[tuple[int, str], int] = {}
        next_index: Counter[str] = Counter()
        rows: list[tuple[str, float, int, int]] = []
        for seg in mon.segments:
            for d in seg.devices:
                s = seg.streams[d]
                offsets[(seg.index, d)] = next_index[d]
                rc = recomputes.get(f"{seg.index}:{d}")
                rows += _metrics_for_stream(s, rc, next_index[d])
                if rc is not None:
                    rows += _error_metrics(d, rc.agreement)
                next_index[d] += s.n_samples
        train = session.training.loc[~session.training["is_summary"]]
        t_ms = _ms(train["timestamp"])
        steps = train["step"].to_numpy(dtype=np.float64)
        for col, key in (
            ("loss", keys.TRAIN_LOSS),
            ("grad_norm", keys.TRAIN_GRAD_NORM),
            ("learning_rate", keys.TRAIN_LR),
        ):
            v = train[col].to_numpy(dtype=np.float64)
            ok = np.isfinite(v)
            rows += [
                (key, float(x), int(t), int(s))
                for x, t, s in zip(v[ok], t_ms[ok], steps[ok], strict=True)
            ]
        _log_metrics(store.client, run_id, rows)

        with tempfile.TemporaryDirectory() as tmp:
            t = Path(tmp)
            samples = _samples_table(streams, recomputes, mon.path.name, offsets)
            samples.to_parquet(t / "samples.parquet", index=False)
            store.client.log_artifact(run_id, str(t / "samples.parquet"), artifact_path="telemetry")
            for f in session.files:
                store.client.log_artifact(run_id, str(f), artifact_path="original")
            report = {
                **_file_report(mon, None),
                "session_id": session.session_id,
                "counts": session.counts,
            }
            store.client.log_artifact(
                run_id, str(_write_json(t / "report.json", report)), artifact_path="import"
            )
            tables = [rc.agreement for rc in recomputes.values()]
            if tables:
                pd.concat(tables, ignore_index=True).to_csv(
                    t / "recompute_agreement.csv", index=False
                )
                store.client.log_artifact(
                    run_id, str(t / "recompute_agreement.csv"), artifact_path="import"
                )
            analysis = {
                "reproduced": reproduced,
                "stored": session.analysis,
                "agreement": agreement,
            }
            store.client.log_artifact(
                run_id,
                str(_write_json(t / "legacy_joint_session.json", analysis)),
                artifact_path="analysis",
            )
        status = "FINISHED"
    finally:
        final_id = store.end(run_id, status, tags)
    return final_id, agreement, final_id == run_id


# ----------------------------------------------------------------------------------- run_ingest


def _check_profile(profile: str | None, items: Iterable[tuple[Path, str]]) -> None:
    if profile is None or profile == "default":
        return
    if profile not in PROFILE_CHOICES:
        raise ConfigError(f"--profile {profile!r} is not one of {', '.join(PROFILE_CHOICES)}.")
    for path, needed in items:
        if needed != profile:
            raise ConfigError(
                f"--profile {profile} does not reproduce {path} (its format needs {needed}); use "
                "--profile default to add the corrected metric, or leave --profile out."
            )


def _no_run_reason(parsed: ParsedFile) -> str:
    """Why a monitor file produced no run, e.g. ``all 1000 rows dropped: unknown_device 1000``."""
    skipped = {
        k.removeprefix("skipped."): v
        for k, v in parsed.counts.items()
        if k.startswith("skipped.") and k not in ("skipped.blank_line", "skipped.repeated_header")
    }
    total = sum(skipped.values())
    if total == 0:
        return "no data rows after the header"
    detail = ", ".join(f"{k} {v}" for k, v in sorted(skipped.items(), key=lambda kv: -kv[1]))
    return f"all {total} rows dropped: {detail}"


def run_ingest(
    paths_: Sequence[str | Path],
    *,
    profile: str | None = None,
    experiment_name: str = DEFAULT_EXPERIMENT,
    tracking_uri: str | None = None,
) -> ImportResult:
    """Import RLE lab recordings, one MLflow run per recording.

    Every input is parsed first. A file that cannot be read or is not a recognised format is
    reported in :attr:`ImportResult.failed` (with the reason) and the other recordings are still
    imported; a file whose rows are all dropped is reported in :attr:`ImportResult.no_run`.
    Recordings already imported into the experiment (same ``rle.content_sha256`` and segment,
    run ``FINISHED``) are skipped, and concurrent imports of one recording create one run
    (:class:`_Store`).

    Args:
        paths_: Monitor CSVs and/or folders (searched recursively for CSVs and joint-session
            bundles).
        profile: ``None`` or the file's legacy profile: recompute with the matching legacy
            profile; ``"default"``: also compute our corrected metric.
        experiment_name: MLflow experiment to write to.
        tracking_uri: Tracking URI (``MLFLOW_TRACKING_URI`` wins; default: the project's
            SQLite store, :func:`rle.paths.resolve_tracking`).

    Returns:
        The :class:`ImportResult`.

    Raises:
        rle.errors.ImportFormatError: A path does not exist, no recordings were found, or every
            recording failed to parse; the message names every such file and what was expected.
        rle.errors.ConfigError: Unknown profile, or a legacy profile that does not match a file.
        rle.errors.TrackingError: The tracking store cannot be reached or refused a request.
    """
    if not paths_:
        raise ConfigError("no paths given: pass monitor CSVs or folders of recordings.")
    with_default = profile == "default"
    files, session_refs, ignored = _discover(paths_)
    parsed: list[ParsedFile] = []
    sessions: list[ParsedSession] = []
    failed: list[tuple[Path, str]] = []
    for f in files:
        try:
            parsed.append(read_monitor_csv(f))
        except ImportFormatError as e:
            failed.append((f, str(e)))
    for folder, sid in session_refs:
        try:
            sessions.append(read_joint_session(folder, sid))
        except ImportFormatError as e:
            failed.append((folder / f"rle_data_{sid}.csv", str(e)))
    if failed and not parsed and not sessions:
        raise ImportFormatError("\n".join(msg for _, msg in failed))
    if not parsed and not sessions:
        raise ImportFormatError(
            f"no recordings found in {', '.join(map(str, paths_))}: expected monitor CSVs "
            "(rle_*.csv, rle_enhanced_*.csv) or joint-session folders."
        )
    _check_profile(
        profile,
        [(p.path, p.profile) for p in parsed] + [(s.folder, s.profile) for s in sessions],
    )

    file_rc = recompute_files(parsed, with_default=with_default)
    store = _Store(tracking_uri, experiment_name)
    log.info("Tracking URI %s (from %s)", store.location.uri, store.location.reason)
    runs: list[ImportedRun] = []
    no_run: list[tuple[Path, str]] = []
    for fi, pf in enumerate(parsed):
        if not pf.segments:
            reason = _no_run_reason(pf)
            log.warning("%s: no run created (%s)", printable(str(pf.path)), reason)
            no_run.append((pf.path, reason))
            continue
        with store.import_lock():
            existing = store.existing(pf.content_sha256)
            for seg in pf.segments:
                rcs = {
                    f"{seg.index}:{d}": file_rc[(fi, seg.index, d)]
                    for d in seg.devices
                    if (fi, seg.index, d) in file_rc
                }
                table = (
                    pd.concat([r.agreement for r in rcs.values()], ignore_index=True)
                    if rcs
                    else None
                )
                run_id = existing.get(str(seg.index))
                created = False
                if run_id is None:
                    run_id, created = _import_segment(
                        store, pf, seg, rcs, with_default=with_default
                    )
                runs.append(
                    ImportedRun(
                        run_id=run_id,
                        path=pf.path,
                        source=pf.source,
                        segment=seg.index,
                        devices=seg.devices,
                        n_samples=seg.n_samples,
                        created=created,
                        counts=pf.counts,
                        flags=pf.flags,
                        agreement=table,
                        seeded_from={
                            rc.device: rc.seeded_from for rc in rcs.values() if rc.seeded_from
                        },
                    )
                )
    for session in sessions:
        rc_map = recompute_files([session.monitor], with_default=with_default)
        rcs = {f"{si}:{d}": v for (_, si, d), v in rc_map.items()}
        table = pd.concat([r.agreement for r in rcs.values()], ignore_index=True) if rcs else None
        analysis_agreement = None
        with store.import_lock():
            run_id = store.existing(session.content_sha256).get("")
            created = False
            if run_id is None:
                run_id, analysis_agreement, created = _import_session(
                    store, session, rcs, with_default=with_default
                )
        runs.append(
            ImportedRun(
                run_id=run_id,
                path=session.folder,
                source=JOINT_SOURCE,
                segment=None,
                devices=tuple(
                    sorted(
                        {s.device for s in session.monitor.streams}, key=lambda d: (d != "gpu_0", d)
                    )
                ),
                n_samples=sum(s.n_samples for s in session.monitor.streams),
                created=created,
                counts=session.counts,
                flags=session.monitor.flags,
                agreement=table,
                analysis_agreement=analysis_agreement,
            )
        )
    if store.experiment_id is None:  # everything was empty; make the experiment visible anyway
        exp = store.client.get_experiment_by_name(experiment_name)
        store.experiment_id = "" if exp is None else str(exp.experiment_id)
    return ImportResult(
        experiment_name,
        store.experiment_id,
        store.location.uri,
        runs,
        ignored,
        failed=failed,
        no_run=no_run,
    )


# ----------------------------------------------------------------------------------- CLI


def _fmt_counts(counts: Mapping[str, int]) -> str:
    skipped = [
        f"{k.removeprefix('skipped.')} {v}" for k, v in counts.items() if k.startswith("skipped.")
    ]
    repaired = [
        f"{k.removeprefix('repaired.')} {v}" for k, v in counts.items() if k.startswith("repaired.")
    ]
    parts = []
    if skipped:
        parts.append("skipped: " + ", ".join(skipped))
    if repaired:
        parts.append("repaired: " + ", ".join(repaired))
    return "; ".join(parts) or "no skipped or repaired rows"


def format_summary(result: ImportResult) -> str:
    """The terminal summary: runs, counts by reason, recomputation agreement per column."""
    lines = [
        f"rle-ingest: {len(result.created)} run(s) created, {len(result.reused)} already imported; "
        f"experiment {result.experiment_name!r} ({result.experiment_id}) at {result.tracking_uri}"
    ]
    last_path: Path | None = None
    for r in result.runs:
        if r.path != last_path:
            lines.append(f"  {r.path}  [{r.source}]  {_fmt_counts(r.counts)}")
            flags = {k: v for k, v in r.flags.items() if k not in ("file_name_time",)}
            if flags:
                lines.append("    " + ", ".join(f"{k}={v}" for k, v in flags.items()))
            last_path = r.path
        seg = "" if r.segment is None else f"segment {r.segment}: "
        state = "created" if r.created else "already imported"
        lines.append(
            f"    {seg}{', '.join(r.devices)}, {r.n_samples} samples -> run {r.run_id} ({state})"
        )
        if r.seeded_from:
            seeds = ", ".join(sorted(set(r.seeded_from.values())))
            lines.append(f"      continues {seeds} (recomputation seeded with its state)")
        if r.agreement is not None and not r.agreement.empty:
            for (dev, prof), t in r.agreement.groupby(["device", "profile"], sort=False):
                within, compared = (
                    int(t["rows_within_tolerance"].sum()),
                    int(t["rows_compared"].sum()),
                )
                excluded = int(t["rows_excluded"].sum())
                worst = t["max_rel_error"].max()
                head = f"      recompute {dev} {prof}: {within}/{compared} values within tolerance"
                head += f" over {len(t)} columns (max rel err {worst:.2g})"
                if excluded:
                    head += f", {excluded} excluded (state not in the data)"
                lines.append(head)
                for row in t.itertuples():
                    if row.rows_within_tolerance < row.rows_compared:
                        lines.append(
                            f"        MISMATCH {row.column}: {row.rows_within_tolerance}/{row.rows_compared}"
                            f" rows, max abs err {row.max_abs_error:.3g}, first at line {row.first_mismatch_line}"
                        )
        if r.analysis_agreement is not None:
            a = r.analysis_agreement
            if not a.get("compared"):
                lines.append(f"      legacy analysis: {a.get('reason')}")
            else:
                bad = [k for k, v in a["fields"].items() if not v["agrees"]]
                lines.append(
                    "      legacy analysis (analysis_<id>.json): "
                    + ("reproduced" if not bad else "DIFFERS in " + ", ".join(bad))
                )
    for path, reason in result.no_run:
        lines.append(f"  {path}  NO RUN: {reason}")
    if result.ignored:
        lines.append(f"  ignored {len(result.ignored)} file(s) that are not recordings:")
        lines += [f"    {p}" for p in result.ignored]
    if result.failed:
        lines.append(f"  FAILED {len(result.failed)} file(s), not imported:")
        lines += [f"    {reason}" for _, reason in result.failed]
    return printable("\n".join(lines))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rle-ingest",
        description="Import RLE lab recordings (v0.3/v2 monitor CSVs, joint-session folders) into MLflow.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="monitor CSV files or folders")
    p.add_argument(
        "--profile",
        choices=PROFILE_CHOICES,
        default=None,
        help="'default' also computes the corrected metric beside the legacy values; a legacy "
        "profile must match the files (the matching one is always used for recomputation)",
    )
    p.add_argument(
        "--experiment",
        default=DEFAULT_EXPERIMENT,
        help=f"MLflow experiment (default {DEFAULT_EXPERIMENT})",
    )
    p.add_argument("--tracking-uri", default=None, help="tracking URI (MLFLOW_TRACKING_URI wins)")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point (``rle-ingest``); returns the exit status.

    0: every recording imported (or already imported); 1: some files failed to parse (the
    others were imported; the summary lists the failures); 2: nothing imported (bad arguments,
    no readable recording, the tracking store unreachable). Printed text never carries control
    characters from the files (they are shown as escapes).
    """
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        result = run_ingest(
            args.paths,
            profile=args.profile,
            experiment_name=args.experiment,
            tracking_uri=args.tracking_uri,
        )
    except RLEError as e:
        print(printable(f"rle-ingest: error: {e}"), file=sys.stderr)  # noqa: T201 (CLI output)
        return 2
    print(format_summary(result))  # noqa: T201 (CLI output)
    if result.failed:
        print(  # noqa: T201 (CLI output)
            printable(
                f"rle-ingest: error: {len(result.failed)} file(s) could not be imported:\n"
                + "\n".join(reason for _, reason in result.failed)
            ),
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
