"""Window aggregation (mean, max, OR, counter deltas, absent keys) and RLE input extraction."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rle.telemetry.base import (
    Sample,
    TelemetrySource,
    WindowAggregator,
    aggregate_window,
    max_key,
    prefix_keys,
    rle_inputs,
)
from rle.telemetry.fake import ScriptedSource
from rle.tracking import keys


def _samples(*values: dict[str, float], t0: float = 0.0, duration_s: float = 0.001) -> list[Sample]:
    return [
        Sample(
            wall_time_s=1.7e9 + t0 + i,
            monotonic_s=t0 + i,
            global_step=i,
            values=v,
            sample_duration_s=duration_s,
        )
        for i, v in enumerate(values)
    ]


def test_mean_and_max_for_power_and_temperature() -> None:
    summary = aggregate_window(
        _samples(
            {"gpu_0_power_usage_watts": 100.0, "gpu_0_temperature_celsius": 60.0},
            {"gpu_0_power_usage_watts": 300.0, "gpu_0_temperature_celsius": 64.0},
        )
    )
    assert summary.values == {
        "gpu_0_power_usage_watts": 200.0,
        "gpu_0_power_usage_max_watts": 300.0,
        "gpu_0_temperature_celsius": 62.0,
        "gpu_0_temperature_max_celsius": 64.0,
    }


def test_limits_and_thresholds_get_no_max() -> None:
    summary = aggregate_window(
        _samples(
            {
                "gpu_0_power_limit_watts": 400.0,
                "gpu_0_slowdown_temperature_celsius": 90.0,
                "cpu_package_power_limit_watts": 125.0,
                "gpu_0_utilization_percentage": 50.0,
            }
        )
    )
    assert set(summary.values) == {
        "gpu_0_power_limit_watts",
        "gpu_0_slowdown_temperature_celsius",
        "cpu_package_power_limit_watts",
        "gpu_0_utilization_percentage",
    }


def test_throttle_reasons_are_ored() -> None:
    summary = aggregate_window(
        _samples(
            {"gpu_1_throttle_reasons": 0x1},
            {"gpu_1_throttle_reasons": 0x4},
            {"gpu_1_throttle_reasons": 0x40},
        )
    )
    assert summary.values == {"gpu_1_throttle_reasons": float(0x45)}


def test_energy_counter_becomes_window_delta() -> None:
    summary = aggregate_window(
        _samples(
            {"gpu_0_energy_joules": 1000.0},
            {"gpu_0_energy_joules": 1250.0},
            {"gpu_0_energy_joules": 1600.0},
        )
    )
    assert summary.values == {"gpu_0_energy_joules": 600.0}
    assert summary.carry == {"gpu_0_energy_joules": 1600.0}


def test_no_energy_lost_between_windows() -> None:
    readings = [100.0, 130.0, 180.0, 200.0, 260.0, 300.0, 301.0]
    windows = [readings[0:2], readings[2:3], readings[3:6], [], readings[6:]]
    agg = WindowAggregator()
    deltas = []
    for window in windows:
        summary = agg(_samples(*({"cpu_package_energy_joules": r} for r in window)))
        deltas.append(summary.values.get("cpu_package_energy_joules"))
    assert deltas == [30.0, 50.0, 120.0, None, 1.0]
    assert sum(d for d in deltas if d is not None) == readings[-1] - readings[0]


def test_counter_reset_contributes_no_negative_energy() -> None:
    summary = aggregate_window(
        _samples({"e_joules": 500.0}, {"e_joules": 520.0}, {"e_joules": 3.0}, {"e_joules": 10.0})
    )
    assert summary.values == {"e_joules": 27.0}


def test_single_counter_reading_without_carry_is_absent_not_zero() -> None:
    summary = aggregate_window(_samples({"gpu_0_energy_joules": 5.0}))
    assert "gpu_0_energy_joules" not in summary.values
    assert summary.carry == {"gpu_0_energy_joules": 5.0}


def test_absent_keys_stay_absent_and_partial_keys_average_what_exists() -> None:
    summary = aggregate_window(
        _samples(
            {"cpu_utilization_percentage": 10.0},
            {"cpu_utilization_percentage": 30.0, "gpu_0_utilization_percentage": 80.0},
        )
    )
    assert summary.values == {
        "cpu_utilization_percentage": 20.0,
        "gpu_0_utilization_percentage": 80.0,
    }


def test_nan_readings_are_ignored_and_all_nan_is_absent() -> None:
    summary = aggregate_window(
        _samples(
            {
                "a_percentage": math.nan,
                "b_watts": math.nan,
                "c_joules": 1.0,
                "d_throttle_reasons": 1,
            },
            {"a_percentage": 40.0, "b_watts": math.nan, "c_joules": math.nan},
            {"a_percentage": math.inf, "c_joules": 4.0, "d_throttle_reasons": math.nan},
        )
    )
    assert summary.values == {"a_percentage": 40.0, "c_joules": 3.0, "d_throttle_reasons": 1.0}


def test_empty_window() -> None:
    summary = aggregate_window([], carry={"gpu_0_energy_joules": 3.0})
    assert summary.values == {}
    assert summary.sample_count == 0
    assert summary.carry == {"gpu_0_energy_joules": 3.0}
    assert math.isnan(summary.first_wall_time_s)


def test_summary_counts_samples_and_sampling_time() -> None:
    samples = _samples({"x_percentage": 1.0}, {"x_percentage": 2.0}, duration_s=0.002)
    summary = aggregate_window(samples)
    assert summary.sample_count == 2
    assert summary.sampling_time_s == pytest.approx(0.004)
    assert (summary.first_wall_time_s, summary.last_wall_time_s) == (1.7e9, 1.7e9 + 1)


def _asdict(sample: Sample) -> dict[str, object]:
    return {name: getattr(sample, name) for name in Sample.__dataclass_fields__}


@given(
    st.lists(
        st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), max_size=5), max_size=6
    )
)
def test_windows_of_a_monotone_counter_sum_to_the_total(chunks: list[list[float]]) -> None:
    increments = [x for chunk in chunks for x in chunk]
    counter = 0.0
    totals: list[list[float]] = []
    for chunk in chunks:
        window = []
        for inc in chunk:
            counter += inc
            window.append(counter)
        totals.append(window)
    agg = WindowAggregator()
    energy = sum(
        agg(_samples(*({"x_joules": r} for r in window))).values.get("x_joules", 0.0)
        for window in totals
    )
    flat = [r for window in totals for r in window]
    expected = flat[-1] - flat[0] if flat else 0.0
    assert energy == pytest.approx(expected, rel=1e-9, abs=1e-6)
    assert len(flat) == len(increments)


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("gpu_0_power_usage_watts", "gpu_0_power_usage_max_watts"),
        ("cpu_package_temperature_celsius", "cpu_package_temperature_max_celsius"),
        ("rank_1/process_cpu_percentage", "rank_1/process_cpu_max_percentage"),
        ("unitless", "unitless_max"),
    ],
)
def test_max_key_puts_statistic_before_unit(key: str, expected: str) -> None:
    assert max_key(key) == expected


def test_prefix_keys_for_ranks_and_system() -> None:
    values = {"process_cpu_percentage": 12.0}
    ranked = prefix_keys(values, "rank_3/")
    assert ranked == {keys.rank_quantity(3, "process_cpu_percentage"): 12.0}
    assert prefix_keys(ranked, "system/") == {"system/rank_3/process_cpu_percentage": 12.0}


def test_rle_inputs_per_device_with_nan_for_missing() -> None:
    values = {
        "cpu_utilization_percentage": 40.0,
        "cpu_package_power_watts": 65.0,
        "gpu_0_utilization_percentage": 90.0,
        "gpu_0_temperature_celsius": 70.0,
        "gpu_0_power_usage_watts": 250.0,
        "gpu_0_power_limit_watts": 400.0,
        "gpu_0_slowdown_temperature_celsius": 88.0,
        "gpu_10_utilization_percentage": 5.0,
    }
    inputs = rle_inputs(values)
    assert list(inputs) == ["cpu", "gpu_0", "gpu_10"]
    assert inputs["gpu_0"] == {
        "util_pct": 90.0,
        "temp_c": 70.0,
        "power_w": 250.0,
        "rated_w": 400.0,
        "limit_c": 88.0,
    }
    cpu = inputs["cpu"]
    assert (cpu["util_pct"], cpu["power_w"], cpu["limit_c"]) == (40.0, 65.0, 80.0)
    assert math.isnan(cpu["temp_c"])
    assert math.isnan(cpu["rated_w"])
    gpu10 = inputs["gpu_10"]
    assert gpu10["util_pct"] == 5.0
    assert all(math.isnan(gpu10[k]) for k in ("temp_c", "power_w", "rated_w", "limit_c"))


def test_rle_inputs_cpu_rating_from_rapl_limit_else_config() -> None:
    measured = {"cpu_utilization_percentage": 10.0, "cpu_package_power_limit_watts": 95.0}
    assert rle_inputs(measured, cpu_rated_w=125.0)["cpu"]["rated_w"] == 95.0
    assert (
        rle_inputs({"cpu_utilization_percentage": 1.0}, cpu_rated_w=125.0)["cpu"]["rated_w"]
        == 125.0
    )
    assert (
        rle_inputs({"cpu_utilization_percentage": 1.0}, cpu_limit_c=95.0)["cpu"]["limit_c"] == 95.0
    )


def test_rle_inputs_gpu_power_from_energy_counter_when_previous_given() -> None:
    prev = {"gpu_0_energy_joules": 1000.0, "gpu_0_power_usage_watts": 100.0}
    now = {"gpu_0_energy_joules": 1300.0, "gpu_0_power_usage_watts": 999.0}
    assert rle_inputs(now, previous_values=prev, interval_s=2.0)["gpu_0"]["power_w"] == 150.0
    # no previous, or a counter reset: fall back to NVML's power reading
    assert rle_inputs(now)["gpu_0"]["power_w"] == 999.0
    reset = {"gpu_0_energy_joules": 5.0, "gpu_0_power_usage_watts": 80.0}
    assert rle_inputs(reset, previous_values=prev, interval_s=1.0)["gpu_0"]["power_w"] == 80.0


def test_no_devices_without_their_keys() -> None:
    assert rle_inputs({"system_memory_usage_percentage": 50.0}) == {}


def test_sources_satisfy_the_protocol() -> None:
    assert isinstance(ScriptedSource([{"a_percentage": 1.0}]), TelemetrySource)


def test_tag_helpers() -> None:
    assert keys.power_source_tag("gpu_0") == "power_source.gpu_0"
    assert keys.temp_source_tag("cpu") == "temp_source.cpu"
    assert keys.gpu_quantity(2, "power_usage_watts") == "gpu_2_power_usage_watts"
    assert keys.system_key(keys.gpu_quantity(0, "energy_joules")) == "system/gpu_0_energy_joules"
