"""psutil sources: host CPU/memory, process tree, explicit CPU power estimate."""

from __future__ import annotations

import contextlib
import logging
import time
from collections import namedtuple
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

from rle.errors import ConfigError, TelemetryUnavailable
from rle.telemetry import cpu as cpu_module
from rle.telemetry.base import HOST, RANK, source_scope
from rle.telemetry.cpu import CpuHostSource, EstimatedCpuPowerSource, ProcessSource

CpuTimes = namedtuple("CpuTimes", "user nice system idle iowait irq softirq steal guest guest_nice")
VirtualMemory = namedtuple("VirtualMemory", "total available percent used free")
CpuFreq = namedtuple("CpuFreq", "current min max")
DEFAULT_FREQ = CpuFreq(2400.0, 0.0, 0.0)


def _times(user: float, idle: float, *, iowait: float = 0.0, guest: float = 0.0) -> CpuTimes:
    # guest time is already included in user on Linux
    return CpuTimes(user + guest, 0.0, 0.0, idle, iowait, 0.0, 0.0, 0.0, guest, 0.0)


class ScriptedCpuTimes:
    """Replacement for psutil.cpu_times returning scripted totals and per-core tuples."""

    def __init__(self, totals: list[CpuTimes], cores: list[list[CpuTimes]] | None = None):
        self.totals = iter(totals)
        self.cores = iter(cores or [])

    def __call__(self, percpu: bool = False) -> Any:
        return next(self.cores) if percpu else next(self.totals)


@pytest.fixture
def fake_psutil_host(monkeypatch: pytest.MonkeyPatch):
    def install(
        totals: list[CpuTimes],
        cores: list[list[CpuTimes]] | None = None,
        freq: Any = DEFAULT_FREQ,
    ) -> None:
        monkeypatch.setattr(cpu_module.psutil, "cpu_times", ScriptedCpuTimes(totals, cores))
        monkeypatch.setattr(
            cpu_module.psutil,
            "virtual_memory",
            lambda: VirtualMemory(16e9, 4e9, 75.0, 11e9, 1e9),
        )
        if isinstance(freq, Exception):

            def raise_freq() -> Any:
                raise freq

            monkeypatch.setattr(cpu_module.psutil, "cpu_freq", raise_freq)
        else:
            monkeypatch.setattr(cpu_module.psutil, "cpu_freq", lambda: freq)

    return install


def test_first_reading_covers_time_since_construction_not_zero(fake_psutil_host) -> None:
    fake_psutil_host([_times(10, 90), _times(30, 110)])
    source = CpuHostSource(per_core=False)
    assert source.sample()["cpu_utilization_percentage"] == pytest.approx(50.0)


def test_iowait_is_idle_and_guest_not_double_counted(fake_psutil_host) -> None:
    fake_psutil_host([_times(0, 0), _times(10, 10, iowait=10, guest=10)])
    # user 20 (10 guest inside it, counted once), idle 10, iowait 10: busy 20 of total 40
    assert CpuHostSource(per_core=False).sample()["cpu_utilization_percentage"] == pytest.approx(
        50.0
    )


def test_per_core_memory_and_frequency_keys(fake_psutil_host) -> None:
    fake_psutil_host(
        [_times(0, 0), _times(5, 5)],
        cores=[[_times(0, 0), _times(0, 0)], [_times(1, 3), _times(4, 0)]],
    )
    reading = CpuHostSource(per_core=True).sample()
    assert reading == pytest.approx(
        {
            "cpu_utilization_percentage": 50.0,
            "cpu_core_0_utilization_percentage": 25.0,
            "cpu_core_1_utilization_percentage": 100.0,
            "system_memory_usage_megabytes": 12_000.0,  # (total - available) / 1e6
            "system_memory_usage_percentage": 75.0,
            "cpu_frequency_megahertz": 2400.0,
        }
    )


@pytest.mark.parametrize("freq", [None, CpuFreq(0.0, 0.0, 0.0), FileNotFoundError("no cpufreq")])
def test_frequency_absent_where_not_reported(fake_psutil_host, freq) -> None:
    fake_psutil_host([_times(0, 0), _times(1, 1)], freq=freq)
    reading = CpuHostSource(per_core=False).sample()
    assert "cpu_frequency_megahertz" not in reading
    assert "cpu_utilization_percentage" in reading


def test_no_elapsed_cpu_time_gives_no_utilisation_rather_than_zero(fake_psutil_host) -> None:
    fake_psutil_host([_times(10, 10), _times(10, 10)])
    reading = CpuHostSource(per_core=False).sample()
    assert "cpu_utilization_percentage" not in reading
    assert "system_memory_usage_percentage" in reading


def test_two_sources_do_not_share_utilisation_state(fake_psutil_host) -> None:
    # host source and estimate both read cpu_times in the same sampler thread; each has its
    # own baseline (psutil.cpu_percent's module-level state would make the second read ~0).
    fake_psutil_host([_times(0, 0), _times(0, 0), _times(50, 50), _times(50, 50)])
    host = CpuHostSource(per_core=False, frequency=False)
    estimate = EstimatedCpuPowerSource(rated_w=200.0)
    assert host.sample()["cpu_utilization_percentage"] == pytest.approx(50.0)
    assert estimate.sample()["cpu_package_power_watts"] == pytest.approx(100.0)


def test_real_host_reading() -> None:
    source = CpuHostSource()
    time.sleep(0.05)
    reading = source.sample()
    assert 0.0 <= reading["cpu_utilization_percentage"] <= 100.0
    assert reading["system_memory_usage_megabytes"] > 0
    assert 0.0 < reading["system_memory_usage_percentage"] < 100.0
    cores = [k for k in reading if k.startswith("cpu_core_")]
    assert len(cores) == psutil.cpu_count()
    assert source_scope(source) == HOST


def test_estimated_power_is_explicit_tagged_and_warned(
    fake_psutil_host, caplog: pytest.LogCaptureFixture
) -> None:
    fake_psutil_host([_times(0, 0), _times(25, 75), _times(25, 75)])
    with caplog.at_level(logging.WARNING, logger="rle.telemetry.cpu"):
        source = EstimatedCpuPowerSource(rated_w=125.0)
        assert caplog.records == []  # nothing until it is really used
        assert source.sample() == {"cpu_package_power_watts": pytest.approx(31.25)}
        source.sample()
    assert source.tags()["power_source.cpu"] == "estimated"
    assert len(caplog.records) == 1
    assert "ESTIMATED" in caplog.records[0].getMessage()


@pytest.mark.parametrize("rated_w", [0, -5.0])
def test_estimated_power_rejects_non_positive_rating(rated_w: float) -> None:
    with pytest.raises(ConfigError, match="rated_w must be > 0"):
        EstimatedCpuPowerSource(rated_w=rated_w)


# ---------------------------------------------------------------- process source


MemInfo = namedtuple("MemInfo", "rss vms")


class FakeProcess:
    """Stand-in for psutil.Process with scripted CPU percentages."""

    def __init__(self, pid: int, cpu: list[float], rss_b: int, children: list[FakeProcess] = ()):
        self.pid = pid
        self._cpu = list(cpu)
        self.rss_b = rss_b
        self._children = list(children)
        self.gone = False
        self.cpu_calls = 0

    @contextlib.contextmanager
    def oneshot(self) -> Iterator[None]:
        yield

    def cpu_percent(self, interval: float | None = None) -> float:
        if self.gone:
            raise psutil.NoSuchProcess(self.pid)
        self.cpu_calls += 1
        return self._cpu.pop(0)

    def memory_info(self) -> MemInfo:
        if self.gone:
            raise psutil.NoSuchProcess(self.pid)
        return MemInfo(self.rss_b, 0)

    def children(self, recursive: bool = False) -> list[FakeProcess]:
        assert recursive
        return [c for c in self._children if not c.gone]


@pytest.fixture
def process_tree(monkeypatch: pytest.MonkeyPatch, clock):
    child = FakeProcess(2, cpu=[0.0, 80.0, 70.0], rss_b=50_000_000)
    root = FakeProcess(1, cpu=[0.0, 100.0, 90.0, 10.0], rss_b=200_000_000, children=[child])
    monkeypatch.setattr(cpu_module.psutil, "Process", lambda pid=None: root)
    return root, child


def test_process_tree_cpu_and_rss_summed_and_primed(process_tree, clock) -> None:
    root, child = process_tree
    source = ProcessSource(monotonic=clock.monotonic)
    assert (root.cpu_calls, child.cpu_calls) == (1, 1)  # primed in __init__
    assert source.sample() == {
        "process_cpu_percentage": pytest.approx(180.0),
        "process_memory_rss_megabytes": pytest.approx(250.0),
    }
    assert source_scope(source) == RANK


def test_process_children_excluded_on_request(process_tree, clock) -> None:
    source = ProcessSource(include_children=False, monotonic=clock.monotonic)
    assert source.sample()["process_memory_rss_megabytes"] == pytest.approx(200.0)


def test_vanished_child_is_dropped_not_fatal(process_tree, clock) -> None:
    root, child = process_tree
    source = ProcessSource(monotonic=clock.monotonic)
    child.gone = True
    assert source.sample() == {
        "process_cpu_percentage": pytest.approx(100.0),
        "process_memory_rss_megabytes": pytest.approx(200.0),
    }


def test_children_refreshed_only_every_interval(process_tree, clock) -> None:
    root, child = process_tree
    source = ProcessSource(children_refresh_s=10.0, monotonic=clock.monotonic)
    late = FakeProcess(3, cpu=[0.0, 5.0], rss_b=1_000_000)
    root._children.append(late)
    clock.sleep(1.0)
    assert source.sample()["process_memory_rss_megabytes"] == pytest.approx(250.0)
    clock.sleep(10.0)
    assert source.sample()["process_memory_rss_megabytes"] == pytest.approx(251.0)


def test_unreadable_process_is_unavailable() -> None:
    with pytest.raises(TelemetryUnavailable, match="cannot read process"):
        ProcessSource(pid=2**22 + 12345)


def test_real_process_cpu_and_rss() -> None:
    source = ProcessSource()
    end = time.process_time() + 0.05
    while time.process_time() < end:
        pass
    reading = source.sample()
    assert reading["process_cpu_percentage"] > 10.0
    assert reading["process_memory_rss_megabytes"] > 10.0
