"""Formulas (core) and the batch ``compute`` (inputs, outputs, missing data, errors)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest

from rle.errors import MetricInputError
from rle.metric import OUTPUT_COLUMNS, compute, core, get_profile

# ---------------------------------------------------------------------------------------------
# Formulas
# ---------------------------------------------------------------------------------------------


def test_rle_terms_identity_and_floor() -> None:
    eta = np.array([0.9, 0.5, 0.0, 0.7])
    sigma = np.array([1.0, 0.5, 0.8, 0.9])
    alpha = np.array([0.6, 0.0, 0.4, np.nan])
    tau = np.array([600.0, 1.0, 30.0, 600.0])
    rle, e_th, e_pw = core.rle_terms(eta, sigma, alpha, tau, 1e-3)
    np.testing.assert_allclose(rle[:3], (e_th * e_pw)[:3], rtol=1e-15)
    assert e_pw[1] == pytest.approx(0.5 / 1e-3)  # α floored in the denominator only
    assert e_th[1] == pytest.approx(0.5 / 2.0)  # τ = 1 s halves E_th
    assert np.isnan(rle[3])
    assert np.isnan(e_pw[3])
    assert not np.isnan(e_th[3])
    for i in range(4):
        s = core.rle_terms_scalar(eta[i], sigma[i], alpha[i], tau[i], 1e-3)
        np.testing.assert_allclose(s, (rle[i], e_th[i], e_pw[i]), rtol=1e-15)


def test_tau_from_slope_rules() -> None:
    temp = np.array([70.0, 70.0, 85.0, 70.0, 70.0, np.nan, 70.0])
    slope = np.array([0.5, 0.0, 1.0, np.nan, 1e-3, 1.0, 100.0])
    limit = np.array([80.0, 80.0, 80.0, 80.0, 80.0, 80.0, 80.0])
    tau = core.tau_from_slope(temp, slope, limit, 1e-3, 1.0, 600.0)
    np.testing.assert_array_equal(tau[:5], [20.0, 600.0, 1.0, 600.0, 600.0])
    assert np.isnan(tau[5])
    assert tau[6] == 1.0  # clamped below
    for i in range(len(temp)):
        s = core.tau_from_slope_scalar(temp[i], slope[i], limit[i], 1e-3, 1.0, 600.0)
        assert s == tau[i] or (math.isnan(s) and math.isnan(tau[i]))
    assert np.isnan(
        core.tau_from_slope(
            np.array([70.0]), np.array([1.0]), np.array([np.nan]), 1e-3, 1.0, 600.0
        )[0]
    )


def test_tau_one_step_is_binary_on_integer_sensors() -> None:
    # a 1 °C rise at 1 Hz gives τ = T_limit − T; any other step gives the cap (§2.3)
    assert core.tau_one_step_scalar([73.0, 74.0], 83.0, 1.0, 1e-3, 1.0, 600.0) == 9.0
    assert core.tau_one_step_scalar([74.0, 74.0], 83.0, 1.0, 1e-3, 1.0, 600.0) == 600.0
    assert core.tau_one_step_scalar([75.0, 74.0], 83.0, 1.0, 1e-3, 1.0, 600.0) == 600.0
    assert core.tau_one_step_scalar([82.5, 82.7], 83.0, 1.0, 1e-3, 1.0, 600.0) == pytest.approx(1.5)
    assert core.tau_one_step_scalar([83.0, 84.0], 83.0, 1.0, 1e-3, 1.0, 600.0) == 1.0  # over
    assert core.tau_one_step_scalar([74.0], 83.0, 1.0, 1e-3, 1.0, 600.0) == 600.0
    # nominal dt: at 2 Hz the same step is twice the rate
    assert core.tau_one_step_scalar([73.0, 74.0], 83.0, 0.5, 1e-3, 1.0, 600.0) == 4.5
    vec = core.tau_one_step(
        np.array([74.0, 74.0]),
        np.array([73.0, np.nan]),
        np.array([True, False]),
        np.array([83.0, 83.0]),
        1.0,
        1e-3,
        1.0,
        600.0,
    )
    np.testing.assert_array_equal(vec, [9.0, 600.0])


def test_tau_two_step_rules() -> None:
    f = core.tau_two_step_scalar
    assert f([56.0], 83.0, 0.0, 600.0) == 600.0
    assert f([56.0, 57.0], 83.0, 0.0, 600.0) == 600.0  # fewer than 3 temperatures
    assert f([56.0, 56.0, 57.0], 83.0, 0.0, 600.0) == 52.0
    assert f([57.0, 56.0, 56.0], 83.0, 0.0, 600.0) == 600.0  # cooling
    assert f([80.0, 82.0, 83.0], 83.0, 0.0, 600.0) == 0.0  # at the limit
    temps = np.array([56.0, 56.0, 57.0, 83.0])
    vec = core.tau_two_step(
        temps,
        np.array([np.nan, np.nan, 56.0, 56.0]),
        np.array([1, 2, 3, 4]),
        np.full(4, 83.0),
        0.0,
        600.0,
    )
    np.testing.assert_array_equal(vec, [600.0, 600.0, 52.0, 0.0])


def test_expected_rle_and_norm() -> None:
    p = get_profile("legacy_v03")
    assert core.expected_rle_scalar(100.0, p.norm.cpu) == pytest.approx(0.15)
    assert core.expected_rle_scalar(100.0, p.norm.gpu) == pytest.approx(0.05)
    assert core.expected_rle_scalar(60.0, p.norm.gpu) == pytest.approx(3.0)
    assert core.expected_rle_scalar(0.0, p.norm.gpu) == pytest.approx(0.1)
    assert core.expected_rle_scalar(81.0, p.norm.gpu) == pytest.approx(1.45125)
    u = np.array([0.0, 30.0, 60.0, 81.0, 100.0])
    np.testing.assert_allclose(
        core.expected_rle(u, p.norm.gpu), [core.expected_rle_scalar(x, p.norm.gpu) for x in u]
    )
    norm = core.rle_norm(
        np.array([10.0, 0.062870, np.nan]), np.array([50.0, 81.0, 50.0]), p.norm.gpu
    )
    assert norm[0] == 1.0  # clamped
    assert norm[1] == pytest.approx(0.043321, rel=1e-5)
    assert np.isnan(norm[2])


def test_windowed_statistics_match_brute_force() -> None:
    rng = np.random.default_rng(1)
    t = np.cumsum(rng.uniform(0.1, 3.0, 300))
    x = rng.normal(50, 10, 300)
    x[rng.random(300) < 0.2] = np.nan
    starts = core.window_starts_by_time(t, 10.0)
    count, mean, std = core.windowed_mean_std(x, starts)
    slope = core.windowed_ols_slope(t, x, starts)
    for i in range(300):
        sel = (t > t[i] - 10.0) & (t <= t[i]) & np.isfinite(x)
        assert count[i] == sel.sum()
        if sel.sum() == 0:
            assert np.isnan(mean[i])
            continue
        assert mean[i] == pytest.approx(x[sel].mean(), rel=1e-12)
        assert std[i] == pytest.approx(x[sel].std(), rel=1e-9, abs=1e-12)
        if sel.sum() >= 2:
            assert slope[i] == pytest.approx(np.polyfit(t[sel], x[sel], 1)[0], rel=1e-7, abs=1e-12)
        else:
            assert np.isnan(slope[i])


def test_windowed_statistics_by_count() -> None:
    x = np.arange(10, dtype=float)
    starts = core.window_starts_by_count(10, 3)
    np.testing.assert_array_equal(starts, [0, 0, 0, 1, 2, 3, 4, 5, 6, 7])
    np.testing.assert_allclose(core.windowed_mean(x, starts)[2:], np.arange(1, 9))


def test_ols_slope_exact_line() -> None:
    t = np.arange(40, dtype=float)
    temp = 60.0 + 0.25 * t
    slope = core.windowed_ols_slope(t, temp, core.window_starts_by_time(t, 30.0))
    assert np.isnan(slope[0])
    np.testing.assert_allclose(slope[1:], 0.25, rtol=1e-12)
    assert core.ols_slope_scalar(list(t[-5:]), list(temp[-5:]), t[-1]) == pytest.approx(0.25)


# ---------------------------------------------------------------------------------------------
# compute(): outputs and missing data (default profile)
# ---------------------------------------------------------------------------------------------


def test_compute_returns_input_plus_outputs(make_frame: Any) -> None:
    frame = make_frame([80.0] * 20, 65.0, 200.0).set_index(pd.RangeIndex(100, 120))
    frame["extra"] = "x"
    before = frame.copy()
    out = compute(frame, device="gpu_0", rated_w=300.0, limit_c=87.0)
    pd.testing.assert_frame_equal(frame, before)  # input untouched
    assert list(out.columns) == [*frame.columns, *OUTPUT_COLUMNS]
    assert out.index.equals(frame.index)
    assert out["collapse"].dtype == np.int64
    assert out["power_estimated"].dtype == bool
    assert out["rle_norm"].isna().all()  # default has no rle_norm
    # constant load, steady temperature: σ = 1, τ = 600, RLE = η/α · 600/601
    last = out.iloc[-1]
    assert last["stability"] == 1.0
    assert last["t_sustain_s"] == 600.0
    assert last["rle_raw"] == pytest.approx(0.8 / (200 / 300) * 600 / 601, rel=1e-12)
    assert last["E_pw"] > 1.0  # RLE and E_pw are unbounded above


def test_stability_uses_fractions_and_seconds(make_frame: Any) -> None:
    util = [50.0, 70.0] * 10
    out = compute(make_frame(util, 60.0, 100.0), device="gpu", rated_w=200, limit_c=83)
    # window 10 s at 1 Hz: 10 samples alternating 0.5/0.7 ⇒ std 0.1 (fraction)
    assert out["stability"].iloc[-1] == pytest.approx(1 / 1.1)
    assert (out["stability"].iloc[:4] == 1.0).all()  # fewer than 5 samples
    # at 2 Hz the same 10 s window holds 20 samples: the window is time, not a count
    out2 = compute(
        make_frame(util * 2, 60.0, 100.0, dt_s=0.5), device="gpu", rated_w=200, limit_c=83
    )
    assert out2["stability"].iloc[-1] == pytest.approx(1 / 1.1)
    assert out2["stability"].iloc[4] == pytest.approx(1 / (1 + np.std([0.5, 0.7, 0.5, 0.7, 0.5])))


def test_tau_uses_ols_slope_on_measured_time(make_frame: Any) -> None:
    temps = 60.0 + 0.5 * np.arange(40)
    out = compute(make_frame([90.0] * 40, temps, 250.0), device="gpu", rated_w=300, limit_c=90)
    # slope 0.5 °C/s: τ = (90 − T)/0.5
    np.testing.assert_allclose(out["t_sustain_s"].iloc[5:], (90 - temps[5:]) / 0.5, rtol=1e-9)
    assert out["t_sustain_s"].iloc[0] == 600.0  # one point: no slope
    # irregular sampling: same physical ramp, same τ
    dt = np.where(np.arange(39) % 2 == 0, 0.5, 1.5)
    t = np.concatenate(([0.0], np.cumsum(dt)))
    out2 = compute(
        make_frame([90.0] * 40, 60.0 + 0.5 * t, 250.0, dt_s=dt),
        device="gpu",
        rated_w=300,
        limit_c=90,
    )
    np.testing.assert_allclose(
        out2["t_sustain_s"].iloc[5:], (90 - (60 + 0.5 * t[5:])) / 0.5, rtol=1e-9
    )


def test_at_or_over_limit_tau_is_one(make_frame: Any) -> None:
    out = compute(
        make_frame([90.0] * 5, [88.0, 89.0, 90.0, 91.0, 90.0], 250.0),
        device="gpu",
        rated_w=300,
        limit_c=90,
    )
    np.testing.assert_array_equal(out["t_sustain_s"].iloc[2:], [1.0, 1.0, 1.0])
    assert out["E_th"].iloc[3] == pytest.approx(out["stability"].iloc[3] / 2)


def test_missing_power_gives_nan_never_an_estimate(make_frame: Any) -> None:
    frame = make_frame([60.0] * 8, 60.0, [100.0, np.nan, 100.0, 100.0, np.nan, 100, 100, 100])
    out = compute(frame, device="gpu", rated_w=200, limit_c=83)
    assert out["rle_raw"].isna().tolist() == [False, True, False, False, True, False, False, False]
    assert out["a_load"].isna().sum() == 2
    assert out["E_pw"].isna().sum() == 2
    assert out["E_th"].notna().all()  # the thermal split does not need power
    assert out["rle_smoothed"].notna().all()  # mean of the finite values in the window
    assert not out["power_estimated"].any()


def test_cpu_without_power_source(make_frame: Any) -> None:
    frame = make_frame([40.0, 50.0, 60.0], np.nan, np.nan)
    out = compute(frame, device="cpu", rated_w=125.0)
    assert out["rle_raw"].isna().all()
    assert out["a_load"].isna().all()
    est = compute(
        frame, device="cpu", rated_w=125.0, **{"load.cpu_power_fallback": "rated_times_util"}
    )
    np.testing.assert_allclose(est["a_load"], [0.4, 0.5, 0.6], rtol=1e-12)
    np.testing.assert_allclose(est["E_pw"], 1.0, rtol=1e-12)  # α ≡ η
    assert est["power_estimated"].all()
    # a measured value is never replaced
    mixed = compute(
        frame.assign(power_w=[50.0, np.nan, 50.0]),
        device="cpu",
        rated_w=125.0,
        **{"load.cpu_power_fallback": "rated_times_util"},
    )
    assert mixed["power_estimated"].tolist() == [False, True, False]
    # the GPU has no fallback
    gpu = compute(
        frame,
        device="gpu",
        rated_w=200,
        limit_c=83,
        **{"load.cpu_power_fallback": "rated_times_util"},
    )
    assert gpu["rle_raw"].isna().all()


def test_missing_temperature_rule(make_frame: Any) -> None:
    temp = [60.0] * 5 + [np.nan] * 5
    out = compute(make_frame([90.0] * 10, temp, 250.0), device="gpu", rated_w=300, limit_c=85)
    assert out["t_sustain_s"].iloc[5:].isna().all()  # τ not logged
    # the 1/τ term uses the cap
    np.testing.assert_allclose(out["E_th"].iloc[5:], out["stability"].iloc[5:] * 600 / 601)
    assert out["rle_raw"].notna().all()


def test_unknown_limit_and_rated_are_nan(make_frame: Any, caplog: pytest.LogCaptureFixture) -> None:
    frame = make_frame([90.0] * 4, 60.0, 250.0)
    with caplog.at_level("WARNING", logger="rle.metric.batch"):
        out = compute(frame, device="gpu_0")  # default GPU: both come from NVML
    assert out["a_load"].isna().all()
    assert out["rle_raw"].isna().all()
    assert out["t_sustain_s"].isna().all()
    assert "rated power" in caplog.text
    assert "thermal limit" in caplog.text


def test_per_row_rated_and_limit_columns(make_frame: Any) -> None:
    frame = make_frame(
        [90.0] * 4,
        60.0 + np.arange(4),
        150.0,
        rated_w=[300.0, 300.0, np.nan, 250.0],
        limit_c=[70.0, 70.0, 70.0, np.nan],
    )
    out = compute(frame, device="gpu", rated_w=200.0, limit_c=80.0)
    np.testing.assert_allclose(out["a_load"], [0.5, 0.5, 0.75, 0.6])  # column, else argument
    assert out["t_sustain_s"].iloc[2] == pytest.approx((70 - 62) / 1.0)
    assert out["t_sustain_s"].iloc[3] == pytest.approx((80 - 63) / 1.0)


def test_datetime_timestamps_tz_aware_naive_and_epoch(make_frame: Any) -> None:
    frame = make_frame([70.0, 80.0, 90.0] * 30, 60.0 + np.arange(90) * 0.1, 200.0, t0=1.7e9)
    epoch = compute(frame, device="gpu", rated_w=300, limit_c=83)
    aware = frame.assign(timestamp=pd.to_datetime(frame["timestamp"], unit="s", utc=True))
    naive = aware.assign(timestamp=aware["timestamp"].dt.tz_localize(None))
    strings = aware.assign(timestamp=aware["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    for other in (aware, naive, strings):
        res = compute(other, device="gpu", rated_w=300, limit_c=83)
        for col in ("rle_raw", "rle_smoothed", "t_sustain_s", "rolling_peak"):
            np.testing.assert_allclose(res[col], epoch[col], rtol=1e-12)


def test_empty_frame(make_frame: Any) -> None:
    out = compute(make_frame([], 60.0, 100.0), device="gpu", rated_w=200, limit_c=83)
    assert len(out) == 0
    assert set(OUTPUT_COLUMNS) <= set(out.columns)


# ---------------------------------------------------------------------------------------------
# compute(): errors
# ---------------------------------------------------------------------------------------------


def test_missing_columns(make_frame: Any) -> None:
    frame = make_frame([50.0], 60.0, 100.0).drop(columns=["temp_c", "power_w"])
    with pytest.raises(MetricInputError, match=r"lacks required columns \['temp_c', 'power_w'\]"):
        compute(frame, device="gpu")


def test_not_a_frame() -> None:
    with pytest.raises(MetricInputError, match="DataFrame"):
        compute([{"timestamp": 0}], device="gpu")  # type: ignore[arg-type]


def test_unsorted_timestamps_name_the_rows(make_frame: Any) -> None:
    frame = make_frame([50.0] * 4, 60.0, 100.0)
    frame.loc[2, "timestamp"] = 0.5
    with pytest.raises(
        MetricInputError, match=r"unsorted \(decreasing\) timestamps at rows \[\(1, 2\)\]"
    ):
        compute(frame, device="gpu", rated_w=200, limit_c=83)


def test_duplicate_timestamps_name_the_rows(make_frame: Any) -> None:
    frame = make_frame([50.0] * 4, 60.0, 100.0).set_index(pd.Index(list("abcd")))
    frame.loc["d", "timestamp"] = frame.loc["c", "timestamp"]
    with pytest.raises(MetricInputError, match=r"duplicate timestamps at rows \[\('c', 'd'\)\]"):
        compute(frame, device="gpu", rated_w=200, limit_c=83)


def test_missing_timestamp(make_frame: Any) -> None:
    frame = make_frame([50.0] * 3, 60.0, 100.0)
    frame.loc[1, "timestamp"] = np.nan
    with pytest.raises(MetricInputError, match=r"missing or infinite values at rows \[1\]"):
        compute(frame, device="gpu", rated_w=200, limit_c=83)
    dt = frame.assign(timestamp=pd.to_datetime(["2025-01-01", None, "2025-01-02"], utc=True))
    with pytest.raises(MetricInputError, match=r"missing values at rows \[1\]"):
        compute(dt, device="gpu", rated_w=200, limit_c=83)


def test_non_numeric_column(make_frame: Any) -> None:
    frame = make_frame([50.0] * 3, 60.0, 100.0).astype({"util_pct": object})
    frame.loc[1, "util_pct"] = "busy"
    with pytest.raises(MetricInputError, match="'util_pct' must be numeric"):
        compute(frame, device="gpu", rated_w=200, limit_c=83)


def test_unknown_device(make_frame: Any) -> None:
    with pytest.raises(MetricInputError, match="unknown device 'tpu'"):
        compute(make_frame([50.0], 60.0, 100.0), device="tpu")


def test_one_device_per_call(make_frame: Any) -> None:
    frame = make_frame([50.0] * 4, 60.0, 100.0).assign(device=["gpu_0", "gpu_0", "cpu", "cpu"])
    with pytest.raises(MetricInputError, match="one device per call"):
        compute(frame, device="gpu_0", rated_w=200, limit_c=83)
    same = frame.assign(device="gpu_0")
    assert len(compute(same, device="gpu_0", rated_w=200, limit_c=83)) == 4


def test_metric_package_is_pure() -> None:
    """rle.metric never imports MLflow, Hydra, Lightning or torch (conventions §3.9)."""
    import subprocess
    import sys

    code = (
        "import sys, rle.metric; "
        "print(','.join(m for m in ('mlflow', 'hydra', 'lightning', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
