"""Host CPU and memory, this process, and the explicit CPU power estimate (psutil).

Three sources, so that host-wide and per-process quantities stay separable:

* :class:`CpuHostSource` (scope ``host``, sampled once per node): system CPU utilisation, total
  and per core, system memory, CPU frequency.
* :class:`ProcessSource` (scope ``rank``, one per DDP rank): CPU and resident memory of this
  process and its children (dataloader workers, load generators). The caller prefixes its keys
  with ``rank_<r>/``.
* :class:`EstimatedCpuPowerSource` (scope ``host``, never on by default): ``rated_w · util/100``
  as ``cpu_package_power_watts``, tagged ``power_source.cpu=estimated``; the only way to get an
  estimated CPU power (``telemetry.cpu_power=estimated``).

Utilisation is computed from each source's own ``psutil.cpu_times()`` deltas (psutil's formula),
not from ``psutil.cpu_percent()``, whose module-level state would be shared between sources
sampled from the same thread. Every source primes its baseline in ``__init__``, so its first
reading covers the time since construction instead of being 0 (``docs/rle-metric.md`` M11).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import psutil

from rle.errors import ConfigError, TelemetryUnavailable
from rle.telemetry.base import HOST, RANK, Scope

__all__ = ["CpuHostSource", "EstimatedCpuPowerSource", "ProcessSource"]

logger = logging.getLogger(__name__)

_BYTES_PER_MEGABYTE = 1e6


def _busy_and_total_s(times: Any) -> tuple[float, float]:
    """Busy and total CPU time of a ``psutil.cpu_times()`` tuple, seconds (psutil's formula)."""
    total = sum(times)
    # Linux accounts guest time inside user/nice; iowait is not busy.
    total -= getattr(times, "guest", 0.0) + getattr(times, "guest_nice", 0.0)
    busy = total - times.idle - getattr(times, "iowait", 0.0)
    return busy, total


def _utilization_pct(before: Any, after: Any) -> float | None:
    """Utilisation between two ``cpu_times`` readings in %, None when no time elapsed."""
    busy0, total0 = _busy_and_total_s(before)
    busy1, total1 = _busy_and_total_s(after)
    d_total = total1 - total0
    if d_total <= 0:
        return None
    d_busy = max(0.0, busy1 - busy0)
    return min(100.0, 100.0 * d_busy / d_total)


class _CpuUtilizationMeter:
    """System CPU utilisation from this meter's own ``cpu_times`` baseline (total, per core)."""

    def __init__(self, *, per_core: bool) -> None:
        self._per_core = per_core
        self._last_total = psutil.cpu_times()
        self._last_cores: Sequence[Any] = psutil.cpu_times(percpu=True) if per_core else ()

    def total_pct(self) -> float | None:
        now = psutil.cpu_times()
        pct = _utilization_pct(self._last_total, now)
        self._last_total = now
        return pct

    def cores_pct(self) -> list[float | None]:
        now = psutil.cpu_times(percpu=True)
        pcts = [_utilization_pct(a, b) for a, b in zip(self._last_cores, now, strict=False)]
        self._last_cores = now
        return pcts


class CpuHostSource:
    """Host-wide CPU utilisation, memory and frequency (scope ``host``).

    Keys (MLflow's names where MLflow has the quantity):

    * ``cpu_utilization_percentage``: system-wide busy time over the interval since the previous
      reading, % of all cores (0..100).
    * ``cpu_core_<k>_utilization_percentage``: the same per logical core ``k`` (with
      ``per_core``).
    * ``system_memory_usage_megabytes``: memory in use, ``total − available``, bytes / 1e6.
    * ``system_memory_usage_percentage``: the same as % of total memory.
    * ``cpu_frequency_megahertz``: current CPU frequency (mean over cores as psutil reports it),
      absent where the platform does not report it.

    Args:
        name: Source name used in logs and errors.
        per_core: Also emit the per-core utilisation keys.
        frequency: Emit ``cpu_frequency_megahertz`` when the platform reports it.

    Raises:
        TelemetryUnavailable: psutil cannot read CPU times on this platform.
    """

    scope: ClassVar[Scope] = HOST

    def __init__(self, name: str = "cpu", *, per_core: bool = True, frequency: bool = True) -> None:
        self._name = name
        try:
            self._meter = _CpuUtilizationMeter(per_core=per_core)
        except (OSError, NotImplementedError) as e:
            raise TelemetryUnavailable(f"{name}: cannot read CPU times: {e}") from e
        self._per_core = per_core
        self._frequency = frequency and self._read_frequency_mhz() is not None

    @property
    def name(self) -> str:
        """Source name."""
        return self._name

    @staticmethod
    def _read_frequency_mhz() -> float | None:
        try:
            freq = psutil.cpu_freq()
        except (OSError, NotImplementedError, AttributeError):
            return None
        if freq is None or not freq.current > 0:
            return None
        return float(freq.current)

    def sample(self) -> dict[str, float]:
        """Read utilisation, memory and frequency once.

        Returns:
            The keys listed in the class docstring; a utilisation is absent when no CPU time
            elapsed since the previous reading.
        """
        out: dict[str, float] = {}
        total = self._meter.total_pct()
        if total is not None:
            out["cpu_utilization_percentage"] = total
        if self._per_core:
            for k, pct in enumerate(self._meter.cores_pct()):
                if pct is not None:
                    out[f"cpu_core_{k}_utilization_percentage"] = pct
        vm = psutil.virtual_memory()
        used = float(vm.total - vm.available)
        out["system_memory_usage_megabytes"] = used / _BYTES_PER_MEGABYTE
        if vm.total > 0:
            out["system_memory_usage_percentage"] = 100.0 * used / float(vm.total)
        if self._frequency:
            mhz = self._read_frequency_mhz()
            if mhz is not None:
                out["cpu_frequency_megahertz"] = mhz
        return out

    def close(self) -> None:
        """Nothing to release."""


class ProcessSource:
    """CPU and resident memory of this process and its children (scope ``rank``).

    Keys (the caller prefixes them with ``rank_<r>/``):

    * ``process_cpu_percentage``: CPU time of the process and its children over the interval
      since the previous reading, % of one core (may exceed 100 with several busy threads).
    * ``process_memory_rss_megabytes``: resident set size of the process and its children,
      bytes / 1e6.

    The children list is refreshed every ``children_refresh_s`` (enumerating processes scans
    ``/proc`` and costs ~1 ms); a child's CPU time counts from the refresh that discovered it.

    Args:
        name: Source name used in logs and errors.
        include_children: Include descendant processes.
        children_refresh_s: Seconds between refreshes of the children list.
        pid: Process to measure; this process when None.
        monotonic: Monotonic clock in seconds (injectable for tests).

    Raises:
        TelemetryUnavailable: The process cannot be read.
    """

    scope: ClassVar[Scope] = RANK

    def __init__(
        self,
        name: str = "process",
        *,
        include_children: bool = True,
        children_refresh_s: float = 10.0,
        pid: int | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._name = name
        self._include_children = include_children
        self._children_refresh_s = float(children_refresh_s)
        self._monotonic = monotonic
        try:
            self._process = psutil.Process(pid)
            self._process.cpu_percent(interval=None)  # prime: the first call returns 0
        except psutil.Error as e:
            raise TelemetryUnavailable(f"{name}: cannot read process {pid}: {e}") from e
        self._children: dict[int, psutil.Process] = {}
        self._children_refreshed_s = -float("inf")
        if include_children:
            self._refresh_children()

    @property
    def name(self) -> str:
        """Source name."""
        return self._name

    def _refresh_children(self) -> None:
        try:
            current = self._process.children(recursive=True)
        except psutil.Error:
            current = []
        known = self._children
        fresh: dict[int, psutil.Process] = {}
        for child in current:
            if child.pid in known:
                fresh[child.pid] = known[child.pid]
                continue
            try:
                child.cpu_percent(interval=None)  # prime
            except psutil.Error:
                continue
            fresh[child.pid] = child
        self._children = fresh
        self._children_refreshed_s = self._monotonic()

    def sample(self) -> dict[str, float]:
        """Read CPU and RSS of the process tree once.

        Returns:
            ``process_cpu_percentage`` and ``process_memory_rss_megabytes``.

        Raises:
            TelemetryUnavailable: The process itself can no longer be read.
        """
        if (
            self._include_children
            and self._monotonic() - self._children_refreshed_s >= self._children_refresh_s
        ):
            self._refresh_children()
        try:
            with self._process.oneshot():
                cpu_pct = self._process.cpu_percent(interval=None)
                rss_b = float(self._process.memory_info().rss)
        except psutil.Error as e:
            raise TelemetryUnavailable(f"{self._name}: cannot read process: {e}") from e
        gone: list[int] = []
        for pid, child in self._children.items():
            try:
                with child.oneshot():
                    cpu_pct += child.cpu_percent(interval=None)
                    rss_b += float(child.memory_info().rss)
            except psutil.Error:
                gone.append(pid)
        for pid in gone:
            del self._children[pid]
        return {
            "process_cpu_percentage": float(cpu_pct),
            "process_memory_rss_megabytes": rss_b / _BYTES_PER_MEGABYTE,
        }

    def close(self) -> None:
        """Forget the children."""
        self._children = {}


class EstimatedCpuPowerSource:
    """Estimated CPU package power, ``rated_w · util/100`` (scope ``host``; opt-in only).

    This is not a measurement: it exists for ``telemetry.cpu_power=estimated`` (the legacy
    monitor's behaviour) and is always tagged ``power_source.cpu=estimated``. Its first reading
    logs one warning (not its construction: the factory drops it when RAPL measures the power).
    Utilisation comes from this source's own CPU-times baseline.

    Keys: ``cpu_package_power_watts`` (estimated, W).

    Args:
        rated_w: Rated CPU package power in W (e.g. the TDP), > 0.
        name: Source name used in logs and errors.

    Raises:
        ConfigError: ``rated_w`` is not a positive number.
    """

    scope: ClassVar[Scope] = HOST

    def __init__(self, rated_w: float = 125.0, name: str = "cpu_power_estimated") -> None:
        if not float(rated_w) > 0:
            raise ConfigError(f"{name}: rated_w must be > 0 W, got {rated_w!r}")
        self._name = name
        self._rated_w = float(rated_w)
        self._meter = _CpuUtilizationMeter(per_core=False)
        self._warned = False

    @property
    def name(self) -> str:
        """Source name."""
        return self._name

    @property
    def rated_w(self) -> float:
        """Rated CPU package power used for the estimate, W."""
        return self._rated_w

    def tags(self) -> dict[str, str]:
        """Run tags: the CPU power is estimated, and from which rating.

        Returns:
            ``{"power_source.cpu": "estimated", "power_estimate.cpu.rated_w": "<W>"}``.
        """
        return {"power_source.cpu": "estimated", "power_estimate.cpu.rated_w": f"{self._rated_w:g}"}

    def sample(self) -> dict[str, float]:
        """Estimate the CPU package power once.

        Returns:
            ``{"cpu_package_power_watts": W}``; empty when no CPU time elapsed.
        """
        if not self._warned:
            self._warned = True
            logger.warning(
                "CPU power is ESTIMATED as %s W x utilisation (telemetry.cpu_power=estimated); "
                "tagged power_source.cpu=estimated",
                self._rated_w,
            )
        pct = self._meter.total_pct()
        if pct is None:
            return {}
        return {"cpu_package_power_watts": self._rated_w * pct / 100.0}

    def close(self) -> None:
        """Nothing to release."""
