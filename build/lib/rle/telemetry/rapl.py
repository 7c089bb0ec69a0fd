"""CPU package energy and power from Linux RAPL counters (``/sys/class/powercap``).

The package zones are the top-level ``intel-rapl:<N>`` directories whose ``name`` is exactly
``package-<N>`` (AMD Zen exposes the same interface on recent kernels); the ``intel-rapl-mmio``
duplicates and sub-zones (``core``, ``uncore``, ``dram``) are ignored. ``energy_uj`` is a
microjoule counter that wraps at ``max_energy_range_uj``; on many kernels it is readable by root
only (CVE-2020-8694), in which case the source is unavailable rather than estimated.

With several packages (sockets), energy, power and limit are sums over the packages.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from rle.errors import TelemetryUnavailable
from rle.telemetry.base import HOST, Scope

__all__ = ["RaplSource"]

logger = logging.getLogger(__name__)

_ZONE_DIR = re.compile(r"^intel-rapl:(\d+)$")
_PACKAGE_NAME = re.compile(r"^package-(\d+)$")
_UJ_PER_J = 1e6
_UW_PER_W = 1e6


def _read_int(path: Path) -> int:
    return int(path.read_text().strip())


@dataclass
class _Zone:
    """One package zone with its wrap-corrected running total."""

    path: Path
    max_range_uj: int
    last_raw_uj: int
    total_uj: int
    limit_path: Path | None

    def read_total_uj(self) -> int:
        raw = _read_int(self.path / "energy_uj")
        delta = raw - self.last_raw_uj
        if delta < 0:  # the counter wrapped at max_energy_range_uj
            delta += self.max_range_uj
        self.last_raw_uj = raw
        self.total_uj += delta
        return self.total_uj


def _long_term_limit_path(zone: Path) -> Path | None:
    """The ``constraint_<k>_power_limit_uw`` of the long-term (PL1) constraint, if readable."""
    candidates = sorted(zone.glob("constraint_*_power_limit_uw"))
    for limit in candidates:
        k = limit.name.split("_")[1]
        name_file = zone / f"constraint_{k}_name"
        try:
            if name_file.read_text().strip() == "long_term":
                _read_int(limit)
                return limit
        except (OSError, ValueError):
            continue
    first = zone / "constraint_0_power_limit_uw"
    if not (zone / "constraint_0_name").exists():
        try:
            _read_int(first)
        except (OSError, ValueError):
            return None
        return first
    return None


class RaplSource:
    """CPU package energy counter, mean power and long-term power limit (scope ``host``).

    Keys:

    * ``cpu_package_energy_joules``: cumulative package energy, J (wrap-corrected counter;
      starts at the first raw reading, only differences are meaningful).
    * ``cpu_package_power_watts``: mean package power since the previous reading,
      Δenergy / Δmonotonic time, W; absent on the first reading.
    * ``cpu_package_power_limit_watts``: long-term power limit (PL1, ``constraint_0``), W, where
      readable.

    Args:
        sysfs_root: Root of sysfs (``/sys``); tests pass a fake tree.
        name: Source name used in logs and errors.
        monotonic: Monotonic clock in seconds (injectable for tests).

    Raises:
        TelemetryUnavailable: No package zone, or its counter is not readable.
    """

    scope: ClassVar[Scope] = HOST

    def __init__(
        self,
        sysfs_root: str | Path = "/sys",
        name: str = "rapl",
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._name = name
        self._monotonic = monotonic
        powercap = Path(sysfs_root) / "class" / "powercap"
        if not powercap.is_dir():
            raise TelemetryUnavailable(f"{name}: no RAPL powercap interface at {powercap}")
        self._zones: list[_Zone] = []
        problems: list[str] = []
        for zone_dir in sorted(powercap.iterdir()):
            if not _ZONE_DIR.match(zone_dir.name):
                continue
            try:
                zone_name = (zone_dir / "name").read_text().strip()
            except OSError as e:
                problems.append(f"{zone_dir.name}/name: {e}")
                continue
            if not _PACKAGE_NAME.match(zone_name):
                continue
            try:
                raw = _read_int(zone_dir / "energy_uj")
                max_range = _read_int(zone_dir / "max_energy_range_uj")
            except PermissionError as e:
                problems.append(
                    f"{zone_dir.name}/energy_uj is not readable ({e.strerror}; root-only on many "
                    "kernels since CVE-2020-8694)"
                )
                continue
            except (OSError, ValueError) as e:
                problems.append(f"{zone_dir.name}: {e}")
                continue
            self._zones.append(
                _Zone(zone_dir, max_range, raw, raw, _long_term_limit_path(zone_dir))
            )
        if not self._zones:
            detail = "; ".join(problems) if problems else "no intel-rapl:<N> zone named package-<N>"
            raise TelemetryUnavailable(f"{name}: no readable RAPL package counter ({detail})")
        self._last_energy_uj: int | None = None
        self._last_time_s: float | None = None

    @property
    def name(self) -> str:
        """Source name."""
        return self._name

    @property
    def packages(self) -> list[str]:
        """Sysfs directory names of the package zones read, e.g. ``["intel-rapl:0"]``."""
        return [zone.path.name for zone in self._zones]

    def tags(self) -> dict[str, str]:
        """Run tags: the CPU power is measured by RAPL.

        Returns:
            ``{"power_source.cpu": "rapl"}``.
        """
        return {"power_source.cpu": "rapl"}

    def sample(self) -> dict[str, float]:
        """Read the package counters once.

        Returns:
            The keys listed in the class docstring.

        Raises:
            TelemetryUnavailable: A counter could not be read.
        """
        now_s = self._monotonic()
        try:
            energy_uj = sum(zone.read_total_uj() for zone in self._zones)
        except (OSError, ValueError) as e:
            raise TelemetryUnavailable(f"{self._name}: cannot read energy_uj: {e}") from e
        out = {"cpu_package_energy_joules": energy_uj / _UJ_PER_J}
        if self._last_energy_uj is not None and self._last_time_s is not None:
            dt_s = now_s - self._last_time_s
            if dt_s > 0:
                out["cpu_package_power_watts"] = (
                    (energy_uj - self._last_energy_uj) / _UJ_PER_J / dt_s
                )
        self._last_energy_uj = energy_uj
        self._last_time_s = now_s
        limits = [zone.limit_path for zone in self._zones]
        if all(path is not None for path in limits):
            try:
                limit_uw = sum(_read_int(path) for path in limits if path is not None)
            except (OSError, ValueError):
                pass
            else:
                if limit_uw > 0:
                    out["cpu_package_power_limit_watts"] = limit_uw / _UW_PER_W
        return out

    def close(self) -> None:
        """Nothing to release."""
