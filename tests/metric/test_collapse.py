"""Collapse detectors (§4) and per-device event reporting (§4.5)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest

from rle.errors import MetricInputError
from rle.metric import EVENT_COLUMNS, collapse_events, collapse_summary, compute
from rle.metric.collapse import decaying_peak, held_seconds, run_lengths


def _scenario(n_b: int = 60, *, temp: Any = None, power_b: float = 210.0) -> pd.DataFrame:
    """100 s efficient full load, ``n_b`` s of heating at lower efficiency, 40 s recovery."""
    t = np.arange(100 + n_b + 40, dtype=float)
    b = (t >= 100) & (t < 100 + n_b)
    temps = np.where(b, 62.05 + 0.2 * (t - 100), 60.0)
    return pd.DataFrame(
        {
            "timestamp": 1.7e9 + t,
            "util_pct": np.where(b, 65.0, 100.0),
            "temp_c": temps if temp is None else temp,
            "power_w": np.where(b, power_b, 150.0),
        }
    )


GPU = {"rated_w": 300.0, "limit_c": 80.0}


def test_decaying_peak_matches_recursion() -> None:
    rng = np.random.default_rng(7)
    n = 500
    age = np.cumsum(rng.uniform(0.1, 5.0, n))
    values = rng.uniform(0, 2, n)
    values[rng.random(n) < 0.1] = np.nan
    values[rng.random(n) < 0.05] = 0.0
    eligible = age > age[50]
    peak = decaying_peak(values, age, 20.0, eligible)
    prev, prev_age = 0.0, age[0]
    for i in range(n):
        decayed = prev * 2.0 ** (-(age[i] - prev_age) / 20.0)
        expected = max(values[i], decayed) if eligible[i] and values[i] >= 0 else decayed
        assert peak[i] == pytest.approx(expected, rel=1e-12, abs=1e-300)
        prev, prev_age = expected, age[i]


def test_held_seconds_and_run_lengths() -> None:
    t = np.array([0.0, 1.0, 2.5, 3.0, 7.0, 8.0, 9.0])
    cond = np.array([True, True, False, True, True, True, False])
    np.testing.assert_array_equal(held_seconds(t, cond), [0.0, 1.0, 0.0, 0.5, 4.5, 5.5, 0.0])
    np.testing.assert_array_equal(run_lengths(cond), [1, 2, 0, 1, 2, 3, 0])


def test_default_detector_fires_after_hysteresis_with_evidence() -> None:
    out = compute(_scenario(), device="gpu_0", **GPU)
    flagged = np.flatnonzero(out["collapse"].to_numpy())
    assert flagged.size > 0
    # gated drop from t=100; evidence τ < 60 once T > 68 °C (t ≈ 130); hysteresis 7 s
    first = flagged[0]
    assert out["t_sustain_s"].iloc[first] < 60
    assert out["rle_smoothed"].iloc[first] < 0.65 * out["rolling_peak"].iloc[first]
    assert 107 <= first < 160
    assert out["collapse"].iloc[160:].sum() == 0  # recovered
    # the peak runs from the first sample (no warm-up gap in the default profile)
    assert out["rolling_peak"].iloc[0] == out["rle_smoothed"].iloc[0]


def test_default_detector_needs_warm_up() -> None:
    frame = _scenario()
    shifted = frame.iloc[40:].reset_index(drop=True)  # the drop now starts 60 s after start
    late = compute(shifted, device="gpu_0", **GPU, **{"collapse.warmup_s": 90})
    early = compute(shifted, device="gpu_0", **GPU, **{"collapse.warmup_s": 0})
    assert early["collapse"].sum() > late["collapse"].sum()
    t_rel = shifted["timestamp"] - shifted["timestamp"].iloc[0]
    assert (late["collapse"][t_rel <= 90] == 0).all()


def test_hysteresis_is_in_seconds_not_samples() -> None:
    frame = _scenario()
    at_1hz = compute(frame, device="gpu_0", **GPU)
    # the same physical run sampled at 2 Hz: the first flag comes at the same time
    t = np.arange(0, 200, 0.5)
    b = (t >= 100) & (t < 160)
    fast = pd.DataFrame(
        {
            "timestamp": 1.7e9 + t,
            "util_pct": np.where(b, 65.0, 100.0),
            "temp_c": np.where(b, 62.05 + 0.2 * (t - 100), 60.0),
            "power_w": np.where(b, 210.0, 150.0),
        }
    )
    at_2hz = compute(fast, device="gpu_0", **GPU)
    first_1 = at_1hz["timestamp"].iloc[np.flatnonzero(at_1hz["collapse"])[0]]
    first_2 = at_2hz["timestamp"].iloc[np.flatnonzero(at_2hz["collapse"])[0]]
    assert abs(first_1 - first_2) <= 1.0


def test_no_temperature_disables_detector() -> None:
    out = compute(
        _scenario(temp=np.nan), device="gpu_0", **GPU, **{"collapse.evidence.a_load": 0.5}
    )
    assert out["collapse"].sum() == 0
    assert out["t_sustain_s"].isna().all()


def test_nan_alpha_gives_no_collapse() -> None:
    frame = _scenario()
    frame.loc[100:, "power_w"] = np.nan
    out = compute(frame, device="gpu_0", **GPU)
    assert out["collapse"].iloc[100:].sum() == 0


def test_v03_detector_dead_on_integer_sensors() -> None:
    # whole-degree temperatures rising every third sample never pass the per-sample heat gate
    frame = _scenario()
    frame["temp_c"] = np.floor(frame["temp_c"])
    out = compute(frame, device="gpu", profile="legacy_v03", rated_w=200.0, limit_c=80.0)
    assert out["collapse"].sum() == 0
    assert (out["rolling_peak"].iloc[:61] == 0).all()  # warm-up: 60 s, strict >
    assert out["rolling_peak"].iloc[61] == out["rle_smoothed"].iloc[61]


def test_v03_detector_fires_with_smooth_heating() -> None:
    frame = _scenario(power_b=140.0).assign(power_w=lambda d: np.where(d.power_w > 145, 100, 140))
    out = compute(frame, device="gpu", profile="legacy_v03", limit_c=83.0)
    flagged = np.flatnonzero(out["collapse"].to_numpy())
    assert flagged.size > 0
    assert (out["t_sustain_s"].iloc[flagged] < 60).all()


def test_v2_drop_test_has_no_hysteresis() -> None:
    util = [30.0] * 10 + [10.0] + [30.0] * 5
    frame = pd.DataFrame(
        {"timestamp": np.arange(16.0), "util_pct": util, "temp_c": 56.0, "power_w": 100.0}
    )
    out = compute(frame, device="gpu", profile="legacy_v2")
    assert out["collapse"].tolist() == [0] * 10 + [1] + [0] * 5


# ---------------------------------------------------------------------------------------------
# Events and summary
# ---------------------------------------------------------------------------------------------


def _flags(flags: list[int], *, t: Any = None) -> pd.DataFrame:
    n = len(flags)
    return pd.DataFrame(
        {
            "timestamp": np.arange(n, dtype=float) if t is None else t,
            "collapse": flags,
            "rle_smoothed": np.linspace(1.0, 0.1, n),
        }
    )


def test_collapse_events_rising_edges() -> None:
    frame = _flags([0, 1, 1, 0, 0, 1, 1, 1, 0, 1])
    ev = collapse_events(frame)
    assert list(ev.columns) == list(EVENT_COLUMNS)
    assert ev["start"].tolist() == [1.0, 5.0, 9.0]
    assert ev["end"].tolist() == [3.0, 8.0, 9.0]
    assert ev["duration_s"].tolist() == [2.0, 3.0, 1.0]  # last sample: the median interval
    assert ev["n_samples"].tolist() == [2, 3, 1]
    assert ev["first_index"].tolist() == [1, 5, 9]
    assert ev["last_index"].tolist() == [2, 7, 9]
    assert ev["min_rle_smoothed"].iloc[0] == pytest.approx(frame["rle_smoothed"].iloc[2])


def test_collapse_summary() -> None:
    frame = _flags([0, 1, 1, 0, 0, 1, 1, 1, 0, 1])
    s = collapse_summary(frame)
    assert s == {"collapse_events": 3, "collapse_seconds": 6.0, "collapse_fraction": 0.6}
    assert collapse_summary(_flags([0] * 5)) == {
        "collapse_events": 0,
        "collapse_seconds": 0.0,
        "collapse_fraction": 0.0,
    }
    empty = _flags([])
    assert collapse_summary(empty)["collapse_events"] == 0
    assert collapse_summary(_flags([1]))["collapse_fraction"] == 1.0


def test_events_use_measured_time_with_datetimes() -> None:
    t = pd.to_datetime([0.0, 1.0, 2.0, 10.0, 11.0], unit="s", utc=True)
    frame = _flags([0, 1, 1, 0, 0], t=t)
    ev = collapse_events(frame)
    assert ev["start"].iloc[0] == t[1]
    assert ev["end"].iloc[0] == t[3]
    assert ev["duration_s"].iloc[0] == 9.0  # the stall counts while flagged
    s = collapse_summary(frame)
    assert s["collapse_seconds"] == 9.0
    assert s["collapse_fraction"] == pytest.approx(9.0 / 12.0)


def test_events_per_device_never_pooled() -> None:
    a = _flags([0, 1, 1, 0]).assign(device="gpu_0")
    b = _flags([1, 0, 0, 1]).assign(device="cpu")
    both = pd.concat([a, b], ignore_index=True)
    ev = collapse_events(both)
    assert ev.groupby("device").size().to_dict() == {"cpu": 2, "gpu_0": 1}
    with pytest.raises(MetricInputError, match="per device"):
        collapse_summary(both)
    assert collapse_summary(a)["collapse_events"] == 1


def test_events_need_columns() -> None:
    with pytest.raises(MetricInputError, match="'collapse'"):
        collapse_events(pd.DataFrame({"timestamp": [0.0]}))
    with pytest.raises(MetricInputError, match="duplicate"):
        collapse_summary(pd.DataFrame({"timestamp": [0.0, 0.0], "collapse": [0, 1]}))


def test_summary_of_computed_run() -> None:
    out = compute(_scenario(), device="gpu_0", **GPU)
    s = collapse_summary(out)
    ev = collapse_events(out)
    assert s["collapse_events"] == len(ev) >= 1
    assert s["collapse_seconds"] == pytest.approx(float(out["collapse"].sum()))  # 1 Hz
    assert 0 < s["collapse_fraction"] < 1
    assert not math.isnan(ev["min_rle_smoothed"].iloc[0])
