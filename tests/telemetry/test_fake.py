"""Fake sources: scripted readings, stalls, and the simulated GPU used by telemetry=fake."""

from __future__ import annotations

import pytest

from rle.errors import ConfigError, TelemetryUnavailable
from rle.telemetry.base import HOST, RANK, rle_inputs, source_scope
from rle.telemetry.fake import FakeGpuSource, ScriptedSource, UnavailableSource


def test_scripted_sequence_cycles_or_runs_out() -> None:
    cyc = ScriptedSource([{"a_percentage": 1}, {"a_percentage": 2}])
    once = ScriptedSource([{"a_percentage": 1}], cycle=False)
    assert [cyc.sample() for _ in range(3)] == [
        {"a_percentage": 1.0},
        {"a_percentage": 2.0},
        {"a_percentage": 1.0},
    ]
    assert [once.sample(), once.sample()] == [{"a_percentage": 1.0}, {}]
    assert cyc.calls == 3


def test_scripted_callable_and_stall(clock) -> None:
    source = ScriptedSource(lambda i: {"step_percentage": i * 10}, stall_s=0.25, sleep=clock.sleep)
    assert [source.sample() for _ in range(3)] == [
        {"step_percentage": 0.0},
        {"step_percentage": 10.0},
        {"step_percentage": 20.0},
    ]
    assert clock.now_s == pytest.approx(1000.75)


def test_scripted_scope_tags_and_close() -> None:
    source = ScriptedSource(scope=HOST, tags={"power_source.cpu": "fake"})
    assert source_scope(source) == HOST
    assert source.tags() == {"power_source.cpu": "fake"}
    source.close()
    assert source.closed
    with pytest.raises(ConfigError, match="scope"):
        ScriptedSource(scope="node")  # type: ignore[arg-type]


def test_unavailable_source_always_raises() -> None:
    with pytest.raises(TelemetryUnavailable, match="no sensor here"):
        UnavailableSource(reason="no sensor here")


def test_fake_gpu_power_energy_and_heating(clock) -> None:
    gpu = FakeGpuSource(index=1, util_pct=[0.0, 100.0], monotonic=clock.monotonic, limit_w=300.0)
    idle = gpu.sample()
    clock.sleep(10.0)
    busy = gpu.sample()
    clock.sleep(10.0)
    idle_again = gpu.sample()

    assert idle["gpu_1_power_usage_watts"] == 50.0
    assert busy["gpu_1_power_usage_watts"] == 300.0
    assert busy["gpu_1_energy_joules"] - idle["gpu_1_energy_joules"] == pytest.approx(3000.0)
    assert idle_again["gpu_1_energy_joules"] - busy["gpu_1_energy_joules"] == pytest.approx(500.0)
    assert busy["gpu_1_temperature_celsius"] > idle["gpu_1_temperature_celsius"]
    assert busy["gpu_1_temperature_celsius"] < 35.0 + 0.15 * 300.0  # still approaching
    assert gpu.tags() == {"power_source.gpu_1": "fake", "temp_source.gpu_1": "fake"}
    assert source_scope(gpu) == RANK


def test_fake_gpu_feeds_rle_inputs(clock) -> None:
    reading = FakeGpuSource(util_pct=40.0, monotonic=clock.monotonic).sample()
    inputs = rle_inputs(reading)["gpu_0"]
    assert inputs == {
        "util_pct": 40.0,
        "temp_c": pytest.approx(35.0 + 0.15 * 50.0),
        "power_w": 150.0,
        "rated_w": 300.0,
        "limit_c": 90.0,
    }


def test_fake_gpu_rejects_bad_parameters() -> None:
    with pytest.raises(ConfigError):
        FakeGpuSource(limit_w=10.0, idle_w=50.0)
    with pytest.raises(ConfigError):
        FakeGpuSource(util_pct=[])
