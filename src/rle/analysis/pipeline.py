"""The evaluation pipeline behind ``python -m rle.evaluate`` (``docs/rle-metric.md`` §8).

:func:`run_evaluation` runs the stages in order, each a function of its own:

1. **settings** (:func:`settings_from_config`, :func:`selection_from_config`): validate
   ``cfg.evaluation`` and ``cfg.selection``;
2. **select** (:func:`_select`): the runs of the selection (evaluation runs and sweep parents
   excluded by default);
3. **legacy** (:func:`_legacy`, legacy methods only): reproduce the lab's analyses from each
   imported joint session's original files and compare them with what the lab stored
   (:func:`rle.analysis.compare.compare_fields`, the comparison :mod:`rle.ingest` uses too), plus
   the lab's spike counts (:func:`rle.analysis.legacy.legacy_spikes`);
4. **read** (:func:`_read`): ``train/*`` histories and the raw samples (``telemetry/samples/``) (step-level
   ``system/``/``rle/`` histories for runs without one), the per-device provenance of the RLE
   inputs (:mod:`rle.analysis.provenance`: placeholder inputs and the RLE built from them are
   removed, with the reason);
5. **analyse** (:func:`_analyse`): fingerprints, correlations (with the alignment behind them),
   spike–collapse matching, the identical-training-curves check and the workload classifier;
6. **write** (:func:`_write`, :func:`_log_run`): CSVs, plots and ``report.md``, logged into one
   evaluation run tagged ``rle.role=evaluation`` (status FAILED, with the traceback, if anything
   fails after it was created).

This module does the I/O (MLflow through :mod:`rle.tracking`); every number comes from the pure
functions of the other :mod:`rle.analysis` modules. :mod:`rle.evaluate` is the Hydra entry point.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from rle import paths
from rle.analysis.compare import REPRODUCTION_TOLERANCE, compare_fields
from rle.analysis.provenance import (
    PROVENANCE_COLUMNS,
    DeviceProvenance,
    apply_provenance,
    device_provenance,
    standard_samples,
)
from rle.errors import ConfigError, RLEError

__all__ = [
    "LEGACY_COLUMNS",
    "LEGACY_METHODS",
    "LEGACY_TOLERANCE",
    "EvalResult",
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
LEGACY_TOLERANCE = REPRODUCTION_TOLERANCE
"""Largest absolute difference of a reproduced number that still matches the stored one
(:data:`rle.analysis.compare.REPRODUCTION_TOLERANCE`, shared with :mod:`rle.ingest`)."""
LEGACY_SPIKE_COLUMNS: tuple[str, ...] = (
    "run_id",
    "session_id",
    "steps",
    "mean_grad_norm",
    "std_grad_norm",
    "threshold",
    "spike_steps",
    "merged_spikes",
    "spike_indices",
)
"""Columns of ``legacy_spikes.csv``: the lab's spike statistics of each session's training log
(every step above mean + k·std, ddof = 1) beside rle's merged spike count of the same log."""
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
    "rle_mean": "RLE, mean (dimensionless)",
    "collapse_fraction": "collapse, fraction of time (0..1)",
    "sm_clock_mean_megahertz": "SM clock, mean (MHz)",
    "throttle_fraction": "throttled, fraction of samples (0..1)",
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
        alignment: ``alignment.csv`` rows (:data:`rle.analysis.correlation.ALIGNMENT_COLUMNS`).
        provenance: ``provenance.csv`` rows (:data:`rle.analysis.provenance.PROVENANCE_COLUMNS`).
        legacy_spikes: ``legacy_spikes.csv`` rows (:data:`LEGACY_SPIKE_COLUMNS`; legacy methods).
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
    alignment: pd.DataFrame = field(default_factory=pd.DataFrame)
    provenance: pd.DataFrame = field(default_factory=pd.DataFrame)
    legacy_spikes: pd.DataFrame = field(default_factory=pd.DataFrame)


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


DEFAULT_GROUP_BY = "workload"
"""``evaluation.group_by``'s default: runs without a ``workload`` tag are grouped as ``unknown``."""


def _has_group_key(run: Mapping[str, Any], key: str) -> bool:
    tags, params = run["tags"], run["params"]
    if key.startswith("params."):
        return key.removeprefix("params.") in params
    if key.startswith("tags."):
        return key.removeprefix("tags.") in tags
    return key in tags or key in params


def check_group_by(group_by: str, runs: pd.DataFrame, limit: int = 40) -> None:
    """Refuse a grouping key that none of the selected runs has (all would be ``unknown``).

    Runs that lack a key some other selected run has are grouped as ``unknown`` (documented);
    the default key (:data:`DEFAULT_GROUP_BY`) only warns, since runs logged by the callback in a
    user's own script carry no ``workload`` tag.

    Args:
        group_by: ``evaluation.group_by`` (``params.<k>``, ``tags.<k>``, or a tag or param name).
        runs: The selected runs (columns ``tags`` and ``params``, dicts).
        limit: Most keys of each kind listed in the message.

    Raises:
        rle.errors.ConfigError: If no selected run has the key; the message lists the tags and
            params the runs do have.
    """
    records = runs.to_dict("records")
    if not records or any(_has_group_key(r, group_by) for r in records):
        return
    tag_keys = sorted(
        {str(k) for r in records for k in r["tags"] if not str(k).startswith("mlflow.")}
    )
    param_keys = sorted({str(k) for r in records for k in r["params"]})

    def listing(prefix: str, names: list[str]) -> str:
        shown = ", ".join(f"{prefix}{k}" for k in names[:limit]) or "none"
        return shown + (f" (+{len(names) - limit} more)" if len(names) > limit else "")

    message = (
        f"evaluation.group_by={group_by!r} matches no tag or param of the {len(records)} selected "
        f"run(s), so every run would be grouped as 'unknown'. Choose one they have: tags: "
        f"{listing('tags.', tag_keys)}; params: {listing('params.', param_keys)}."
    )
    if group_by == DEFAULT_GROUP_BY:
        log.warning("%s", message)
        return
    raise ConfigError(message)


# ------------------------------------------------------------------------------------ reading


@dataclass
class _RunData:
    run: dict[str, Any]
    group: str
    train: pd.DataFrame
    frames: dict[str, pd.DataFrame]
    source: str
    provenance: dict[str, DeviceProvenance] = field(default_factory=dict)
    missing: dict[str, dict[str, str]] = field(default_factory=dict)


def _devices_in_metrics(metric_keys: Sequence[str]) -> list[str]:
    from rle.tracking import keys

    devices = set()
    for k in metric_keys:
        split = keys.split_system_key(k) or keys.split_rle_key(k)
        if split is not None:
            devices.add(split[0])
    return sorted(devices)


_standard_samples = standard_samples  # the name tests and older callers used


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
    verdicts: dict[str, dict[str, DeviceProvenance]] = {}
    for run in runs.to_dict("records"):
        rid = str(run["run_id"])
        raw = reader.samples(rid, run["artifact_uri"])
        verdicts[rid] = device_provenance(raw, run["tags"])
        samples[rid] = standard_samples(raw)
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
            verdicts[rid] = device_provenance(None, run["tags"], frames)
        frames, missing = apply_provenance(frames, verdicts[rid])
        out.append(
            _RunData(
                run,
                _group_value(run, group_by),
                train,
                frames,
                source if frames else "none",
                verdicts[rid],
                missing,
            )
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
    alignment: list[dict[str, Any]] = field(default_factory=list)
    provenance: list[dict[str, str]] = field(default_factory=list)


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
                    "reason": "no telemetry: no raw samples (telemetry/samples/) and no system/ or rle/ device metrics "
                    "(telemetry=none, or the run has not ended); fingerprints and correlations skipped",
                }
            )
            continue
        for device, judged in sorted(d.provenance.items()):
            a.provenance.append(judged.row(rid))
            if judged.rle_excluded and device in d.frames:
                a.skipped.append(
                    {
                        "run_id": rid,
                        "what": f"{device} RLE",
                        "reason": judged.rle_reason.removeprefix("N/A: ")
                        + " (fingerprint RLE columns and RLE correlations N/A)",
                    }
                )
        if d.source == "step_metrics":
            a.skipped.append(
                {
                    "run_id": rid,
                    "what": "samples artifact",
                    "reason": "no raw samples (telemetry/samples/): used the logged step-level window means instead",
                }
            )
        for device, frame in sorted(d.frames.items()):
            idle = idle_summary(frame["time_s"].to_numpy(dtype=np.float64), interval)
            fallback = {
                k: float(d.run["metrics"][keys.rle_key(device, k)])
                for k in ("collapse_events", "collapse_seconds", "collapse_fraction")
                if keys.rle_key(device, k) in d.run["metrics"]
            }
            verdict = d.provenance.get(device)
            if verdict is not None and verdict.rle_excluded:
                fallback = {}  # the logged collapse summary rests on the same placeholder RLE
            fp = run_fingerprint(
                rid,
                d.group,
                device,
                frame,
                interval,
                d.train,
                source=d.source,
                idle=idle,
                collapse_fallback=fallback,
                flags=_flags(verdict),
            )
            a.fingerprints.append(fp)
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
            missing = sorted(
                {p.y for p in pairs} - set(frame.columns) - set(d.missing.get(device, {}))
            )
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
                missing_reasons=d.missing.get(device),
                no_detection_reason=(verdict.collapse_reason or None) if verdict else None,
            )
            a.correlations.extend(result.rows)
            a.alignment.extend(result.alignment)
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
                        "n_spike_steps": sc.n_spike_steps,
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


def _flags(verdict: DeviceProvenance | None) -> str:
    """The fingerprint's ``flags`` cell: what is not a measurement on this device."""
    if verdict is None:
        return ""
    parts = [f"{c} placeholder" for c in verdict.placeholder_inputs]
    if verdict.power == "estimated":
        parts.append("power_w estimated")
    if verdict.rle_excluded:
        parts.append("RLE excluded")
    return ", ".join(parts)


# ---------------------------------------------------------------------------- legacy methods


@dataclass
class _Legacy:
    method: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    sessions: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    report: dict[str, Any] | None = None
    lag_rows: list[dict[str, Any]] = field(default_factory=list)
    spikes: list[dict[str, Any]] = field(default_factory=list)


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
    """One ``legacy_joint_session.csv`` row per computed field of ``analysis_<id>.json``."""
    return [
        {"run_id": run_id, "session_id": session_id, **row}
        for row in compare_fields(reproduced, stored, LEGACY_TOLERANCE)
    ]


def _session_spikes(run_id: str, session_id: str, entries: Any, k: float) -> dict[str, Any]:
    """The lab's spike count of one training log beside rle's merged spikes of the same log."""
    from rle.analysis.correlation import grad_norm_spikes
    from rle.analysis.legacy import legacy_spikes

    frame = pd.DataFrame(list(entries)) if not isinstance(entries, pd.DataFrame) else entries
    g = pd.to_numeric(frame.get("grad_norm", pd.Series(dtype=float)), errors="coerce")
    t = pd.to_numeric(
        frame.get("timestamp_shared", pd.Series(np.arange(len(frame)), dtype=float)),
        errors="coerce",
    )
    lab = legacy_spikes(g, k=k, ddof=1)
    merged, _ = grad_norm_spikes(t.to_numpy(dtype=np.float64), g.to_numpy(dtype=np.float64), k)
    return {
        "run_id": run_id,
        "session_id": session_id,
        **{c: lab[c] for c in ("steps", "mean_grad_norm", "std_grad_norm", "threshold")},
        "spike_steps": lab["spike_steps"],
        "merged_spikes": int(merged.size),
        "spike_indices": ",".join(str(i) for i in lab["spike_indices"]),
    }


def _legacy(reader: Any, runs: pd.DataFrame, method: str, spike_k: float = 1.0) -> _Legacy:
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
            out.spikes.append(_session_spikes(rid, sid, session.training_entries, spike_k))
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
    """Create and return the folder the artifacts are written to.

    ``output.dir`` when set, else ``<project root>/outputs/evaluations/<UTC time>``. Called
    once early (:func:`_context`) for a set ``output.dir``, so a bad folder fails before any
    work, and again when the artifacts are written.

    Raises:
        rle.errors.ConfigError: If the folder cannot be created or written to.
    """
    if cfg.output.dir:
        out, name = Path(str(cfg.output.dir)).expanduser(), f"output.dir={cfg.output.dir!s}"
    else:
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H-%M-%S.%fZ")
        out = paths.project_root() / "outputs" / "evaluations" / stamp
        name = f"the evaluation output folder {out}"
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as e:
        raise ConfigError(
            f"{name} cannot be used: {e.strerror or e} ({e.filename or out}). Choose a folder "
            "that can be created and written to (output.dir=/path/to/folder), or leave "
            "output.dir unset for outputs/evaluations/<time> under the project root."
        ) from e
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
    """Write every artifact of the evaluation into ``out``; returns their file names."""
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
    tables = {
        "fingerprints.csv": fp_all,
        "correlations.csv": result.correlations,
        "alignment.csv": result.alignment,
        "provenance.csv": result.provenance,
        "spike_collapse.csv": result.spikes,
        "evaluated_runs.csv": result.runs,
        "skipped.csv": result.skipped,
    }
    for name, table in tables.items():
        table.to_csv(out / name, index=False)
        files.append(name)
    clf = result.classifier
    if clf is not None and clf.available:
        clf.predictions.to_csv(out / "classifier_predictions.csv", index=False)
        clf.confusion.to_csv(out / "classifier_confusion.csv")
        files += ["classifier_predictions.csv", "classifier_confusion.csv"]
    plot_notes: list[str] = []
    if plots:
        written, plot_notes = _plots(out, result, analysis, settings, pairs, dpi)
        files += written
    else:
        plot_notes = ["Plots were not drawn (`evaluation.plots.enabled=false`)."]
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
                spikes=result.legacy_spikes,
                spike_k=float(spikes.k),
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
        alignment=result.alignment,
        provenance=result.provenance,
        plot_notes=plot_notes,
    )
    (out / "report.md").write_text(text, encoding="utf-8")
    return files


def _plots(
    out: Path, result: EvalResult, analysis: _Analysis, settings: Any, pairs: list[Any], dpi: int
) -> tuple[list[str], list[str]]:
    """Scatter, lag and fingerprint plots: ``(file names written, report notes)``.

    A plot that would be empty is not written; its note says what is missing and why.
    """
    from rle.analysis.plots import EmptyPlot, fingerprint_plot, has_values, lag_plot, scatter_plot

    def _has_values(frame: pd.DataFrame, column: str) -> bool:
        return column not in ("run_id", "group", "device") and has_values(frame, column)

    points = (
        pd.concat(analysis.points, ignore_index=True)
        if analysis.points
        else pd.DataFrame(columns=["run_id", "group", "device"])
    )
    lags = pd.DataFrame(
        analysis.lags, columns=["run_id", "group", "device", "x", "y", "lag_s", "r", "null_q95"]
    )
    outcomes = [
        scatter_plot(points, x, y, out / name, title, dpi=dpi) for x, y, name, title in SCATTERS
    ]
    outcomes.append(
        lag_plot(
            lags,
            [(p.x, p.y) for p in pairs],
            out / "lag_plot.png",
            settings.detrend,
            dpi=dpi,
            series=[c for c in points.columns if _has_values(points, c)],
        )
    )
    outcomes.append(
        fingerprint_plot(
            result.fingerprints,
            result.group_fingerprints,
            FINGERPRINT_PLOT_FEATURES,
            out / "fingerprint_comparison.png",
            dpi=dpi,
        )
    )
    files: list[str] = []
    notes: list[str] = []
    for written, more in outcomes:
        if isinstance(written, EmptyPlot):
            notes.append(written.note())
        else:
            files.append(written.name)
        notes += more
    return files, notes


def _write_legacy(out: Path, result: EvalResult, legacy: _Legacy) -> list[str]:
    """The legacy method's files: the field comparison or the lag report, and the lab's spikes."""
    result.legacy_spikes.to_csv(out / "legacy_spikes.csv", index=False)
    if legacy.method == "legacy_joint_session":
        result.legacy.to_csv(out / "legacy_joint_session.csv", index=False)
        return ["legacy_joint_session.csv", "legacy_spikes.csv"]
    pd.DataFrame(legacy.lag_rows, columns=list(LAG_REPORT_COLUMNS)).to_csv(
        out / "legacy_lag_report.csv", index=False
    )
    report = legacy.report or {"total_sessions": 0, "detailed_results": [], "summary": {}}
    (out / "legacy_lag_report.json").write_text(
        json.dumps(report, indent=2, default=str), encoding="utf-8"
    )
    return ["legacy_lag_report.csv", "legacy_lag_report.json", "legacy_spikes.csv"]


def _frame(rows: list[dict[str, Any]], columns: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(columns))


_SKIPPED_COLUMNS = ["run_id", "what", "reason"]
_RUN_COLUMNS = [
    "run_id",
    "run_name",
    "group",
    "status",
    "source",
    "devices",
    "n_steps",
    "duration_s",
]


# ---------------------------------------------------------------------------------- stages


@dataclass
class _Context:
    """What the stages share: settings, the store and the bookkeeping of one evaluation."""

    cfg: DictConfig
    settings: Any
    spikes: Any
    pairs: list[Any]
    selection: Any
    group_by: str
    method: str
    location: Any
    shown_uri: str
    reader: Any
    timings: dict[str, float] = field(default_factory=dict)
    skipped: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _context(cfg: DictConfig) -> _Context:
    """Validate the settings, resolve the store and check that it answers."""
    from rle.tracking.logger import check_reachable
    from rle.tracking.reader import RunReader
    from rle.tracking.spool import strip_userinfo

    settings, spikes, pairs = settings_from_config(cfg)
    selection = selection_from_config(cfg)
    if cfg.output.dir:
        _output_dir(cfg)  # a folder that cannot be written fails now, not after the analysis
    location = paths.resolve_tracking(cfg.tracking.uri)
    shown_uri = strip_userinfo(location.uri)  # credentials never go into logs or the report
    log.info("Tracking URI %s (from %s)", shown_uri, location.reason)
    check_reachable(location, float(cfg.tracking.connect_timeout_s))
    return _Context(
        cfg=cfg,
        settings=settings,
        spikes=spikes,
        pairs=pairs,
        selection=selection,
        group_by=str(cfg.evaluation.group_by),
        method=str(cfg.evaluation.correlation.method),
        location=location,
        shown_uri=shown_uri,
        reader=RunReader(location),
    )


def _empty(ctx: _Context, message: str) -> EvalResult:
    log.error("%s", message)
    return EvalResult(
        "EMPTY",
        message,
        skipped=_frame(ctx.skipped, _SKIPPED_COLUMNS),
        notes=ctx.notes,
        timings_s=ctx.timings,
        method=ctx.method,
    )


def _select(ctx: _Context) -> pd.DataFrame | EvalResult:
    """The selected runs, or an ``EMPTY`` result that says why there are none."""
    t0 = time.perf_counter()
    selected = ctx.reader.select_runs(ctx.selection)
    ctx.timings["select"] = time.perf_counter() - t0
    ctx.skipped += [
        {"run_id": r.run_id, "what": "run", "reason": r.reason}
        for r in selected.skipped.itertuples()
    ]
    ctx.notes = list(selected.notes)
    for note in selected.notes:
        log.warning("%s", note)
    log.info(
        "Selection: %s -> %d run(s), %d skipped",
        ctx.selection.describe(),
        len(selected.runs),
        len(ctx.skipped),
    )
    if not selected.runs.empty:
        return selected.runs
    why = "; ".join(selected.notes) or "no matching runs"
    message = f"Nothing to evaluate: {ctx.selection.describe()} selects no run ({why})."
    if ctx.skipped:
        message += (
            f" Skipped: {len(ctx.skipped)} ("
            + "; ".join(f"{r['run_id'][:8]}: {r['reason']}" for r in ctx.skipped[:5])
            + ")."
        )
    result = _empty(ctx, message)
    result.method = "default"
    return result


def _identical_curve_warnings(analysis: _Analysis, group_by: str) -> list[str]:
    """One warning per group of runs with bit-identical training curves (§8.1 sanity check)."""
    from rle.analysis.correlation import identical_training_groups

    warnings = []
    for group in identical_training_groups(analysis.curves):
        runs = ", ".join(f"{rid[:8]} ({label})" for rid, label in group)
        labels = {label for _, label in group}
        if len(labels) > 1:
            why = f"their {group_by} labels differ but their training did not"
        else:
            why = (
                f"same {group_by} label: the same training log recorded or imported more than "
                "once, so these runs are not independent evidence about training dynamics"
            )
        warnings.append(
            f"runs {runs} have bit-identical train/loss and train/grad_norm at every step: {why}"
        )
    for w in warnings:
        log.warning("%s", w)
    return warnings


def _result(
    ctx: _Context, analysis: _Analysis, selected: pd.DataFrame, legacy: _Legacy | None
) -> EvalResult:
    """Fingerprint aggregates, the classifier and the sanity checks, as an :class:`EvalResult`."""
    from rle.analysis.correlation import ALIGNMENT_COLUMNS, CORRELATION_COLUMNS
    from rle.analysis.fingerprint import FINGERPRINT_COLUMNS, classify_workloads, group_fingerprints

    t0 = time.perf_counter()
    fingerprints = _frame(analysis.fingerprints, FINGERPRINT_COLUMNS)
    result = EvalResult(
        status="FINISHED",
        message="",
        runs=_frame(analysis.runs, _RUN_COLUMNS),
        skipped=_frame(ctx.skipped + analysis.skipped, _SKIPPED_COLUMNS),
        fingerprints=fingerprints,
        group_fingerprints=group_fingerprints(fingerprints, analysis.frames),
        correlations=_frame(analysis.correlations, CORRELATION_COLUMNS),
        spikes=pd.DataFrame(analysis.spikes),
        classifier=classify_workloads(
            fingerprints, min_runs=int(ctx.cfg.evaluation.classifier.min_runs_per_group)
        ),
        warnings=_identical_curve_warnings(analysis, ctx.group_by),
        notes=ctx.notes,
        timings_s=ctx.timings,
        method=ctx.method,
        alignment=_frame(analysis.alignment, ALIGNMENT_COLUMNS),
        provenance=_frame(analysis.provenance, PROVENANCE_COLUMNS),
    )
    if legacy is not None:
        result.legacy = _frame(legacy.rows, LEGACY_COLUMNS)
        result.legacy_report = legacy.report
        result.legacy_spikes = _frame(legacy.spikes, LEGACY_SPIKE_COLUMNS)
    ctx.timings["analyse"] = ctx.timings.get("analyse", 0.0) + time.perf_counter() - t0
    if result.runs.empty and (legacy is None or not legacy.sessions):
        result.status = "EMPTY"
        result.message = (
            f"Nothing to evaluate: none of the {len(selected)} selected run(s) logged an "
            "optimizer step."
        )
        log.error("%s", result.message)
    return result


def _log_run(
    ctx: _Context,
    result: EvalResult,
    analysis: _Analysis,
    selected: pd.DataFrame,
    legacy: _Legacy | None,
) -> None:
    """Write the artifacts and, unless ``output.log_to_mlflow=false``, log the evaluation run."""
    from rle.tracking import keys
    from rle.tracking.logger import client_for, create_run, end_run, log_params, log_tags
    from rle.train import flatten_config

    cfg = ctx.cfg
    out = _output_dir(cfg)
    result.output_dir = out
    experiment = str(
        cfg.output.experiment_name
        or ctx.reader.experiment_name(str(selected["experiment_id"].iloc[0]))
    )
    run_ids = list(result.runs["run_id"])
    if legacy is not None:
        run_ids += [str(s["run_id"]) for s in legacy.sessions if s["run_id"] not in run_ids]
    header = {
        "created (UTC)": datetime.now(UTC).isoformat(timespec="seconds"),
        "tracking URI": ctx.shown_uri,
        "selection": ctx.selection.describe(),
        "runs analysed": str(len(run_ids)),
        "grouped by": ctx.group_by,
        "correlation.method": ctx.method,
    }
    if legacy is not None:
        header["corrected analysis beside it"] = "correlation.method=default"
    run_id: str | None = None
    status = "FAILED"
    t0 = time.perf_counter()
    try:
        if bool(cfg.output.log_to_mlflow):
            tags = {
                keys.TAG_ROLE: keys.ROLE_EVALUATION,
                keys.TAG_KIND: keys.ROLE_EVALUATION,
                "rle.evaluated_runs": str(len(run_ids)),
                **{str(k): str(v) for k, v in (cfg.tracking.tags or {}).items()},
            }
            name = str(cfg.output.run_name or f"evaluation {len(run_ids)} runs")
            result.experiment_id, run_id = create_run(ctx.location, experiment, name, tags)
            result.run_id = run_id
            header["evaluation run"] = f"{run_id} (experiment {experiment!r})"
        files = _write(
            out,
            result,
            analysis,
            ctx.settings,
            ctx.spikes,
            ctx.pairs,
            header,
            ctx.group_by,
            int(cfg.evaluation.plots.dpi),
            bool(cfg.evaluation.plots.enabled),
            legacy,
        )
        if run_id is not None:
            client = client_for(ctx.location)
            selection = ctx.selection
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
                "evaluation/read_seconds": ctx.timings["read"],
            }
            if result.classifier.available:
                metrics["evaluation/classifier_loo_accuracy"] = result.classifier.accuracy
            if legacy is not None:
                metrics["evaluation/legacy_sessions"] = float(len(legacy.sessions))
                if ctx.method == "legacy_joint_session":
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
            _log_traceback(ctx.location, run_id)
        raise
    finally:
        if run_id is not None:
            end_run(ctx.location, run_id, status)
    ctx.timings["write"] = time.perf_counter() - t0
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


# ---------------------------------------------------------------------------------- run_evaluation


def run_evaluation(cfg: DictConfig) -> EvalResult:
    """Evaluate a selection of runs and write one evaluation run.

    Steps: validate the settings; resolve and probe the tracking store; select the runs
    (evaluation runs and sweep parents excluded by default); for a legacy method, reproduce the
    lab's analyses of the imported joint sessions; read the ``train/*`` histories (bulk) and the
    sample artifacts (step-level ``system/``/``rle/`` histories for runs without one) and judge
    each device's RLE inputs; compute fingerprints, correlations, spike–collapse matching, the
    identical-curve check and the workload classifier; write CSVs, plots and ``report.md`` to a
    local directory and log them into a new run tagged ``rle.role=evaluation`` (status FAILED,
    with the traceback, if anything fails after it was created).

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
    ctx = _context(cfg)
    selected = _select(ctx)
    if isinstance(selected, EvalResult):
        return selected
    to_read, legacy = selected, None
    if ctx.method in LEGACY_METHODS:
        to_read, not_joint = _split_legacy(selected, ctx.method)
        ctx.skipped += not_joint
        if to_read.empty:
            return _empty(
                ctx,
                f"Nothing to evaluate with {ctx.method}: none of the {len(selected)} selected "
                f"run(s) is an imported joint session (rle.source={JOINT_SOURCE}; import the "
                "bundle folder with `python -m rle.ingest PATH` and select its experiment).",
            )
        t0 = time.perf_counter()
        legacy = _legacy(ctx.reader, to_read, ctx.method, float(ctx.spikes.k))
        ctx.timings["legacy"] = time.perf_counter() - t0
        ctx.skipped += legacy.skipped
    check_group_by(ctx.group_by, to_read)
    data, ctx.timings["read"] = _read(ctx.reader, to_read, ctx.group_by)
    t1 = time.perf_counter()
    analysis = _analyse(data, ctx.settings, ctx.spikes, ctx.pairs)
    ctx.timings["analyse"] = time.perf_counter() - t1
    result = _result(ctx, analysis, selected, legacy)
    if result.status == "EMPTY":
        return result
    _log_run(ctx, result, analysis, selected, legacy)
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


# -------------------------------------------------------------------------------- terminal


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
