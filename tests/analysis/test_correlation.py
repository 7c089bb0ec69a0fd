"""rle.analysis.correlation: known answers for lags, detrending, permutation nulls, spikes, N/A."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from rle.analysis.align import TrainingInterval, step_times, training_interval
from rle.analysis.correlation import (
    CORRELATION_COLUMNS,
    CorrelationSettings,
    Pair,
    SpikeSettings,
    block_permutation_test,
    collapse_event_starts,
    correlate_device,
    detrend,
    grad_norm_spikes,
    identical_training_curves,
    lagged_correlation,
    lagged_correlation_test,
    na_reason,
    parametric_correlation,
    spike_collapse,
)

T0 = 1_700_000_000.0


def _signal(seed: int, seconds: int) -> tuple[np.ndarray, np.ndarray]:
    """A random piecewise-linear signal s(t) with one knot per second."""
    rng = np.random.default_rng(seed)
    return np.arange(seconds + 20, dtype=float) - 10.0, rng.normal(size=seconds + 20)


def _run(
    lag_s: float, seconds: int = 300, seed: int = 1, trend: bool = False
) -> tuple[pd.DataFrame, pd.DataFrame, TrainingInterval]:
    """Steps every 0.4 s with grad_norm = s(t); a 1 Hz device with rle_smoothed = s(t - lag_s)."""
    knots, values = _signal(seed, seconds)
    rng = np.random.default_rng(seed + 100)
    t_steps = np.arange(0.4, seconds, 0.4)
    g = np.interp(t_steps, knots, values)
    t_dev = np.arange(0.0, seconds + 1.0, 1.0) + 0.3
    h = np.interp(t_dev - lag_s, knots, values) + rng.normal(scale=0.1, size=t_dev.size)
    if trend:  # a shared slow trend on top of two independent series
        g = 0.05 * t_steps + rng.normal(scale=0.3, size=t_steps.size)
        h = 0.05 * t_dev + rng.normal(scale=0.3, size=t_dev.size)
    train = pd.DataFrame(
        {"time_s": T0 + t_steps, "train/grad_norm": g, "train/loss": g[::-1].copy()},
        index=pd.Index(np.arange(1, t_steps.size + 1), name="step"),
    )
    dev = pd.DataFrame({"time_s": T0 + t_dev, "rle_smoothed": h, "temp_c": h})
    iv = training_interval(train.reset_index()[["step", "time_s"]])
    assert iv is not None
    return train, dev, iv


FAST = CorrelationSettings(n_permutations=199, seed=3)


def _rows(result_rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(result_rows, columns=list(CORRELATION_COLUMNS))


@pytest.mark.parametrize("planted", [3.0, -2.0])
def test_planted_lag_is_recovered_in_seconds_with_its_sign(planted: float) -> None:
    train, dev, iv = _run(planted)
    out = correlate_device(
        "r", "gpu_0", train, dev, iv, [Pair("train/grad_norm", "rle_smoothed")], FAST, None
    )
    rows = _rows(out.rows)
    assert list(rows.columns) == list(CORRELATION_COLUMNS)
    peak = rows[rows["method"] == "xcorr_diff_peak"].iloc[0]
    # lag > 0: the hardware series follows the training series by that many seconds
    assert peak["lag_s"] == planted
    assert peak["r"] > 0.8
    assert peak["p_value"] < 0.01
    lags = rows[rows["method"] == "xcorr_diff"]
    assert lags["lag_s"].min() == -10.0
    assert lags["lag_s"].max() == 10.0
    assert len(lags) == 21
    at_zero = rows[rows["method"] == "pearson_diff"].iloc[0]
    assert abs(at_zero["r"]) < 0.5  # the coupling is at the lag, not at 0
    assert out.lags[("train/grad_norm", "rle_smoothed")].peak_lag_s == planted


def test_lag_units_follow_the_grid_rate() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=400)
    y = np.roll(x, 6)  # y(t) = x(t - 6 points)
    y[:6] = np.nan
    s = CorrelationSettings(max_lag_s=5.0, block_s=5.0, n_permutations=99)
    res = lagged_correlation_test(x, y, hz=2.0, settings=s)
    assert res.peak_lag_s == 3.0  # 6 points at 2 Hz = 3 s
    assert res.lag_s.min() == -5.0
    assert res.lag_s.max() == 5.0
    table = lagged_correlation(x, y, 8)
    assert int(table.loc[table["r"].idxmax(), "lag"]) == 6


def test_shared_trend_alone_is_not_significant_after_detrending() -> None:
    train, dev, iv = _run(0.0, seconds=200, seed=7, trend=True)
    settings = CorrelationSettings(n_permutations=499, seed=1)
    rows = _rows(
        correlate_device(
            "r", "gpu_0", train, dev, iv, [Pair("train/grad_norm", "rle_smoothed")], settings, None
        ).rows
    )
    raw = rows[rows["method"] == "pearson"].iloc[0]
    assert raw["r"] > 0.8
    assert raw["p_value"] < 1e-6
    assert raw["n"] == 200  # distinct 1 Hz samples in the interval, not the ~500 steps
    for method in ("pearson_diff", "spearman_diff", "xcorr_diff_peak"):
        row = rows[rows["method"] == method].iloc[0]
        assert row["p_value"] > 0.05, method
    linear = CorrelationSettings(n_permutations=499, seed=1, detrend="linear")
    rows_lin = _rows(
        correlate_device(
            "r", "gpu_0", train, dev, iv, [Pair("train/grad_norm", "rle_smoothed")], linear, None
        ).rows
    )
    assert rows_lin[rows_lin["method"] == "pearson_detrended"].iloc[0]["p_value"] > 0.05


def test_block_permutation_is_seeded_and_detects_real_coupling() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=120)
    y = x + rng.normal(scale=0.5, size=120)
    a = block_permutation_test(x, y, [0], 10, 199, np.random.default_rng(9))
    b = block_permutation_test(x, y, [0], 10, 199, np.random.default_rng(9))
    assert a[0].tolist() == b[0].tolist()
    assert a[1] == b[1]
    assert a[0][0] == pytest.approx(1 / 200)  # no permutation reaches the observed |r|
    z = np.random.default_rng(123).normal(size=120)
    p_null = block_permutation_test(x, z, [0], 10, 199, np.random.default_rng(9))[0][0]
    assert p_null > 0.05


def test_detrend_kinds() -> None:
    v = np.array([1.0, 3.0, np.nan, 10.0])
    d = detrend(v, "difference")
    assert np.isnan(d[0])
    assert d[1] == 2.0
    assert np.isnan(d[2])
    assert np.isnan(d[3])
    line = detrend(np.array([1.0, 2.0, 3.0, 4.0]), "linear")
    assert line == pytest.approx([0.0, 0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="detrend"):
        detrend(v, "spline")  # type: ignore[arg-type]


def test_parametric_p_uses_the_effective_n() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=100)
    y = 0.3 * x + rng.normal(size=100)
    full = parametric_correlation(x, y)
    small = parametric_correlation(x, y, n_effective=20)
    assert full["pearson"][0] == small["pearson"][0]
    assert small["pearson"][2] == 20
    assert small["pearson"][1] > full["pearson"][1]


def test_na_cases_say_why() -> None:
    assert na_reason([1, 2], [1, 2], 10) == "N/A: too few points (n=2 < 10)"
    assert na_reason(np.ones(20), np.arange(20.0), 10) == "N/A: x is constant"
    assert na_reason(np.arange(20.0), np.full(20, 3.0), 10) == "N/A: y is constant"
    assert na_reason(np.arange(20.0), np.arange(20.0) ** 2, 10) is None
    res = parametric_correlation(np.ones(20), np.arange(20.0))
    assert math.isnan(res["pearson"][0])
    assert res["pearson"][3] == "N/A: x is constant"
    short = lagged_correlation_test(
        np.arange(30.0) ** 1.5, np.sin(np.arange(30.0)), 1.0, CorrelationSettings(max_lag_s=2)
    )
    assert short.note.startswith("p_value N/A: too few blocks")  # 3 blocks of 10 s
    assert np.isfinite(short.r).all()
    assert np.isnan(short.p_value).all()


def test_missing_device_series_and_constant_series_give_na_rows() -> None:
    train, dev, iv = _run(0.0, seconds=60)
    dev["temp_c"] = 40.0
    rows = _rows(
        correlate_device(
            "r",
            "cpu",
            train,
            dev.drop(columns="rle_smoothed"),
            iv,
            [Pair("train/grad_norm", "rle_smoothed"), Pair("train/grad_norm", "temp_c")],
            FAST,
            None,
        ).rows
    )
    rle = rows[rows["y"] == "rle_smoothed"]
    assert rle["note"].eq("N/A: cpu has no rle_smoothed series").all()
    assert rle["r"].isna().all()
    temp = rows[(rows["y"] == "temp_c") & rows["method"].isin(["pearson", "pearson_diff"])]
    assert temp["note"].str.contains("N/A: y is constant").all()


def test_spike_collapse_matching_on_hand_made_events() -> None:
    t = np.arange(0.0, 100.0)
    g = np.ones(100)
    g[[20, 21, 50, 80]] = [10.0, 12.0, 10.0, 10.0]  # steps 20-21 are one spike at 21 s
    spikes, threshold = grad_norm_spikes(t, g, k=1.0)
    assert spikes.tolist() == [21.0, 50.0, 80.0]
    assert threshold == pytest.approx(g.mean() + g.std(ddof=1))
    res = spike_collapse(
        t, g, [24.0, 70.0, 150.0], (0.0, 100.0), SpikeSettings(k=1.0, window_s=5.0)
    )
    assert (res.n_spikes, res.n_events, res.matched_spikes, res.matched_events) == (3, 2, 1, 1)
    assert res.chance_rate == pytest.approx(0.2)  # [19, 29] and [65, 75] of 100 s
    assert res.expected_matched == pytest.approx(0.6)
    assert res.p_value == pytest.approx(1 - 0.8**3)
    assert res.hit_rate == pytest.approx(1 / 3)
    assert "1/3 spikes matched" in res.note


def test_spike_collapse_na_cases() -> None:
    t = np.arange(0.0, 50.0)
    g = np.ones(50)
    g[10] = 5.0
    iv = (0.0, 50.0)
    assert spike_collapse(t, g, None, iv).note.startswith("N/A: no collapse detection")
    assert spike_collapse(t, g, [], iv).note.startswith("N/A: no collapse events")
    assert (
        spike_collapse(t, np.ones(50), [5.0], iv).note
        == "N/A: grad_norm is constant: no spikes defined"
    )
    assert spike_collapse(t[:2], g[:2], [5.0], iv).note.startswith("N/A: too few steps")
    assert math.isnan(spike_collapse(t, g, [], iv).hit_rate)


def test_collapse_event_starts_from_a_device_frame() -> None:
    frame = pd.DataFrame(
        {"time_s": T0 + np.arange(10.0), "collapse": [0, 1, 1, 0, 0, 1, 0, 0, 0, 0]}
    )
    assert collapse_event_starts(frame).tolist() == [T0 + 1, T0 + 5]
    assert collapse_event_starts(frame.drop(columns="collapse")) is None


def test_spike_row_in_the_device_rows() -> None:
    train, dev, iv = _run(0.0, seconds=60)
    out = correlate_device(
        "r", "gpu_0", train, dev, iv, [], FAST, SpikeSettings(), event_starts_s=None
    )
    (row,) = out.rows
    assert row["method"] == "spike_collapse"
    assert row["y"] == "collapse_events"
    assert row["note"].startswith("N/A: no collapse detection")


def test_identical_training_curves_are_flagged_across_labels_only() -> None:
    steps = pd.Index([1, 2, 3], name="step")
    a = pd.DataFrame(
        {"train/loss": [3.0, 2.0, 1.0], "train/grad_norm": [5.0, 4.0, 3.0]}, index=steps
    )
    b = a.copy()
    c = a.assign(**{"train/loss": [3.0, 2.0, 1.5]})
    found = identical_training_curves(
        {
            "ra": ("cpu_inference", a),
            "rb": ("gpu_inference", b),
            "rc": ("other", c),
            "rd": ("cpu_inference", a),
        }
    )
    assert ("ra", "cpu_inference", "rb", "gpu_inference") in found
    assert ("rb", "gpu_inference", "rd", "cpu_inference") in found
    assert not any("rc" in (x[0], x[2]) for x in found)
    assert not any({x[0], x[2]} == {"ra", "rd"} for x in found)  # same label: not a contradiction


def test_step_times_feed_the_interval() -> None:
    h = pd.DataFrame({"step": [1, 2], "timestamp_s": [T0, T0 + 1.0]})
    assert training_interval(step_times(h)) is not None


def test_identical_training_groups_fire_whatever_the_labels() -> None:
    from rle.analysis.correlation import identical_training_groups

    steps = pd.Index([1, 2, 3], name="step")
    a = pd.DataFrame(
        {"train/loss": [3.0, 2.0, np.nan], "train/grad_norm": [5.0, 4.0, 3.0]}, index=steps
    )
    near = a.assign(**{"train/grad_norm": [5.0, 4.0, 3.0 + 1e-15]})
    groups = identical_training_groups(
        {
            "s1": ("Training (Reproducibility)", a),
            "s2": ("Training (Reproducibility)", a.copy()),
            "s3": ("unknown", a.copy()),
            "s4": ("Training (Reproducibility)", near),
            "s5": ("x", a.iloc[:2]),
        }
    )
    assert groups == [
        [
            ("s1", "Training (Reproducibility)"),
            ("s2", "Training (Reproducibility)"),
            ("s3", "unknown"),
        ]
    ]


def test_spike_rows_count_lab_steps_and_say_the_true_reason() -> None:
    t = np.arange(0.0, 50.0)
    g = np.ones(50)
    g[[10, 11, 30]] = 6.0
    res = spike_collapse(
        t, g, None, (0.0, 50.0), no_detection_reason="N/A: v2 collapse flags are discarded"
    )
    assert (res.n_spikes, res.n_spike_steps) == (2, 3)
    assert res.note == "N/A: v2 collapse flags are discarded"
    train, dev, iv = _run(0.0, seconds=60)
    why = "N/A: cpu's RLE is built from placeholder inputs"
    rows = _rows(
        correlate_device(
            "r",
            "cpu",
            train,
            dev.drop(columns="rle_smoothed"),
            iv,
            [Pair("train/grad_norm", "rle_smoothed")],
            FAST,
            None,
            missing_reasons={"rle_smoothed": why},
        ).rows
    )
    assert rows["note"].eq(why).all()
