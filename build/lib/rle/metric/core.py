"""The RLE formulas: stability, T_sustain, RLE and its two splits, legacy ``rle_norm``.

Every formula has a vectorised form (NumPy arrays, shape ``(n,)``, used by
:func:`rle.metric.compute`) and a scalar form (plain floats, suffix ``_scalar``, used by the
incremental engine in :mod:`rle.metric.stream`). Both follow ``docs/rle-metric.md`` literally;
the section is named in each docstring. The windowed statistics over ragged windows
(``windowed_*``) are the batch counterparts of the per-sample windows kept by the engine.

The canonical equation (§2.1)::

    RLE_raw = η·σ / (max(α, α_floor) · (1 + 1/τ))
    E_th    = σ / (1 + 1/τ)
    E_pw    = η / max(α, α_floor)

with η the utilisation fraction, σ the stability term, α = P/P_rated and τ the time to the thermal
limit in seconds. RLE is dimensionless, ≥ 0 and unbounded above.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from rle.metric.profiles import NormCurve

__all__ = [
    "DT_FLOOR_S",
    "expected_rle",
    "expected_rle_scalar",
    "rle_norm",
    "rle_norm_scalar",
    "rle_terms",
    "rle_terms_scalar",
    "stability_from_std",
    "tau_from_slope",
    "tau_from_slope_scalar",
    "tau_one_step",
    "tau_one_step_scalar",
    "tau_two_step",
    "tau_two_step_scalar",
    "ols_slope_scalar",
    "mean_std_scalar",
    "window_starts_by_count",
    "window_starts_by_time",
    "windowed_mean",
    "windowed_mean_std",
    "windowed_ols_slope",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

#: Floor of the nominal tick in the v0.3 one-step derivative, s (§2.3: ``max(dt, 1e-3)``).
DT_FLOOR_S = 1e-3

# Rows per block for the ragged-window gathers: bounds memory at about
# _GATHER_BUDGET float64 values per temporary array.
_GATHER_BUDGET = 1 << 21


# --------------------------------------------------------------------------------------------
# RLE and its splits (§2.1)
# --------------------------------------------------------------------------------------------


def rle_terms(
    eta: FloatArray,
    sigma: FloatArray,
    alpha: FloatArray,
    tau_s: FloatArray,
    alpha_floor: float,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """RLE_raw, E_th and E_pw of the canonical equation (§2.1), elementwise.

    Args:
        eta: Utilisation fraction η, shape ``(n,)``.
        sigma: Stability σ, shape ``(n,)``.
        alpha: Load α = P/P_rated (unfloored; NaN where unknown), shape ``(n,)``.
        tau_s: τ in seconds used in the 1/τ term (never NaN: the cap where not logged).
        alpha_floor: Floor of α in the denominator.

    Returns:
        ``(rle_raw, e_th, e_pw)``, each shape ``(n,)``; NaN where η or α is NaN.
    """
    af = np.maximum(alpha, alpha_floor)  # NaN α stays NaN
    th = 1.0 + 1.0 / tau_s
    e_th = sigma / th
    e_pw = eta / af
    rle = (eta * sigma) / (af * th)
    return rle, e_th, e_pw


def rle_terms_scalar(
    eta: float, sigma: float, alpha: float, tau_s: float, alpha_floor: float
) -> tuple[float, float, float]:
    """Scalar form of :func:`rle_terms`; returns ``(rle_raw, e_th, e_pw)``."""
    af = math.nan if math.isnan(alpha) else max(alpha, alpha_floor)
    th = 1.0 + 1.0 / tau_s
    return (eta * sigma) / (af * th), sigma / th, eta / af


def stability_from_std(std: FloatArray) -> FloatArray:
    """σ = 1 / (1 + std) (§2.2, §2.8), elementwise."""
    return 1.0 / (1.0 + std)


# --------------------------------------------------------------------------------------------
# T_sustain (§2.3, §2.8, §3)
# --------------------------------------------------------------------------------------------


def tau_from_slope(
    temp_c: FloatArray,
    slope_c_per_s: FloatArray,
    limit_c: FloatArray,
    rate_floor: float,
    tau_min_s: float,
    tau_max_s: float,
) -> FloatArray:
    """τ of the ``default`` profile from a heating slope (§2.8), elementwise.

    ``T ≥ T_limit`` ⇒ τ = ``tau_min_s``; slope ≤ ``rate_floor`` (or undefined) ⇒ τ = ``tau_max_s``;
    otherwise ``clamp((T_limit − T)/slope, tau_min_s, tau_max_s)``. NaN where T or T_limit is NaN.

    Args:
        temp_c: Current temperature, °C.
        slope_c_per_s: OLS slope of temperature against time, °C/s (NaN if undefined).
        limit_c: Thermal limit, °C.
        rate_floor: Slope floor, °C/s.
        tau_min_s: Lower clamp, s.
        tau_max_s: Upper clamp (cap), s.

    Returns:
        τ in seconds, shape ``(n,)``.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        raw = np.clip((limit_c - temp_c) / slope_c_per_s, tau_min_s, tau_max_s)
    tau = np.where(slope_c_per_s > rate_floor, raw, tau_max_s)
    tau = np.where(temp_c >= limit_c, tau_min_s, tau)
    return np.where(np.isfinite(temp_c) & np.isfinite(limit_c), tau, np.nan)


def tau_from_slope_scalar(
    temp_c: float,
    slope_c_per_s: float,
    limit_c: float,
    rate_floor: float,
    tau_min_s: float,
    tau_max_s: float,
) -> float:
    """Scalar form of :func:`tau_from_slope`."""
    if not (math.isfinite(temp_c) and math.isfinite(limit_c)):
        return math.nan
    if temp_c >= limit_c:
        return tau_min_s
    if not slope_c_per_s > rate_floor:
        return tau_max_s
    return min(max((limit_c - temp_c) / slope_c_per_s, tau_min_s), tau_max_s)


def tau_one_step(
    temp_last_c: FloatArray,
    temp_prev_c: FloatArray,
    have_two: BoolArray,
    limit_c: FloatArray,
    dt_s: float,
    rate_floor: float,
    tau_min_s: float,
    tau_max_s: float,
) -> FloatArray:
    """τ of the v0.3 monitor: one-step finite difference on the nominal tick (§2.3).

    ``τ = clamp((T_limit − T[-1]) / max((T[-1] − T[-2]) / max(dt, 1e-3), rate_floor), min, max)``,
    and ``tau_max_s`` when fewer than two temperatures are in the history.

    Args:
        temp_last_c: Last temperature of the history, °C.
        temp_prev_c: The one before it, °C (ignored where ``have_two`` is false).
        have_two: Whether the history holds at least two temperatures.
        limit_c: Thermal limit, °C.
        dt_s: Nominal tick 1/sample_hz, s (not the measured interval).
        rate_floor: Floor of dT/dt, °C/s.
        tau_min_s: Lower clamp, s.
        tau_max_s: Upper clamp, s.

    Returns:
        τ in seconds, shape ``(n,)``.
    """
    rate = np.maximum((temp_last_c - temp_prev_c) / max(dt_s, DT_FLOOR_S), rate_floor)
    with np.errstate(invalid="ignore"):
        tau = np.minimum(np.maximum((limit_c - temp_last_c) / rate, tau_min_s), tau_max_s)
    return np.where(have_two, tau, tau_max_s)


def tau_one_step_scalar(
    temps_c: Sequence[float],
    limit_c: float,
    dt_s: float,
    rate_floor: float,
    tau_min_s: float,
    tau_max_s: float,
) -> float:
    """Scalar form of :func:`tau_one_step` over a temperature history (oldest first)."""
    if len(temps_c) < 2:
        return tau_max_s
    rate = max((temps_c[-1] - temps_c[-2]) / max(dt_s, DT_FLOOR_S), rate_floor)
    return max(min((limit_c - temps_c[-1]) / rate, tau_max_s), tau_min_s)


def tau_two_step(
    temp_c: FloatArray,
    temp_2back_c: FloatArray,
    n_temps: IntArray,
    limit_c: FloatArray,
    tau_min_s: float,
    tau_max_s: float,
    dt_s: float = 1.0,
) -> FloatArray:
    """τ rule of the v2 monitor (§3), elementwise.

    Fewer than 2 temperatures ⇒ ``tau_max_s``; ``T ≥ T_limit`` ⇒ ``tau_min_s`` (0 in v2);
    at least 3 temperatures and ``rate = (T[-1] − T[-3]) / (2·dt) > 0`` ⇒
    ``min(tau_max_s, max(tau_min_s, (T_limit − T)/rate))``; else ``tau_max_s``.

    Args:
        temp_c: Current temperature T[-1], °C.
        temp_2back_c: T[-3], °C (ignored where ``n_temps < 3``).
        n_temps: Number of temperatures in the history including the current one.
        limit_c: Thermal limit, °C.
        tau_min_s: Value at or over the limit and lower clamp, s.
        tau_max_s: Cap, s.
        dt_s: Tick, s (hard-coded 1.0 upstream).

    Returns:
        τ in seconds.
    """
    rate = (temp_c - temp_2back_c) / (2.0 * dt_s)
    with np.errstate(divide="ignore", invalid="ignore"):
        slope_tau = np.minimum(tau_max_s, np.maximum(tau_min_s, (limit_c - temp_c) / rate))
    tau = np.where((n_temps >= 3) & (rate > 0), slope_tau, tau_max_s)
    tau = np.where(temp_c >= limit_c, tau_min_s, tau)
    return np.where(n_temps < 2, tau_max_s, tau)


def tau_two_step_scalar(
    temps_c: Sequence[float], limit_c: float, tau_min_s: float, tau_max_s: float, dt_s: float = 1.0
) -> float:
    """Scalar form of :func:`tau_two_step` over a temperature history (oldest first)."""
    if len(temps_c) < 2:
        return tau_max_s
    temp = temps_c[-1]
    if temp >= limit_c:
        return tau_min_s
    if len(temps_c) >= 3:
        rate = (temp - temps_c[-3]) / (2.0 * dt_s)
        if rate > 0:
            return min(tau_max_s, max(tau_min_s, (limit_c - temp) / rate))
    return tau_max_s


# --------------------------------------------------------------------------------------------
# Legacy normalisation (§2.5)
# --------------------------------------------------------------------------------------------


def expected_rle(util_pct: FloatArray, curve: NormCurve) -> FloatArray:
    """Expected RLE at utilisation ``util_pct`` (percent) of the legacy ``rle_norm`` (§2.5).

    ``u ≤ knee: base + (opt − base)·u/knee``; ``u > knee: opt − (opt − 0.5·base)·(u − knee)/(100 − knee)``.
    """
    knee = curve.knee_pct
    low = curve.base + (curve.opt - curve.base) * util_pct / knee
    high = curve.opt - (curve.opt - 0.5 * curve.base) * (util_pct - knee) / (100.0 - knee)
    return np.where(util_pct <= knee, low, high)


def expected_rle_scalar(util_pct: float, curve: NormCurve) -> float:
    """Scalar form of :func:`expected_rle`."""
    knee = curve.knee_pct
    if util_pct <= knee:
        return curve.base + (curve.opt - curve.base) * util_pct / knee
    return curve.opt - (curve.opt - 0.5 * curve.base) * (util_pct - knee) / (100.0 - knee)


def rle_norm(rle_smoothed: FloatArray, util_pct: FloatArray, curve: NormCurve) -> FloatArray:
    """``rle_norm = clamp(rle_smoothed / expected(util_pct), 0, 1)`` (§2.5); NaN propagates."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.clip(rle_smoothed / expected_rle(util_pct, curve), 0.0, 1.0)


def rle_norm_scalar(rle_smoothed: float, util_pct: float, curve: NormCurve) -> float:
    """Scalar form of :func:`rle_norm`."""
    if math.isnan(rle_smoothed) or math.isnan(util_pct):
        return math.nan
    expected = expected_rle_scalar(util_pct, curve)
    if expected == 0.0:
        return math.nan
    return min(max(rle_smoothed / expected, 0.0), 1.0)


# --------------------------------------------------------------------------------------------
# Windowed statistics: scalar (engine) and ragged-window batch forms
# --------------------------------------------------------------------------------------------


def mean_std_scalar(values: Sequence[float]) -> tuple[float, float]:
    """Mean and population standard deviation (ddof = 0) of finite ``values`` (two-pass)."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    mean = sum(values) / n
    var = sum((v - mean) * (v - mean) for v in values) / n
    return mean, math.sqrt(var)


def ols_slope_scalar(times_s: Sequence[float], temps_c: Sequence[float], t_now_s: float) -> float:
    """Least-squares slope of temperature against time, °C/s (§2.8).

    Times are taken relative to ``t_now_s`` and temperatures relative to the newest one (exact
    shifts that keep the sums small). NaN with fewer than two points or no time spread.

    Args:
        times_s: Sample times of the window, s, oldest first.
        temps_c: Finite temperatures at those times, °C.
        t_now_s: Time of the current sample, s.

    Returns:
        Slope in °C/s.
    """
    n = len(times_s)
    if n < 2:
        return math.nan
    xs = [t - t_now_s for t in times_s]
    ref = temps_c[-1]
    ys = [y - ref for y in temps_c]
    mx = sum(xs) / n
    my = sum(ys) / n
    dx = [x - mx for x in xs]
    sxx = sum(d * d for d in dx)
    if not sxx > 0.0:
        return math.nan
    sxy = sum(d * (y - my) for d, y in zip(dx, ys, strict=True))
    return sxy / sxx


def window_starts_by_time(t_s: FloatArray, width_s: float) -> IntArray:
    """First index of each sample's time window ``(t_i − width_s, t_i]``; ``t_s`` ascending."""
    return np.searchsorted(t_s, t_s - width_s, side="right").astype(np.int64)


def window_starts_by_count(n: int, width: int) -> IntArray:
    """First index of each sample's window of the last ``width`` samples (including itself)."""
    return np.maximum(np.arange(n, dtype=np.int64) - (width - 1), 0)


def _blocks(starts: IntArray) -> list[tuple[int, int, int]]:
    """Split rows into blocks ``(lo, hi, k)`` with ``k`` = the widest window in the block."""
    n = starts.shape[0]
    if n == 0:
        return []
    widths = np.arange(n, dtype=np.int64) - starts + 1
    kmax = int(widths.max())
    rows = max(1, _GATHER_BUDGET // max(kmax, 1))
    out = []
    for lo in range(0, n, rows):
        hi = min(n, lo + rows)
        out.append((lo, hi, int(widths[lo:hi].max())))
    return out


def _gather(
    values: FloatArray, starts: IntArray, lo: int, hi: int, k: int
) -> tuple[FloatArray, BoolArray, IntArray]:
    rows = np.arange(lo, hi, dtype=np.int64)
    idx = starts[lo:hi, None] + np.arange(k, dtype=np.int64)[None, :]
    valid = idx <= rows[:, None]
    idx = np.minimum(idx, rows[:, None])
    return values[idx], valid, idx


def windowed_mean_std(
    values: FloatArray, starts: IntArray
) -> tuple[IntArray, FloatArray, FloatArray]:
    """Count, mean and population std of the finite values in each window ``[starts_i, i]``.

    Args:
        values: Shape ``(n,)``; NaN entries are skipped.
        starts: First index of each window, shape ``(n,)``.

    Returns:
        ``(count, mean, std)``, each shape ``(n,)``; mean/std NaN where the count is 0.
    """
    n = values.shape[0]
    count = np.zeros(n, dtype=np.int64)
    mean = np.full(n, np.nan)
    std = np.full(n, np.nan)
    for lo, hi, k in _blocks(starts):
        x, valid, _ = _gather(values, starts, lo, hi, k)
        m = valid & np.isfinite(x)
        c = m.sum(axis=1)
        xs = np.where(m, x, 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            mu = xs.sum(axis=1) / c
            dev = np.where(m, x - mu[:, None], 0.0)
            var = (dev * dev).sum(axis=1) / c
        count[lo:hi] = c
        mean[lo:hi] = mu
        std[lo:hi] = np.sqrt(var)
    return count, mean, std


def windowed_mean(values: FloatArray, starts: IntArray) -> FloatArray:
    """Mean of the finite values in each window ``[starts_i, i]``; NaN where there are none."""
    n = values.shape[0]
    mean = np.full(n, np.nan)
    for lo, hi, k in _blocks(starts):
        x, valid, _ = _gather(values, starts, lo, hi, k)
        m = valid & np.isfinite(x)
        c = m.sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            mean[lo:hi] = np.where(m, x, 0.0).sum(axis=1) / c
    return mean


def windowed_ols_slope(t_s: FloatArray, y: FloatArray, starts: IntArray) -> FloatArray:
    """Least-squares slope dy/dt over each window ``[starts_i, i]`` of finite ``y`` (§2.8).

    Times are shifted to the window's current sample and ``y`` to the current value (the
    current value itself may be NaN: then the shift is the last finite value, which leaves
    the slope unchanged).

    Args:
        t_s: Sample times, s, ascending, shape ``(n,)``.
        y: Values (e.g. temperature, °C), NaN where missing, shape ``(n,)``.
        starts: First index of each window, shape ``(n,)``.

    Returns:
        Slope in units of y per second, shape ``(n,)``; NaN with fewer than two finite points.
    """
    n = y.shape[0]
    slope = np.full(n, np.nan)
    finite = np.isfinite(y)
    last = np.maximum.accumulate(np.where(finite, np.arange(n), -1))
    ref = np.where(last >= 0, y[np.maximum(last, 0)], 0.0)
    for lo, hi, k in _blocks(starts):
        yy, valid, idx = _gather(y, starts, lo, hi, k)
        m = valid & np.isfinite(yy)
        c = m.sum(axis=1)
        xs = np.where(m, t_s[idx] - t_s[lo:hi, None], 0.0)
        ys = np.where(m, yy - ref[lo:hi, None], 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            mx = xs.sum(axis=1) / c
            my = ys.sum(axis=1) / c
            dx = np.where(m, xs - mx[:, None], 0.0)
            sxx = (dx * dx).sum(axis=1)
            sxy = (dx * np.where(m, ys - my[:, None], 0.0)).sum(axis=1)
            b = sxy / sxx
        slope[lo:hi] = np.where((c >= 2) & (sxx > 0.0), b, np.nan)
    return slope
