"""Background sampler: deadline schedule on a fake clock, stamps, windows, robustness."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from rle.errors import ConfigError
from rle.telemetry.base import WindowAggregator
from rle.telemetry.fake import ScriptedSource
from rle.telemetry.sampler import Sampler


def _sampler(clock, *sources, **kwargs) -> Sampler:
    return Sampler(
        sources or [ScriptedSource([{"x_percentage": 1.0}], name="x")],
        monotonic=clock.monotonic,
        wall=clock.wall,
        wait=clock.wait,
        **kwargs,
    )


@pytest.mark.parametrize("sample_hz", [1.0, 2.0, 10.0])
def test_samples_on_the_deadline_grid(clock, sample_hz: float) -> None:
    sampler = _sampler(clock, sample_hz=sample_hz)
    sampler.run(max_samples=6)
    samples = sampler.drain()
    stamps = [s.monotonic_s for s in samples]
    assert stamps == pytest.approx([1000.0 + k / sample_hz for k in range(6)])
    assert [s.wall_time_s - s.monotonic_s for s in samples] == pytest.approx([1.7e9] * 6)
    assert sampler.missed_ticks == 0


def test_time_spent_sampling_does_not_drift_the_schedule(clock) -> None:
    slow = ScriptedSource([{"x_percentage": 1.0}], name="slow", stall_s=0.3, sleep=clock.sleep)
    sampler = _sampler(clock, slow, sample_hz=1.0)
    sampler.run(max_samples=4)
    samples = sampler.drain()
    assert [s.monotonic_s for s in samples] == pytest.approx([1000.0, 1001.0, 1002.0, 1003.0])
    assert [s.sample_duration_s for s in samples] == pytest.approx([0.3] * 4)
    assert clock.waits == pytest.approx([0.7] * 3)


def test_overrun_skips_missed_ticks_instead_of_bunching(clock) -> None:
    stalled = ScriptedSource([{"x_percentage": 1.0}], name="stall", stall_s=2.5, sleep=clock.sleep)
    sampler = _sampler(clock, stalled, sample_hz=1.0)
    sampler.run(max_samples=3)
    assert [s.monotonic_s for s in sampler.drain()] == pytest.approx([1000.0, 1003.0, 1006.0])
    assert sampler.missed_ticks == 4


def test_samples_carry_the_step_current_when_taken(clock) -> None:
    def wait_while_training(timeout_s: float) -> bool:
        clock.wait(timeout_s)
        sampler.set_step(sampler.step + 2)  # two optimizer steps per second
        return False

    sampler = Sampler(
        [ScriptedSource([{"x_percentage": 1.0}])],
        monotonic=clock.monotonic,
        wall=clock.wall,
        wait=wait_while_training,
    )
    sampler.run(max_samples=4)
    assert [s.global_step for s in sampler.drain()] == [0, 2, 4, 6]
    sampler.set_step(41)
    assert sampler.sample_now().global_step == 41


def test_drain_returns_each_window_once(clock) -> None:
    sampler = _sampler(clock)
    sampler.run(max_samples=3)
    first = sampler.drain()
    clock.sleep(0.4)  # training runs between logging steps
    sampler.run(max_samples=2)
    second = sampler.drain()
    assert (len(first), len(second), sampler.drain()) == (3, 2, [])
    assert first[-1].monotonic_s < second[0].monotonic_s
    assert sampler.latest() is second[-1]
    assert sampler.sample_count == 5


def test_sources_are_merged_into_one_sample(clock) -> None:
    a = ScriptedSource([{"cpu_utilization_percentage": 10.0}], name="a")
    b = ScriptedSource([{"gpu_0_utilization_percentage": 90.0}], name="b")
    sample = _sampler(clock, a, b).sample_now()
    assert sample.values == {
        "cpu_utilization_percentage": 10.0,
        "gpu_0_utilization_percentage": 90.0,
    }
    assert sample.failed_sources == ()


def test_raising_source_is_reported_once_and_skipped(clock, caplog) -> None:
    def broken(_: int) -> dict[str, float]:
        raise OSError("sensor went away")

    good = ScriptedSource([{"cpu_utilization_percentage": 5.0}], name="good")
    bad = ScriptedSource(broken, name="bad")
    sampler = _sampler(clock, bad, good)
    with caplog.at_level(logging.DEBUG, logger="rle.telemetry.sampler"):
        sampler.run(max_samples=5)
    samples = sampler.drain()
    assert len(samples) == 5
    assert all(s.values == {"cpu_utilization_percentage": 5.0} for s in samples)
    assert all(s.failed_sources == ("bad",) for s in samples)
    assert sampler.failures == {"bad": 5}
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "bad" in warnings[0].getMessage()


def test_full_buffer_drops_oldest_and_reports(clock, caplog) -> None:
    sampler = _sampler(clock, max_buffered=3)
    with caplog.at_level(logging.WARNING, logger="rle.telemetry.sampler"):
        sampler.run(max_samples=5)
    samples = sampler.drain()
    assert [s.monotonic_s for s in samples] == [1002.0, 1003.0, 1004.0]
    assert sampler.dropped_samples == 2
    assert len(caplog.records) == 1


@pytest.mark.parametrize("sample_hz", [0.0, -1.0, 1000.0])
def test_invalid_rate_is_rejected(sample_hz: float) -> None:
    with pytest.raises(ConfigError, match="sample_hz"):
        Sampler([], sample_hz=sample_hz)


def test_window_aggregation_of_drained_samples(clock) -> None:
    energy = ScriptedSource(
        [
            {"gpu_0_energy_joules": e, "gpu_0_power_usage_watts": p}
            for e, p in [(0.0, 100.0), (100.0, 100.0), (250.0, 150.0), (400.0, 150.0)]
        ],
        name="gpu",
        cycle=False,
    )
    sampler = _sampler(clock, energy)
    agg = WindowAggregator()
    sampler.run(max_samples=2)
    first = agg(sampler.drain())
    sampler.run(max_samples=2)
    second = agg(sampler.drain())
    assert first.values["gpu_0_energy_joules"] == 100.0
    assert second.values["gpu_0_energy_joules"] == 300.0  # includes 100 -> 250 across the drain
    assert second.values["gpu_0_power_usage_max_watts"] == 150.0


# ---------------------------------------------------------------- real threads (short)


def test_real_thread_smoke() -> None:
    source = ScriptedSource([{"x_percentage": 1.0}], name="x")
    sampler = Sampler([source], sample_hz=50.0)
    started = time.monotonic()
    sampler.start()
    time.sleep(0.12)
    sampler.stop()
    elapsed = time.monotonic() - started
    samples = sampler.drain()
    assert not sampler.is_running
    assert elapsed < 0.5
    assert len(samples) >= 3
    stamps = [s.monotonic_s for s in samples]
    assert stamps == sorted(stamps)
    assert abs(samples[0].wall_time_s - time.time()) < 5.0  # UTC epoch seconds
    count = sampler.sample_count
    time.sleep(0.05)
    assert sampler.sample_count == count  # really stopped


def test_stalled_source_never_blocks_the_training_thread() -> None:
    entered = threading.Event()
    release = threading.Event()

    def block(_: float) -> None:
        entered.set()
        release.wait(5.0)

    stalled = ScriptedSource([{"x_percentage": 1.0}], name="stalled", stall_s=1.0, sleep=block)
    sampler = Sampler([stalled], sample_hz=10.0, join_timeout_s=0.05)
    sampler.start()
    try:
        assert entered.wait(2.0)
        t0 = time.perf_counter()
        for step in range(100):
            sampler.set_step(step)
            sampler.drain()
        training_thread_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        sampler.stop()  # a hung source: stop() gives up after join_timeout_s
        stop_s = time.perf_counter() - t0
    finally:
        release.set()
    assert training_thread_s < 0.05
    assert stop_s < 0.3
    deadline = time.monotonic() + 2.0
    while sampler.is_running and time.monotonic() < deadline:
        time.sleep(0.005)
    assert not sampler.is_running  # released, it finished its sample and honoured stop()
