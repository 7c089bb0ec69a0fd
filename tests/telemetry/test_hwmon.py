"""CPU package temperature from fake hwmon / thermal trees: exact driver and label matching."""

from __future__ import annotations

from pathlib import Path

import pytest

from rle.errors import TelemetryUnavailable
from rle.telemetry.hwmon import HwmonTemperatureSource


def _chip(n: int, driver: str, sensors: dict[str, int]) -> dict[str, object]:
    """hwmon<n> with ``{label: millidegrees}`` as temp<k>_label / temp<k>_input."""
    files: dict[str, object] = {f"class/hwmon/hwmon{n}/name": driver}
    for k, (label, milli_c) in enumerate(sensors.items(), start=1):
        files[f"class/hwmon/hwmon{n}/temp{k}_label"] = label
        files[f"class/hwmon/hwmon{n}/temp{k}_input"] = milli_c
    return files


def test_coretemp_package_sensor_in_celsius(sysfs) -> None:
    root = sysfs(_chip(0, "coretemp", {"Core 0": 90_000, "Package id 0": 54_500, "Core 1": 91_000}))
    source = HwmonTemperatureSource(root)
    assert source.sample() == {"cpu_package_temperature_celsius": pytest.approx(54.5)}
    assert source.sensors == ["coretemp/Package id 0"]
    assert source.tags() == {
        "temp_source.cpu": "hwmon",
        "temp_sensor.cpu": "coretemp/Package id 0",
    }


def test_two_sockets_report_the_hottest(sysfs) -> None:
    root = sysfs(
        {
            **_chip(0, "coretemp", {"Package id 0": 50_000}),
            **_chip(1, "coretemp", {"Package id 1": 63_000}),
        }
    )
    assert HwmonTemperatureSource(root).sample()["cpu_package_temperature_celsius"] == 63.0


@pytest.mark.parametrize("driver", ["k10temp", "zenpower"])
def test_amd_prefers_tdie_over_tctl(sysfs, driver: str) -> None:
    root = sysfs(_chip(0, driver, {"Tctl": 70_000, "Tdie": 60_000, "Tccd1": 80_000}))
    source = HwmonTemperatureSource(root)
    assert source.sample()["cpu_package_temperature_celsius"] == 60.0
    assert source.sensors == [f"{driver}/Tdie"]


def test_amd_tctl_when_no_tdie(sysfs) -> None:
    root = sysfs(_chip(0, "k10temp", {"Tctl": 47_250, "Tccd1": 80_000}))
    assert HwmonTemperatureSource(root).sample()["cpu_package_temperature_celsius"] == 47.25


@pytest.mark.parametrize(
    ("driver", "label"),
    [
        pytest.param("coretemp", "Package id 0 Power", id="label-suffix"),
        pytest.param("coretemp", "package id 0", id="label-case"),
        pytest.param("coretemp", "CPU Package", id="hwinfo-style-label"),
        pytest.param("coretemp", "Core 0", id="core-not-package"),
        pytest.param("k10temp", "Tctl2", id="amd-label-suffix"),
        pytest.param("k10temp", "Tccd1", id="amd-ccd"),
        pytest.param("coretemp2", "Package id 0", id="driver-suffix"),
        pytest.param("nvme", "Composite", id="other-driver"),
        pytest.param("acpitz", "Package id 0", id="label-on-wrong-driver"),
    ],
)
def test_near_misses_are_not_matched(sysfs, driver: str, label: str) -> None:
    root = sysfs(_chip(0, driver, {label: 99_000}))
    with pytest.raises(TelemetryUnavailable, match="no CPU package temperature sensor"):
        HwmonTemperatureSource(root)


def test_thermal_zone_fallback(sysfs) -> None:
    root = sysfs(
        {
            **_chip(0, "nvme", {"Composite": 40_000}),
            "class/thermal/thermal_zone0/type": "acpitz",
            "class/thermal/thermal_zone0/temp": 27_800,
            "class/thermal/thermal_zone1/type": "x86_pkg_temp",
            "class/thermal/thermal_zone1/temp": 58_000,
            "class/thermal/thermal_zone2/type": "x86_pkg_temp_extra",
            "class/thermal/thermal_zone2/temp": 99_000,
        }
    )
    source = HwmonTemperatureSource(root)
    assert source.sample() == {"cpu_package_temperature_celsius": 58.0}
    assert source.tags()["temp_source.cpu"] == "hwmon"
    assert source.sensors == ["thermal/thermal_zone1/x86_pkg_temp"]


def test_hwmon_wins_over_thermal_zone(sysfs) -> None:
    root = sysfs(
        {
            **_chip(0, "coretemp", {"Package id 0": 51_000}),
            "class/thermal/thermal_zone0/type": "x86_pkg_temp",
            "class/thermal/thermal_zone0/temp": 58_000,
        }
    )
    assert HwmonTemperatureSource(root).sample()["cpu_package_temperature_celsius"] == 51.0


def test_unreadable_input_is_skipped_at_construction(sysfs) -> None:
    root = sysfs(_chip(0, "coretemp", {"Package id 0": 51_000}))
    (root / "class/hwmon/hwmon0/temp1_input").write_text("garbage\n")
    with pytest.raises(TelemetryUnavailable):
        HwmonTemperatureSource(root)


def test_sensor_vanishing_later_raises_for_the_sampler_to_report(sysfs) -> None:
    root = sysfs(_chip(0, "coretemp", {"Package id 0": 51_000}))
    source = HwmonTemperatureSource(root)
    (root / "class/hwmon/hwmon0/temp1_input").unlink()
    with pytest.raises(TelemetryUnavailable, match="no sensor readable"):
        source.sample()


def test_empty_tree_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(TelemetryUnavailable, match="no CPU package temperature sensor"):
        HwmonTemperatureSource(tmp_path)


@pytest.mark.skipif(Path("/sys/class/hwmon").is_dir(), reason="host has hwmon sensors")
def test_this_machine_has_no_package_temperature() -> None:
    with pytest.raises(TelemetryUnavailable):
        HwmonTemperatureSource()
