"""Put training steps and hardware telemetry on one time axis (``docs/rle-metric.md`` §8.1).

Every optimizer step has a time: the wall-clock timestamp MLflow stored with its metrics (UTC epoch
seconds). Telemetry samples carry their own UTC epoch seconds (``wall_time_s``). This module:

* derives the step times and the **training interval** (first to last optimizer step; idle head and
  tail reported separately, never analysed) — :func:`step_times`, :func:`training_interval`;
* splits a run's sample table into **one frame per device** with device-neutral column names
  (never pooling CPU and GPU rows) — :func:`device_frames`, :func:`device_frames_from_steps`;
* maps a device's samples onto the step times, by linear interpolation or by the mean over each
  step's interval — :func:`align_to_steps` — and counts the distinct telemetry samples behind
  the aligned values (:func:`distinct_samples`; the honest N of a correlation, §9 C1);
* puts both series of a detrended correlation on one regular grid in seconds (:func:`time_grid`,
  anchored at the start of the training interval): the training series by bin means of its steps
  (:func:`resample`), the telemetry by the time average of its piecewise-linear interpolant over
  each bin (:func:`interval_mean`), so no bin is ever empty or doubled because samples sit near a
  bin edge, and a shift of the telemetry clock by a fraction of its period changes the grid values
  continuously instead of moving whole samples between bins (issue 13); :func:`interval_mean` also
  says which samples stand behind each grid value, for the distinct-sample N.

Pure pandas/NumPy; no MLflow.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from rle.tracking import keys

__all__ = [
    "ALIGN_METHODS",
    "STANDARD_COLUMNS",
    "AlignMethod",
    "TrainingInterval",
    "align_to_steps",
    "device_frames",
    "device_frames_from_steps",
    "distinct_samples",
    "idle_summary",
    "interval_mean",
    "resample",
    "step_series",
    "step_times",
    "time_grid",
    "training_interval",
    "within",
    "GridSamples",
    "distinct_grid_samples",
]

FloatArray = npt.NDArray[np.float64]
AlignMethod = Literal["interpolate", "window_mean"]
ALIGN_METHODS: tuple[str, ...] = ("interpolate", "window_mean")

STANDARD_COLUMNS: tuple[str, ...] = (
    "util_pct",
    "power_w",
    "temp_c",
    "sm_clock_megahertz",
    "throttle_reasons",
    "energy_counter_joules",
    "energy_delta_joules",
    "rle_smoothed",
    "rle_raw",
    "collapse",
)
"""Device-neutral columns of a device frame: utilisation %, power W, temperature °C, SM clock MHz,
NVML throttle-reason bitmask, cumulative energy counter J (samples) or per-window energy J (step
metrics), RLE (1), collapse flag (0/1). Absent quantities are absent columns, never zeros."""

_RAW_SUFFIXES = {
    "sm_clock_megahertz": "sm_clock_megahertz",
    "throttle_reasons": "throttle_reasons",
    "energy_counter_joules": "energy_joules",
}


@dataclass(frozen=True)
class TrainingInterval:
    """The span of a run in which optimizer steps happened.

    Attributes:
        start_s: Start, UTC epoch s: the first logged step's time minus one median logging
            interval (the first step's own duration).
        end_s: Time of the last logged step, UTC epoch s.
        first_step: First logged optimizer step.
        last_step: Last logged optimizer step.
        n_steps: Number of logged steps.
        step_interval_s: Median time between logged steps, s.
    """

    start_s: float
    end_s: float
    first_step: int
    last_step: int
    n_steps: int
    step_interval_s: float

    @property
    def duration_s(self) -> float:
        """Length of the interval, s."""
        return self.end_s - self.start_s


def step_times(history: pd.DataFrame) -> pd.DataFrame:
    """One time per optimizer step from metric timestamps.

    Args:
        history: Long metric history of **one run** with columns ``step`` and ``timestamp_s``
            (UTC epoch s), e.g. the ``train/*`` rows from the reader.

    Returns:
        Frame with columns ``step`` (int) and ``time_s`` (UTC epoch s), one row per step,
        sorted by step: the earliest timestamp logged at the step (all ``train/*`` keys of a
        step are logged in one batch). Steps whose time is not after the previous step's are
        dropped (a restarted run). Empty input gives an empty frame.
    """
    if history.empty:
        return pd.DataFrame(
            {"step": pd.Series(dtype="int64"), "time_s": pd.Series(dtype="float64")}
        )
    per_step = history.groupby("step", sort=True)["timestamp_s"].min()
    times = per_step.to_numpy(dtype=np.float64)
    keep = np.ones(times.shape[0], dtype=bool)
    last = -math.inf
    for i, t in enumerate(times):
        if t > last:
            last = t
        else:
            keep[i] = False
    return pd.DataFrame(
        {"step": per_step.index.to_numpy(dtype=np.int64)[keep], "time_s": times[keep]}
    )


def step_series(history: pd.DataFrame, metric_keys: Sequence[str]) -> pd.DataFrame:
    """Wide per-step values of some metrics of one run, with the step times.

    Args:
        history: Long metric history of one run (``key``, ``step``, ``timestamp_s``, ``value``).
        metric_keys: Keys to keep as columns (absent keys become all-NaN columns).

    Returns:
        Frame indexed by step (sorted) with ``time_s`` and one column per key; a step logged
        more than once keeps its last value.
    """
    times = step_times(history).set_index("step")["time_s"]
    sub = history[history["key"].isin(list(metric_keys))]
    wide = (
        sub.sort_values(["step", "timestamp_s"], kind="stable")
        .groupby(["step", "key"], sort=True)["value"]
        .last()
        .unstack("key")
    )
    out = pd.DataFrame({"time_s": times})
    out.index.name = "step"
    for key in metric_keys:
        out[key] = wide[key].reindex(out.index) if key in wide.columns else np.nan
    return out


def training_interval(steps: pd.DataFrame) -> TrainingInterval | None:
    """The training interval of a run from its step times.

    Args:
        steps: Output of :func:`step_times`.

    Returns:
        The interval, or ``None`` when the run logged no step.
    """
    if steps.empty:
        return None
    t = steps["time_s"].to_numpy(dtype=np.float64)
    dt = np.diff(t)
    interval = float(np.median(dt)) if dt.size else 0.0
    return TrainingInterval(
        start_s=float(t[0] - interval),
        end_s=float(t[-1]),
        first_step=int(steps["step"].iloc[0]),
        last_step=int(steps["step"].iloc[-1]),
        n_steps=len(steps),
        step_interval_s=interval,
    )


def within(
    frame: pd.DataFrame, interval: TrainingInterval, time_col: str = "time_s"
) -> pd.DataFrame:
    """Rows of ``frame`` whose ``time_col`` lies in the training interval (inclusive).

    Args:
        frame: Any frame with a time column (UTC epoch s).
        interval: The training interval.
        time_col: Name of the time column.

    Returns:
        The rows inside ``[start_s, end_s]``.
    """
    t = frame[time_col]
    return frame[(t >= interval.start_s) & (t <= interval.end_s)]


def idle_summary(times_s: FloatArray, interval: TrainingInterval | None) -> dict[str, float]:
    """How much telemetry lies before and after the training interval.

    Args:
        times_s: Sample times of one device, UTC epoch s, shape ``(n,)``.
        interval: The training interval (``None``: everything is idle).

    Returns:
        ``head_samples``, ``head_s`` (seconds from the first sample to the interval start),
        ``tail_samples``, ``tail_s`` (last sample minus interval end) and ``training_samples``.
    """
    t = np.asarray(times_s, dtype=np.float64)
    if interval is None or t.size == 0:
        return {
            "head_samples": float(t.size),
            "head_s": float(t.max() - t.min()) if t.size else 0.0,
            "tail_samples": 0.0,
            "tail_s": 0.0,
            "training_samples": 0.0,
        }
    head = t < interval.start_s
    tail = t > interval.end_s
    return {
        "head_samples": float(head.sum()),
        "head_s": float(max(0.0, interval.start_s - t.min())) if head.any() else 0.0,
        "tail_samples": float(tail.sum()),
        "tail_s": float(max(0.0, t.max() - interval.end_s)) if tail.any() else 0.0,
        "training_samples": float((~head & ~tail).sum()),
    }


def _device_columns(frame: pd.DataFrame, device: str) -> pd.DataFrame:
    """Device-neutral view of one device's rows of a samples table."""
    out = pd.DataFrame(index=frame.index)
    out["time_s"] = pd.to_numeric(frame["wall_time_s"], errors="coerce").astype(np.float64)
    if "global_step" in frame:
        out["global_step"] = pd.to_numeric(frame["global_step"], errors="coerce")
    for col in ("util_pct", "power_w", "temp_c", "rle_smoothed", "rle_raw", "collapse"):
        if col in frame and frame[col].notna().any():
            out[col] = pd.to_numeric(frame[col], errors="coerce").astype(np.float64)
    local = keys.split_node(device)[1]  # samples carry their own (unprefixed) column names
    prefix = f"{local}_" if local.startswith("gpu_") else "cpu_package_"
    for std, suffix in _RAW_SUFFIXES.items():
        col = prefix + suffix
        if col in frame and frame[col].notna().any():
            out[std] = pd.to_numeric(frame[col], errors="coerce").astype(np.float64)
    if local == "cpu" and "util_pct" not in out and "cpu_utilization_percentage" in frame:
        out["util_pct"] = pd.to_numeric(frame["cpu_utilization_percentage"], errors="coerce")
    # As the live logger does: without RLE no RLE term means anything, and without temperature
    # (no finite t_sustain) the collapse detector is disabled, so a 0 flag is not a measurement.
    has_rle = "rle_raw" in out or "rle_smoothed" in out
    has_tau = (
        "t_sustain_s" in frame
        and pd.to_numeric(frame["t_sustain_s"], errors="coerce").notna().any()
    )
    if "collapse" in out and not (has_rle and has_tau):
        out = out.drop(columns="collapse")
    return out


def device_frames(samples: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Split a run's sample table into one frame per device (never pooled).

    Rows of ``rank_<r>`` pseudo-devices (process readings only) are left out. Within a device,
    rows are sorted by time and duplicate timestamps keep the last row.

    Args:
        samples: the raw samples (``telemetry/samples/``) of one run (``wall_time_s``, ``device``, the RLE
            inputs/outputs and raw readings with device prefixes).

    Returns:
        ``{device: frame}`` with ``time_s`` (UTC epoch s), ``global_step`` and the
        :data:`STANDARD_COLUMNS` the device has. Empty if the table has no usable rows.
    """
    if samples is None or samples.empty or "device" not in samples or "wall_time_s" not in samples:
        return {}
    out: dict[str, pd.DataFrame] = {}
    for device, rows in samples.groupby("device", sort=True):
        name = str(device)
        if name.startswith("rank_"):
            continue
        frame = _device_columns(rows, name)
        frame = frame[np.isfinite(frame["time_s"])].sort_values("time_s", kind="stable")
        frame = frame.drop_duplicates("time_s", keep="last").reset_index(drop=True)
        if len(frame):
            out[name] = frame
    return out


def device_frames_from_steps(
    wide: pd.DataFrame, columns_by_device: Mapping[str, Mapping[str, str]]
) -> dict[str, pd.DataFrame]:
    """Device frames built from step-level telemetry metrics (runs without a samples artifact).

    Each logged step stands for one "sample" holding the window mean of its interval, so
    quantiles describe window means rather than 1 Hz readings.

    Args:
        wide: Per-step frame from :func:`step_series` (index step, ``time_s``, metric keys).
        columns_by_device: ``{device: {standard column: metric key}}`` (see
            :func:`rle.tracking.keys.device_quantity_keys`); ``energy_joules`` is a window delta.

    Returns:
        ``{device: frame}`` like :func:`device_frames` (``energy_delta_joules`` instead of the
        counter); devices without any finite value are left out.
    """
    out: dict[str, pd.DataFrame] = {}
    for device, mapping in columns_by_device.items():
        frame = pd.DataFrame({"time_s": wide["time_s"].to_numpy(dtype=np.float64)})
        frame["global_step"] = wide.index.to_numpy()
        found = False
        for col, key in mapping.items():
            if key not in wide or not wide[key].notna().any():
                continue
            name = "energy_delta_joules" if col == "energy_joules" else col
            frame[name] = wide[key].to_numpy(dtype=np.float64)
            found = True
        if found:
            out[device] = frame
    return out


def align_to_steps(
    device: pd.DataFrame,
    steps: pd.DataFrame,
    columns: Sequence[str],
    method: AlignMethod = "interpolate",
    interval_s: float | None = None,
) -> pd.DataFrame:
    """Map one device's telemetry onto the optimizer steps' times.

    Args:
        device: One device's frame (``time_s`` sorted, plus ``columns``).
        steps: Step times (``step``, ``time_s``), e.g. from :func:`step_times`.
        columns: Device columns to align (absent ones give NaN).
        method: ``"interpolate"``: linear interpolation at each step time between the two
            bracketing samples (NaN outside the sampled span). ``"window_mean"``: mean of the
            samples in the step's interval ``(previous step time, step time]``; the first step's
            interval starts ``interval_s`` earlier (default: the median step interval); a step
            without a sample gets NaN.
        interval_s: Duration assumed for the first step, s.

    Returns:
        Frame indexed like ``steps`` with ``step``, ``time_s``, the aligned columns and
        ``sample_lo``/``sample_hi``: positions (in ``device``) of the first and last sample
        behind each step's values (-1 where none), for :func:`distinct_samples`.

    Raises:
        ValueError: On an unknown ``method``.
    """
    if method not in ALIGN_METHODS:
        raise ValueError(f"align method must be one of {ALIGN_METHODS}, got {method!r}")
    t_steps = steps["time_s"].to_numpy(dtype=np.float64)
    t_dev = device["time_s"].to_numpy(dtype=np.float64) if len(device) else np.zeros(0)
    out = pd.DataFrame({"step": steps["step"].to_numpy(), "time_s": t_steps})
    n = t_steps.shape[0]
    lo = np.full(n, -1, dtype=np.int64)
    hi = np.full(n, -1, dtype=np.int64)
    if method == "interpolate":
        if t_dev.size:
            inside = (t_steps >= t_dev[0]) & (t_steps <= t_dev[-1])
            # last sample at or before the step, first sample at or after it
            lo = np.where(inside, np.searchsorted(t_dev, t_steps, side="right") - 1, -1)
            hi = np.where(inside, np.searchsorted(t_dev, t_steps, side="left"), -1)
        for col in columns:
            if col not in device or t_dev.size == 0:
                out[col] = np.nan
                continue
            v = device[col].to_numpy(dtype=np.float64)
            ok = np.isfinite(v)
            if ok.sum() == 0:
                out[col] = np.nan
                continue
            tv, vv = t_dev[ok], v[ok]
            vals = np.interp(t_steps, tv, vv)
            vals[(t_steps < tv[0]) | (t_steps > tv[-1])] = np.nan
            out[col] = vals
    else:
        if interval_s is None:
            d = np.diff(t_steps)
            interval_s = float(np.median(d)) if d.size else 0.0
        starts = np.concatenate(([t_steps[0] - interval_s] if n else [], t_steps[:-1]))
        # sample i belongs to step j when starts[j] < t_i <= t_steps[j]
        first = np.searchsorted(t_dev, starts, side="right")
        last = np.searchsorted(t_dev, t_steps, side="right") - 1
        has = last >= first
        lo = np.where(has, first, -1)
        hi = np.where(has, last, -1)
        owner = np.full(t_dev.size, -1, dtype=np.int64)
        for j in np.flatnonzero(has):
            owner[first[j] : last[j] + 1] = j
        for col in columns:
            if col not in device or t_dev.size == 0:
                out[col] = np.nan
                continue
            v = device[col].to_numpy(dtype=np.float64)
            ok = (owner >= 0) & np.isfinite(v)
            sums = np.bincount(owner[ok], weights=v[ok], minlength=n)[:n]
            counts = np.bincount(owner[ok], minlength=n)[:n]
            with np.errstate(invalid="ignore", divide="ignore"):
                out[col] = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    out["sample_lo"] = lo
    out["sample_hi"] = hi
    return out


def distinct_samples(aligned: pd.DataFrame, mask: npt.ArrayLike | None = None) -> int:
    """Number of distinct telemetry samples behind some aligned steps.

    Args:
        aligned: Output of :func:`align_to_steps`.
        mask: Boolean selection of steps (e.g. where both series are finite); default all.

    Returns:
        The size of the union of the sample ranges ``[sample_lo, sample_hi]`` of the selected
        steps: with ~2.4 steps per 1 Hz sample this is the sample count, not the step count.
    """
    lo = aligned["sample_lo"].to_numpy()
    hi = aligned["sample_hi"].to_numpy()
    sel = np.ones(lo.shape[0], dtype=bool) if mask is None else np.array(mask, dtype=bool)
    sel &= lo >= 0
    if not sel.any():
        return 0
    ids = np.concatenate([np.arange(a, b + 1) for a, b in zip(lo[sel], hi[sel], strict=True)])
    return int(np.unique(ids).size)


def time_grid(start_s: float, end_s: float, hz: float) -> FloatArray:
    """A regular time grid over ``[start_s, end_s]``.

    Args:
        start_s: First grid time, s.
        end_s: Last time (included when it falls on the grid), s.
        hz: Grid rate, Hz (> 0).

    Returns:
        ``start_s + k / hz`` for ``k = 0..floor((end_s - start_s) * hz)``, shape ``(m,)``.

    Raises:
        ValueError: If ``hz`` is not positive.
    """
    if not hz > 0:
        raise ValueError(f"grid rate must be positive, got {hz}")
    if not end_s >= start_s:
        return np.zeros(0, dtype=np.float64)
    m = int(math.floor((end_s - start_s) * hz + 1e-9)) + 1
    return np.asarray(start_s + np.arange(m, dtype=np.float64) / hz, dtype=np.float64)


def resample(
    times_s: npt.ArrayLike, values: npt.ArrayLike, grid_s: FloatArray, max_gap_bins: int = 2
) -> FloatArray:
    """Resample an irregular series onto a regular grid.

    Each grid point ``g`` gets the mean of the points in ``[g - d/2, g + d/2)`` (``d`` the grid
    spacing); grid points without a point are linearly interpolated from their nearest filled
    neighbours when the gap spans at most ``max_gap_bins`` bins, else NaN. Grid points outside
    the series' time span stay NaN. So a faster series is averaged down and a slower one is
    interpolated up, without inventing values across long gaps.

    Args:
        times_s: Point times, s, shape ``(n,)``.
        values: Point values, shape ``(n,)``; NaN points are ignored.
        grid_s: Regular grid, s, shape ``(m,)`` (at least 2 points for a spacing).
        max_gap_bins: Longest run of empty bins that is interpolated.

    Returns:
        Resampled values, shape ``(m,)``.
    """
    t = np.asarray(times_s, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    m = grid_s.shape[0]
    out = np.full(m, np.nan)
    ok = np.isfinite(t) & np.isfinite(v)
    t, v = t[ok], v[ok]
    if m == 0 or t.size == 0:
        return out
    d = float(grid_s[1] - grid_s[0]) if m > 1 else 1.0
    idx = np.floor((t - grid_s[0]) / d + 0.5).astype(np.int64)
    inside = (idx >= 0) & (idx < m)
    sums = np.bincount(idx[inside], weights=v[inside], minlength=m)
    counts = np.bincount(idx[inside], minlength=m)
    filled = counts > 0
    out[filled] = sums[filled] / counts[filled]
    if filled.sum() >= 2 and max_gap_bins > 0:
        pos = np.flatnonzero(filled)
        empty = np.flatnonzero(~filled)
        empty = empty[(empty > pos[0]) & (empty < pos[-1])]
        if empty.size:
            nxt = pos[np.searchsorted(pos, empty)]
            prv = pos[np.searchsorted(pos, empty) - 1]
            short = (nxt - prv - 1) <= max_gap_bins
            e = empty[short]
            out[e] = np.interp(grid_s[e], grid_s[pos], out[pos])
    return out


@dataclass(frozen=True)
class GridSamples:
    """A telemetry series on a regular grid, with the samples behind each grid value.

    Attributes:
        values: Grid values, shape ``(m,)`` (NaN where undefined).
        lo: Position (in the input, after dropping non-finite points) of the first sample whose
            interpolant segment touches the bin, shape ``(m,)``; -1 where the value is NaN.
        hi: Position of the last such sample, shape ``(m,)``; -1 where the value is NaN.
        n_samples: Finite input samples.
        median_period_s: Median time between those samples, s (NaN with fewer than 2).
    """

    values: FloatArray
    lo: npt.NDArray[np.int64]
    hi: npt.NDArray[np.int64]
    n_samples: int
    median_period_s: float


def interval_mean(
    times_s: npt.ArrayLike,
    values: npt.ArrayLike,
    grid_s: FloatArray,
    max_gap_s: float | None = None,
    min_coverage: float = 0.5,
) -> GridSamples:
    """Time average of a sampled series over each grid bin, from its linear interpolant.

    The series is read as the piecewise-linear curve through its samples; grid point ``g`` gets the
    mean of that curve over ``[g - d/2, g + d/2]`` (``d`` the grid spacing), computed exactly
    from its running integral. Unlike a mean of the samples falling in each bin (:func:`resample`),
    the value does not jump when a sample crosses a bin edge: with samples at the grid rate, a
    bin centred on a sample gets ``0.75·y_i + 0.125·(y_{i-1} + y_{i+1})`` and a bin between two
    samples ``(y_i + y_{i+1}) / 2``, and everything in between varies continuously with the
    phase, so jittered 1 Hz samples near the edges of 1 Hz bins leave no empty or doubled bins.

    Bins covered by the curve for less than ``min_coverage`` of their width (the ends of the
    series) and bins touching a gap between consecutive samples longer than ``max_gap_s`` are NaN.

    Args:
        times_s: Sample times, s, shape ``(n,)``, sorted (non-finite points are dropped).
        values: Sample values, shape ``(n,)``.
        grid_s: Regular grid, s, shape ``(m,)`` (one point: spacing 1 s).
        max_gap_s: Longest interval between two samples that is interpolated across, s; default
            ``3 × max(d, median sample period)`` (the old resampler's "up to 2 empty bins").
        min_coverage: Fewest fraction of a bin the curve must cover (0..1].

    Returns:
        The :class:`GridSamples`.
    """
    t = np.asarray(times_s, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(t) & np.isfinite(v)
    t, v = t[ok], v[ok]
    m = grid_s.shape[0]
    nan = np.full(m, np.nan)
    none = np.full(m, -1, dtype=np.int64)
    period = float(np.median(np.diff(t))) if t.size >= 2 else math.nan
    if m == 0 or t.size < 2:
        return GridSamples(nan, none, none.copy(), int(t.size), period)
    d = float(grid_s[1] - grid_s[0]) if m > 1 else 1.0
    gap = float(max_gap_s) if max_gap_s is not None else 3.0 * max(d, period)
    seg = np.diff(t)
    cum = np.concatenate(([0.0], np.cumsum(0.5 * (v[1:] + v[:-1]) * seg)))

    # running integral of the interpolant at arbitrary times inside [t0, t_last]
    def integral(x: FloatArray) -> FloatArray:
        k = np.clip(np.searchsorted(t, x, side="right") - 1, 0, t.size - 2)
        dx = x - t[k]
        with np.errstate(invalid="ignore", divide="ignore"):
            slope = np.where(seg[k] > 0, (v[k + 1] - v[k]) / seg[k], 0.0)
        return np.asarray(cum[k] + v[k] * dx + 0.5 * slope * dx * dx, dtype=np.float64)

    lo_t = np.clip(grid_s - d / 2, t[0], t[-1])
    hi_t = np.clip(grid_s + d / 2, t[0], t[-1])
    covered = hi_t - lo_t
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(covered > 0, (integral(hi_t) - integral(lo_t)) / covered, np.nan)
    # samples whose segments touch the bin: the last one at or before its start .. the first one
    # at or after its end
    lo = np.searchsorted(t, lo_t, side="right") - 1
    hi = np.searchsorted(t, hi_t, side="left")
    lo = np.clip(lo, 0, t.size - 1)
    hi = np.clip(hi, 0, t.size - 1)
    big = np.concatenate(([0], np.cumsum(seg > gap)))  # gaps crossed up to each sample
    bad = (covered < min_coverage * d) | (big[hi] - big[lo] > 0)
    out[bad] = np.nan
    lo = np.where(bad, -1, lo)
    hi = np.where(bad, -1, hi)
    return GridSamples(np.asarray(out, dtype=np.float64), lo, hi, int(t.size), period)


def distinct_grid_samples(
    lo: npt.ArrayLike, hi: npt.ArrayLike, used: npt.ArrayLike | None = None
) -> int:
    """Number of distinct samples behind some grid values of :func:`interval_mean`.

    Args:
        lo: :attr:`GridSamples.lo`, shape ``(m,)``.
        hi: :attr:`GridSamples.hi`, shape ``(m,)``.
        used: Boolean mask of the grid values a statistic used, shape ``(m,)``; default all.

    Returns:
        The size of the union of ``[lo, hi]`` over the used grid values that have samples.
    """
    a = np.asarray(lo, dtype=np.int64)
    b = np.asarray(hi, dtype=np.int64)
    sel = np.ones(a.shape[0], dtype=bool) if used is None else np.array(used, dtype=bool)
    sel &= a >= 0
    if not sel.any():
        return 0
    a, b = a[sel], b[sel]
    # union of integer ranges: sort by start, sweep
    order = np.argsort(a, kind="stable")
    total, cur_lo, cur_hi = 0, int(a[order[0]]), int(b[order[0]])
    for i in order[1:]:
        s, e = int(a[i]), int(b[i])
        if s > cur_hi + 1:
            total += cur_hi - cur_lo + 1
            cur_lo, cur_hi = s, e
        else:
            cur_hi = max(cur_hi, e)
    return total + cur_hi - cur_lo + 1
