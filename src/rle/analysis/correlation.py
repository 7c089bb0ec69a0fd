"""Correlations between training dynamics and hardware telemetry, done honestly (§8.1, §9 C1–C7).

The ``default`` method (``correlation.method=default``), per run and **per device** (never pooled):

* **raw, step-aligned** (``pearson``, ``spearman``): telemetry mapped onto the optimizer steps'
  times (:func:`rle.analysis.align.align_to_steps`); ``n`` is the number of *distinct telemetry
  samples* behind the aligned values, not the number of steps, and the parametric p-value uses
  that ``n`` (t distribution, ``n - 2`` degrees of freedom). It still ignores autocorrelation and
  shared trends, which the note says;
* **detrended** (``pearson_diff``/``spearman_diff`` for first differences, ``*_detrended`` for
  residuals of a straight line in time): both series put on a ``resample_hz`` (1 Hz) grid over the
  training interval, anchored at its start: the training series by the mean of the steps in each
  bin, the telemetry by the time average of its linear interpolant over each bin
  (:func:`rle.analysis.align.interval_mean`; no empty or doubled bins when samples sit on bin
  edges, and a sub-period shift of the telemetry clock moves the values continuously); then
  detrended and correlated at lag 0; ``n`` = distinct telemetry samples behind the pairs used;
  p-value from a seeded **block permutation** test (blocks of ``block_s`` seconds of the
  hardware series shuffled, so short-range autocorrelation survives in the null);
* **lagged** (``xcorr_diff``/``xcorr_detrended``, one row per lag, plus a ``*_peak`` row): the
  same detrended 1 Hz series, lags in **seconds** up to ``max_lag_s``. Sign convention: the x
  series is always the training series and y the hardware series; a row with ``lag_s = L``
  correlates ``x(t)`` with ``y(t + L)``, so ``L > 0`` means **the hardware follows the training
  series by L seconds**. Per-lag p-values come from the block permutation null at that lag; the
  peak row's p-value from the null of the maximum ``|r|`` over all lags (corrected for looking
  at many lags);
* **spike–collapse coupling** (``spike_collapse``): grad_norm spikes (``> mean + k·std``,
  ``ddof = 1``; consecutive spike steps form one spike, timed at its maximum; the lab's own count,
  every step above the threshold, is kept beside it as ``n_spike_steps``) matched to collapse
  event starts within ``±window_s``; ``r`` holds the hit rate (matched spikes / spikes), the
  p-value is the binomial chance of at least that many hits when spikes fall at random times of
  the training interval (chance rate = the fraction of the interval within ``±window_s`` of an
  event).

An undefined statistic is a row with ``r``/``p_value`` NaN and a ``note`` starting ``N/A:`` that
says why (constant series, too few points, too few blocks, no collapse events).

Pure pandas/NumPy/SciPy; no MLflow.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import stats

from rle.analysis.align import (
    AlignMethod,
    TrainingInterval,
    align_to_steps,
    distinct_grid_samples,
    distinct_samples,
    interval_mean,
    resample,
    time_grid,
    within,
)

__all__ = [
    "ALIGNMENT_COLUMNS",
    "CORRELATION_COLUMNS",
    "CORRELATION_METHODS",
    "DEFAULT_PAIRS",
    "CorrelationSettings",
    "DeviceCorrelation",
    "GRID_METHOD",
    "LagResult",
    "Pair",
    "SpikeCollapse",
    "SpikeSettings",
    "block_permutation_test",
    "collapse_event_starts",
    "correlate_device",
    "detrend",
    "grad_norm_spikes",
    "identical_training_curves",
    "identical_training_groups",
    "lagged_correlation",
    "lagged_correlation_test",
    "na_reason",
    "parametric_correlation",
    "spike_collapse",
]

FloatArray = npt.NDArray[np.float64]
Detrend = Literal["difference", "linear"]

CORRELATION_COLUMNS: tuple[str, ...] = (
    "run_id",
    "device",
    "x",
    "y",
    "method",
    "lag_s",
    "r",
    "p_value",
    "n",
    "note",
)
"""Columns of ``correlations.csv``: one row per run, device, pair, method and lag."""

CORRELATION_METHODS: tuple[str, ...] = ("default",)
"""Values of ``correlation.method`` this module implements (legacy methods: ``rle.analysis.legacy``)."""


@dataclass(frozen=True)
class Pair:
    """A training series against a hardware series.

    Attributes:
        x: Training metric key (``train/grad_norm``); the series that leads at positive lags.
        y: Device-neutral hardware column (``rle_smoothed``, ``temp_c``, ``power_w``,
            ``util_pct``, ...; :data:`rle.analysis.align.STANDARD_COLUMNS`).
    """

    x: str
    y: str


DEFAULT_PAIRS: tuple[Pair, ...] = (
    Pair("train/grad_norm", "rle_smoothed"),
    Pair("train/loss", "rle_smoothed"),
    Pair("train/grad_norm", "temp_c"),
    Pair("train/grad_norm", "power_w"),
)
"""The lab's three pairs plus power vs grad_norm (issue 6)."""


@dataclass(frozen=True)
class CorrelationSettings:
    """Options of the ``default`` method (``evaluation.correlation`` in the config).

    Attributes:
        method: Only ``"default"`` here.
        align: ``"interpolate"`` or ``"window_mean"`` (raw step-aligned rows).
        detrend: ``"difference"`` (first differences) or ``"linear"`` (straight-line residuals).
        resample_hz: Rate of the common grid of the detrended and lagged rows, Hz.
        max_lag_s: Largest lag, s (lags are whole grid steps from ``-max_lag_s`` to ``+max_lag_s``).
        n_permutations: Block permutations per test.
        block_s: Block length of the permutation test, s.
        min_blocks: Fewest blocks for a permutation test (fewer: N/A).
        seed: Seed of the permutation generator.
        min_points: Fewest paired points for any correlation (fewer: N/A).
    """

    method: str = "default"
    align: AlignMethod = "interpolate"
    detrend: Detrend = "difference"
    resample_hz: float = 1.0
    max_lag_s: float = 10.0
    n_permutations: int = 999
    block_s: float = 10.0
    min_blocks: int = 5
    seed: int = 0
    min_points: int = 10

    @property
    def detrend_label(self) -> str:
        """Method-name suffix: ``diff`` or ``detrended``."""
        return "diff" if self.detrend == "difference" else "detrended"


@dataclass(frozen=True)
class SpikeSettings:
    """Options of spike–collapse matching (``evaluation.spikes``).

    Attributes:
        k: Spike threshold in standard deviations above the mean (``ddof = 1``).
        window_s: Matching window, ± s around each spike.
    """

    k: float = 1.0
    window_s: float = 5.0


# ---------------------------------------------------------------------------------- basics


def na_reason(x: npt.ArrayLike, y: npt.ArrayLike, min_points: int) -> str | None:
    """Why a correlation of ``x`` and ``y`` is undefined, or ``None`` if it is defined.

    Args:
        x: Series, shape ``(n,)`` (NaN = missing).
        y: Series, shape ``(n,)``.
        min_points: Fewest finite pairs required (at least 3).

    Returns:
        ``"N/A: ..."`` (too few points, a constant series) or ``None``.
    """
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    n = int(ok.sum())
    need = max(3, int(min_points))
    if n < need:
        return f"N/A: too few points (n={n} < {need})"
    if np.ptp(a[ok]) == 0:
        return "N/A: x is constant"
    if np.ptp(b[ok]) == 0:
        return "N/A: y is constant"
    return None


def _p_from_r(r: float, n: int) -> float:
    """Two-sided p-value of a correlation r with n pairs (t distribution, n - 2 df)."""
    if n < 3 or not math.isfinite(r):
        return math.nan
    if abs(r) >= 1.0:
        return 0.0
    t = r * math.sqrt((n - 2) / (1.0 - r * r))
    return float(2.0 * stats.t.sf(abs(t), n - 2))


def parametric_correlation(
    x: npt.ArrayLike, y: npt.ArrayLike, n_effective: int | None = None, min_points: int = 3
) -> dict[str, tuple[float, float, int, str]]:
    """Pearson and Spearman r with parametric p-values.

    Args:
        x: Series, shape ``(n,)``.
        y: Series, shape ``(n,)``; pairs with a NaN are dropped.
        n_effective: Sample size for the p-values (e.g. the distinct telemetry samples behind
            interpolated values); default the number of finite pairs. Capped at that number.
        min_points: Fewest finite pairs.

    Returns:
        ``{"pearson": (r, p, n, note), "spearman": (r, p, n, note)}``; undefined ones have NaN r/p
        and an ``N/A:`` note.
    """
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    n_pairs = int(ok.sum())
    n = n_pairs if n_effective is None else min(int(n_effective), n_pairs)
    reason = na_reason(a, b, min_points)
    if reason is None and n < max(3, min_points):
        reason = f"N/A: too few distinct telemetry samples (n={n} < {max(3, min_points)})"
    if reason is not None:
        return {m: (math.nan, math.nan, n, reason) for m in ("pearson", "spearman")}
    a, b = a[ok], b[ok]
    r_p = float(np.corrcoef(a, b)[0, 1])
    r_s = float(np.corrcoef(stats.rankdata(a), stats.rankdata(b))[0, 1])
    return {
        "pearson": (r_p, _p_from_r(r_p, n), n, ""),
        "spearman": (r_s, _p_from_r(r_s, n), n, ""),
    }


def detrend(
    values: npt.ArrayLike, kind: Detrend, times_s: npt.ArrayLike | None = None
) -> FloatArray:
    """Remove the slow trend of a series.

    Args:
        values: Series on a regular grid, shape ``(n,)`` (NaN = missing).
        kind: ``"difference"``: ``v[i] - v[i-1]`` (first element NaN; a difference touching a NaN
            is NaN). ``"linear"``: residuals of a least-squares straight line in time over the
            finite points.
        times_s: Times of the points, s (``"linear"`` only; default the index).

    Returns:
        Detrended series, shape ``(n,)``.

    Raises:
        ValueError: On an unknown ``kind``.
    """
    v = np.asarray(values, dtype=np.float64)
    if kind == "difference":
        out = np.full(v.shape[0], np.nan)
        if v.size > 1:
            out[1:] = np.diff(v)
        return out
    if kind == "linear":
        t = (
            np.arange(v.size, dtype=np.float64)
            if times_s is None
            else np.asarray(times_s, dtype=np.float64)
        )
        ok = np.isfinite(v) & np.isfinite(t)
        out = np.full(v.shape[0], np.nan)
        if ok.sum() >= 2 and np.ptp(t[ok]) > 0:
            slope, intercept = np.polyfit(t[ok], v[ok], 1)
            out[ok] = v[ok] - (slope * t[ok] + intercept)
        elif ok.any():
            out[ok] = v[ok] - v[ok].mean()
        return out
    raise ValueError(f"detrend must be 'difference' or 'linear', got {kind!r}")


def _masked_corr_rows(x: FloatArray, ys: FloatArray, min_points: int) -> FloatArray:
    """Pearson r of ``x`` (n,) with each row of ``ys`` (p, n), pairwise-complete; NaN if undefined."""
    m = np.isfinite(x)[None, :] & np.isfinite(ys)
    k = m.sum(axis=1).astype(np.float64)
    xs = np.where(m, x[None, :], 0.0)
    yv = np.where(m, ys, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx = xs.sum(axis=1) / k
        my = yv.sum(axis=1) / k
        dx = np.where(m, xs - mx[:, None], 0.0)
        dy = np.where(m, yv - my[:, None], 0.0)
        sxy = (dx * dy).sum(axis=1)
        sxx = (dx * dx).sum(axis=1)
        syy = (dy * dy).sum(axis=1)
        denom = np.sqrt(sxx * syy)
        r = np.where(
            (k >= max(3, min_points)) & (denom > 1e-300 * np.maximum(k, 1)), sxy / denom, np.nan
        )
    return np.asarray(np.clip(r, -1.0, 1.0), dtype=np.float64)


def _lag_pairs(x: FloatArray, y: FloatArray, lag: int) -> tuple[FloatArray, FloatArray]:
    """``x(t)`` and ``y(t + lag)`` over their overlap (lag in grid steps, either sign)."""
    n = x.shape[-1]
    if lag >= 0:
        return x[..., : n - lag], y[..., lag:]
    return x[..., -lag:], y[..., : n + lag]


def lagged_correlation(
    x: npt.ArrayLike, y: npt.ArrayLike, max_lag: int, min_points: int = 3
) -> pd.DataFrame:
    """Cross-correlation of two series on the same regular grid.

    Args:
        x: Training series, shape ``(n,)``.
        y: Hardware series, shape ``(n,)``.
        max_lag: Largest lag in grid steps.
        min_points: Fewest finite pairs per lag.

    Returns:
        Frame with ``lag`` (grid steps, ``-max_lag..max_lag``), ``r`` = corr(x(t), y(t + lag))
        and ``n`` (finite pairs). Positive lag: y follows x.
    """
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    rows = []
    for lag in range(-max_lag, max_lag + 1):
        xa, yb = _lag_pairs(a, b, lag)
        ok = np.isfinite(xa) & np.isfinite(yb)
        r = _masked_corr_rows(xa, yb[None, :], min_points)[0] if xa.size else math.nan
        rows.append({"lag": lag, "r": float(r), "n": int(ok.sum())})
    return pd.DataFrame(rows, columns=["lag", "r", "n"])


def _block_permutations(
    n: int, block: int, n_perm: int, rng: np.random.Generator
) -> npt.NDArray[np.int64]:
    """Index arrays (n_perm, n): consecutive blocks of ``block`` points in shuffled order."""
    blocks = [np.arange(s, min(s + block, n), dtype=np.int64) for s in range(0, n, block)]
    out = np.empty((n_perm, n), dtype=np.int64)
    for i in range(n_perm):
        order = rng.permutation(len(blocks))
        out[i] = np.concatenate([blocks[j] for j in order])
    return out


def block_permutation_test(
    x: npt.ArrayLike,
    y: npt.ArrayLike,
    lags: Sequence[int],
    block: int,
    n_permutations: int,
    rng: np.random.Generator,
    min_points: int = 3,
) -> tuple[FloatArray, float, FloatArray]:
    """Block permutation null for lagged correlations.

    The hardware series ``y`` is cut into consecutive blocks of ``block`` points whose order is
    shuffled, which breaks any relation with ``x`` but keeps autocorrelation within blocks.

    Args:
        x: Training series on a regular grid, shape ``(n,)``.
        y: Hardware series on the same grid, shape ``(n,)``.
        lags: Lags in grid steps.
        block: Block length in points (>= 1).
        n_permutations: Number of permutations.
        rng: Seeded generator.
        min_points: Fewest finite pairs per lag.

    Returns:
        ``(p_per_lag, p_max, q95_per_lag)``: two-sided p-values of each lag's |r| (shape
        ``(len(lags),)``), the p-value of the largest |r| over all lags against the null of
        that maximum, and the null's 95th percentile of |r| per lag. p-values are
        ``(1 + #{null >= observed}) / (1 + valid permutations)``; NaN where undefined.
    """
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    perms = _block_permutations(b.shape[0], max(1, int(block)), int(n_permutations), rng)
    yp = b[perms]
    observed = np.empty(len(lags))
    null = np.empty((len(lags), perms.shape[0]))
    for i, lag in enumerate(lags):
        xa, yb = _lag_pairs(a, b, lag)
        observed[i] = _masked_corr_rows(xa, yb[None, :], min_points)[0]
        xa2, ybp = _lag_pairs(a, yp, lag)
        null[i] = _masked_corr_rows(xa2, ybp, min_points)
    abs_null = np.abs(null)
    abs_obs = np.abs(observed)
    p = np.full(len(lags), np.nan)
    q95 = np.full(len(lags), np.nan)
    for i in range(len(lags)):
        valid = abs_null[i][np.isfinite(abs_null[i])]
        if valid.size and math.isfinite(abs_obs[i]):
            p[i] = (1.0 + float((valid >= abs_obs[i] - 1e-12).sum())) / (1.0 + valid.size)
            q95[i] = float(np.quantile(valid, 0.95))
    p_max = math.nan
    if np.isfinite(abs_obs).any():
        with np.errstate(invalid="ignore"):
            null_max = np.nanmax(np.where(np.isfinite(abs_null), abs_null, -np.inf), axis=0)
        valid = null_max[np.isfinite(null_max)]
        if valid.size:
            obs_max = float(np.nanmax(abs_obs))
            p_max = (1.0 + float((valid >= obs_max - 1e-12).sum())) / (1.0 + valid.size)
    return p, p_max, q95


@dataclass
class LagResult:
    """Lagged correlation of one pair on the detrended grid.

    Attributes:
        lag_s: Lags, s, shape ``(m,)`` (positive: hardware follows training).
        r: corr(x(t), y(t + lag)), shape ``(m,)``.
        n: Finite pairs per lag, shape ``(m,)``.
        p_value: Block permutation p-value per lag, shape ``(m,)``.
        null_q95: 95th percentile of the null |r| per lag, shape ``(m,)``.
        peak_lag_s: Lag of the largest |r| (NaN if none).
        peak_r: r at that lag.
        peak_p_value: p-value of the largest |r| against the null of the maximum over lags.
        note: Empty, or why the test is not available.
    """

    lag_s: FloatArray
    r: FloatArray
    n: npt.NDArray[np.int64]
    p_value: FloatArray
    null_q95: FloatArray
    peak_lag_s: float = math.nan
    peak_r: float = math.nan
    peak_p_value: float = math.nan
    note: str = ""


def lagged_correlation_test(
    x: npt.ArrayLike, y: npt.ArrayLike, hz: float, settings: CorrelationSettings
) -> LagResult:
    """Lagged correlation in seconds with block permutation p-values.

    Args:
        x: Detrended training series on a regular grid at ``hz``, shape ``(n,)``.
        y: Detrended hardware series on the same grid, shape ``(n,)``.
        hz: Grid rate, Hz.
        settings: ``max_lag_s``, ``block_s``, ``min_blocks``, ``n_permutations``, ``seed``,
            ``min_points``.

    Returns:
        The :class:`LagResult`; with too few points or blocks, p-values are NaN and the note
        says why (r is still given where defined).
    """
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    max_lag = max(0, int(round(settings.max_lag_s * hz)))
    max_lag = min(max_lag, max(0, a.shape[0] - 3))
    lags = list(range(-max_lag, max_lag + 1))
    table = lagged_correlation(a, b, max_lag, settings.min_points)
    m = len(lags)
    res = LagResult(
        lag_s=np.asarray(lags, dtype=np.float64) / hz,
        r=table["r"].to_numpy(dtype=np.float64),
        n=table["n"].to_numpy(dtype=np.int64),
        p_value=np.full(m, np.nan),
        null_q95=np.full(m, np.nan),
    )
    reason = na_reason(a, b, settings.min_points)
    if reason is not None:
        res.note = reason
        res.r = np.full(m, np.nan)
        return res
    block = max(1, int(round(settings.block_s * hz)))
    n_blocks = math.ceil(a.shape[0] / block)
    if np.isfinite(res.r).any():
        i = int(np.nanargmax(np.abs(res.r)))
        res.peak_lag_s, res.peak_r = float(res.lag_s[i]), float(res.r[i])
    if n_blocks < settings.min_blocks:
        res.note = (
            f"p_value N/A: too few blocks for a permutation test ({n_blocks} blocks of "
            f"{settings.block_s:g} s; need {settings.min_blocks})"
        )
        return res
    rng = np.random.default_rng(settings.seed)
    p, p_max, q95 = block_permutation_test(
        a, b, lags, block, settings.n_permutations, rng, settings.min_points
    )
    res.p_value, res.null_q95, res.peak_p_value = p, q95, p_max
    return res


# ---------------------------------------------------------------------------------- spikes


def grad_norm_spikes(
    times_s: npt.ArrayLike, values: npt.ArrayLike, k: float = 1.0
) -> tuple[FloatArray, float]:
    """Spikes of a grad_norm series.

    A spike step has ``value > mean + k·std`` (``ddof = 1``, over the finite values);
    consecutive spike steps form one spike, timed at its largest value.

    Args:
        times_s: Step times, s, shape ``(n,)`` (sorted).
        values: grad_norm at those steps, shape ``(n,)``.
        k: Threshold in standard deviations.

    Returns:
        ``(spike_times_s, threshold)``; no spikes (and a NaN threshold when fewer than 3 finite
        values or a constant series) gives an empty array.
    """
    t = np.asarray(times_s, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(v) & np.isfinite(t)
    if ok.sum() < 3 or np.ptp(v[ok]) == 0:
        return np.zeros(0), math.nan
    threshold = float(v[ok].mean() + k * v[ok].std(ddof=1))
    flag = ok & (v > threshold)
    spikes: list[float] = []
    i, n = 0, v.shape[0]
    while i < n:
        if not flag[i]:
            i += 1
            continue
        j = i
        while j + 1 < n and flag[j + 1]:
            j += 1
        seg = v[i : j + 1]
        spikes.append(float(t[i + int(np.nanargmax(seg))]))
        i = j + 1
    return np.asarray(spikes, dtype=np.float64), threshold


@dataclass
class SpikeCollapse:
    """Spike–collapse coupling of one run and device.

    Attributes:
        n_steps: Steps with a finite grad_norm in the training interval.
        threshold: Spike threshold (mean + k·std), grad_norm units.
        n_spikes: Spikes (runs of consecutive spike steps, each timed at its maximum).
        n_spike_steps: Steps above the threshold, not merged: the lab's own spike count
            ("every step above mean + 1 std", docs/rle-metric.md §8.3).
        n_events: Collapse events starting in the training interval.
        matched_spikes: Spikes with an event start within ±window.
        matched_events: Events with a spike within ±window.
        chance_rate: Fraction of the training interval within ±window of an event start.
        expected_matched: ``n_spikes · chance_rate``: matched spikes expected by chance.
        p_value: P(matched >= observed) for Binomial(n_spikes, chance_rate).
        note: How it was done, or ``N/A: why``.
    """

    n_steps: int
    threshold: float
    n_spikes: int
    n_events: int
    n_spike_steps: int = 0
    matched_spikes: int = 0
    matched_events: int = 0
    chance_rate: float = math.nan
    expected_matched: float = math.nan
    p_value: float = math.nan
    note: str = ""

    @property
    def hit_rate(self) -> float:
        """Matched spikes / spikes (NaN without spikes or events)."""
        if self.n_spikes == 0 or self.n_events == 0 or self.note.startswith("N/A"):
            return math.nan
        return self.matched_spikes / self.n_spikes


def _covered_fraction(centres: FloatArray, half_width: float, start: float, end: float) -> float:
    if end <= start or centres.size == 0:
        return 0.0
    lo = np.clip(np.sort(centres) - half_width, start, end)
    hi = np.clip(np.sort(centres) + half_width, start, end)
    total, cur_lo, cur_hi = 0.0, lo[0], hi[0]
    for a, b in zip(lo[1:], hi[1:], strict=True):
        if a > cur_hi:
            total += cur_hi - cur_lo
            cur_lo, cur_hi = a, b
        else:
            cur_hi = max(cur_hi, b)
    total += cur_hi - cur_lo
    return float(total / (end - start))


def spike_collapse(
    step_times_s: npt.ArrayLike,
    grad_norm: npt.ArrayLike,
    event_starts_s: npt.ArrayLike | None,
    interval: tuple[float, float],
    settings: SpikeSettings = SpikeSettings(),  # noqa: B008 (frozen dataclass)
    no_detection_reason: str | None = None,
) -> SpikeCollapse:
    """Match grad_norm spikes to collapse events (event based, not a 0/1-flag correlation).

    Args:
        step_times_s: Step times, s, shape ``(n,)``.
        grad_norm: grad_norm at the steps, shape ``(n,)``.
        event_starts_s: Start times of collapse events, s, shape ``(e,)``; ``None`` when the
            device has no collapse events to match (detection disabled or its flags discarded).
        interval: Training interval ``(start_s, end_s)``; events outside it are ignored.
        settings: ``k`` and ``window_s``.
        no_detection_reason: The note when ``event_starts_s`` is ``None`` (starting ``N/A:``);
            default: no collapse series on the device.

    Returns:
        The :class:`SpikeCollapse` counts, chance baseline and p-value (N/A note without steps,
        spikes, detection or events).
    """
    t = np.asarray(step_times_s, dtype=np.float64)
    g = np.asarray(grad_norm, dtype=np.float64)
    start, end = interval
    n_steps = int(np.isfinite(g).sum())
    spikes, threshold = grad_norm_spikes(t, g, settings.k)
    events = np.zeros(0) if event_starts_s is None else np.asarray(event_starts_s, dtype=np.float64)
    events = events[(events >= start) & (events <= end)]
    n_steps_above = int((np.isfinite(g) & (g > threshold)).sum()) if math.isfinite(threshold) else 0
    out = SpikeCollapse(n_steps, threshold, int(spikes.size), int(events.size), n_steps_above)
    w = float(settings.window_s)
    how = f"spikes: grad_norm > mean + {settings.k:g}·std (ddof=1); matched within ±{w:g} s"
    if event_starts_s is None:
        out.note = no_detection_reason or (
            "N/A: no collapse detection on this device (no collapse series in its telemetry)"
        )
        return out
    if n_steps < 3:
        out.note = f"N/A: too few steps with grad_norm (n={n_steps} < 3)"
        return out
    if not math.isfinite(threshold):
        out.note = "N/A: grad_norm is constant: no spikes defined"
        return out
    if events.size == 0:
        out.note = f"N/A: no collapse events in the training interval ({spikes.size} spikes; {how})"
        return out
    if spikes.size == 0:
        out.note = f"N/A: no grad_norm spikes ({events.size} events; {how})"
        return out
    dist = np.abs(spikes[:, None] - events[None, :])
    out.matched_spikes = int((dist <= w).any(axis=1).sum())
    out.matched_events = int((dist <= w).any(axis=0).sum())
    out.chance_rate = _covered_fraction(events, w, start, end)
    out.expected_matched = out.n_spikes * out.chance_rate
    out.p_value = float(stats.binom.sf(out.matched_spikes - 1, out.n_spikes, out.chance_rate))
    out.note = (
        f"{out.matched_spikes}/{out.n_spikes} spikes matched to {out.matched_events}/{out.n_events} "
        f"events; chance {out.expected_matched:.2f} expected ({how}; p: binomial)"
    )
    return out


# ---------------------------------------------------------------------------- per device


@dataclass
class DeviceCorrelation:
    """Everything computed for one run and device.

    Attributes:
        rows: Rows of ``correlations.csv`` (:data:`CORRELATION_COLUMNS`).
        aligned: Step-aligned frame (``step``, ``time_s``, training keys, hardware columns).
        lags: ``{(x, y): LagResult}``.
        spikes: Spike–collapse result (``None`` without grad_norm).
        alignment: One row per hardware series of the pairs (:data:`ALIGNMENT_COLUMNS`): how
            it was put on the grid and how many telemetry samples it had.
    """

    rows: list[dict[str, Any]] = field(default_factory=list)
    aligned: pd.DataFrame = field(default_factory=pd.DataFrame)
    lags: dict[tuple[str, str], LagResult] = field(default_factory=dict)
    spikes: SpikeCollapse | None = None
    alignment: list[dict[str, Any]] = field(default_factory=list)


ALIGNMENT_COLUMNS: tuple[str, ...] = (
    "run_id",
    "device",
    "y",
    "telemetry_samples",
    "median_period_s",
    "sample_phase_s",
    "grid_hz",
    "grid_points",
    "grid_points_with_value",
    "edge_samples",
    "method",
)
"""Columns of ``alignment.csv``: per run, device and hardware series, the training-interval
telemetry samples, their median period (s), their median phase after the grid points (s, the
circular median of ``(t - grid start) mod spacing``), the grid, how many grid points got a
value, how many samples sat within 5 % of a spacing of a bin edge (where bin-mean resampling
would have left empty and doubled bins), and the method."""

GRID_METHOD = (
    "grid anchored at the training interval's start; training series: mean of the steps in each "
    "bin; telemetry: time average of its linear interpolant over each bin (interval_mean)"
)
"""How the detrended and lagged rows put both series on one grid (the report quotes it)."""


def _circular_phase(t: FloatArray, origin: float, d: float) -> float:
    """Median phase of times after a grid origin, s in ``[0, d)`` (circular: around the mean)."""
    if t.size == 0 or not d > 0:
        return math.nan
    ph = np.mod(t - origin, d)
    centre = math.atan2(np.sin(2 * np.pi * ph / d).mean(), np.cos(2 * np.pi * ph / d).mean())
    c = (centre / (2 * np.pi)) % 1.0 * d
    rel = np.mod(ph - c + d / 2, d) - d / 2  # offsets around the circular mean
    return float((c + np.median(rel)) % d)


def _used_y(ok: npt.NDArray[np.bool_], kind: Detrend) -> npt.NDArray[np.bool_]:
    """Grid values of the hardware series behind the finite detrended points ``ok``."""
    used = ok.copy()
    if kind == "difference" and ok.size > 1:
        used[:-1] |= ok[1:]  # a difference at k uses bins k and k - 1
    return used


def _lag_samples(
    xd: FloatArray, yd: FloatArray, lags_s: FloatArray, hz: float, gs: Any, kind: Detrend
) -> npt.NDArray[np.int64]:
    """Distinct telemetry samples behind the pairs of each lag (same order as ``lags_s``)."""
    n = xd.shape[0]
    out = np.zeros(lags_s.shape[0], dtype=np.int64)
    for i, lag_s in enumerate(lags_s):
        lag = int(round(float(lag_s) * hz))
        xa, yb = _lag_pairs(xd, yd, lag)
        f = np.isfinite(xa) & np.isfinite(yb)
        ok = np.zeros(n, dtype=bool)
        pos = np.arange(lag, n) if lag >= 0 else np.arange(0, n + lag)
        ok[pos[f]] = True
        out[i] = distinct_grid_samples(gs.lo, gs.hi, _used_y(ok, kind))
    return out


def _row(
    run_id: str,
    device: str,
    pair: Pair,
    method: str,
    lag_s: float,
    r: float,
    p: float,
    n: int,
    note: str,
) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "device": device,
        "x": pair.x,
        "y": pair.y,
        "method": method,
        "lag_s": float(lag_s),
        "r": float(r),
        "p_value": float(p),
        "n": int(n),
        "note": note,
    }


def correlate_device(
    run_id: str,
    device: str,
    train: pd.DataFrame,
    frame: pd.DataFrame,
    interval: TrainingInterval,
    pairs: Sequence[Pair] = DEFAULT_PAIRS,
    settings: CorrelationSettings = CorrelationSettings(),  # noqa: B008 (frozen dataclass)
    spikes: SpikeSettings | None = SpikeSettings(),  # noqa: B008 (frozen dataclass)
    event_starts_s: npt.ArrayLike | None = None,
    extra_columns: Sequence[str] = (),
    missing_reasons: Mapping[str, str] | None = None,
    no_detection_reason: str | None = None,
) -> DeviceCorrelation:
    """All correlation rows of one run and one device (the ``default`` method).

    Args:
        run_id: Run id (for the rows).
        device: Device label (``gpu_0``, ``cpu``).
        train: Per-step training values: index step, ``time_s`` and the training keys
            (:func:`rle.analysis.align.step_series`).
        frame: The device's telemetry (:func:`rle.analysis.align.device_frames`).
        interval: The run's training interval; only data inside it is used.
        pairs: Pairs to correlate (x: training key, y: hardware column).
        settings: Method options.
        spikes: Spike–collapse options; ``None`` skips the matching.
        event_starts_s: Collapse event start times, s; ``None``: the device has no collapse
            detection.
        extra_columns: More hardware columns to align onto the steps (for plots).
        missing_reasons: ``{hardware column: "N/A: why"}`` for columns the frame lacks on
            purpose (e.g. RLE built from placeholder inputs); default note: the device has no
            such series.
        no_detection_reason: The spike–collapse note when ``event_starts_s`` is ``None``.

    Returns:
        The :class:`DeviceCorrelation`.
    """
    out = DeviceCorrelation()
    steps = train.reset_index()
    steps = steps[(steps["time_s"] >= interval.start_s) & (steps["time_s"] <= interval.end_s)]
    dev = within(frame, interval)
    hw_cols = sorted({p.y for p in pairs} | set(extra_columns))
    aligned = align_to_steps(
        dev,
        steps[["step", "time_s"]],
        hw_cols,
        method=settings.align,
        interval_s=interval.step_interval_s,
    )
    for key in sorted(
        {p.x for p in pairs} | {c for c in train.columns if str(c).startswith("train/")}
    ):
        aligned[key] = steps[key].to_numpy(dtype=np.float64) if key in steps else np.nan
    out.aligned = aligned
    hz = float(settings.resample_hz)
    grid = time_grid(interval.start_s, interval.end_s, hz)
    label = settings.detrend_label
    align_note = (
        "raw step-aligned ({how}); n = distinct telemetry samples ({steps} steps); "
        "parametric p (t, n-2 df) ignores autocorrelation and trends"
    )
    for pair in pairs:
        xs = aligned[pair.x].to_numpy(dtype=np.float64)
        reason = None
        if pair.y not in dev:
            reason = (missing_reasons or {}).get(pair.y) or f"N/A: {device} has no {pair.y} series"
        elif not np.isfinite(xs).any():
            reason = f"N/A: the run has no {pair.x} values"
        if reason is not None:
            for method in (
                "pearson",
                "spearman",
                f"pearson_{label}",
                f"spearman_{label}",
                f"xcorr_{label}_peak",
            ):
                out.rows.append(
                    _row(
                        run_id,
                        device,
                        pair,
                        method,
                        0.0 if "peak" not in method else math.nan,
                        math.nan,
                        math.nan,
                        0,
                        reason,
                    )
                )
            continue
        ys = aligned[pair.y].to_numpy(dtype=np.float64)
        both = np.isfinite(xs) & np.isfinite(ys)
        n_eff = distinct_samples(aligned, both)
        raw = parametric_correlation(xs, ys, n_effective=n_eff, min_points=settings.min_points)
        for method, (r, p, n, note) in raw.items():
            text = note or align_note.format(how=settings.align, steps=int(both.sum()))
            out.rows.append(_row(run_id, device, pair, method, 0.0, r, p, n, text))
        # detrended, on the common grid (training: bin means; telemetry: interval means)
        xg = resample(steps["time_s"], xs, grid)
        gs = interval_mean(dev["time_s"], dev[pair.y], grid)
        yg = gs.values
        xd = detrend(xg, settings.detrend, grid)
        yd = detrend(yg, settings.detrend, grid)
        lag = lagged_correlation_test(xd, yd, hz, settings)
        out.lags[(pair.x, pair.y)] = lag
        zero = int(np.flatnonzero(lag.lag_s == 0.0)[0]) if (lag.lag_s == 0.0).any() else None
        ok_grid = np.isfinite(xd) & np.isfinite(yd)
        n_grid = distinct_grid_samples(gs.lo, gs.hi, _used_y(ok_grid, settings.detrend))
        n_lag = _lag_samples(xd, yd, lag.lag_s, hz, gs, settings.detrend)
        grid_note = (
            f"{settings.detrend} detrended on a {hz:g} Hz grid ({int(ok_grid.sum())} grid "
            f"points; telemetry by interval means); p: block permutation "
            f"({settings.n_permutations} perms, {settings.block_s:g} s blocks, seed {settings.seed})"
        )
        grid_reason = na_reason(xd, yd, settings.min_points)
        t_dev = dev["time_s"].to_numpy(dtype=np.float64)[
            np.isfinite(pd.to_numeric(dev[pair.y], errors="coerce").to_numpy(dtype=np.float64))
        ]
        d_grid = 1.0 / hz
        edge = np.abs(np.mod(t_dev - interval.start_s, d_grid) - d_grid / 2) <= 0.05 * d_grid
        if all(r["y"] != pair.y for r in out.alignment):  # once per hardware series
            out.alignment.append(
                {
                    "run_id": run_id,
                    "device": device,
                    "y": pair.y,
                    "telemetry_samples": int(t_dev.size),
                    "median_period_s": gs.median_period_s,
                    "sample_phase_s": _circular_phase(t_dev, interval.start_s, d_grid),
                    "grid_hz": hz,
                    "grid_points": int(grid.size),
                    "grid_points_with_value": int(np.isfinite(yg).sum()),
                    "edge_samples": int(edge.sum()),
                    "method": GRID_METHOD,
                }
            )
        r0 = float(lag.r[zero]) if zero is not None else math.nan
        p0 = float(lag.p_value[zero]) if zero is not None else math.nan
        out.rows.append(
            _row(
                run_id,
                device,
                pair,
                f"pearson_{label}",
                0.0,
                r0,
                p0,
                n_grid,
                grid_reason or lag.note or grid_note,
            )
        )
        # Spearman: the same test on ranks
        rx = _rank(xd)
        ry = _rank(yd)
        if grid_reason is None:
            rs = lagged_correlation_test(rx, ry, hz, dataclasses.replace(settings, max_lag_s=0.0))
            out.rows.append(
                _row(
                    run_id,
                    device,
                    pair,
                    f"spearman_{label}",
                    0.0,
                    float(rs.r[0]),
                    float(rs.p_value[0]),
                    n_grid,
                    rs.note or grid_note + "; on ranks",
                )
            )
        else:
            out.rows.append(
                _row(
                    run_id,
                    device,
                    pair,
                    f"spearman_{label}",
                    0.0,
                    math.nan,
                    math.nan,
                    n_grid,
                    grid_reason,
                )
            )
        for i, lag_s in enumerate(lag.lag_s):
            note = (
                lag.note
                if lag.note
                else (grid_note if np.isfinite(lag.r[i]) else "N/A: too few points at this lag")
            )
            out.rows.append(
                _row(
                    run_id,
                    device,
                    pair,
                    f"xcorr_{label}",
                    float(lag_s),
                    float(lag.r[i]),
                    float(lag.p_value[i]),
                    int(n_lag[i]),
                    note,
                )
            )
        peak_note = (
            lag.note
            if lag.note.startswith("N/A") and not math.isfinite(lag.peak_r)
            else (
                f"lag of max |r| (lag > 0: {pair.y} follows {pair.x}); p: max |r| over lags vs its block-permutation null"
                + (f"; {lag.note}" if lag.note else "")
            )
        )
        out.rows.append(
            _row(
                run_id,
                device,
                pair,
                f"xcorr_{label}_peak",
                lag.peak_lag_s,
                lag.peak_r,
                lag.peak_p_value,
                n_grid,
                peak_note,
            )
        )
    if spikes is not None and "train/grad_norm" in steps:
        sc = spike_collapse(
            steps["time_s"],
            steps["train/grad_norm"],
            event_starts_s,
            (interval.start_s, interval.end_s),
            spikes,
            no_detection_reason,
        )
        out.spikes = sc
        out.rows.append(
            {
                "run_id": run_id,
                "device": device,
                "x": "train/grad_norm",
                "y": "collapse_events",
                "method": "spike_collapse",
                "lag_s": math.nan,
                "r": sc.hit_rate,
                "p_value": sc.p_value,
                "n": sc.n_spikes,
                "note": sc.note,
            }
        )
    return out


def _rank(v: FloatArray) -> FloatArray:
    out = np.full(v.shape[0], np.nan)
    ok = np.isfinite(v)
    out[ok] = stats.rankdata(v[ok])
    return out


# ---------------------------------------------------------------------------- sanity


def identical_training_curves(
    curves: Mapping[str, tuple[str, pd.DataFrame]],
    metric_keys: Sequence[str] = ("train/loss", "train/grad_norm"),
) -> list[tuple[str, str, str, str]]:
    """Pairs of runs with different workload labels but identical training curves (§9 C4).

    Args:
        curves: ``{run_id: (workload, per-step frame with the metric keys as columns)}``.
        metric_keys: Curves that must all be identical (same steps, same values within 1e-12
            relative) for a pair to be reported.

    Returns:
        ``[(run_a, workload_a, run_b, workload_b), ...]`` for every such pair.
    """
    items = []
    for run_id, (workload, frame) in curves.items():
        if all(k in frame for k in metric_keys) and len(frame):
            sig = frame[list(metric_keys)]
            items.append((run_id, workload, sig))
    found = []
    for i in range(len(items)):
        for j in range(i + 1, len(items)):
            ra, wa, fa = items[i]
            rb, wb, fb = items[j]
            if wa == wb or len(fa) != len(fb) or not fa.index.equals(fb.index):
                continue
            a = fa.to_numpy(dtype=np.float64)
            b = fb.to_numpy(dtype=np.float64)
            if np.isfinite(a).any() and np.allclose(a, b, rtol=1e-12, atol=0.0, equal_nan=True):
                found.append((ra, wa, rb, wb))
    return found


def _curve_key(frame: pd.DataFrame, metric_keys: Sequence[str]) -> bytes:
    """Exact bytes of a run's training curves: steps, then each key's float64 values."""
    idx = np.asarray(frame.index.to_numpy(), dtype=np.int64)
    vals = frame[list(metric_keys)].to_numpy(dtype=np.float64)
    vals = np.where(np.isnan(vals), np.nan, vals)  # one NaN bit pattern
    return idx.tobytes() + b"|" + np.ascontiguousarray(vals).tobytes()


def identical_training_groups(
    curves: Mapping[str, tuple[str, pd.DataFrame]],
    metric_keys: Sequence[str] = ("train/loss", "train/grad_norm"),
) -> list[list[tuple[str, str]]]:
    """Groups of runs whose training curves are bit-identical, whatever their labels (§8.1, §9 C4).

    Two runs whose ``train/loss`` and ``train/grad_norm`` agree bit for bit at the same steps did
    not train differently: either their workload labels are wrong (different labels), or the same
    training log was recorded or imported more than once (same label; e.g. the lab's joint
    sessions, several of which carry one and the same training log). Either way their training
    series are not independent evidence, so each group is reported.

    Args:
        curves: ``{run_id: (label, per-step frame indexed by step with the metric keys)}``.
        metric_keys: Curves that must all be identical; runs lacking one, or without a finite
            value, are not compared.

    Returns:
        One list of ``(run_id, label)`` per group of two or more runs, in input order.
    """
    groups: dict[bytes, list[tuple[str, str]]] = {}
    for run_id, (label, frame) in curves.items():
        if not len(frame) or not all(k in frame for k in metric_keys):
            continue
        if not np.isfinite(frame[list(metric_keys)].to_numpy(dtype=np.float64)).any():
            continue
        groups.setdefault(_curve_key(frame, metric_keys), []).append((str(run_id), str(label)))
    return [g for g in groups.values() if len(g) > 1]


def collapse_event_starts(frame: pd.DataFrame) -> FloatArray | None:
    """Start times of the collapse events in one device frame.

    Args:
        frame: Device frame with ``time_s`` (s) and, where detection ran, ``collapse`` (0/1).

    Returns:
        Event start times, s, shape ``(e,)`` (rising edges, :func:`rle.metric.collapse_events`),
        or ``None`` when the frame has no collapse series (detection disabled or absent).
    """
    from rle.metric import collapse_events

    if "collapse" not in frame or not frame["collapse"].notna().any():
        return None
    sub = frame[["time_s", "collapse"]].dropna().rename(columns={"time_s": "timestamp"})
    if sub.empty:
        return np.zeros(0)
    events = collapse_events(sub.reset_index(drop=True))
    return np.asarray(events["start"].to_numpy(dtype=np.float64), dtype=np.float64)
