"""Incremental RLE engine: per-device state and ``update(state, sample) -> (state, point)``.

The live sampler feeds one sample per device per tick; the engine returns the same numbers as
:func:`rle.metric.compute` would for the stream so far (a property test checks it). States are
frozen dataclasses holding only bounded windows, so :func:`update` is a pure function and a state
can be inspected, copied or seeded (``dataclasses.replace``), e.g. from a previous recording.

Usage::

    state = init_state("gpu_0", "default")
    for sample in samples:            # {"timestamp": ..., "util_pct": ..., "temp_c": ..., ...}
        state, point = update(state, sample)

or with the small stateful wrapper :class:`RLEStream`.

A sample is a mapping with ``timestamp`` (datetime or seconds on any clock that is strictly
increasing per device, e.g. ``time.monotonic()``), ``util_pct`` (percent), ``temp_c`` (°C) and
``power_w`` (W); missing keys or ``None`` mean NaN. Optional: ``rated_w`` (W), ``limit_c`` (°C)
(finite positive values override the profile) and ``cpu_freq_ghz``. The point is a ``dict`` with
the keys of :data:`rle.metric.batch.OUTPUT_COLUMNS` (and ``cycles_per_joule`` for
``legacy_v03`` CPUs when ``cpu_freq_ghz`` is given).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from rle.errors import MetricInputError
from rle.metric import core
from rle.metric._inputs import (
    OPTIONAL_COLUMNS,
    REQUIRED_COLUMNS,
    TimeKey,
    relative_seconds,
    resolve_scalar,
    sample_float,
    time_key,
)
from rle.metric.batch import (
    OUTPUT_COLUMNS,
    V03_HISTORY,
    V03_SYNTHETIC_TEMP_C,
    V2_MISSING_TEMP_C,
    V2_MISSING_UTIL_PCT,
    need,
    resolve_profile,
)
from rle.metric.profiles import DeviceKind, Profile, device_kind

__all__ = [
    "DefaultState",
    "LegacyV2State",
    "LegacyV03State",
    "Point",
    "RLEStream",
    "StreamState",
    "init_state",
    "run_stream",
    "update",
]

Point = dict[str, float]

#: v2 monitor: history is cut to ``V2_TRIM_TO`` samples when it exceeds ``V2_TRIM_AT`` (§3).
V2_TRIM_AT = 1000
V2_TRIM_TO = 500

Window = tuple[tuple[float, float], ...]


@dataclass(frozen=True, slots=True)
class _Base:
    """Fields common to every engine state.

    Attributes:
        profile: The resolved profile.
        device: Device name.
        kind: Device kind (``gpu``/``cpu``).
        t_first: Time key of the first sample (process/telemetry start); ``None`` before it.
        t_last_s: Seconds from ``t_first`` to the last sample; ``None`` before the first.
        n: Number of samples seen.
    """

    profile: Profile
    device: str
    kind: DeviceKind
    t_first: TimeKey | None = None
    t_last_s: float | None = None
    n: int = 0


@dataclass(frozen=True, slots=True)
class DefaultState(_Base):
    """State of the ``default`` engine (§2.8, §4.4); windows hold ``(t_s, value)`` pairs.

    Attributes:
        spread_window: Finite utilisation values (fraction or percent, per
            ``stability.kind``) of the last ``stability.window_s`` seconds.
        temp_window: Finite temperatures (°C) of the last ``thermal.slope_window_s`` seconds.
        rle_window: Finite ``rle_raw`` of the last ``smooth.window_s`` seconds.
        rolling_peak: Decaying peak after the last sample.
        reset_t_s: Time of the last sample where the collapse condition failed (``held_s`` is
            measured from it); ``None`` if it never failed.
    """

    spread_window: Window = ()
    temp_window: Window = ()
    rle_window: Window = ()
    rolling_peak: float = 0.0
    reset_t_s: float | None = None


@dataclass(frozen=True, slots=True)
class LegacyV03State(_Base):
    """State of the ``legacy_v03`` engine (§2.2-§2.7, §4.1).

    Attributes:
        utils: Last ``stability.window_s`` finite utilisations, percent.
        n_utils: Length of the monitor's utilisation history (capped at 120).
        temps: Last two finite temperatures, °C (empty: the synthetic ``[40, 40]`` is used).
        rle_history: Last ``smooth.window_s`` values of ``rle_raw`` (NaN kept).
        rolling_peak: Peak after the last warm sample (0 before warm-up).
        below_count: Consecutive samples of the gated drop (hysteresis counter).
    """

    utils: tuple[float, ...] = ()
    n_utils: int = 0
    temps: tuple[float, ...] = ()
    rle_history: tuple[float, ...] = ()
    rolling_peak: float = 0.0
    below_count: int = 0


@dataclass(frozen=True, slots=True)
class LegacyV2State(_Base):
    """State of the ``legacy_v2`` engine (§3, §4.2).

    Attributes:
        history_len: Length of the monitor's history (cut 1000 → 500).
        utils: Last ``smooth.window_s`` utilisations, percent.
        temps: Last ``smooth.window_s + 2`` temperatures, °C.
    """

    history_len: int = 0
    utils: tuple[float, ...] = ()
    temps: tuple[float, ...] = ()


StreamState = DefaultState | LegacyV03State | LegacyV2State


def init_state(
    device: str,
    profile: str | Profile = "default",
    *,
    rated_w: float | None = None,
    limit_c: float | None = None,
    **overrides: Any,
) -> StreamState:
    """Cold-start state of one device's stream.

    Args:
        device: Device name (``gpu_<i>``/``gpu`` or ``cpu``).
        profile: Profile name or object.
        rated_w: Rated power for this device, W (sets ``load.rated_w.<kind>``).
        limit_c: Thermal limit for this device, °C (sets ``thermal.limit_c.<kind>``).
        **overrides: Profile overrides (dotted keys or nested mappings).

    Returns:
        A state for :func:`update`.

    Raises:
        MetricInputError: Unknown device kind, profile or parameter, or a value out of range.
    """
    kind = device_kind(device)
    prof = resolve_profile(
        profile, kind=kind, rated_w=rated_w, limit_c=limit_c, overrides=overrides
    )
    if prof.name == "default":
        return DefaultState(profile=prof, device=device, kind=kind)
    if prof.name == "legacy_v03":
        return LegacyV03State(profile=prof, device=device, kind=kind)
    return LegacyV2State(profile=prof, device=device, kind=kind)


def _advance(state: _Base, sample: Mapping[str, Any]) -> tuple[TimeKey, float]:
    if not isinstance(sample, Mapping):
        raise MetricInputError(f"a sample must be a mapping, got {type(sample).__name__}")
    if "timestamp" not in sample:
        raise MetricInputError("sample lacks 'timestamp'")
    key = time_key(sample["timestamp"])
    first = key if state.t_first is None else state.t_first
    t = relative_seconds(key, first)
    if state.t_last_s is not None and not t > state.t_last_s:
        what = "duplicate" if t == state.t_last_s else "unsorted (decreasing)"
        raise MetricInputError(
            f"{what} timestamp {sample['timestamp']!r} for device {state.device!r}: samples must "
            "be strictly increasing in time"
        )
    return first, t


def _prune(window: Window, cutoff: float) -> Window:
    k = 0
    n = len(window)
    while k < n and window[k][0] <= cutoff:
        k += 1
    return window[k:] if k else window


def _power(
    power: float, util: float, rated: float, kind: DeviceKind, fallback: str | None
) -> tuple[float, bool]:
    if not math.isnan(power) or kind != "cpu" or fallback in (None, "none"):
        return power, False
    if fallback == "zero":
        return 0.0, False
    est = rated * (util / 100.0)
    return est, not math.isnan(est)


def _update_default(state: DefaultState, sample: Mapping[str, Any]) -> tuple[DefaultState, Point]:
    prof = state.profile
    st, th, cp = prof.stability, prof.thermal, prof.collapse
    first, t = _advance(state, sample)
    util = sample_float(sample, "util_pct")
    temp = sample_float(sample, "temp_c")
    rated = resolve_scalar(sample_float(sample, "rated_w"), prof.rated_w(state.kind))
    limit = resolve_scalar(sample_float(sample, "limit_c"), prof.limit_c(state.kind))

    # σ (§2.8)
    eta = util / 100.0
    spread = util if st.kind == "std_percent" else eta
    win = _prune(state.spread_window, t - need(st.window_s, "stability.window_s"))
    if not math.isnan(spread):
        win = (*win, (t, spread))
    if len(win) < need(st.min_samples, "stability.min_samples"):
        sigma = 1.0
    else:
        sigma = 1.0 / (1.0 + core.mean_std_scalar([v for _, v in win])[1])

    # τ from the OLS slope (§2.8)
    temps = _prune(state.temp_window, t - need(th.slope_window_s, "thermal.slope_window_s"))
    if not math.isnan(temp):
        temps = (*temps, (t, temp))
    slope = core.ols_slope_scalar([x for x, _ in temps], [y for _, y in temps], t)
    tau_lo, tau_hi = th.tau_clamp
    tau = core.tau_from_slope_scalar(
        temp, slope, limit, need(th.rate_floor, "thermal.rate_floor"), tau_lo, tau_hi
    )
    tau_eff = tau_hi if math.isnan(tau) else tau

    power, estimated = _power(
        sample_float(sample, "power_w"), util, rated, state.kind, prof.load.cpu_power_fallback
    )
    alpha = power / rated
    rle, e_th, e_pw = core.rle_terms_scalar(
        eta, sigma, alpha, tau_eff, need(prof.load.alpha_floor, "load.alpha_floor")
    )
    rles = _prune(state.rle_window, t - prof.smooth.window_s)
    if not math.isnan(rle):
        rles = (*rles, (t, rle))
    smoothed = sum(v for _, v in rles) / len(rles) if rles else math.nan

    # detector (§4.4)
    dt = 0.0 if state.t_last_s is None else t - state.t_last_s
    decayed = state.rolling_peak * 2.0 ** (-dt / cp.peak_half_life_s)
    peak = max(smoothed, decayed) if smoothed >= 0 else decayed
    gate, ev = cp.gate, cp.evidence
    if gate is None or ev is None:
        raise MetricInputError("the default collapse detector needs gate and evidence parameters")
    cond = (
        math.isfinite(temp)
        and math.isfinite(limit)
        and math.isfinite(alpha)
        and (util > gate.util_pct or alpha > gate.a_load)
        and slope > gate.heat_rate_c_per_s
        and smoothed < cp.drop_frac * peak
    )
    reset = state.reset_t_s
    if cond:
        held = t - (reset if reset is not None else 0.0)
    else:
        held = 0.0
        reset = t
    evidence = tau < ev.tau_s or temp > limit - ev.temp_margin_c or alpha > ev.a_load
    collapse = t > cp.warmup_s and cond and held >= cp.hysteresis_s and evidence

    new = DefaultState(
        profile=prof,
        device=state.device,
        kind=state.kind,
        t_first=first,
        t_last_s=t,
        n=state.n + 1,
        spread_window=win,
        temp_window=temps,
        rle_window=rles,
        rolling_peak=peak,
        reset_t_s=reset,
    )
    point: Point = {
        "rle_raw": rle,
        "rle_smoothed": smoothed,
        "rle_norm": math.nan,
        "E_th": e_th,
        "E_pw": e_pw,
        "stability": sigma,
        "a_load": alpha,
        "t_sustain_s": tau,
        "rolling_peak": peak,
        "collapse": int(collapse),
        "power_estimated": estimated,
    }
    return new, point


def _update_v03(state: LegacyV03State, sample: Mapping[str, Any]) -> tuple[LegacyV03State, Point]:
    prof = state.profile
    st, th, cp = prof.stability, prof.thermal, prof.collapse
    first, t = _advance(state, sample)
    util = sample_float(sample, "util_pct")
    temp = sample_float(sample, "temp_c")
    rated = resolve_scalar(sample_float(sample, "rated_w"), prof.rated_w(state.kind))
    limit = resolve_scalar(sample_float(sample, "limit_c"), prof.limit_c(state.kind))

    window = min(int(need(st.window_s, "stability.window_s")), V03_HISTORY)
    utils = state.utils
    n_utils = state.n_utils
    if not math.isnan(util):
        utils = (*utils, util)[-window:]
        n_utils = min(n_utils + 1, V03_HISTORY)
    if n_utils < need(st.min_samples, "stability.min_samples"):
        sigma = 1.0
    else:
        sigma = 1.0 / (1.0 + core.mean_std_scalar(utils)[1])

    temps = state.temps if math.isnan(temp) else (*state.temps, temp)[-2:]
    hist = temps if temps else (V03_SYNTHETIC_TEMP_C, V03_SYNTHETIC_TEMP_C)
    tau_lo, tau_hi = th.tau_clamp
    dt = 1.0 / max(1, int(prof.sample_hz))
    rate_floor = need(th.rate_floor, "thermal.rate_floor")
    tau = core.tau_one_step_scalar(hist, limit, dt, rate_floor, tau_lo, tau_hi)

    power, estimated = _power(
        sample_float(sample, "power_w"), util, rated, state.kind, prof.load.cpu_power_fallback
    )
    alpha = power / rated
    eta = util / 100.0
    rle, e_th, e_pw = core.rle_terms_scalar(
        eta, sigma, alpha, tau, need(prof.load.alpha_floor, "load.alpha_floor")
    )
    history = (*state.rle_history, rle)[-int(prof.smooth.window_s) :]
    finite = [v for v in history if not math.isnan(v)]
    smoothed = sum(finite) / len(finite) if finite else math.nan
    if prof.norm.enabled:
        curve = prof.norm.gpu if state.kind == "gpu" else prof.norm.cpu
        norm = core.rle_norm_scalar(smoothed, util, curve)
    else:
        norm = math.nan

    gate, ev = cp.gate, cp.evidence
    if gate is None or ev is None:
        raise MetricInputError("the v0.3 collapse detector needs gate and evidence parameters")
    warm = t > cp.warmup_s
    peak = state.rolling_peak
    count = state.below_count
    collapse = False
    if warm:
        decayed = peak * 0.5 ** (1.0 / cp.peak_half_life_s)
        peak = max(smoothed, decayed) if smoothed >= 0 else decayed
        under = util > gate.util_pct or alpha > gate.a_load
        heat = len(hist) >= 2 and hist[-1] - hist[-2] > gate.heat_rate_c_per_s
        cond = under and heat and smoothed < cp.drop_frac * peak
        count = count + 1 if cond else 0
        evidence = (
            tau < ev.tau_s
            or (not math.isnan(temp) and temp > limit - ev.temp_margin_c)
            or alpha > ev.a_load
        )
        collapse = cond and count >= cp.hysteresis_s and evidence

    new = LegacyV03State(
        profile=prof,
        device=state.device,
        kind=state.kind,
        t_first=first,
        t_last_s=t,
        n=state.n + 1,
        utils=utils,
        n_utils=n_utils,
        temps=temps,
        rle_history=history,
        rolling_peak=peak,
        below_count=count,
    )
    point: Point = {
        "rle_raw": rle,
        "rle_smoothed": smoothed,
        "rle_norm": norm,
        "E_th": e_th,
        "E_pw": e_pw,
        "stability": sigma,
        "a_load": alpha,
        "t_sustain_s": tau,
        "rolling_peak": peak if warm else 0.0,
        "collapse": int(collapse),
        "power_estimated": estimated,
    }
    if state.kind == "cpu" and "cpu_freq_ghz" in sample:
        freq = sample_float(sample, "cpu_freq_ghz")
        point["cycles_per_joule"] = freq * 1e9 / power if freq > 0 and power > 0 else math.nan
    return new, point


def _update_v2(state: LegacyV2State, sample: Mapping[str, Any]) -> tuple[LegacyV2State, Point]:
    prof = state.profile
    first, t = _advance(state, sample)
    util = sample_float(sample, "util_pct")
    temp = sample_float(sample, "temp_c")
    util = V2_MISSING_UTIL_PCT if math.isnan(util) else util
    temp = V2_MISSING_TEMP_C if math.isnan(temp) else temp
    limit = resolve_scalar(sample_float(sample, "limit_c"), prof.limit_c(state.kind))
    alpha = need(prof.load.constant_alpha, "load.constant_alpha")
    tau_lo, tau_hi = prof.thermal.tau_clamp
    window = int(prof.smooth.window_s)

    hist_len = state.history_len + 1
    if hist_len > V2_TRIM_AT:
        hist_len = V2_TRIM_TO
    utils = (*state.utils, util)[-window:]
    temps = (*state.temps, temp)[-(window + 2) :]

    def tau_at(k: int) -> float:
        """τ rule over the history ending ``k`` samples back (at most 3 temperatures matter)."""
        n_temps = hist_len - k
        end = len(temps) - k
        recent = temps[max(0, end - 3) : end]
        if n_temps < 3:
            recent = recent[-n_temps:] if n_temps > 0 else ()
        return core.tau_two_step_scalar(recent, limit, tau_lo, tau_hi)

    point: Point
    if hist_len < 2:
        point = dict.fromkeys(OUTPUT_COLUMNS, 0.0)
        point.update(rle_norm=math.nan, a_load=alpha, collapse=0, power_estimated=False)
    else:
        eta = util / 100.0
        sigma = max(0.0, (limit - temp) / limit)
        tau = tau_at(0)
        if tau > 0:
            th = 1.0 + 1.0 / tau
            rle = (eta * sigma) / (alpha * th)
            e_th = sigma / th
        else:
            rle = e_th = 0.0
        if hist_len >= window:
            recent = []
            for k in range(window):
                t_k = temps[len(temps) - 1 - k]
                sig_k = max(0.0, (limit - t_k) / limit)
                eta_k = utils[len(utils) - 1 - k] / 100.0
                recent.append((eta_k * sig_k) / (alpha * (1.0 + 1.0 / max(1.0, tau_at(k)))))
            smoothed = sum(recent) / window
            peak = max(recent) * 0.5 ** (1.0 / prof.collapse.peak_half_life_s)
        else:
            smoothed = peak = rle
        point = {
            "rle_raw": rle,
            "rle_smoothed": smoothed,
            "rle_norm": math.nan,
            "E_th": e_th,
            "E_pw": eta / alpha,
            "stability": sigma,
            "a_load": alpha,
            "t_sustain_s": tau,
            "rolling_peak": peak,
            "collapse": int(rle < prof.collapse.drop_frac * peak),
            "power_estimated": False,
        }
    new = LegacyV2State(
        profile=prof,
        device=state.device,
        kind=state.kind,
        t_first=first,
        t_last_s=t,
        n=state.n + 1,
        history_len=hist_len,
        utils=utils,
        temps=temps,
    )
    return new, point


def update(state: StreamState, sample: Mapping[str, Any]) -> tuple[StreamState, Point]:
    """Feed one sample of one device; return the new state and the sample's RLE point.

    Args:
        state: State from :func:`init_state` or a previous call (not modified).
        sample: Mapping with ``timestamp`` and ``util_pct``/``temp_c``/``power_w`` (missing or
            ``None`` = NaN); optional ``rated_w``, ``limit_c``, ``cpu_freq_ghz``.

    Returns:
        ``(new_state, point)``; ``point`` maps ``rle_raw``, ``rle_smoothed``, ``rle_norm``,
        ``E_th``, ``E_pw``, ``stability``, ``a_load``, ``t_sustain_s``, ``rolling_peak`` to
        floats, ``collapse`` to 0/1 and ``power_estimated`` to a bool.

    Raises:
        MetricInputError: Missing/invalid timestamp, a timestamp not after the previous one, or
            a non-numeric field.
    """
    if isinstance(state, DefaultState):
        return _update_default(state, sample)
    if isinstance(state, LegacyV03State):
        return _update_v03(state, sample)
    if isinstance(state, LegacyV2State):
        return _update_v2(state, sample)
    raise MetricInputError(f"not an RLE stream state: {type(state).__name__}")


class RLEStream:
    """Stateful convenience wrapper around :func:`init_state`/:func:`update` for one device.

    Example:
        >>> stream = RLEStream("gpu_0", rated_w=300.0, limit_c=87.0)
        >>> point = stream.update({"timestamp": 0.0, "util_pct": 90.0, "temp_c": 60.0,
        ...                        "power_w": 250.0})
        >>> round(point["rle_raw"], 6)
        1.078203
    """

    def __init__(
        self,
        device: str,
        profile: str | Profile = "default",
        *,
        rated_w: float | None = None,
        limit_c: float | None = None,
        **overrides: Any,
    ) -> None:
        self.state: StreamState = init_state(
            device, profile, rated_w=rated_w, limit_c=limit_c, **overrides
        )

    @classmethod
    def from_state(cls, state: StreamState) -> RLEStream:
        """Wrap an existing (e.g. seeded) state."""
        obj = cls.__new__(cls)
        obj.state = state
        return obj

    @property
    def device(self) -> str:
        """Device name."""
        return self.state.device

    @property
    def profile(self) -> Profile:
        """The resolved profile."""
        return self.state.profile

    def update(self, sample: Mapping[str, Any]) -> Point:
        """Feed one sample and return its point (see :func:`update`)."""
        self.state, point = update(self.state, sample)
        return point

    def seed(self, **fields: Any) -> None:
        """Replace state fields (``dataclasses.replace``), e.g. ``rolling_peak``."""
        self.state = dataclasses.replace(self.state, **fields)


def run_stream(
    frame: pd.DataFrame | Iterable[Mapping[str, Any]],
    *,
    device: str | None = None,
    profile: str | Profile = "default",
    state: StreamState | None = None,
    **overrides: Any,
) -> pd.DataFrame:
    """Run the incremental engine over a frame (or samples) and collect the points.

    Gives the same result as :func:`rle.metric.compute` (for a cold start), sample by sample;
    used for import with a seeded state and in tests.

    Args:
        frame: Samples as a DataFrame (columns as for ``compute``) or an iterable of mappings.
        device: Device name (required unless ``state`` is given).
        profile: Profile name or object (ignored if ``state`` is given).
        state: Start from this state instead of a cold start.
        **overrides: Profile overrides (as for :func:`init_state`).

    Returns:
        For a DataFrame: a copy with the output columns added; otherwise a frame of points.

    Raises:
        MetricInputError: As :func:`update`, or neither ``device`` nor ``state`` given.
    """
    if state is None:
        if device is None:
            raise MetricInputError("run_stream needs a device or a state")
        state = init_state(device, profile, **overrides)
    if isinstance(frame, pd.DataFrame):
        missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
        if missing:
            raise MetricInputError(f"sample frame lacks required columns {missing}")
        cols = [c for c in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS) if c in frame.columns]
        records: Iterable[Mapping[str, Any]] = frame[cols].to_dict("records")
    else:
        records = frame
    points = []
    for sample in records:
        clean = {k: (None if _is_missing(v) else v) for k, v in sample.items()}
        state, point = update(state, clean)
        points.append(point)
    result = pd.DataFrame(points)
    if not isinstance(frame, pd.DataFrame):
        return result
    out = frame.copy()
    for name in result.columns if len(result) else OUTPUT_COLUMNS:
        values = result[name].to_numpy() if len(result) else np.zeros(0)
        if name == "collapse":
            values = values.astype(np.int64)
        elif name == "power_estimated":
            values = values.astype(bool)
        else:
            values = values.astype(np.float64)
        out[name] = values
    return out


def _is_missing(value: Any) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False
