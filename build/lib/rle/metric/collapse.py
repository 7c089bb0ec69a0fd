"""Collapse detectors (v0.3, v2 and ``default``) and run-level collapse reporting (§4).

Batch (vectorised) forms of the detectors live here; the incremental engine in
:mod:`rle.metric.stream` implements the same recursions sample by sample.

* ``default`` (§4.4)::

      warm     = t − t_first > warmup_s
      peak     = max(rle_smoothed, peak_prev · 2^(−Δt / peak_half_life_s))
      under    = util_pct > gate.util_pct  or  α > gate.a_load
      heat     = OLS temperature slope > gate.heat_rate_c_per_s
      drop     = rle_smoothed < drop_frac · peak
      cond     = under and heat and drop (and temperature, T_limit and α known)
      held_s   = held_s + Δt if cond else 0
      evidence = τ < evidence.tau_s  or  T > T_limit − evidence.temp_margin_c  or  α > evidence.a_load
      collapse = warm and cond and held_s ≥ hysteresis_s and evidence

  The peak and ``held_s`` run from the first sample; only the flag waits for the warm-up.
* ``legacy_v03`` (§4.1): the same in samples, only when warm; peak logged as 0 during warm-up;
  heating = per-sample rise of the temperature history > 0.05 °C.
* ``legacy_v2`` (§4.2): ``rle_raw < drop_frac · peak`` (no gates, no hysteresis).

Reporting (§4.5, D4) is per device, never pooled: :func:`collapse_events` lists rising-edge
events with start, end and duration; :func:`collapse_summary` gives ``collapse_events``,
``collapse_seconds`` and ``collapse_fraction``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from rle.errors import MetricInputError
from rle.metric._inputs import read_times
from rle.metric.profiles import CollapseParams

__all__ = [
    "EVENT_COLUMNS",
    "collapse_events",
    "collapse_summary",
    "decaying_peak",
    "detect_default",
    "detect_legacy_v03",
    "held_seconds",
    "run_lengths",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

EVENT_COLUMNS = (
    "start",
    "end",
    "duration_s",
    "n_samples",
    "first_index",
    "last_index",
    "min_rle_smoothed",
)


def decaying_peak(
    values: FloatArray, age: FloatArray, half_life: float, eligible: BoolArray | None = None
) -> FloatArray:
    """Decaying running maximum ``peak_i = max(v_i, peak_{i−1} · 2^(−(age_i − age_{i−1})/half_life))``.

    Closed form ``max_{j ≤ i, eligible} v_j · 2^(−(age_i − age_j)/half_life)`` (0 when no eligible
    finite value so far), evaluated with log-domain keys and a running arg-max.

    Args:
        values: Values to track (``rle_smoothed``), NaN skipped, shape ``(n,)``.
        age: Time (s) or sample index of each value, ascending, shape ``(n,)``.
        half_life: Half-life in the unit of ``age``.
        eligible: Which samples may set the peak (default all).

    Returns:
        The peak, shape ``(n,)``.
    """
    n = values.shape[0]
    ok = np.isfinite(values) & (values >= 0)
    if eligible is not None:
        ok &= eligible
    rate = math.log(2.0) / half_life
    with np.errstate(divide="ignore", invalid="ignore"):
        key = np.where(ok, np.log(np.where(ok, values, 1.0)) + rate * age, -np.inf)
    key = np.where(ok & (values == 0), -np.inf, key)
    runmax = np.maximum.accumulate(key) if n else key
    prev = np.concatenate(([-np.inf], runmax[:-1])) if n else key
    new = ok & (key >= prev)
    anchor = np.maximum.accumulate(np.where(new, np.arange(n), -1)) if n else np.zeros(0, int)
    a = np.maximum(anchor, 0)
    peak = values[a] * np.exp2(-(age - age[a]) / half_life)
    return np.where(anchor >= 0, peak, 0.0)


def run_lengths(cond: BoolArray) -> IntArray:
    """Number of consecutive true values ending at each sample (0 where false)."""
    n = cond.shape[0]
    idx = np.arange(n, dtype=np.int64)
    last_false = np.maximum.accumulate(np.where(~cond, idx, -1)) if n else idx
    return np.where(cond, idx - last_false, 0)


def held_seconds(t_s: FloatArray, cond: BoolArray) -> FloatArray:
    """Seconds a condition has held: ``held_i = held_{i−1} + Δt_i`` if ``cond_i`` else 0.

    Evaluated as ``t_i − t_r`` where ``r`` is the last sample before the run where the condition
    failed (the first sample if it never failed); Δt of the first sample is 0.
    """
    n = cond.shape[0]
    idx = np.arange(n, dtype=np.int64)
    last_false = np.maximum.accumulate(np.where(~cond, idx, -1)) if n else idx
    ref = t_s[np.maximum(last_false, 0)] if n else t_s
    return np.where(cond, t_s - ref, 0.0)


def detect_default(
    *,
    t_s: FloatArray,
    util_pct: FloatArray,
    alpha: FloatArray,
    temp_c: FloatArray,
    limit_c: FloatArray,
    slope_c_per_s: FloatArray,
    tau_s: FloatArray,
    rle_smoothed: FloatArray,
    params: CollapseParams,
) -> tuple[FloatArray, BoolArray]:
    """Collapse detector of the ``default`` profile (§4.4), batch form.

    Args:
        t_s: Seconds since the first sample, ascending, shape ``(n,)``.
        util_pct: Utilisation, percent.
        alpha: Load α (NaN where unknown: no collapse).
        temp_c: Temperature, °C (NaN: detector disabled at that sample).
        limit_c: Thermal limit, °C.
        slope_c_per_s: OLS temperature slope, °C/s (NaN if undefined).
        tau_s: Logged τ, s (NaN without temperature).
        rle_smoothed: Smoothed RLE.
        params: Detector parameters (``gate`` and ``evidence`` required).

    Returns:
        ``(rolling_peak, collapse)``, shape ``(n,)`` each.
    """
    gate, ev = params.gate, params.evidence
    if gate is None or ev is None:
        raise MetricInputError("the default collapse detector needs gate and evidence parameters")
    peak = decaying_peak(rle_smoothed, t_s, params.peak_half_life_s)
    known = np.isfinite(temp_c) & np.isfinite(limit_c) & np.isfinite(alpha)
    with np.errstate(invalid="ignore"):
        under = (util_pct > gate.util_pct) | (alpha > gate.a_load)
        heat = slope_c_per_s > gate.heat_rate_c_per_s
        drop = rle_smoothed < params.drop_frac * peak
        evidence = (tau_s < ev.tau_s) | (temp_c > limit_c - ev.temp_margin_c) | (alpha > ev.a_load)
    cond = known & under & heat & drop
    held = held_seconds(t_s, cond)
    warm = t_s > params.warmup_s
    collapse = warm & cond & (held >= params.hysteresis_s) & evidence
    return peak, collapse


def detect_legacy_v03(
    *,
    t_s: FloatArray,
    util_pct: FloatArray,
    alpha: FloatArray,
    temp_c: FloatArray,
    limit_c: FloatArray,
    temp_rise_c: FloatArray,
    have_two_temps: BoolArray,
    tau_s: FloatArray,
    rle_smoothed: FloatArray,
    params: CollapseParams,
) -> tuple[FloatArray, BoolArray]:
    """Collapse detector of the v0.3 monitor (§4.1), batch form.

    Args:
        t_s: Seconds since the first sample (process start).
        util_pct: Utilisation, percent.
        alpha: Load α, unfloored.
        temp_c: Current temperature, °C (NaN = not known).
        limit_c: Thermal limit, °C.
        temp_rise_c: ``T[-1] − T[-2]`` of the temperature history (0 for the synthetic history).
        have_two_temps: Whether the history holds two temperatures (true for the synthetic one).
        tau_s: τ, s.
        rle_smoothed: Smoothed RLE.
        params: Detector parameters; windows in samples.

    Returns:
        ``(rolling_peak, collapse)``; the peak is 0 during warm-up.
    """
    gate, ev = params.gate, params.evidence
    if gate is None or ev is None:
        raise MetricInputError("the v0.3 collapse detector needs gate and evidence parameters")
    n = t_s.shape[0]
    warm = t_s > params.warmup_s
    peak = decaying_peak(
        rle_smoothed, np.arange(n, dtype=np.float64), params.peak_half_life_s, eligible=warm
    )
    peak = np.where(warm, peak, 0.0)
    with np.errstate(invalid="ignore"):
        under = (util_pct > gate.util_pct) | (alpha > gate.a_load)
        heat = have_two_temps & (temp_rise_c > gate.heat_rate_c_per_s)
        drop = rle_smoothed < params.drop_frac * peak
        evidence = (
            (tau_s < ev.tau_s)
            | (np.isfinite(temp_c) & (temp_c > limit_c - ev.temp_margin_c))
            | (alpha > ev.a_load)
        )
    cond = warm & under & heat & drop
    ctr = run_lengths(cond)
    collapse = cond & (ctr >= params.hysteresis_s) & evidence
    return peak, collapse


# --------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------


def _one_device(frame: pd.DataFrame, what: str) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise MetricInputError(f"{what} expects a DataFrame, got {type(frame).__name__}")
    for col in ("timestamp", "collapse"):
        if col not in frame.columns:
            raise MetricInputError(
                f"{what} needs a {col!r} column (the output of rle.metric.compute)"
            )


def _sample_weights(t_rel: FloatArray) -> FloatArray:
    """Seconds each sample stands for: the interval to the next sample (last: the median one)."""
    n = t_rel.shape[0]
    if n == 0:
        return t_rel
    dt = np.diff(t_rel)
    tail = float(np.median(dt)) if dt.size else 0.0
    return np.concatenate((dt, [tail]))


def _events_one(frame: pd.DataFrame) -> pd.DataFrame:
    t_rel = read_times(frame["timestamp"])
    flag = pd.to_numeric(frame["collapse"], errors="coerce").fillna(0).to_numpy() != 0
    w = _sample_weights(t_rel)
    n = flag.shape[0]
    padded = np.concatenate(([False], flag, [False]))
    starts = np.flatnonzero(~padded[:-1] & padded[1:])
    ends = np.flatnonzero(padded[:-1] & ~padded[1:])  # exclusive
    ts = frame["timestamp"].reset_index(drop=True)
    sm = (
        pd.to_numeric(frame["rle_smoothed"], errors="coerce").to_numpy(dtype=np.float64)
        if "rle_smoothed" in frame.columns
        else np.full(n, np.nan)
    )
    rows: list[dict[str, Any]] = []
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        seg = sm[s:e]
        finite = seg[np.isfinite(seg)]
        rows.append(
            {
                "start": ts.iloc[s],
                "end": ts.iloc[e] if e < n else ts.iloc[n - 1],
                "duration_s": float(w[s:e].sum()),
                "n_samples": int(e - s),
                "first_index": frame.index[s],
                "last_index": frame.index[e - 1],
                "min_rle_smoothed": float(finite.min()) if finite.size else math.nan,
            }
        )
    return pd.DataFrame(rows, columns=list(EVENT_COLUMNS))


def collapse_events(frame: pd.DataFrame) -> pd.DataFrame:
    """Collapse events (rising edges of ``collapse``) of one device's computed frame (§4.5).

    Each sample stands for the interval until the next sample (the last one for the median
    interval), so an event lasts from its first flagged sample to the first unflagged sample
    after it.

    Args:
        frame: Output of :func:`rle.metric.compute` (``timestamp``, ``collapse``, optionally
            ``rle_smoothed``). If it has a ``device`` column, events are found per device and the
            result gets a ``device`` column (devices are never pooled).

    Returns:
        One row per event with columns ``start`` and ``end`` (timestamps as in the input; ``end``
        is the first sample after the event, or the last sample if the stream ends flagged),
        ``duration_s`` (s), ``n_samples``, ``first_index``/``last_index`` (index labels of the
        first and last flagged rows) and ``min_rle_smoothed``.

    Raises:
        MetricInputError: Missing columns or invalid timestamps.
    """
    _one_device(frame, "collapse_events")
    if "device" in frame.columns and frame["device"].nunique(dropna=False) > 1:
        parts = []
        for device, sub in frame.groupby("device", sort=True, dropna=False):
            ev = _events_one(sub)
            ev.insert(0, "device", device)
            parts.append(ev)
        return pd.concat(parts, ignore_index=True)
    return _events_one(frame)


def collapse_summary(frame: pd.DataFrame) -> dict[str, float]:
    """Run-level collapse summary of one device (§4.5, D4).

    Args:
        frame: Output of :func:`rle.metric.compute` for **one** device.

    Returns:
        ``{"collapse_events": count of rising edges, "collapse_seconds": total event duration
        in s, "collapse_fraction": collapse_seconds / covered seconds}``, where the covered
        time is the sum of the per-sample intervals (:func:`collapse_events`). For a single
        sample the fraction is the flagged sample fraction; for an empty frame all are 0.

    Raises:
        MetricInputError: Missing columns, or several devices in one frame.
    """
    _one_device(frame, "collapse_summary")
    if "device" in frame.columns and frame["device"].nunique(dropna=False) > 1:
        raise MetricInputError(
            "collapse_summary is per device: the frame holds devices "
            f"{sorted(map(str, frame['device'].unique()))}; call it once per device"
        )
    events = _events_one(frame)
    n = len(frame)
    if n == 0:
        return {"collapse_events": 0, "collapse_seconds": 0.0, "collapse_fraction": 0.0}
    covered = float(_sample_weights(read_times(frame["timestamp"])).sum())
    seconds = float(events["duration_s"].sum()) if len(events) else 0.0
    if covered > 0:
        fraction = seconds / covered
    else:
        flagged = pd.to_numeric(frame["collapse"], errors="coerce").fillna(0).to_numpy() != 0
        fraction = float(flagged.mean())
    return {
        "collapse_events": len(events),
        "collapse_seconds": seconds,
        "collapse_fraction": fraction,
    }
