"""``rle.metric.compute``: the RLE metric over one device's sample frame (vectorised).

The incremental engine (:mod:`rle.metric.stream`) gives the same numbers sample by sample; a
property test checks that both paths agree.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from rle.errors import MetricInputError
from rle.metric import core
from rle.metric._inputs import FrameInputs, read_frame, resolve_per_row
from rle.metric.collapse import detect_default, detect_legacy_v03
from rle.metric.profiles import DeviceKind, Profile, device_kind, get_profile

__all__ = [
    "OUTPUT_COLUMNS",
    "V2_MISSING_TEMP_C",
    "V03_SYNTHETIC_TEMP_C",
    "compute",
    "resolve_profile",
]

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

#: Columns :func:`compute` adds (``cycles_per_joule`` too for ``legacy_v03`` CPU frames that
#: carry ``cpu_freq_ghz``).
OUTPUT_COLUMNS = (
    "rle_raw",
    "rle_smoothed",
    "rle_norm",
    "E_th",
    "E_pw",
    "stability",
    "a_load",
    "t_sustain_s",
    "rolling_peak",
    "collapse",
    "power_estimated",
)

#: Length of the v0.3 monitor's utilisation and temperature histories, samples (§2.6).
V03_HISTORY = 120
#: Synthetic temperature history of the v0.3 monitor without a sensor, °C (§2.3).
V03_SYNTHETIC_TEMP_C = 40.0
#: Temperature the v2 monitor used when a sensor was missing, °C (§3).
V2_MISSING_TEMP_C = 50.0
#: Utilisation the v2 monitor used when a sensor was missing, percent (§3).
V2_MISSING_UTIL_PCT = 0.0


def resolve_profile(
    profile: str | Profile,
    *,
    kind: DeviceKind,
    rated_w: float | None = None,
    limit_c: float | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Profile:
    """Profile with overrides; ``rated_w``/``limit_c`` set the value for this device kind."""
    extra: dict[str, Any] = dict(overrides or {})
    if rated_w is not None:
        extra[f"load.rated_w.{kind}"] = rated_w
    if limit_c is not None:
        extra[f"thermal.limit_c.{kind}"] = limit_c
    return get_profile(profile, extra) if extra else get_profile(profile)


def compute(
    frame: pd.DataFrame,
    *,
    device: str,
    profile: str | Profile = "default",
    rated_w: float | None = None,
    limit_c: float | None = None,
    **overrides: Any,
) -> pd.DataFrame:
    """Compute RLE, its terms and the collapse flag over one device's sample stream.

    One call handles one device from a cold start: the first row is the process/telemetry
    start (warm-up, windows and histories begin there). Formula (§2.1)::

        RLE_raw = η·σ / (max(α, α_floor)·(1 + 1/τ)),  E_th = σ/(1 + 1/τ),  E_pw = η/max(α, α_floor)

    with η = util_pct/100, σ the stability term, α = P/P_rated and τ the time to the thermal
    limit. ``profile`` picks the definitions: ``default`` (§2.8, §4.4; windows in seconds on the
    measured timestamps), ``legacy_v03`` (§2.2-§2.7, §4.1) or ``legacy_v2`` (§3, §4.2).

    Missing data (``default``): no power ⇒ α, ``rle_raw``, ``E_pw`` NaN (unless
    ``load.cpu_power_fallback=rated_times_util`` for a CPU, flagged in ``power_estimated``); no
    temperature (or no T_limit) ⇒ ``t_sustain_s`` NaN, the 1/τ term uses the cap and the collapse
    detector is off at that sample. ``rle_smoothed`` averages the finite ``rle_raw`` of its window.

    Args:
        frame: Samples of **one** device, strictly increasing in time, with columns
            ``timestamp`` (UTC datetimes or epoch seconds), ``util_pct`` (percent), ``temp_c``
            (°C), ``power_w`` (W), NaN where missing; optional ``rated_w`` (W) and ``limit_c``
            (°C) per row (finite positive values override the profile), and ``cpu_freq_ghz``
            (``legacy_v03`` ``cycles_per_joule``).
        device: Device name: ``gpu_<i>``/``gpu`` or ``cpu``; the kind picks per-device constants.
        profile: Profile name or a :class:`~rle.metric.profiles.Profile`.
        rated_w: Rated power for this device, W (sets ``load.rated_w.<kind>``).
        limit_c: Thermal limit for this device, °C (sets ``thermal.limit_c.<kind>``).
        **overrides: Profile overrides as dotted keys (``**{"collapse.drop_frac": 0.7}``) or
            nested mappings (``collapse={"drop_frac": 0.7}``), relative to ``telemetry.rle``.

    Returns:
        A copy of ``frame`` (same index) plus the columns of :data:`OUTPUT_COLUMNS`:
        ``rle_raw``, ``rle_smoothed``, ``rle_norm`` (NaN unless ``legacy_v03``), ``E_th``,
        ``E_pw``, ``stability`` (σ), ``a_load`` (α, unfloored), ``t_sustain_s`` (τ, s),
        ``rolling_peak``, ``collapse`` (0/1, int) and ``power_estimated`` (bool); existing
        columns of those names are replaced. Shapes ``(n,)``.

    Raises:
        MetricInputError: Missing columns, non-numeric values, missing/duplicate/unsorted
            timestamps (the message names the rows), several devices in one frame (a
            ``device`` column with more than one value), unknown device kind, unknown profile
            or parameter, or an out-of-range parameter.
    """
    kind = device_kind(device)
    prof = resolve_profile(
        profile, kind=kind, rated_w=rated_w, limit_c=limit_c, overrides=overrides
    )
    if isinstance(frame, pd.DataFrame) and "device" in frame.columns:
        devices = frame["device"].dropna().unique()
        if len(devices) > 1:
            raise MetricInputError(
                f"compute handles one device per call; the frame holds {sorted(map(str, devices))}"
            )
    inputs = read_frame(frame)
    # NaN and inf are part of the contract (missing data); no floating-point warnings
    with np.errstate(all="ignore"):
        if prof.name == "default":
            cols = _compute_default(inputs, kind, prof)
        elif prof.name == "legacy_v03":
            cols = _compute_v03(inputs, kind, prof)
        else:
            cols = _compute_v2(inputs, kind, prof)
    out = frame.copy()
    for name, values in cols.items():
        out[name] = values
    return out


def _power(
    inputs: FrameInputs, kind: DeviceKind, prof: Profile, rated: FloatArray
) -> tuple[FloatArray, BoolArray]:
    """Power used for α (with the CPU fallback) and the ``power_estimated`` flag."""
    power = inputs.power_w
    missing = np.isnan(power)
    fallback = prof.load.cpu_power_fallback
    if kind != "cpu" or fallback in (None, "none") or not missing.any():
        return power, np.zeros(power.shape[0], dtype=bool)
    if fallback == "zero":
        return np.where(missing, 0.0, power), np.zeros(power.shape[0], dtype=bool)
    est = rated * (inputs.util_pct / 100.0)
    estimated = missing & np.isfinite(est)
    return np.where(missing, est, power), estimated


def _warn_unknown(kind: DeviceKind, what: str, values: FloatArray, key: str) -> None:
    if values.size and np.isnan(values).all():
        logger.warning(
            "no %s for device kind %s: set %s or pass a %s column; the affected terms are NaN",
            what,
            kind,
            key,
            key.split(".")[-2] if key.count(".") > 1 else key,
        )


def _compute_default(inputs: FrameInputs, kind: DeviceKind, prof: Profile) -> dict[str, Any]:
    n = inputs.t_rel_s.shape[0]
    t = inputs.t_rel_s
    util = inputs.util_pct
    temp = inputs.temp_c
    rated = resolve_per_row(inputs.rated_w, prof.rated_w(kind), n)
    limit = resolve_per_row(inputs.limit_c, prof.limit_c(kind), n)
    _warn_unknown(kind, "rated power", rated, f"load.rated_w.{kind}")
    _warn_unknown(kind, "thermal limit", limit, f"thermal.limit_c.{kind}")
    st, th = prof.stability, prof.thermal
    alpha_floor = need(prof.load.alpha_floor, "load.alpha_floor")

    eta = util / 100.0
    spread = util if st.kind == "std_percent" else eta
    window_s = need(st.window_s, "stability.window_s")
    count, _, std = core.windowed_mean_std(spread, core.window_starts_by_time(t, window_s))
    min_samples = need(st.min_samples, "stability.min_samples")
    sigma = np.where(count < min_samples, 1.0, core.stability_from_std(std))

    slope_window_s = need(th.slope_window_s, "thermal.slope_window_s")
    slope = core.windowed_ols_slope(t, temp, core.window_starts_by_time(t, slope_window_s))
    tau_lo, tau_hi = th.tau_clamp
    rate_floor = need(th.rate_floor, "thermal.rate_floor")
    tau = core.tau_from_slope(temp, slope, limit, rate_floor, tau_lo, tau_hi)
    tau_eff = np.where(np.isnan(tau), tau_hi, tau)

    power, estimated = _power(inputs, kind, prof, rated)
    alpha = power / rated
    rle, e_th, e_pw = core.rle_terms(eta, sigma, alpha, tau_eff, alpha_floor)
    smoothed = core.windowed_mean(rle, core.window_starts_by_time(t, prof.smooth.window_s))

    peak, collapse = detect_default(
        t_s=t,
        util_pct=util,
        alpha=alpha,
        temp_c=temp,
        limit_c=limit,
        slope_c_per_s=slope,
        tau_s=tau,
        rle_smoothed=smoothed,
        params=prof.collapse,
    )
    return _columns(
        rle, smoothed, np.full(n, np.nan), e_th, e_pw, sigma, alpha, tau, peak, collapse, estimated
    )


def _columns(
    rle: FloatArray,
    smoothed: FloatArray,
    norm: FloatArray,
    e_th: FloatArray,
    e_pw: FloatArray,
    sigma: FloatArray,
    alpha: FloatArray,
    tau: FloatArray,
    peak: FloatArray,
    collapse: BoolArray,
    estimated: BoolArray,
) -> dict[str, Any]:
    return {
        "rle_raw": rle,
        "rle_smoothed": smoothed,
        "rle_norm": norm,
        "E_th": e_th,
        "E_pw": e_pw,
        "stability": sigma,
        "a_load": alpha,
        "t_sustain_s": tau,
        "rolling_peak": peak,
        "collapse": collapse.astype(np.int64),
        "power_estimated": estimated.astype(bool),
    }


def _last_two_finite(values: FloatArray) -> tuple[FloatArray, FloatArray, npt.NDArray[np.int64]]:
    """Last and second-to-last finite value up to each row, and the count of finite values."""
    finite = np.isfinite(values)
    count = np.cumsum(finite)
    compact = values[finite]
    last = np.where(
        count >= 1, compact[np.maximum(count - 1, 0)] if compact.size else np.nan, np.nan
    )
    prev = np.where(
        count >= 2, compact[np.maximum(count - 2, 0)] if compact.size else np.nan, np.nan
    )
    return last, prev, count


def _compute_v03(inputs: FrameInputs, kind: DeviceKind, prof: Profile) -> dict[str, Any]:
    n = inputs.t_rel_s.shape[0]
    t = inputs.t_rel_s
    util = inputs.util_pct
    temp = inputs.temp_c
    rated = resolve_per_row(inputs.rated_w, prof.rated_w(kind), n)
    limit = resolve_per_row(inputs.limit_c, prof.limit_c(kind), n)
    st, th = prof.stability, prof.thermal
    window = min(int(need(st.window_s, "stability.window_s")), V03_HISTORY)
    min_samples = need(st.min_samples, "stability.min_samples")
    rate_floor = need(th.rate_floor, "thermal.rate_floor")
    alpha_floor = need(prof.load.alpha_floor, "load.alpha_floor")

    # σ over the last `window` finite utilisation samples, in percent (§2.2)
    finite_u = np.isfinite(util)
    n_util = np.minimum(np.cumsum(finite_u), V03_HISTORY)
    compact = util[finite_u]
    _, _, std_c = core.windowed_mean_std(
        compact, core.window_starts_by_count(compact.shape[0], window)
    )
    pos = np.cumsum(finite_u) - 1
    std = np.where(pos >= 0, std_c[np.maximum(pos, 0)] if compact.size else np.nan, np.nan)
    sigma = np.where(n_util < min_samples, 1.0, core.stability_from_std(std))

    # τ: one-step difference over the finite temperature history or the synthetic [40, 40] (§2.3)
    last, prev, n_temp = _last_two_finite(temp)
    synthetic = n_temp == 0
    last = np.where(synthetic, V03_SYNTHETIC_TEMP_C, last)
    prev = np.where(synthetic, V03_SYNTHETIC_TEMP_C, prev)
    have_two = synthetic | (n_temp >= 2)
    tau_lo, tau_hi = th.tau_clamp
    dt = 1.0 / max(1, int(prof.sample_hz))
    tau = core.tau_one_step(last, prev, have_two, limit, dt, rate_floor, tau_lo, tau_hi)

    power, estimated = _power(inputs, kind, prof, rated)
    alpha = power / rated
    eta = util / 100.0
    rle, e_th, e_pw = core.rle_terms(eta, sigma, alpha, tau, alpha_floor)
    smoothed = core.windowed_mean(rle, core.window_starts_by_count(n, int(prof.smooth.window_s)))
    if prof.norm.enabled:
        curve = prof.norm.gpu if kind == "gpu" else prof.norm.cpu
        norm = core.rle_norm(smoothed, util, curve)
    else:
        norm = np.full(n, np.nan)

    with np.errstate(invalid="ignore"):
        rise = np.where(have_two, last - prev, np.nan)
    peak, collapse = detect_legacy_v03(
        t_s=t,
        util_pct=util,
        alpha=alpha,
        temp_c=temp,
        limit_c=limit,
        temp_rise_c=rise,
        have_two_temps=have_two,
        tau_s=tau,
        rle_smoothed=smoothed,
        params=prof.collapse,
    )
    cols = _columns(rle, smoothed, norm, e_th, e_pw, sigma, alpha, tau, peak, collapse, estimated)
    if kind == "cpu" and inputs.cpu_freq_ghz is not None:
        freq = inputs.cpu_freq_ghz
        with np.errstate(divide="ignore", invalid="ignore"):
            cpj = np.where((freq > 0) & (power > 0), freq * 1e9 / power, np.nan)
        cols["cycles_per_joule"] = cpj
    return cols


def v2_history_length(n: int) -> npt.NDArray[np.int64]:
    """History length of the v2 monitor after each sample (cut to 500 when it exceeds 1000)."""
    i = np.arange(n, dtype=np.int64)
    return np.where(i < 1000, i + 1, 500 + (i - 1000) % 501)


def _compute_v2(inputs: FrameInputs, kind: DeviceKind, prof: Profile) -> dict[str, Any]:
    n = inputs.t_rel_s.shape[0]
    util = np.where(np.isnan(inputs.util_pct), V2_MISSING_UTIL_PCT, inputs.util_pct)
    temp = np.where(np.isnan(inputs.temp_c), V2_MISSING_TEMP_C, inputs.temp_c)
    limit = resolve_per_row(inputs.limit_c, prof.limit_c(kind), n)
    alpha_c = need(prof.load.constant_alpha, "load.constant_alpha")
    tau_lo, tau_hi = prof.thermal.tau_clamp
    window = int(prof.smooth.window_s)
    decay = 0.5 ** (1.0 / prof.collapse.peak_half_life_s)
    hist = v2_history_length(n)

    def shifted(x: FloatArray, k: int, fill: float = np.nan) -> FloatArray:
        if k == 0:
            return x
        out = np.full_like(x, fill)
        out[k:] = x[:-k]
        return out

    eta = util / 100.0
    with np.errstate(divide="ignore", invalid="ignore"):
        sigma = np.maximum(0.0, (limit - temp) / limit)
    tau = core.tau_two_step(temp, shifted(temp, 2), hist, limit, tau_lo, tau_hi)
    with np.errstate(divide="ignore", invalid="ignore"):
        th = 1.0 + 1.0 / tau
        rle = np.where(tau > 0, (eta * sigma) / (alpha_c * th), 0.0)
        e_th = np.where(tau > 0, sigma / th, 0.0)
    e_pw = eta / alpha_c

    total = np.zeros(n)
    best = np.full(n, -np.inf)
    for k in range(window):
        t_k = shifted(temp, k)
        tau_k = core.tau_two_step(t_k, shifted(temp, k + 2), hist - k, limit, tau_lo, tau_hi)
        with np.errstate(invalid="ignore"):
            sig_k = np.maximum(0.0, (limit - t_k) / limit)
            r_k = (shifted(eta, k) * sig_k) / (alpha_c * (1.0 + 1.0 / np.maximum(1.0, tau_k)))
        total = total + r_k
        best = np.maximum(best, r_k)
    full = hist >= window
    smoothed = np.where(full, total / window, rle)
    peak = np.where(full, best * decay, rle)
    with np.errstate(invalid="ignore"):
        collapse = rle < prof.collapse.drop_frac * peak

    first = hist < 2
    zero = np.zeros(n)
    return _columns(
        np.where(first, 0.0, rle),
        np.where(first, 0.0, smoothed),
        np.full(n, np.nan),
        np.where(first, 0.0, e_th),
        np.where(first, 0.0, e_pw),
        np.where(first, 0.0, sigma),
        np.full(n, alpha_c),
        np.where(first, 0.0, tau),
        np.where(first, 0.0, peak),
        np.where(first, False, collapse),
        zero.astype(bool),
    )


def need(value: float | None, key: str) -> float:
    """Return a profile value that the chosen formula requires (validated profiles have it)."""
    if value is None:
        raise MetricInputError(f"metric parameter {key!r} is required by this profile")
    return float(value)
