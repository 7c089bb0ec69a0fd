"""rle.analysis.fingerprint: per-run numbers on hand-made frames, aggregation, the classifier."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from rle.analysis.align import TrainingInterval, within
from rle.analysis.fingerprint import (
    FINGERPRINT_COLUMNS,
    classify_workloads,
    energy_joules,
    group_fingerprints,
    nearest_centroid_loo,
    run_fingerprint,
    trained_samples,
)

T0 = 1_700_000_000.0
IV = TrainingInterval(
    start_s=T0, end_s=T0 + 10.0, first_step=1, last_step=10, n_steps=10, step_interval_s=1.0
)


def _train(sps: float = 4.0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "time_s": T0 + np.arange(1.0, 11.0),
            "train/samples_per_second": sps,
            "train/tokens_per_second": sps * 32,
        },
        index=pd.Index(np.arange(1, 11), name="step"),
    )


def _frame() -> pd.DataFrame:
    t = T0 + np.arange(-5.0, 16.0)  # 5 s idle head, 5 s idle tail
    n = t.size
    util = np.where((t >= T0) & (t <= T0 + 10), 80.0, 5.0)
    collapse = np.zeros(n)
    collapse[(t >= T0 + 2) & (t < T0 + 4)] = 1  # one 2 s event inside the interval
    throttle = np.zeros(n)
    throttle[(t >= T0 + 5) & (t <= T0 + 6)] = 0x4  # SW power cap: counted
    throttle[(t >= T0 + 7) & (t <= T0 + 8)] = 0x1  # GPU idle: not throttling
    return pd.DataFrame(
        {
            "time_s": t,
            "util_pct": util,
            "power_w": 100.0,
            "temp_c": np.linspace(40.0, 60.0, n),
            "energy_counter_joules": 100.0 * (t - t[0]),
            "rle_smoothed": np.linspace(0.5, 0.9, n),
            "collapse": collapse,
            "throttle_reasons": throttle,
        }
    )


def test_run_fingerprint_known_numbers() -> None:
    row = run_fingerprint(
        "r1", "synthetic", "gpu_0", _frame(), IV, _train(), idle={"head_s": 5.0, "tail_s": 5.0}
    )
    assert list(row) == list(FINGERPRINT_COLUMNS)
    assert row["n_samples"] == 11  # T0 .. T0+10 inclusive
    assert row["duration_s"] == 10.0
    assert row["n_steps"] == 10
    assert row["util_mean_percentage"] == 80.0  # the idle 5 % head and tail are excluded
    assert row["util_p5_percentage"] == 80.0
    assert row["power_p95_watts"] == 100.0
    assert row["energy_joules"] == pytest.approx(1000.0)  # 100 W for 10 s from the counter
    assert row["energy_source"] == "counter"
    assert row["energy_per_step_joules"] == pytest.approx(100.0)
    assert row["trained_samples"] == pytest.approx(40.0)  # 4 samples/s for 10 s
    assert row["energy_per_sample_joules"] == pytest.approx(25.0)
    assert row["tokens_per_second"] == 128.0
    assert row["collapse_events"] == 1
    assert row["collapse_seconds"] == pytest.approx(2.0)
    assert row["collapse_fraction"] == pytest.approx(2.0 / 11.0)  # 11 one-second samples
    assert row["throttle_fraction"] == pytest.approx(2 / 11)
    assert row["rle_min"] >= 0.5
    assert row["rle_max"] <= 0.9
    assert math.isnan(row["sm_clock_mean_megahertz"])  # absent, not zero
    assert row["idle_head_s"] == 5.0


def test_energy_fallbacks() -> None:
    f = _frame().drop(columns="energy_counter_joules")
    e, how = energy_joules(f, IV)
    assert how == "power_integral"
    assert e == pytest.approx(1000.0)
    steps = pd.DataFrame({"time_s": T0 + np.arange(1.0, 11.0), "energy_delta_joules": 50.0})
    e, how = energy_joules(steps, IV)
    assert how == "window_sum"
    assert e == pytest.approx(500.0)
    e, how = energy_joules(pd.DataFrame({"time_s": [T0]}), IV)
    assert how == "none"
    assert math.isnan(e)


def test_missing_throughput_and_collapse_fallback() -> None:
    f = _frame().drop(columns=["collapse", "throttle_reasons"])
    train = _train().drop(columns=["train/samples_per_second", "train/tokens_per_second"])
    assert math.isnan(trained_samples(train, IV))
    row = run_fingerprint(
        "r1",
        "w",
        "gpu_0",
        f,
        IV,
        train,
        collapse_fallback={
            "collapse_events": 3.0,
            "collapse_seconds": 7.0,
            "collapse_fraction": 0.1,
        },
    )
    assert (row["collapse_events"], row["collapse_seconds"], row["collapse_fraction"]) == (
        3.0,
        7.0,
        0.1,
    )
    assert math.isnan(row["energy_per_sample_joules"])
    assert math.isnan(row["throttle_fraction"])


def test_group_fingerprints_pool_samples_and_sum_totals() -> None:
    a = _frame()
    b = _frame().assign(
        power_w=200.0, energy_counter_joules=lambda d: 200.0 * (d["time_s"] - d["time_s"].iloc[0])
    )
    rows = pd.DataFrame(
        [
            run_fingerprint("a", "w", "gpu_0", a, IV, _train()),
            run_fingerprint("b", "w", "gpu_0", b, IV, _train(8.0)),
        ]
    )
    groups = group_fingerprints(
        rows, {("a", "gpu_0"): within(a, IV), ("b", "gpu_0"): within(b, IV)}
    )
    (g,) = groups.to_dict("records")
    assert g["run_id"] == ""
    assert g["n_runs"] == 2
    assert g["n_samples"] == 22
    assert g["power_mean_watts"] == pytest.approx(150.0)  # pooled samples
    assert g["power_p5_watts"] == pytest.approx(100.0)
    assert g["energy_joules"] == pytest.approx(3000.0)
    assert g["energy_per_step_joules"] == pytest.approx(150.0)
    assert g["energy_per_sample_joules"] == pytest.approx(3000.0 / 120.0)
    assert g["samples_per_second"] == pytest.approx(6.0)
    assert g["collapse_events"] == 2
    assert g["collapse_fraction"] == pytest.approx(4.0 / 20.0)


def _fp(run: str, group: str, power: float, temp: float) -> dict:
    f = _frame().assign(power_w=power, temp_c=temp)
    return run_fingerprint(run, group, "gpu_0", f, IV, _train())


def test_classifier_separates_distinct_workloads() -> None:
    rows = pd.DataFrame(
        [_fp(f"a{i}", "light", 100.0 + i, 40.0 + i) for i in range(3)]
        + [_fp(f"b{i}", "heavy", 250.0 + i, 70.0 - i) for i in range(3)]
    )
    res = classify_workloads(rows)
    assert res.available
    assert res.accuracy == 1.0
    assert res.chance == 0.5
    assert res.confusion.loc["heavy", "heavy"] == 3
    assert res.confusion.loc["light", "heavy"] == 0
    assert "gpu_0.power_mean_watts" in res.features
    assert "gpu_0.sm_clock_mean_megahertz" not in res.features  # NaN everywhere: dropped
    assert "gpu_0.util_mean_percentage" not in res.features  # constant: dropped


def test_classifier_needs_two_workloads_with_two_runs() -> None:
    rows = pd.DataFrame(
        [
            _fp("a0", "light", 100.0, 40.0),
            _fp("a1", "light", 101.0, 41.0),
            _fp("b0", "heavy", 250.0, 70.0),
        ]
    )
    res = classify_workloads(rows)
    assert not res.available
    assert "at least 2 workloads with at least 2 runs" in res.reason
    assert "heavy: 1 run(s)" in res.reason


def test_nearest_centroid_loo_standardises_features() -> None:
    # feature 2 has a huge scale but no information; standardising keeps feature 1 decisive
    x = np.array([[0.0, 1e6], [0.1, -1e6], [1.0, 1e6], [1.1, -1e6]])
    assert nearest_centroid_loo(x, ["a", "a", "b", "b"]) == ["a", "a", "b", "b"]
    with pytest.raises(ValueError, match="needs"):
        nearest_centroid_loo(np.zeros((1, 2)), ["a"])
