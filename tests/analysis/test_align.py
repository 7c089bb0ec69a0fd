"""rle.analysis.align: step times, training interval, device frames, alignment and resampling."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rle.analysis.align import (
    align_to_steps,
    device_frames,
    device_frames_from_steps,
    distinct_samples,
    idle_summary,
    resample,
    step_series,
    step_times,
    time_grid,
    training_interval,
)

T0 = 1_700_000_000.0


def _history(steps: list[int], times: list[float], key: str = "train/loss") -> pd.DataFrame:
    return pd.DataFrame(
        {
            "run_id": "r",
            "key": key,
            "step": steps,
            "timestamp_s": times,
            "value": np.arange(len(steps), dtype=float),
        }
    )


def test_step_times_take_the_earliest_timestamp_and_drop_restarts() -> None:
    h = pd.concat(
        [
            _history([1, 2, 3, 4], [T0 + 1, T0 + 2, T0 + 3, T0 + 2.5]),
            _history([1, 2], [T0 + 1.2, T0 + 1.9], key="train/grad_norm"),
        ]
    )
    st = step_times(h)
    assert st["step"].tolist() == [1, 2, 3]  # step 4 is earlier than step 3: dropped
    assert st["time_s"].tolist() == [T0 + 1, T0 + 1.9, T0 + 3]


def test_step_series_is_wide_with_last_value_per_step() -> None:
    h = pd.concat(
        [
            _history([1, 2, 2], [T0 + 1, T0 + 2, T0 + 2.1]),
            _history([1], [T0 + 1], key="train/grad_norm"),
        ]
    )
    wide = step_series(h, ["train/loss", "train/grad_norm", "train/lr"])
    assert wide.index.tolist() == [1, 2]
    assert wide.loc[2, "train/loss"] == 2.0  # the later of the two values at step 2
    assert np.isnan(wide.loc[2, "train/grad_norm"])
    assert wide["train/lr"].isna().all()


def test_training_interval_starts_one_step_before_the_first_step() -> None:
    st = pd.DataFrame({"step": [1, 2, 3, 4], "time_s": [T0 + 10, T0 + 10.5, T0 + 11, T0 + 11.5]})
    iv = training_interval(st)
    assert iv is not None
    assert iv.start_s == pytest.approx(T0 + 9.5)
    assert iv.end_s == T0 + 11.5
    assert iv.duration_s == pytest.approx(2.0)
    assert (iv.first_step, iv.last_step, iv.n_steps) == (1, 4, 4)
    assert training_interval(st.iloc[0:0]) is None


def test_idle_head_and_tail_are_counted_separately() -> None:
    st = pd.DataFrame({"step": [1, 2, 3], "time_s": [T0 + 10, T0 + 11, T0 + 12]})
    iv = training_interval(st)
    t = T0 + np.arange(0, 20, 1.0)
    idle = idle_summary(t, iv)
    assert idle["head_samples"] == 9  # 0..8 before 9.0
    assert idle["head_s"] == pytest.approx(9.0)
    assert idle["tail_samples"] == 7  # 13..19
    assert idle["tail_s"] == pytest.approx(7.0)
    assert idle["training_samples"] == 4


def _samples() -> pd.DataFrame:
    rows = []
    for i in range(5):
        t = T0 + i
        rows.append(
            {
                "wall_time_s": t,
                "global_step": i,
                "device": "gpu_0",
                "util_pct": 50.0,
                "power_w": 100.0 + i,
                "temp_c": 40.0,
                "rle_smoothed": 0.8,
                "t_sustain_s": 600.0,
                "collapse": 0,
                "gpu_0_sm_clock_megahertz": 1500.0,
                "gpu_0_energy_joules": 100.0 * i,
                "gpu_0_throttle_reasons": 0.0,
            }
        )
        rows.append(
            {
                "wall_time_s": t + 0.01,
                "global_step": i,
                "device": "cpu",
                "util_pct": 20.0,
                "cpu_utilization_percentage": 20.0,
                "rle_raw": np.nan,
                "collapse": 0,  # computed without power: meaningless, must be dropped
            }
        )
        rows.append(
            {
                "wall_time_s": t + 0.02,
                "global_step": i,
                "device": "rank_0",
                "process_cpu_percentage": 99.0,
            }
        )
    return pd.DataFrame(rows)


def test_device_frames_split_devices_and_use_neutral_names() -> None:
    frames = device_frames(_samples())
    assert sorted(frames) == ["cpu", "gpu_0"]  # rank_0 holds process readings only
    gpu = frames["gpu_0"]
    assert {
        "util_pct",
        "power_w",
        "temp_c",
        "rle_smoothed",
        "collapse",
        "sm_clock_megahertz",
        "energy_counter_joules",
        "throttle_reasons",
    } <= set(gpu.columns)
    assert gpu["power_w"].tolist() == [100.0, 101.0, 102.0, 103.0, 104.0]
    cpu = frames["cpu"]
    assert "power_w" not in cpu  # absent, never zero
    assert "collapse" not in cpu  # no RLE, no detector
    assert cpu["util_pct"].tolist() == [20.0] * 5


def test_device_frames_of_an_empty_table() -> None:
    assert device_frames(pd.DataFrame()) == {}


def test_device_frames_from_step_metrics() -> None:
    wide = pd.DataFrame(
        {
            "time_s": [T0 + 1, T0 + 2],
            "system/gpu_0_power_usage_watts": [100.0, 110.0],
            "system/gpu_0_energy_joules": [50.0, 55.0],
        },
        index=pd.Index([1, 2], name="step"),
    )
    frames = device_frames_from_steps(
        wide,
        {
            "gpu_0": {
                "power_w": "system/gpu_0_power_usage_watts",
                "energy_joules": "system/gpu_0_energy_joules",
            },
            "cpu": {"power_w": "system/cpu_package_power_watts"},
        },
    )
    assert list(frames) == ["gpu_0"]  # the CPU has no values
    assert frames["gpu_0"]["energy_delta_joules"].tolist() == [50.0, 55.0]


def test_interpolation_at_step_times() -> None:
    dev = pd.DataFrame({"time_s": T0 + np.array([0.0, 1.0, 2.0]), "power_w": [100.0, 200.0, 300.0]})
    steps = pd.DataFrame({"step": [1, 2, 3, 4], "time_s": T0 + np.array([-0.5, 0.25, 1.0, 1.5])})
    out = align_to_steps(dev, steps, ["power_w", "temp_c"], method="interpolate")
    assert np.isnan(out["power_w"].iloc[0])  # before the first sample: no extrapolation
    assert out["power_w"].iloc[1:].tolist() == pytest.approx([125.0, 200.0, 250.0])
    assert out["temp_c"].isna().all()
    assert out["sample_lo"].tolist() == [-1, 0, 1, 1]
    assert out["sample_hi"].tolist() == [-1, 1, 1, 2]


def test_window_mean_over_each_step_interval() -> None:
    dev = pd.DataFrame(
        {"time_s": T0 + np.array([0.1, 0.2, 0.6, 1.9]), "power_w": [1.0, 3.0, 5.0, 7.0]}
    )
    steps = pd.DataFrame({"step": [1, 2, 3], "time_s": T0 + np.array([0.5, 1.0, 1.5])})
    out = align_to_steps(dev, steps, ["power_w"], method="window_mean")
    # intervals: (0.0, 0.5], (0.5, 1.0], (1.0, 1.5]; the 1.9 s sample is after the last step
    assert out["power_w"].iloc[:2].tolist() == [2.0, 5.0]
    assert np.isnan(out["power_w"].iloc[2])
    assert distinct_samples(out) == 3


def test_align_rejects_unknown_method() -> None:
    with pytest.raises(ValueError, match="align method"):
        align_to_steps(
            pd.DataFrame({"time_s": []}),
            pd.DataFrame({"step": [], "time_s": []}),
            [],
            method="nearest",
        )  # type: ignore[arg-type]


def test_distinct_samples_counts_telemetry_not_steps() -> None:
    dev = pd.DataFrame({"time_s": T0 + np.arange(0.0, 11.0), "power_w": np.arange(11.0)})
    steps = pd.DataFrame({"step": np.arange(1, 26), "time_s": T0 + np.linspace(0.0, 10.0, 25)})
    out = align_to_steps(dev, steps, ["power_w"])
    assert len(out) == 25
    assert distinct_samples(out) == 11  # 2.5 steps per sample share the same 11 samples
    mask = out["time_s"] <= T0 + 4.0
    assert distinct_samples(out, mask) == 5


def test_time_grid_and_resample() -> None:
    grid = time_grid(0.0, 10.0, 1.0)
    assert grid.tolist() == list(np.arange(11.0))
    assert time_grid(0.0, 1.0, 4.0).tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    with pytest.raises(ValueError, match="positive"):
        time_grid(0.0, 1.0, 0.0)
    # a 10 Hz series averaged down to 1 Hz bins centred on the grid points
    t = np.arange(0.05, 10.0, 0.1)  # bin k holds k-0.45 .. k+0.45
    out = resample(t, t, grid)
    assert out[1:-1] == pytest.approx(grid[1:-1], abs=1e-9)
    assert out[0] == pytest.approx(0.25)  # half a bin: 0.05 .. 0.45
    # a sparse series: gaps of <= 2 bins interpolated, longer gaps left NaN
    sparse = resample([0.0, 3.0, 10.0], [0.0, 3.0, 10.0], grid)
    assert sparse[:4].tolist() == pytest.approx([0.0, 1.0, 2.0, 3.0])
    assert np.isnan(sparse[4:10]).all()
    assert sparse[10] == 10.0
