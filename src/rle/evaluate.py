"""``python -m rle.evaluate`` / ``rle-evaluate``: fingerprints and correlations from tracked runs.

A thin ``@hydra.main`` over :func:`run_evaluation`, which tests call with a composed
``conf/evaluate.yaml``. It selects runs (experiment, filter string, run ids or a sweep parent's
children), reads their ``train/*`` histories and ``telemetry/samples.parquet`` through
:mod:`rle.tracking.reader`, computes per-run/per-device fingerprints and correlations with the
pure functions of :mod:`rle.analysis`, and writes one **evaluation run** (tags ``rle.role`` and
``rle.kind`` = ``evaluation``) holding ``fingerprints.csv``, ``correlations.csv``,
``spike_collapse.csv``, plots and ``report.md``. Examples::

    python -m rle.evaluate                                        # every run of experiment "rle"
    python -m rle.evaluate selection.filter="tags.workload = 'synthetic'"
    python -m rle.evaluate selection.parent_run_id=<sweep parent run id>
    python -m rle.evaluate 'selection.run_ids=[<id1>,<id2>]' evaluation.correlation.max_lag_s=5

The legacy methods (``docs/rle-metric.md`` §8.3) reproduce the original lab's analyses on joint
sessions imported by :mod:`rle.ingest` (tag ``rle.source=rle_lab_joint``) from their original
files (artifacts ``original/``), beside the corrected ``default`` analysis of the same runs::

    python -m rle.evaluate evaluation=legacy_joint_session 'selection.experiment_names=[rle-lab-import]'
    python -m rle.evaluate evaluation=legacy_lag_report 'selection.experiment_names=[rle-lab-import]'

``legacy_joint_session`` compares every computed field of ``analysis_<id>.json`` with the
reproduction (``legacy_joint_session.csv``, tolerance :data:`LEGACY_TOLERANCE`);
``legacy_lag_report`` writes the lab's comprehensive lag report over the selected sessions
(``legacy_lag_report.json``/``.csv``). Selected runs that are not imported joint sessions are
listed as skipped.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from rle import paths
from rle.errors import ConfigError, RLEError

__all__ = [
    "LEGACY_COLUMNS",
    "LEGACY_METHODS",
    "LEGACY_TOLERANCE",
    "EvalResult",
    "main",
    "run_evaluation",
    "selection_from_config",
    "settings_from_config",
    "summary_text",
]

log = logging.getLogger(__name__)

if not OmegaConf.has_resolver("rle_root"):
    OmegaConf.register_new_resolver("rle_root", lambda: paths.project_root().as_posix())

SCATTERS: tuple[tuple[str, str, str, str], ...] = (
    ("train/grad_norm", "rle_smoothed", "scatter_grad_norm_vs_rle.png", "RLE vs grad_norm"),
    ("train/loss", "rle_smoothed", "scatter_loss_vs_rle.png", "RLE vs training loss"),
    (
        "train/grad_norm",
        "temp_c",
        "scatter_temperature_vs_grad_norm.png",
        "Temperature vs grad_norm",
    ),
)
"""Scatter plots: (x, y, file, title)."""

LEGACY_METHODS: tuple[str, ...] = ("legacy_joint_session", "legacy_lag_report")
"""``correlation.method`` values that reproduce the lab's analyses (:mod:`rle.analysis.legacy`)."""
LEGACY_COLUMNS: tuple[str, ...] = (
    "run_id",
    "session_id",
    "field",
    "reproduced",
    "stored",
    "abs_diff",
    "match",
)
"""Columns of ``legacy_joint_session.csv``: one row per run and field of ``analysis_<id>.json``."""
LEGACY_TOLERANCE = 1e-6
"""Largest absolute difference of a reproduced number that still matches the stored one."""
JOINT_SOURCE = "rle_lab_joint"
"""``rle.source`` of a joint session imported by :mod:`rle.ingest`."""
LAG_REPORT_COLUMNS: tuple[str, ...] = (
    "run_id",
    "session_id",
    "session_dir",
    "session_type",
    "samples",
    "lag_rows",
    "correlation",
    "p_value",
    "interpretation",
    "is_peak",
)
"""Columns of ``legacy_lag_report.csv``: one row per session and lag (in rows)."""

FINGERPRINT_PLOT_FEATURES: dict[str, str] = {
    "util_mean_percentage": "utilisation, mean (%)",
    "power_mean_watts": "power, mean (W)",
    "temperature_p95_celsius": "temperature, p95 (°C)",
    "energy_per_step_joules": "energy per step (J)",
    "samples_per_second": "throughput (samples/s)",
    "rle_mean": "RLE, mean",
    "collapse_fraction": "collapse fraction",
    "sm_clock_mean_megahertz": "SM clock, mean (MHz)",
    "throttle_fraction": "throttle fraction",
}


@dataclass
class EvalResult:
    """Outcome of :func:`run_evaluation`.

    Attributes:
        status: ``FINISHED`` (evaluation run written), ``EMPTY`` (nothing to analyse; no run
            written) or ``FAILED``.
        message: One line for the user.
        run_id: The evaluation run's id (``None`` when none was written).
        experiment_id: Its experiment.
        output_dir: Local copy of the artifacts.
        runs: Analysed runs (``run_id``, ``run_name``, ``group``, ``status``, ``source``,
            ``devices``, ``n_steps``, ``duration_s``).
        skipped: What was not analysed (``run_id``, ``what``, ``reason``).
        fingerprints: Per-run fingerprint rows.
        group_fingerprints: Aggregated rows per group and device.
        correlations: ``correlations.csv`` rows.
        spikes: ``spike_collapse.csv`` rows.
        classifier: The workload classifier's outcome.
        warnings: Sanity-check warnings.
        notes: Remarks from the selection.
        timings_s: Wall time of ``select``, ``read``, ``analyse`` and ``write``, s.
        method: ``evaluation.correlation.method``.
        legacy: ``legacy_joint_session.csv`` rows (:data:`LEGACY_COLUMNS`; legacy method only).
        legacy_report: The reproduced lag report with its ``summary`` (``legacy_lag_report``).
    """

    status: str
    message: str
    run_id: str | None = None
    experiment_id: str | None = None
    output_dir: Path | None = None
    runs: pd.DataFrame = field(default_factory=pd.DataFrame)
    skipped: pd.DataFrame = field(default_factory=pd.DataFrame)
    fingerprints: pd.DataFrame = field(default_factory=pd.DataFrame)
    group_fingerprints: pd.DataFrame = field(default_factory=pd.DataFrame)
    correlations: pd.DataFrame = field(default_factory=pd.DataFrame)
    spikes: pd.DataFrame = field(default_factory=pd.DataFrame)
    classifier: Any = None
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)
    method: str = "default"
    legacy: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(LEGACY_COLUMNS)))
    legacy_report: dict[str, Any] | None = None


# -------------------------------------------------------------------------------------- config


def _list(node: Any) -> list[str]:
    if node is None:
        return []
    if isinstance(node, str):
        return [s.strip() for s in node.split(",") if s.strip()]
    return [str(v) for v in node]


def selection_from_config(cfg: DictConfig) -> Any:
    """Build the reader's :class:`~rle.tracking.reader.Selection` from ``cfg.selection``.

    The experiments default to ``MLFLOW_EXPERIMENT_NAME``, else ``tracking.experiment_name``.

    Args:
        cfg: The composed ``evaluate`` config.

    Returns:
        The selection.

    Raises:
        rle.errors.ConfigError: If ``max_runs`` is not positive.
    """
    from rle.tracking.reader import Selection

    s = cfg.selection
    names = _list(s.experiment_names) or [
        os.environ.get("MLFLOW_EXPERIMENT_NAME") or str(cfg.tracking.experiment_name)
    ]
    max_runs = None if s.max_runs is None else int(s.max_runs)
    if max_runs is not None and max_runs < 1:
        raise ConfigError(f"selection.max_runs must be positive or null, got {max_runs}.")
    return Selection(
        experiment_names=tuple(names),
        filter_string=str(s.filter or ""),
        run_ids=tuple(_list(s.run_ids)),
        parent_run_id=str(s.parent_run_id) if s.parent_run_id else None,
        include_evaluations=bool(s.include_evaluations),
        include_sweep_parents=bool(s.include_sweep_parents),
        include_running=bool(s.include_running),
        max_runs=max_runs,
    )


def settings_from_config(cfg: DictConfig) -> tuple[Any, Any, list[Any]]:
    """Validate ``cfg.evaluation`` and build the analysis settings.

    Args:
        cfg: The composed ``evaluate`` config.

    Returns:
        ``(CorrelationSettings, SpikeSettings, pairs)``. For a legacy method
        (:data:`LEGACY_METHODS`) the settings are those of the ``default`` analysis that the
        report puts beside the reproduction.

    Raises:
        rle.errors.ConfigError: On an unknown method, alignment or detrending, or a value out
            of range (the message lists the valid choices).
    """
    from rle.analysis.align import ALIGN_METHODS
    from rle.analysis.correlation import (
        CORRELATION_METHODS,
        CorrelationSettings,
        Pair,
        SpikeSettings,
    )

    c = cfg.evaluation.correlation
    method = str(c.method)
    if method not in (*CORRELATION_METHODS, *LEGACY_METHODS):
        raise ConfigError(
            f"evaluation.correlation.method={method!r} is not available; valid choices: "
            f"{', '.join((*CORRELATION_METHODS, *LEGACY_METHODS))}."
        )
    if str(c.align) not in ALIGN_METHODS:
        raise ConfigError(
            f"evaluation.correlation.align={c.align!r}; valid: {', '.join(ALIGN_METHODS)}."
        )
    if str(c.detrend) not in ("difference", "linear"):
        raise ConfigError(
            f"evaluation.correlation.detrend={c.detrend!r}; valid: difference, linear."
        )
    checks = {
        "resample_hz": float(c.resample_hz) > 0,
        "max_lag_s": float(c.max_lag_s) >= 0,
        "n_permutations": int(c.n_permutations) >= 1,
        "block_s": float(c.block_s) > 0,
        "min_blocks": int(c.min_blocks) >= 2,
        "min_points": int(c.min_points) >= 3,
    }
    for name, ok in checks.items():
        if not ok:
            raise ConfigError(f"evaluation.correlation.{name}={c[name]!r} is out of range.")
    settings = CorrelationSettings(
        method="default" if method in LEGACY_METHODS else method,
        align=str(c.align),  # type: ignore[arg-type]
        detrend=str(c.detrend),  # type: ignore[arg-type]
        resample_hz=float(c.resample_hz),
        max_lag_s=float(c.max_lag_s),
        n_permutations=int(c.n_permutations),
        block_s=float(c.block_s),
        min_blocks=int(c.min_blocks),
        seed=int(c.seed),
        min_points=int(c.min_points),
    )
    sp = cfg.evaluation.spikes
    if not float(sp.window_s) >= 0:
        raise ConfigError(f"evaluation.spikes.window_s={sp.window_s!r} must be >= 0.")
    spikes = SpikeSettings(k=float(sp.k), window_s=float(sp.window_s))
    pairs = []
    for p in c.pairs:
        x, y = str(p.x), str(p.y)
        if not x.startswith("train/"):
            raise ConfigError(
                f"evaluation.correlation.pairs: x={x!r} must be a train/ metric (the training "
                "series; the lag sign convention needs x = training, y = hardware)."
            )
        pairs.append(Pair(x, y))
    return settings, spikes, pairs


def _group_value(run: Mapping[str, Any], key: str) -> str:
    """A run's grouping value: ``params.<k>``, ``tags.<k>``, or a tag, else a param."""
    tags, params = run["tags"], run["params"]
    if key.startswith("params."):
        return str(params.get(key.removeprefix("params."), "unknown"))
    if key.startswith("tags."):
        return str(tags.get(key.removeprefix("tags."), "unknown"))
    if key in tags:
        return str(tags[key])
    return str(params.get(key, "unknown"))


# ------------------------------------------------------------------------------------ reading


@dataclass
class _RunData:
    run: dict[str, Any]
    group: str
    train: pd.DataFrame
    frames: dict[str, pd.DataFrame]
    source: str


def _devices_in_metrics(metric_keys: Sequence[str]) -> list[str]:
    from rle.tracking import keys

    devices = set()
    for k in metric_keys:
        split = keys.split_system_key(k) or keys.split_rle_key(k)
        if split is not None:
            devices.add(split[0])
    return sorted(devices)


_NOT_MEASURED = ("placeholder", "estimated")


def _standard_samples(table: pd.DataFrame | None) -> pd.DataFrame | None:
    """An imported run's samples table (:mod:`rle.ingest`) in the live logger's terms.

    Imported tables carry UTC ``timestamp`` values instead of ``wall_time_s`` and say per row
    where power and temperature came from; placeholder and estimated readings are not
    measurements, so they become NaN (as the importer does for the logged metrics). A v2
    recording's ``collapse`` flags are not collapse events (§4.2) and become NaN too.
    """
    if table is None or "wall_time_s" in table or "timestamp" not in table:
        return table
    out = table.copy()
    times = pd.to_datetime(out["timestamp"], utc=True, errors="coerce")
    out["wall_time_s"] = (times - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
    for col, source in (("temp_c", "temp_source"), ("power_w", "power_source")):
        if col in out and source in out:
            fake = out[source].astype(str).str.lower().isin(_NOT_MEASURED)
            out[col] = pd.to_numeric(out[col], errors="coerce").mask(fake)
    if "workload_state" in out and "collapse" in out:
        # a v2 recording (the only format with workload_state): its `collapse` is a one-sample
        # drop test without gates or hysteresis, never reported as events (rle-metric.md §4.2, D3)
        out["collapse"] = np.nan
    return out


def _read(reader: Any, runs: pd.DataFrame, group_by: str) -> tuple[list[_RunData], float]:
    """Read histories and samples of the selected runs (the only I/O of the evaluation)."""
    from rle.analysis.align import device_frames, device_frames_from_steps, step_series
    from rle.tracking import keys

    t0 = time.perf_counter()
    ids = list(runs["run_id"])
    train_keys = list(keys.TRAIN_KEYS_FOR_EVALUATION)
    hist = reader.metric_histories(ids, train_keys)
    samples: dict[str, pd.DataFrame | None] = {}
    step_keys: dict[str, dict[str, dict[str, str]]] = {}
    for run in runs.to_dict("records"):
        rid = str(run["run_id"])
        samples[rid] = _standard_samples(reader.samples(rid, run["artifact_uri"]))
        if samples[rid] is None:
            present = set(run["metrics"])
            step_keys[rid] = {
                dev: {c: k for c, k in keys.device_quantity_keys(dev).items() if k in present}
                for dev in _devices_in_metrics(list(present))
            }
    wanted = {k for per in step_keys.values() for m in per.values() for k in m.values()}
    dev_hist = reader.metric_histories(list(step_keys), wanted) if wanted else hist.iloc[0:0]
    all_hist = pd.concat([hist, dev_hist], ignore_index=True) if len(dev_hist) else hist
    by_run = dict(tuple(all_hist.groupby("run_id", sort=False))) if len(all_hist) else {}
    read_s = time.perf_counter() - t0
    out = []
    for run in runs.to_dict("records"):
        rid = str(run["run_id"])
        h = by_run.get(rid, all_hist.iloc[0:0])
        train_h = h[h["key"].isin(train_keys)]
        train = step_series(train_h, train_keys)
        table = samples.get(rid)
        if table is not None:
            frames, source = device_frames(table), "samples"
        else:
            wide = step_series(h, sorted(set(h["key"]))) if len(h) else pd.DataFrame({"time_s": []})
            frames = device_frames_from_steps(wide, step_keys.get(rid, {})) if len(wide) else {}
            source = "step_metrics"
        out.append(
            _RunData(run, _group_value(run, group_by), train, frames, source if frames else "none")
        )
    return out, read_s


# ---------------------------------------------------------------------------------- analysis


@dataclass
class _Analysis:
    runs: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    fingerprints: list[dict[str, Any]] = field(default_factory=list)
    frames: dict[tuple[str, str], pd.DataFrame] = field(default_factory=dict)
    correlations: list[dict[str, Any]] = field(default_factory=list)
    spikes: list[dict[str, Any]] = field(default_factory=list)
    points: list[pd.DataFrame] = field(default_factory=list)
    lags: list[dict[str, Any]] = field(default_factory=list)
    curves: dict[str, tuple[str, pd.DataFrame]] = field(default_factory=dict)


def _analyse(data: list[_RunData], settings: Any, spikes: Any, pairs: list[Any]) -> _Analysis:
    from rle.analysis.align import idle_summary, training_interval, within
    from rle.analysis.correlation import collapse_event_starts, correlate_device
    from rle.analysis.fingerprint import run_fingerprint
    from rle.tracking import keys

    a = _Analysis()
    for d in data:
        rid = str(d.run["run_id"])
        steps = d.train.reset_index()[["step", "time_s"]] if len(d.train) else pd.DataFrame()
        interval = training_interval(steps) if len(steps) else None
        if interval is None:
            a.skipped.append(
                {
                    "run_id": rid,
                    "what": "run",
                    "reason": "no train/* metrics: no optimizer step was logged",
                }
            )
            continue
        a.curves[rid] = (d.group, d.train)
        a.runs.append(
            {
                "run_id": rid,
                "run_name": d.run["run_name"],
                "group": d.group,
                "status": d.run["status"],
                "source": d.source,
                "devices": ", ".join(sorted(d.frames)) or "-",
                "n_steps": interval.n_steps,
                "duration_s": interval.duration_s,
            }
        )
        if d.run["status"] == "RUNNING":
            a.skipped.append(
                {
                    "run_id": rid,
                    "what": "run (partial)",
                    "reason": "still RUNNING: analysed with the data logged so far",
                }
            )
        if not d.frames:
            a.skipped.append(
                {
                    "run_id": rid,
                    "what": "telemetry",
                    "reason": "no telemetry: no telemetry/samples.parquet and no system/ or rle/ device metrics "
                    "(telemetry=none, or the run has not ended); fingerprints and correlations skipped",
                }
            )
            continue
        if d.source == "step_metrics":
            a.skipped.append(
                {
                    "run_id": rid,
                    "what": "samples artifact",
                    "reason": "no telemetry/samples.parquet: used the logged step-level window means instead",
                }
            )
        for device, frame in sorted(d.frames.items()):
            idle = idle_summary(frame["time_s"].to_numpy(dtype=np.float64), interval)
            fallback = {
                k: float(d.run["metrics"][keys.rle_key(device, k)])
                for k in ("collapse_events", "collapse_seconds", "collapse_fraction")
                if keys.rle_key(device, k) in d.run["metrics"]
            }
            a.fingerprints.append(
                run_fingerprint(
                    rid,
                    d.group,
                    device,
                    frame,
                    interval,
                    d.train,
                    source=d.source,
                    idle=idle,
                    collapse_fallback=fallback,
                )
            )
            inside = within(frame, interval)
            a.frames[(rid, device)] = inside
            if inside.empty:
                a.skipped.append(
                    {
                        "run_id": rid,
                        "what": device,
                        "reason": "no telemetry sample inside the training interval",
                    }
                )
            missing = sorted({p.y for p in pairs} - set(frame.columns))
            if missing:
                a.skipped.append(
                    {
                        "run_id": rid,
                        "what": device,
                        "reason": f"no {', '.join(missing)} series: those pairs are N/A",
                    }
                )
            result = correlate_device(
                rid,
                device,
                d.train,
                frame,
                interval,
                pairs,
                settings,
                spikes,
                collapse_event_starts(frame),
                extra_columns=[y for _, y, _, _ in SCATTERS if y in frame],
            )
            a.correlations.extend(result.rows)
            pts = result.aligned.copy()
            pts.insert(0, "device", device)
            pts.insert(0, "group", d.group)
            pts.insert(0, "run_id", rid)
            a.points.append(pts)
            for (x, y), lag in result.lags.items():
                for i in range(lag.lag_s.shape[0]):
                    a.lags.append(
                        {
                            "run_id": rid,
                            "group": d.group,
                            "device": device,
                            "x": x,
                            "y": y,
                            "lag_s": float(lag.lag_s[i]),
                            "r": float(lag.r[i]),
                            "null_q95": float(lag.null_q95[i]),
                        }
                    )
            if result.spikes is not None:
                sc = result.spikes
                a.spikes.append(
                    {
                        "run_id": rid,
                        "group": d.group,
                        "device": device,
                        "k": spikes.k,
                        "window_s": spikes.window_s,
                        "n_steps": sc.n_steps,
                        "threshold": sc.threshold,
                        "n_spikes": sc.n_spikes,
                        "n_events": sc.n_events,
                        "matched_spikes": sc.matched_spikes,
                        "matched_events": sc.matched_events,
                        "chance_rate": sc.chance_rate,
                        "expected_matched": sc.expected_matched,
                        "p_value": sc.p_value,
                        "note": sc.note,
                    }
                )
    return a


# ---------------------------------------------------------------------------- legacy methods


@dataclass
class _Legacy:
    method: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    sessions: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    report: dict[str, Any] | None = None
    lag_rows: list[dict[str, Any]] = field(default_factory=list)


def _is_joint_session(run: Mapping[str, Any]) -> bool:
    from rle.tracking import keys

    return str(run["tags"].get(keys.TAG_SOURCE, "")) == JOINT_SOURCE


def _split_legacy(runs: pd.DataFrame, method: str) -> tuple[pd.DataFrame, list[dict[str, str]]]:
    """The imported joint sessions among the selected runs, and the others as skipped rows."""
    from rle.tracking import keys

    keep, skipped = [], []
    for i, run in enumerate(runs.to_dict("records")):
        if _is_joint_session(run):
            keep.append(i)
            continue
        source = run["tags"].get(keys.TAG_SOURCE) or "unset (a run of rle.train or rle.sync?)"
        skipped.append(
            {
                "run_id": str(run["run_id"]),
                "what": "run",
                "reason": f"not an imported joint session (rle.source={source}): {method} only "
                f"reproduces joint-session bundles imported by rle.ingest "
                f"(rle.source={JOINT_SOURCE})",
            }
        )
    return runs.iloc[keep].reset_index(drop=True), skipped


def _field_rows(
    run_id: str, session_id: str, reproduced: Mapping[str, Any], stored: Mapping[str, Any] | None
) -> list[dict[str, Any]]:
    """One comparison row per computed field of ``analysis_<id>.json`` (nested keys dotted)."""

    def flat(prefix: str, node: Mapping[str, Any], out: dict[str, Any]) -> dict[str, Any]:
        for k, v in node.items():
            name = f"{prefix}.{k}" if prefix else str(k)
            if isinstance(v, Mapping):
                flat(name, v, out)
            else:
                out[name] = v
        return out

    mine = flat("", reproduced, {})
    theirs = flat("", stored, {}) if stored is not None else {}
    rows = []
    for name, value in mine.items():
        other = theirs.get(name)
        if isinstance(value, bool):
            ok = isinstance(other, bool) and other == value
            diff = 0.0 if ok else math.nan
            rows.append(
                {
                    "run_id": run_id,
                    "session_id": session_id,
                    "field": name,
                    "reproduced": value,
                    "stored": other,
                    "abs_diff": diff,
                    "match": ok,
                }
            )
            continue
        a = float(value) if value is not None else math.nan
        try:
            b = float(other) if other is not None else math.nan
        except (TypeError, ValueError):
            b = math.nan
        both_nan = math.isnan(a) and math.isnan(b) and other is not None
        diff = 0.0 if both_nan else abs(a - b)
        rows.append(
            {
                "run_id": run_id,
                "session_id": session_id,
                "field": name,
                "reproduced": value,
                "stored": other,
                "abs_diff": diff,
                "match": bool(both_nan or diff <= LEGACY_TOLERANCE),
            }
        )
    return rows


def _legacy(reader: Any, runs: pd.DataFrame, method: str) -> _Legacy:
    """Reproduce the lab's analysis from each imported joint session's original files."""
    from rle.analysis.legacy import legacy_joint_session, legacy_lag_report, legacy_lag_summary
    from rle.importers.rle_lab import read_joint_session

    out = _Legacy(method)
    lag_inputs: dict[str, tuple[Any, pd.DataFrame]] = {}
    lag_runs: dict[str, tuple[str, str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for run in runs.to_dict("records"):
            rid = str(run["run_id"])
            tags = run["tags"]
            folder = reader.original_files(rid, Path(tmp) / rid, run["artifact_uri"])
            if folder is None:
                out.skipped.append(
                    {
                        "run_id": rid,
                        "what": method,
                        "reason": "no original/ artifacts: the bundle's files were not attached",
                    }
                )
                continue
            try:
                session = read_joint_session(folder, tags.get("rle.session_id") or None)
            except RLEError as e:
                out.skipped.append({"run_id": rid, "what": method, "reason": str(e)})
                continue
            sid = session.session_id
            rows = session.monitor.rows
            device = (
                rows["device"].astype(str).str.strip().str.lower() if "device" in rows else None
            )
            info: dict[str, Any] = {
                "run_id": rid,
                "session_id": sid,
                "session_dir": str(tags.get("rle.original_folder") or folder.name),
                "training_rows": len(session.training_entries),
                "gpu_rows": int((device == "gpu").sum()) if device is not None else len(rows),
                "cpu_rows": int((device == "cpu").sum()) if device is not None else 0,
                "has_stored": session.analysis is not None,
            }
            if method == "legacy_joint_session":
                try:
                    reproduced = legacy_joint_session(session.training_entries, rows)
                except RLEError as e:
                    out.skipped.append({"run_id": rid, "what": method, "reason": str(e)})
                    continue
                if session.analysis is None:
                    out.skipped.append(
                        {
                            "run_id": rid,
                            "what": f"analysis_{sid}.json",
                            "reason": "not in the bundle: reproduced values written, nothing to "
                            "compare them with",
                        }
                    )
                field_rows = _field_rows(rid, sid, reproduced, session.analysis)
                info["reproduced"] = reproduced
                info["agrees"] = session.analysis is not None and all(
                    r["match"] for r in field_rows
                )
                out.rows += field_rows
            else:
                key = info["session_dir"]
                if key in lag_inputs:
                    key = f"{key}/{sid}"
                lag_inputs[key] = (session.training_entries, rows)
                lag_runs[key] = (rid, sid)
            out.sessions.append(info)
    if method == "legacy_lag_report" and lag_inputs:
        report = legacy_lag_report(lag_inputs)
        report["summary"] = legacy_lag_summary(report)
        out.report = report
        analysed = {str(r["session_dir"]) for r in report["detailed_results"]}
        for key, (rid, _) in lag_runs.items():
            if key not in analysed:
                out.skipped.append(
                    {
                        "run_id": rid,
                        "what": method,
                        "reason": "fewer than 10 aligned rows: the lab's lag report skips the "
                        "session",
                    }
                )
        for res in report["detailed_results"]:
            rid, sid = lag_runs[str(res["session_dir"])]
            for lag, lc in res["lag_correlations"].items():
                out.lag_rows.append(
                    {
                        "run_id": rid,
                        "session_id": sid,
                        "session_dir": res["session_dir"],
                        "session_type": res["session_type"],
                        "samples": res["samples"],
                        "lag_rows": int(lag),
                        "correlation": lc["correlation"],
                        "p_value": lc["p_value"],
                        "interpretation": lc["interpretation"],
                        "is_peak": int(lag) == int(res["peak_lag"]),
                    }
                )
    return out


# ------------------------------------------------------------------------------------- outputs


def _output_dir(cfg: DictConfig) -> Path:
    if cfg.output.dir:
        out = Path(str(cfg.output.dir)).expanduser()
    else:
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H-%M-%S.%fZ")
        out = paths.project_root() / "outputs" / "evaluations" / stamp
    out.mkdir(parents=True, exist_ok=True)
    return out.resolve()


def _write(
    out: Path,
    result: EvalResult,
    analysis: _Analysis,
    settings: Any,
    spikes: Any,
    pairs: list[Any],
    header: dict[str, str],
    group_by: str,
    dpi: int,
    plots: bool,
    legacy: _Legacy | None = None,
) -> list[str]:
    from rle.analysis.fingerprint import FINGERPRINT_COLUMNS
    from rle.analysis.report import legacy_section, render_report

    files: list[str] = []
    fp_all = pd.concat(
        [
            result.fingerprints.assign(level="run"),
            result.group_fingerprints.assign(level=group_by),
        ],
        ignore_index=True,
    )
    fp_all = fp_all[["level", *FINGERPRINT_COLUMNS]].rename(columns={"group": group_by})
    fp_all.to_csv(out / "fingerprints.csv", index=False)
    result.correlations.to_csv(out / "correlations.csv", index=False)
    result.spikes.to_csv(out / "spike_collapse.csv", index=False)
    result.runs.to_csv(out / "evaluated_runs.csv", index=False)
    result.skipped.to_csv(out / "skipped.csv", index=False)
    files += [
        "fingerprints.csv",
        "correlations.csv",
        "spike_collapse.csv",
        "evaluated_runs.csv",
        "skipped.csv",
    ]
    clf = result.classifier
    if clf is not None and clf.available:
        clf.predictions.to_csv(out / "classifier_predictions.csv", index=False)
        clf.confusion.to_csv(out / "classifier_confusion.csv")
        files += ["classifier_predictions.csv", "classifier_confusion.csv"]
    if plots:
        from rle.analysis.plots import fingerprint_plot, lag_plot, scatter_plot

        points = (
            pd.concat(analysis.points, ignore_index=True)
            if analysis.points
            else pd.DataFrame(columns=["run_id", "group", "device"])
        )
        for x, y, name, title in SCATTERS:
            scatter_plot(points, x, y, out / name, title, dpi=dpi)
            files.append(name)
        lags = pd.DataFrame(
            analysis.lags, columns=["run_id", "group", "device", "x", "y", "lag_s", "r", "null_q95"]
        )
        lag_plot(lags, [(p.x, p.y) for p in pairs], out / "lag_plot.png", settings.detrend, dpi=dpi)
        fingerprint_plot(
            result.fingerprints,
            result.group_fingerprints,
            FINGERPRINT_PLOT_FEATURES,
            out / "fingerprint_comparison.png",
            dpi=dpi,
        )
        files += ["lag_plot.png", "fingerprint_comparison.png"]
    sections: list[str] = []
    if legacy is not None:
        files += _write_legacy(out, result, legacy)
        sections.append(
            legacy_section(
                legacy.method,
                comparison=result.legacy,
                sessions=pd.DataFrame(legacy.sessions),
                runs=result.runs,
                correlations=result.correlations,
                settings=settings,
                tolerance=LEGACY_TOLERANCE,
                lag_report=legacy.report,
                lag_rows=pd.DataFrame(legacy.lag_rows, columns=list(LAG_REPORT_COLUMNS)),
            )
        )
    files.append("report.md")
    text = render_report(
        header=header,
        runs=result.runs,
        skipped=result.skipped,
        notes=result.notes,
        warnings=result.warnings,
        groups=result.group_fingerprints,
        fingerprints=result.fingerprints,
        correlations=result.correlations,
        spikes=result.spikes,
        classifier=result.classifier,
        settings=settings,
        spike_settings=spikes,
        group_by=group_by,
        files=files,
        sections=sections,
    )
    (out / "report.md").write_text(text, encoding="utf-8")
    return files


def _write_legacy(out: Path, result: EvalResult, legacy: _Legacy) -> list[str]:
    """The legacy method's files: the field comparison, or the reproduced lag report."""
    if legacy.method == "legacy_joint_session":
        result.legacy.to_csv(out / "legacy_joint_session.csv", index=False)
        return ["legacy_joint_session.csv"]
    pd.DataFrame(legacy.lag_rows, columns=list(LAG_REPORT_COLUMNS)).to_csv(
        out / "legacy_lag_report.csv", index=False
    )
    report = legacy.report or {"total_sessions": 0, "detailed_results": [], "summary": {}}
    (out / "legacy_lag_report.json").write_text(
        json.dumps(report, indent=2, default=str), encoding="utf-8"
    )
    return ["legacy_lag_report.csv", "legacy_lag_report.json"]


def _frame(rows: list[dict[str, Any]], columns: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(columns))


# ---------------------------------------------------------------------------------- run_evaluation


def run_evaluation(cfg: DictConfig) -> EvalResult:
    """Evaluate a selection of runs and write one evaluation run.

    Steps: validate the settings; resolve and probe the tracking store; select the runs
    (evaluation runs and sweep parents excluded by default); read the ``train/*`` histories
    (bulk) and the sample artifacts (step-level ``system/``/``rle/`` histories for runs without
    one); compute fingerprints, correlations, spike–collapse matching, the identical-curve check
    and the workload classifier; write CSVs, plots and ``report.md`` to a local directory and log
    them into a new run tagged ``rle.role=evaluation`` (status FAILED, with the traceback, if
    anything fails after it was created).

    An empty selection (no experiment, no runs, or no run with a logged step) is not an error:
    the result has status ``EMPTY``, a message that says why, and no run is written.

    Args:
        cfg: The composed ``conf/evaluate.yaml`` config.

    Returns:
        The :class:`EvalResult`.

    Raises:
        rle.errors.ConfigError: On invalid settings.
        rle.errors.TrackingError: If the store cannot be reached or read.
    """
    from rle.analysis.correlation import CORRELATION_COLUMNS, identical_training_curves
    from rle.analysis.fingerprint import FINGERPRINT_COLUMNS, classify_workloads, group_fingerprints
    from rle.tracking import keys
    from rle.tracking.logger import (
        check_reachable,
        client_for,
        create_run,
        end_run,
        log_params,
        log_tags,
    )
    from rle.tracking.reader import RunReader
    from rle.tracking.spool import strip_userinfo
    from rle.train import flatten_config

    settings, spike_settings, pairs = settings_from_config(cfg)
    selection = selection_from_config(cfg)
    group_by = str(cfg.evaluation.group_by)
    location = paths.resolve_tracking(cfg.tracking.uri)
    shown_uri = strip_userinfo(location.uri)  # credentials never go into logs or the report
    log.info("Tracking URI %s (from %s)", shown_uri, location.reason)
    check_reachable(location, float(cfg.tracking.connect_timeout_s))
    reader = RunReader(location)

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    selected = reader.select_runs(selection)
    timings["select"] = time.perf_counter() - t0
    skipped_rows = [
        {"run_id": r.run_id, "what": "run", "reason": r.reason}
        for r in selected.skipped.itertuples()
    ]
    for note in selected.notes:
        log.warning("%s", note)
    log.info(
        "Selection: %s -> %d run(s), %d skipped",
        selection.describe(),
        len(selected.runs),
        len(skipped_rows),
    )
    if selected.runs.empty:
        why = "; ".join(selected.notes) or "no matching runs"
        message = f"Nothing to evaluate: {selection.describe()} selects no run ({why})."
        if skipped_rows:
            message += (
                f" Skipped: {len(skipped_rows)} ("
                + "; ".join(f"{r['run_id'][:8]}: {r['reason']}" for r in skipped_rows[:5])
                + ")."
            )
        log.error("%s", message)
        return EvalResult(
            "EMPTY",
            message,
            skipped=_frame(skipped_rows, ["run_id", "what", "reason"]),
            notes=selected.notes,
            timings_s=timings,
        )

    method = str(cfg.evaluation.correlation.method)
    to_read = selected.runs
    legacy: _Legacy | None = None
    if method in LEGACY_METHODS:
        to_read, not_joint = _split_legacy(selected.runs, method)
        skipped_rows += not_joint
        if to_read.empty:
            message = (
                f"Nothing to evaluate with {method}: none of the {len(selected.runs)} selected "
                f"run(s) is an imported joint session (rle.source={JOINT_SOURCE}; import the "
                "bundle folder with `python -m rle.ingest PATH` and select its experiment)."
            )
            log.error("%s", message)
            return EvalResult(
                "EMPTY",
                message,
                skipped=_frame(skipped_rows, ["run_id", "what", "reason"]),
                notes=selected.notes,
                timings_s=timings,
                method=method,
            )
        t_legacy = time.perf_counter()
        legacy = _legacy(reader, to_read, method)
        timings["legacy"] = time.perf_counter() - t_legacy
        skipped_rows += legacy.skipped
    data, timings["read"] = _read(reader, to_read, group_by)
    t1 = time.perf_counter()
    analysis = _analyse(data, settings, spike_settings, pairs)
    skipped_rows += analysis.skipped
    fingerprints = _frame(analysis.fingerprints, FINGERPRINT_COLUMNS)
    groups = group_fingerprints(fingerprints, analysis.frames)
    classifier = classify_workloads(
        fingerprints, min_runs=int(cfg.evaluation.classifier.min_runs_per_group)
    )
    warnings = [
        f"runs {a[:8]} ({wa}) and {b[:8]} ({wb}) have identical train/loss and train/grad_norm at every "
        f"step: their {group_by} labels differ but their training did not"
        for a, wa, b, wb in identical_training_curves(analysis.curves)
    ]
    for w in warnings:
        log.warning("%s", w)
    timings["analyse"] = time.perf_counter() - t1
    result = EvalResult(
        status="FINISHED",
        message="",
        runs=_frame(
            analysis.runs,
            ["run_id", "run_name", "group", "status", "source", "devices", "n_steps", "duration_s"],
        ),
        skipped=_frame(skipped_rows, ["run_id", "what", "reason"]),
        fingerprints=fingerprints,
        group_fingerprints=groups,
        correlations=_frame(analysis.correlations, CORRELATION_COLUMNS),
        spikes=pd.DataFrame(analysis.spikes),
        classifier=classifier,
        warnings=warnings,
        notes=selected.notes,
        timings_s=timings,
        method=method,
    )
    if legacy is not None:
        result.legacy = _frame(legacy.rows, LEGACY_COLUMNS)
        result.legacy_report = legacy.report
    if result.runs.empty and (legacy is None or not legacy.sessions):
        result.status = "EMPTY"
        result.message = f"Nothing to evaluate: none of the {len(selected.runs)} selected run(s) logged an optimizer step."
        log.error("%s", result.message)
        return result

    out = _output_dir(cfg)
    result.output_dir = out
    experiment = str(
        cfg.output.experiment_name
        or reader.experiment_name(str(selected.runs["experiment_id"].iloc[0]))
    )
    run_ids = list(result.runs["run_id"])
    if legacy is not None:
        run_ids += [str(s["run_id"]) for s in legacy.sessions if s["run_id"] not in run_ids]
    header = {
        "created (UTC)": datetime.now(UTC).isoformat(timespec="seconds"),
        "tracking URI": shown_uri,
        "selection": selection.describe(),
        "runs analysed": str(len(run_ids)),
        "grouped by": group_by,
        "correlation.method": method,
    }
    if legacy is not None:
        header["corrected analysis beside it"] = "correlation.method=default"
    run_id: str | None = None
    status = "FAILED"
    t2 = time.perf_counter()
    try:
        if bool(cfg.output.log_to_mlflow):
            tags = {
                keys.TAG_ROLE: keys.ROLE_EVALUATION,
                keys.TAG_KIND: keys.ROLE_EVALUATION,
                "rle.evaluated_runs": str(len(run_ids)),
                **{str(k): str(v) for k, v in (cfg.tracking.tags or {}).items()},
            }
            name = str(cfg.output.run_name or f"evaluation {len(run_ids)} runs")
            result.experiment_id, run_id = create_run(location, experiment, name, tags)
            result.run_id = run_id
            header["evaluation run"] = f"{run_id} (experiment {experiment!r})"
        files = _write(
            out,
            result,
            analysis,
            settings,
            spike_settings,
            pairs,
            header,
            group_by,
            int(cfg.evaluation.plots.dpi),
            bool(cfg.evaluation.plots.enabled),
            legacy,
        )
        if run_id is not None:
            client = client_for(location)
            params = {
                "selection.description": selection.describe(),
                "selection.experiments": ",".join(selection.experiment_names),
                "selection.filter": selection.filter_string,
                "selection.parent_run_id": selection.parent_run_id or "",
                "selection.n_runs": len(run_ids),
                "selection.n_skipped": len(result.skipped),
                "selection.run_ids": ",".join(run_ids),
                **{f"evaluation.{k}": v for k, v in flatten_config(cfg.evaluation).items()},
            }
            log_params(client, run_id, params)
            metrics = {
                "evaluation/n_runs": float(len(run_ids)),
                "evaluation/read_seconds": timings["read"],
            }
            if classifier.available:
                metrics["evaluation/classifier_loo_accuracy"] = classifier.accuracy
            if legacy is not None:
                metrics["evaluation/legacy_sessions"] = float(len(legacy.sessions))
                if method == "legacy_joint_session":
                    metrics["evaluation/legacy_sessions_agreeing"] = float(
                        sum(bool(s.get("agrees")) for s in legacy.sessions)
                    )
            from mlflow.entities import Metric

            stamp = int(time.time() * 1000)
            client.log_batch(
                run_id,
                metrics=[Metric(k, float(v), stamp, 0) for k, v in metrics.items()],
                synchronous=True,
            )
            client.log_artifacts(run_id, str(out))
            log_tags(client, run_id, {"rle.evaluation.files": ",".join(files)[:5000]})
        status = "FINISHED"
    except BaseException:
        if run_id is not None:
            _log_traceback(location, run_id)
        raise
    finally:
        if run_id is not None:
            end_run(location, run_id, status)
    timings["write"] = time.perf_counter() - t2
    result.message = (
        f"Evaluated {len(run_ids)} run(s)"
        + (f" into evaluation run {run_id} (experiment {experiment!r})" if run_id else "")
        + f"; artifacts in {out}"
        + (
            f"; {len(result.skipped)} item(s) skipped or partial (see report.md)"
            if len(result.skipped)
            else ""
        )
        + "."
    )
    log.info("%s", result.message)
    return result


def _log_traceback(location: Any, run_id: str) -> None:
    from rle.tracking.logger import client_for

    try:
        with tempfile.TemporaryDirectory() as tmp:
            p = Path(tmp) / "traceback.txt"
            p.write_text(traceback.format_exc())
            client_for(location).log_artifact(run_id, str(p), artifact_path="error")
    except Exception:  # the original error matters more than a failed upload
        log.exception("Could not upload the traceback of evaluation run %s", run_id)


# -------------------------------------------------------------------------------- entry point


def summary_text(result: EvalResult) -> str:
    """The terminal summary: the fingerprint table, the skipped items and where the outputs are.

    Args:
        result: An evaluation result.

    Returns:
        Text for the terminal.
    """
    from rle.analysis.report import fingerprint_table, fmt

    lines = [result.message]
    if len(result.group_fingerprints):
        lines += [
            "",
            "Workload fingerprints (training interval only; per device):",
            fingerprint_table(result.group_fingerprints),
        ]
    if len(result.skipped):
        lines += ["", "Skipped or partial:"]
        lines += [f"  {r.run_id[:8]}  {r.what}: {r.reason}" for r in result.skipped.itertuples()]
    if result.method == "legacy_joint_session" and len(result.legacy):
        leg = result.legacy
        lines += ["", "legacy_joint_session (reproduced vs stored analysis_<id>.json):"]
        for (rid, sid), part in leg.groupby(["run_id", "session_id"], sort=False):
            bad = part.loc[~part["match"].astype(bool), "field"].tolist()
            lines.append(
                f"  {str(rid)[:8]}  {sid}: {int(part['match'].astype(bool).sum())}/{len(part)} "
                f"fields match to {LEGACY_TOLERANCE:g}"
                + (f" (differ: {', '.join(bad)})" if bad else "")
            )
    if result.legacy_report is not None:
        lines.append(
            f"legacy_lag_report: {result.legacy_report['total_sessions']} session(s) reproduced "
            "(legacy_lag_report.json)"
        )
    for w in result.warnings:
        lines.append(f"WARNING: {w}")
    clf = result.classifier
    if clf is not None:
        lines.append(
            f"Classifier: leave-one-run-out accuracy {fmt(clf.accuracy)} (chance {fmt(clf.chance)})"
            if clf.available
            else f"Classifier: not run ({clf.reason})"
        )
    return "\n".join(lines)


@hydra.main(version_base="1.3", config_path=str(paths.CONF_DIR), config_name="evaluate")
def _hydra_main(cfg: DictConfig) -> None:
    try:
        result = run_evaluation(cfg)
    except RLEError as e:
        log.error("%s", e)
        sys.exit(2)
    print(summary_text(result))  # noqa: T201 (the CLI's terminal table)
    if result.status != "FINISHED":
        sys.exit(1)


def main() -> None:
    """Console entry point (``rle-evaluate``)."""
    from rle.cli import exit_on_override_error

    exit_on_override_error("evaluate")
    _hydra_main()


if __name__ == "__main__":
    main()
