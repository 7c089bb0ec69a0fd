"""Workload fingerprints: what a run does to each device, and a classifier over them (§8.2).

A fingerprint describes one run on one device over its **training interval** (first to last
optimizer step; idle head and tail are reported but not described): sample count, duration,
mean/p5/p50/p95 of utilisation, power, temperature and SM clock where present, energy per step
and per training sample, throughput, RLE mean/std/min/max, collapse events/seconds/fraction and
the fraction of samples with a throttling reason. :func:`group_fingerprints` aggregates runs per
workload (or any grouping column) and device, pooling the samples for the distribution
statistics. :func:`classify_workloads` tells workloads apart from their fingerprints with a
nearest-centroid rule on standardised features and reports leave-one-run-out accuracy.

Pure pandas/NumPy (and :mod:`rle.metric` for collapse summaries); no MLflow.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from rle.analysis.align import TrainingInterval, within

__all__ = [
    "CLASSIFIER_FEATURES",
    "FINGERPRINT_COLUMNS",
    "THROTTLE_MASK",
    "ClassifierResult",
    "classify_workloads",
    "energy_joules",
    "group_fingerprints",
    "nearest_centroid_loo",
    "run_features",
    "run_fingerprint",
    "trained_samples",
]

FloatArray = npt.NDArray[np.float64]

THROTTLE_MASK = 0x04 | 0x08 | 0x20 | 0x40 | 0x80
"""NVML clock-event reasons counted as throttling: SW power cap, HW slowdown, SW thermal, HW thermal,
HW power brake (idle, application clocks, sync boost and display clock are not)."""

_QUANTITIES: tuple[tuple[str, str, str], ...] = (
    ("util_pct", "util", "percentage"),
    ("power_w", "power", "watts"),
    ("temp_c", "temperature", "celsius"),
    ("sm_clock_megahertz", "sm_clock", "megahertz"),
)
_STATS = ("mean", "p5", "p50", "p95")

FINGERPRINT_COLUMNS: tuple[str, ...] = (
    "run_id",
    "group",
    "device",
    "source",
    "n_runs",
    "n_samples",
    "n_steps",
    "duration_s",
    "idle_head_s",
    "idle_tail_s",
    *(f"{name}_{stat}_{unit}" for _, name, unit in _QUANTITIES for stat in _STATS),
    "energy_joules",
    "energy_source",
    "energy_per_step_joules",
    "energy_per_sample_joules",
    "samples_per_second",
    "tokens_per_second",
    "trained_samples",
    "rle_mean",
    "rle_std",
    "rle_min",
    "rle_max",
    "collapse_events",
    "collapse_seconds",
    "collapse_fraction",
    "throttle_fraction",
    "flags",
)
"""Columns of ``fingerprints.csv``. ``group`` is the workload (or the grouping key's value);
``run_id`` is empty on aggregated rows. ``source`` is ``samples`` (1 Hz sample artifact) or
``step_metrics`` (window means of the logged ``system/`` keys). Units are in the names; RLE is
dimensionless; fractions are 0..1. ``flags`` names what is not a measurement on the device
(``power_w placeholder``, ``temp_c placeholder``, ``power_w estimated``, ``RLE excluded``;
:mod:`rle.analysis.provenance`); placeholder inputs and excluded RLE are N/A, never described."""

CLASSIFIER_FEATURES: tuple[str, ...] = (
    "util_mean_percentage",
    "util_p95_percentage",
    "power_mean_watts",
    "power_p95_watts",
    "temperature_mean_celsius",
    "temperature_p95_celsius",
    "sm_clock_mean_megahertz",
    "energy_per_step_joules",
    "samples_per_second",
    "rle_mean",
    "rle_std",
    "collapse_fraction",
    "throttle_fraction",
)
"""Fingerprint columns the classifier may use (per device; those missing for any run are dropped)."""


def _dist(values: pd.Series | None, name: str, unit: str) -> dict[str, float]:
    out = {f"{name}_{stat}_{unit}": math.nan for stat in _STATS}
    if values is None:
        return out
    v = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return out
    out[f"{name}_mean_{unit}"] = float(v.mean())
    for q in (5, 50, 95):
        out[f"{name}_p{q}_{unit}"] = float(np.percentile(v, q))
    return out


def _rle_stats(frame: pd.DataFrame) -> dict[str, float]:
    nan = {"rle_mean": math.nan, "rle_std": math.nan, "rle_min": math.nan, "rle_max": math.nan}
    if "rle_smoothed" not in frame:
        return nan
    v = frame["rle_smoothed"].to_numpy(dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return nan
    return {
        "rle_mean": float(v.mean()),
        "rle_std": float(v.std(ddof=1)) if v.size > 1 else math.nan,
        "rle_min": float(v.min()),
        "rle_max": float(v.max()),
    }


def _throttle_fraction(frame: pd.DataFrame) -> float:
    if "throttle_reasons" not in frame:
        return math.nan
    v = frame["throttle_reasons"].to_numpy(dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return math.nan
    return float(((v.astype(np.int64) & THROTTLE_MASK) != 0).mean())


def energy_joules(frame: pd.DataFrame, interval: TrainingInterval) -> tuple[float, str]:
    """Energy of one device over the training interval.

    Args:
        frame: The device's **whole-run** frame (``time_s`` and ``energy_counter_joules``
            (cumulative counter, J), ``energy_delta_joules`` (per-window, J, step metrics) or
            ``power_w`` (W)).
        interval: The training interval.

    Returns:
        ``(energy_J, source)``: from the counter interpolated at the interval's ends
        (``counter``; increments summed if the counter resets), from the window deltas of the
        steps inside the interval (``window_sum``), from the trapezoidal integral of power
        (``power_integral``), or ``(NaN, "none")``.
    """
    t = frame["time_s"].to_numpy(dtype=np.float64)
    if "energy_counter_joules" in frame:
        c = frame["energy_counter_joules"].to_numpy(dtype=np.float64)
        ok = np.isfinite(c) & np.isfinite(t)
        if ok.sum() >= 2:
            tc, cc = t[ok], c[ok]
            lo = float(np.clip(interval.start_s, tc[0], tc[-1]))
            hi = float(np.clip(interval.end_s, tc[0], tc[-1]))
            if np.all(np.diff(cc) >= 0):
                return float(np.interp(hi, tc, cc) - np.interp(lo, tc, cc)), "counter"
            inside = (tc >= lo) & (tc <= hi)
            d = np.diff(cc[inside])
            return float(d[d > 0].sum()), "counter"
    if "energy_delta_joules" in frame:
        sub = within(frame, interval)
        d = sub["energy_delta_joules"].to_numpy(dtype=np.float64)
        if np.isfinite(d).any():
            return float(np.nansum(d)), "window_sum"
    if "power_w" in frame:
        sub = within(frame, interval)
        p = sub["power_w"].to_numpy(dtype=np.float64)
        ts = sub["time_s"].to_numpy(dtype=np.float64)
        ok = np.isfinite(p)
        if ok.sum() >= 2:
            pp, tt = p[ok], ts[ok]
            return float(((pp[1:] + pp[:-1]) * 0.5 * np.diff(tt)).sum()), "power_integral"
    return math.nan, "none"


def trained_samples(train: pd.DataFrame, interval: TrainingInterval) -> float:
    """Training samples processed in the interval: Σ samples_per_second × step interval.

    Args:
        train: Per-step frame (``time_s``, ``train/samples_per_second``).
        interval: The training interval (its median step interval is the first step's length).

    Returns:
        Samples (all ranks), NaN without a throughput series.
    """
    key = "train/samples_per_second"
    if key not in train or not train[key].notna().any():
        return math.nan
    t = train["time_s"].to_numpy(dtype=np.float64)
    dt = np.diff(t, prepend=t[0] - interval.step_interval_s) if t.size else t
    sps = train[key].to_numpy(dtype=np.float64)
    ok = np.isfinite(sps)
    return float((sps[ok] * dt[ok]).sum())


def _optimizer_steps(train: pd.DataFrame) -> int:
    steps = np.asarray(train.index.to_numpy(), dtype=np.int64)
    if steps.size == 0:
        return 0
    gap = int(np.median(np.diff(steps))) if steps.size > 1 else 1
    return int(steps[-1] - steps[0] + max(gap, 1))


def _collapse(frame: pd.DataFrame, fallback: Mapping[str, float] | None) -> dict[str, float]:
    out = {"collapse_events": math.nan, "collapse_seconds": math.nan, "collapse_fraction": math.nan}
    if "collapse" in frame:
        sub = frame[["time_s", "collapse"]].dropna()
        if len(sub):  # no sample in the interval: unknown, not zero
            from rle.metric import collapse_summary

            summary = collapse_summary(sub.rename(columns={"time_s": "timestamp"}))
            out.update({k: float(summary[k]) for k in out})
    elif fallback:
        out.update({k: float(fallback[k]) for k in out if k in fallback})
    return out


def run_fingerprint(
    run_id: str,
    group: str,
    device: str,
    frame: pd.DataFrame,
    interval: TrainingInterval,
    train: pd.DataFrame,
    *,
    source: str = "samples",
    idle: Mapping[str, float] | None = None,
    collapse_fallback: Mapping[str, float] | None = None,
    flags: str = "",
) -> dict[str, Any]:
    """The fingerprint of one run on one device.

    Args:
        run_id: The run.
        group: Its workload (or grouping value).
        device: Device label.
        frame: The device's whole-run frame (:func:`rle.analysis.align.device_frames`); only the
            training interval is described (the whole frame serves the energy counter).
        interval: The run's training interval.
        train: Per-step training frame (index step; ``time_s``, ``train/samples_per_second``,
            ``train/tokens_per_second``).
        source: ``samples`` or ``step_metrics``.
        idle: Output of :func:`rle.analysis.align.idle_summary` (head/tail seconds).
        collapse_fallback: Run-level ``collapse_events/seconds/fraction`` to use when the frame
            has no collapse series (whole run, as logged).
        flags: The ``flags`` cell (what is not a measurement on this device).

    Returns:
        One row with :data:`FINGERPRINT_COLUMNS`.
    """
    sub = within(frame, interval)
    row: dict[str, Any] = {
        "run_id": run_id,
        "group": group,
        "device": device,
        "source": source,
        "n_runs": 1,
        "n_samples": len(sub),
        "n_steps": _optimizer_steps(train),
        "duration_s": interval.duration_s,
        "idle_head_s": float((idle or {}).get("head_s", math.nan)),
        "idle_tail_s": float((idle or {}).get("tail_s", math.nan)),
    }
    for col, name, unit in _QUANTITIES:
        row.update(_dist(sub.get(col), name, unit))
    energy, how = energy_joules(frame, interval)
    n_trained = trained_samples(train, interval)
    row.update(
        {
            "energy_joules": energy,
            "energy_source": how,
            "energy_per_step_joules": energy / row["n_steps"] if row["n_steps"] else math.nan,
            "energy_per_sample_joules": energy / n_trained
            if n_trained and n_trained > 0
            else math.nan,
            "samples_per_second": _mean(train, "train/samples_per_second"),
            "tokens_per_second": _mean(train, "train/tokens_per_second"),
            "trained_samples": n_trained,
        }
    )
    row.update(_rle_stats(sub))
    row.update(_collapse(sub, collapse_fallback))
    row["throttle_fraction"] = _throttle_fraction(sub)
    row["flags"] = flags
    return {c: row.get(c, math.nan) for c in FINGERPRINT_COLUMNS}


def _mean(train: pd.DataFrame, key: str) -> float:
    if key not in train:
        return math.nan
    v = train[key].to_numpy(dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else math.nan


def _weighted(values: pd.Series, weights: pd.Series) -> float:
    v = values.to_numpy(dtype=np.float64)
    w = weights.to_numpy(dtype=np.float64)
    ok = np.isfinite(v) & np.isfinite(w) & (w > 0)
    return float((v[ok] * w[ok]).sum() / w[ok].sum()) if ok.any() else math.nan


def group_fingerprints(
    runs: pd.DataFrame, frames: Mapping[tuple[str, str], pd.DataFrame]
) -> pd.DataFrame:
    """Aggregate per-run fingerprints per group (workload) and device.

    Distribution statistics (quantiles, RLE, throttle fraction) are computed over the pooled
    training-interval samples of the group's runs; counts, durations, energy, trained samples
    and collapse events/seconds are summed; energy per step/sample is total energy over total
    steps/samples; throughput is the duration-weighted mean; the collapse fraction is total
    collapse seconds over total duration.

    Args:
        runs: Per-run rows (:func:`run_fingerprint`).
        frames: ``{(run_id, device): training-interval frame}`` for the pooled statistics.

    Returns:
        One row per (group, device) with :data:`FINGERPRINT_COLUMNS` (``run_id`` empty,
        ``source`` the sources joined by ``+``).
    """
    rows = []
    if runs.empty:
        return pd.DataFrame(columns=list(FINGERPRINT_COLUMNS))
    for (group, device), part in runs.groupby(["group", "device"], sort=True):
        pooled_parts = [
            frames[(r, str(device))] for r in part["run_id"] if (r, str(device)) in frames
        ]
        pooled = pd.concat(pooled_parts, ignore_index=True) if pooled_parts else pd.DataFrame()
        row: dict[str, Any] = {
            "run_id": "",
            "group": group,
            "device": device,
            "source": "+".join(sorted(set(part["source"]))),
            "n_runs": int(part["n_runs"].sum()),
            "n_samples": int(part["n_samples"].sum()),
            "n_steps": int(part["n_steps"].sum()),
            "duration_s": float(part["duration_s"].sum()),
            "idle_head_s": float(part["idle_head_s"].sum()),
            "idle_tail_s": float(part["idle_tail_s"].sum()),
        }
        for col, name, unit in _QUANTITIES:
            row.update(_dist(pooled.get(col), name, unit))
        energy = part["energy_joules"].to_numpy(dtype=np.float64)
        has_energy = np.isfinite(energy)
        e_total = float(energy[has_energy].sum()) if has_energy.any() else math.nan
        steps_e = float(part.loc[has_energy, "n_steps"].sum())
        trained = part["trained_samples"].to_numpy(dtype=np.float64)
        both = has_energy & np.isfinite(trained)
        row.update(
            {
                "energy_joules": e_total,
                "energy_source": "+".join(sorted(set(part["energy_source"]))),
                "energy_per_step_joules": e_total / steps_e if steps_e else math.nan,
                "energy_per_sample_joules": (
                    float(energy[both].sum() / trained[both].sum())
                    if both.any() and trained[both].sum() > 0
                    else math.nan
                ),
                "samples_per_second": _weighted(part["samples_per_second"], part["duration_s"]),
                "tokens_per_second": _weighted(part["tokens_per_second"], part["duration_s"]),
                "trained_samples": float(np.nansum(trained))
                if np.isfinite(trained).any()
                else math.nan,
            }
        )
        row.update(_rle_stats(pooled) if len(pooled) else _rle_stats(pd.DataFrame()))
        ev = part["collapse_events"].to_numpy(dtype=np.float64)
        secs = part["collapse_seconds"].to_numpy(dtype=np.float64)
        if np.isfinite(ev).any():
            known = np.isfinite(secs)
            row["collapse_events"] = float(np.nansum(ev))
            row["collapse_seconds"] = float(np.nansum(secs))
            dur = float(part.loc[known, "duration_s"].sum())
            row["collapse_fraction"] = float(secs[known].sum() / dur) if dur > 0 else math.nan
        row["throttle_fraction"] = _throttle_fraction(pooled) if len(pooled) else math.nan
        flags = part["flags"] if "flags" in part else pd.Series(dtype=object)
        row["flags"] = "; ".join(
            sorted({str(f) for f in flags if isinstance(f, str) and f} - {"nan"})
        )
        rows.append({c: row.get(c, math.nan) for c in FINGERPRINT_COLUMNS})
    return pd.DataFrame(rows, columns=list(FINGERPRINT_COLUMNS))


# ------------------------------------------------------------------------------ classifier


def run_features(
    fingerprints: pd.DataFrame, features: Sequence[str] = CLASSIFIER_FEATURES
) -> pd.DataFrame:
    """One feature vector per run: each device's fingerprint features side by side.

    Args:
        fingerprints: Per-run fingerprint rows (``run_id`` non-empty).
        features: Fingerprint columns to use.

    Returns:
        Frame indexed by ``run_id`` with a ``group`` column and ``<device>.<feature>`` columns.
    """
    per_run = fingerprints[fingerprints["run_id"].astype(str) != ""]
    if per_run.empty:
        return pd.DataFrame(columns=["group"])
    cols = [f for f in features if f in per_run]
    wide = per_run.pivot_table(
        index="run_id", columns="device", values=cols, aggfunc="first", dropna=False
    )
    wide.columns = [f"{dev}.{feat}" for feat, dev in wide.columns]
    wide = wide.reindex(sorted(wide.columns), axis=1)
    groups = per_run.groupby("run_id")["group"].first()
    wide.insert(0, "group", groups.reindex(wide.index))
    return wide


def nearest_centroid_loo(x: FloatArray, labels: Sequence[str]) -> list[str]:
    """Leave-one-out predictions of a nearest-centroid classifier on standardised features.

    For each sample, the others are standardised with their own mean and standard deviation
    (features constant among them are dropped), one centroid per label is the mean of its
    standardised samples, and the held-out sample gets the label of the nearest centroid
    (Euclidean; ties go to the label that sorts first).

    Args:
        x: Features, shape ``(n_samples, n_features)``, all finite.
        labels: Label of each sample, length ``n_samples``.

    Returns:
        The predicted label of each sample.

    Raises:
        ValueError: If shapes disagree or there are fewer than 2 samples.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(list(labels), dtype=object)
    if x.ndim != 2 or x.shape[0] != y.shape[0] or x.shape[0] < 2:
        raise ValueError("nearest_centroid_loo needs x of shape (n >= 2, f) and n labels")
    out: list[str] = []
    for i in range(x.shape[0]):
        train = np.arange(x.shape[0]) != i
        xt, yt = x[train], y[train]
        mu = xt.mean(axis=0)
        sd = xt.std(axis=0)
        use = sd > 0
        if not use.any():
            out.append(str(sorted(set(yt))[0]))
            continue
        z = (xt[:, use] - mu[use]) / sd[use]
        zi = (x[i, use] - mu[use]) / sd[use]
        best, best_d = "", math.inf
        for label in sorted(set(yt)):
            d = float(np.linalg.norm(z[yt == label].mean(axis=0) - zi))
            if d < best_d - 1e-12:
                best, best_d = str(label), d
        out.append(best)
    return out


@dataclass
class ClassifierResult:
    """Outcome of :func:`classify_workloads`.

    Attributes:
        available: Whether the classifier ran.
        reason: Why not (or remarks such as excluded runs).
        accuracy: Leave-one-run-out accuracy, 0..1 (NaN if not available).
        chance: Accuracy of always predicting the most frequent label.
        features: Feature columns used.
        confusion: Counts, rows = true group, columns = predicted group.
        predictions: ``run_id``, ``group``, ``predicted``.
    """

    available: bool
    reason: str = ""
    accuracy: float = math.nan
    chance: float = math.nan
    features: list[str] = field(default_factory=list)
    confusion: pd.DataFrame = field(default_factory=pd.DataFrame)
    predictions: pd.DataFrame = field(default_factory=pd.DataFrame)


def classify_workloads(
    fingerprints: pd.DataFrame, features: Sequence[str] = CLASSIFIER_FEATURES, min_runs: int = 2
) -> ClassifierResult:
    """Tell groups (workloads) apart from per-run fingerprints: nearest centroid, leave-one-run-out.

    Needs at least two groups with at least ``min_runs`` runs each; groups with fewer runs are
    left out (and named in ``reason``). Feature columns missing (NaN) for any remaining run, or
    constant across them, are dropped.

    Args:
        fingerprints: Per-run fingerprint rows (aggregated rows are ignored).
        features: Candidate fingerprint columns.
        min_runs: Fewest runs per group.

    Returns:
        The :class:`ClassifierResult`; ``available`` is False with a reason when the conditions
        do not hold.
    """
    wide = run_features(fingerprints, features)
    if wide.empty:
        return ClassifierResult(False, "no runs with fingerprints")
    counts = wide["group"].value_counts()
    keep = sorted(str(g) for g, c in counts.items() if c >= min_runs)
    dropped = sorted(str(g) for g, c in counts.items() if c < min_runs)
    if len(keep) < 2:
        return ClassifierResult(
            False,
            f"needs at least 2 workloads with at least {min_runs} runs each; have "
            + ", ".join(f"{g}: {int(c)} run(s)" for g, c in sorted(counts.items())),
        )
    data = wide[wide["group"].isin(keep)]
    x = data.drop(columns="group")
    x = x.loc[:, x.notna().all(axis=0)]
    x = x.loc[:, x.nunique(axis=0) > 1]
    if x.shape[1] == 0:
        return ClassifierResult(False, "no fingerprint feature is present and varying for all runs")
    labels = [str(v) for v in data["group"]]
    predicted = nearest_centroid_loo(x.to_numpy(dtype=np.float64), labels)
    pred = pd.DataFrame({"run_id": data.index.to_list(), "group": labels, "predicted": predicted})
    confusion = pd.crosstab(
        pd.Categorical(pred["group"], categories=keep),
        pd.Categorical(pred["predicted"], categories=keep),
        rownames=["true"],
        colnames=["predicted"],
        dropna=False,
    )
    accuracy = float((pred["group"] == pred["predicted"]).mean())
    chance = float(pd.Series(labels).value_counts().iloc[0] / len(labels))
    reason = f"left out (fewer than {min_runs} runs): {', '.join(dropped)}" if dropped else ""
    return ClassifierResult(True, reason, accuracy, chance, list(x.columns), confusion, pred)
