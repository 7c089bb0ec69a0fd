"""CPU package temperature from Linux hwmon, with thermal zones as fallback.

Sensors are matched by **exact** driver name and label, never fuzzily (``docs/rle-metric.md`` I4):

* ``coretemp`` (Intel): labels ``Package id <N>``;
* ``k10temp`` and ``zenpower`` (AMD): label ``Tdie`` when present, else ``Tctl`` (``Tctl`` may
  carry a fan-control offset on some parts);
* fallback: ``/sys/class/thermal/thermal_zone*/`` of type ``x86_pkg_temp``.

With several packages (sockets) the hottest is reported. Values are millidegrees in sysfs and
converted to °C here.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import ClassVar

from rle.errors import TelemetryUnavailable
from rle.telemetry.base import HOST, Scope

__all__ = ["HwmonTemperatureSource"]

logger = logging.getLogger(__name__)

_MILLIDEGREES_PER_C = 1000.0
_CORETEMP_PACKAGE = re.compile(r"^Package id \d+$")
_AMD_DRIVERS = ("k10temp", "zenpower")
_AMD_LABELS_BY_PREFERENCE = ("Tdie", "Tctl")
_THERMAL_ZONE_TYPE = "x86_pkg_temp"
_INPUT_FOR_LABEL = re.compile(r"^(temp\d+)_label$")


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _read_celsius(path: Path) -> float:
    return int(path.read_text().strip()) / _MILLIDEGREES_PER_C


def _readable(path: Path) -> bool:
    try:
        _read_celsius(path)
    except (OSError, ValueError):
        return False
    return True


def _labelled_inputs(chip: Path) -> dict[str, Path]:
    """``{label: tempN_input}`` of one hwmon chip."""
    out: dict[str, Path] = {}
    for label_file in sorted(chip.glob("temp*_label")):
        match = _INPUT_FOR_LABEL.match(label_file.name)
        label = _read_text(label_file)
        if match is None or label is None:
            continue
        out[label] = chip / f"{match.group(1)}_input"
    return out


def _hwmon_sensors(hwmon: Path) -> list[tuple[str, Path]]:
    """(description, input path) of every matching package sensor under ``class/hwmon``."""
    found: list[tuple[str, Path]] = []
    if not hwmon.is_dir():
        return found
    for chip in sorted(hwmon.iterdir()):
        driver = _read_text(chip / "name")
        if driver == "coretemp":
            for label, path in _labelled_inputs(chip).items():
                if _CORETEMP_PACKAGE.match(label) and _readable(path):
                    found.append((f"{driver}/{label}", path))
        elif driver in _AMD_DRIVERS:
            labelled = _labelled_inputs(chip)
            for label in _AMD_LABELS_BY_PREFERENCE:
                amd_input = labelled.get(label)
                if amd_input is not None and _readable(amd_input):
                    found.append((f"{driver}/{label}", amd_input))
                    break
    return found


def _thermal_zone_sensors(thermal: Path) -> list[tuple[str, Path]]:
    found: list[tuple[str, Path]] = []
    if not thermal.is_dir():
        return found
    for zone in sorted(thermal.glob("thermal_zone*")):
        if _read_text(zone / "type") == _THERMAL_ZONE_TYPE and _readable(zone / "temp"):
            found.append((f"thermal/{zone.name}/{_THERMAL_ZONE_TYPE}", zone / "temp"))
    return found


class HwmonTemperatureSource:
    """CPU package temperature (scope ``host``).

    Keys: ``cpu_package_temperature_celsius`` (hottest matched package sensor, °C).

    Args:
        sysfs_root: Root of sysfs (``/sys``); tests pass a fake tree.
        name: Source name used in logs and errors.

    Raises:
        TelemetryUnavailable: No matching, readable package temperature sensor.
    """

    scope: ClassVar[Scope] = HOST

    def __init__(self, sysfs_root: str | Path = "/sys", name: str = "hwmon") -> None:
        self._name = name
        root = Path(sysfs_root) / "class"
        sensors = _hwmon_sensors(root / "hwmon")
        if not sensors:
            sensors = _thermal_zone_sensors(root / "thermal")
        if not sensors:
            raise TelemetryUnavailable(
                f"{name}: no CPU package temperature sensor (looked for hwmon coretemp "
                f"'Package id N', k10temp/zenpower 'Tdie'/'Tctl', thermal zone "
                f"'{_THERMAL_ZONE_TYPE}' under {root})"
            )
        self._sensors = sensors

    @property
    def name(self) -> str:
        """Source name."""
        return self._name

    @property
    def sensors(self) -> list[str]:
        """Descriptions of the sensors read, e.g. ``["coretemp/Package id 0"]``."""
        return [description for description, _ in self._sensors]

    def tags(self) -> dict[str, str]:
        """Run tags: the CPU temperature source and the exact sensors.

        Returns:
            ``{"temp_source.cpu": "hwmon", "temp_sensor.cpu": "<driver>/<label>,…"}``.
        """
        return {"temp_source.cpu": "hwmon", "temp_sensor.cpu": ",".join(self.sensors)}

    def sample(self) -> dict[str, float]:
        """Read the package temperature once.

        Returns:
            ``{"cpu_package_temperature_celsius": °C}`` (maximum over the sensors read).

        Raises:
            TelemetryUnavailable: None of the sensors could be read.
        """
        readings: list[float] = []
        for _, path in self._sensors:
            try:
                readings.append(_read_celsius(path))
            except (OSError, ValueError):
                continue
        if not readings:
            raise TelemetryUnavailable(f"{self._name}: no sensor readable: {self.sensors}")
        return {"cpu_package_temperature_celsius": max(readings)}

    def close(self) -> None:
        """Nothing to release."""
