"""RAPL package energy against fake powercap trees: units, wrap-around, power, limits, access."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rle.errors import TelemetryUnavailable
from rle.telemetry.rapl import RaplSource

MAX_UJ = 262_143_328_850


def _package(n: int, energy_uj: int, *, limit_uw: int | None = 125_000_000) -> dict[str, object]:
    zone = f"class/powercap/intel-rapl:{n}"
    files: dict[str, object] = {
        f"{zone}/name": f"package-{n}",
        f"{zone}/energy_uj": energy_uj,
        f"{zone}/max_energy_range_uj": MAX_UJ,
        # sub-zones and the MMIO duplicate must not be counted
        f"{zone}/intel-rapl:{n}:0/name": "core",
        f"{zone}/intel-rapl:{n}:0/energy_uj": 5,
        f"class/powercap/intel-rapl-mmio:{n}/name": f"package-{n}",
        f"class/powercap/intel-rapl-mmio:{n}/energy_uj": 999_000_000,
        f"class/powercap/intel-rapl-mmio:{n}/max_energy_range_uj": MAX_UJ,
    }
    if limit_uw is not None:
        files[f"{zone}/constraint_0_name"] = "long_term"
        files[f"{zone}/constraint_0_power_limit_uw"] = limit_uw
        files[f"{zone}/constraint_1_name"] = "short_term"
        files[f"{zone}/constraint_1_power_limit_uw"] = 2 * limit_uw
    return files


def _set_energy(root: Path, n: int, energy_uj: int) -> None:
    (root / f"class/powercap/intel-rapl:{n}/energy_uj").write_text(f"{energy_uj}\n")


def test_energy_power_and_limit_in_si_units(sysfs, clock) -> None:
    root = sysfs(_package(0, 10_000_000))
    source = RaplSource(root, monotonic=clock.monotonic)

    first = source.sample()
    assert first == {
        "cpu_package_energy_joules": pytest.approx(10.0),  # uJ -> J
        "cpu_package_power_limit_watts": pytest.approx(125.0),  # uW -> W, long_term
    }  # no power on the first reading

    clock.sleep(2.0)
    _set_energy(root, 0, 110_000_000)
    second = source.sample()
    assert second["cpu_package_energy_joules"] == pytest.approx(110.0)
    assert second["cpu_package_power_watts"] == pytest.approx(50.0)  # 100 J / 2 s
    assert source.tags() == {"power_source.cpu": "rapl"}
    assert source.packages == ["intel-rapl:0"]


def test_counter_wrap_around_is_corrected(sysfs, clock) -> None:
    root = sysfs(_package(0, MAX_UJ - 1_000_000))
    source = RaplSource(root, monotonic=clock.monotonic)
    before = source.sample()["cpu_package_energy_joules"]

    clock.sleep(1.0)
    _set_energy(root, 0, 3_000_000)  # wrapped: 1 J to the top, then 3 J
    after = source.sample()

    assert after["cpu_package_energy_joules"] - before == pytest.approx(4.0)
    assert after["cpu_package_power_watts"] == pytest.approx(4.0)


def test_two_packages_are_summed(sysfs, clock) -> None:
    root = sysfs({**_package(0, 1_000_000), **_package(1, 2_000_000, limit_uw=100_000_000)})
    source = RaplSource(root, monotonic=clock.monotonic)
    source.sample()
    clock.sleep(1.0)
    _set_energy(root, 0, 11_000_000)
    _set_energy(root, 1, 22_000_000)
    reading = source.sample()
    assert reading["cpu_package_energy_joules"] == pytest.approx(33.0)
    assert reading["cpu_package_power_watts"] == pytest.approx(30.0)
    assert reading["cpu_package_power_limit_watts"] == pytest.approx(225.0)
    assert source.packages == ["intel-rapl:0", "intel-rapl:1"]


def test_limit_absent_when_not_readable(sysfs) -> None:
    root = sysfs(_package(0, 1_000_000, limit_uw=None))
    assert "cpu_package_power_limit_watts" not in RaplSource(root).sample()


def test_no_powercap_is_unavailable(sysfs) -> None:
    root = sysfs({"class/hwmon/.keep": ""})
    with pytest.raises(TelemetryUnavailable, match="no RAPL powercap interface"):
        RaplSource(root)


def test_only_non_package_zones_is_unavailable(sysfs) -> None:
    root = sysfs(
        {
            "class/powercap/intel-rapl:0/name": "psys",
            "class/powercap/intel-rapl:0/energy_uj": 1,
            "class/powercap/intel-rapl:0/max_energy_range_uj": MAX_UJ,
            "class/powercap/intel-rapl:1/name": "package-1-die-0",  # near miss
            "class/powercap/intel-rapl:1/energy_uj": 1,
            "class/powercap/intel-rapl:1/max_energy_range_uj": MAX_UJ,
        }
    )
    with pytest.raises(TelemetryUnavailable, match="no intel-rapl:<N> zone named package-<N>"):
        RaplSource(root)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_counter_is_unavailable(sysfs) -> None:
    root = sysfs(_package(0, 1_000_000))
    (root / "class/powercap/intel-rapl:0/energy_uj").chmod(0o000)
    with pytest.raises(TelemetryUnavailable, match="not readable"):
        RaplSource(root)


def test_unreadable_counter_is_unavailable_as_root_too(sysfs, monkeypatch) -> None:
    root = sysfs(_package(0, 1_000_000))
    energy = root / "class/powercap/intel-rapl:0/energy_uj"
    real_read_text = Path.read_text

    def read_text(self: Path, *args: object, **kwargs: object) -> str:
        if self == energy:
            raise PermissionError(13, "Permission denied", str(self))
        return real_read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read_text)
    with pytest.raises(TelemetryUnavailable, match=r"not readable \(Permission denied; root-only"):
        RaplSource(root)


def test_counter_vanishing_later_raises_for_the_sampler_to_report(sysfs) -> None:
    root = sysfs(_package(0, 1_000_000))
    source = RaplSource(root)
    (root / "class/powercap/intel-rapl:0/energy_uj").unlink()
    with pytest.raises(TelemetryUnavailable, match="cannot read energy_uj"):
        source.sample()


@pytest.mark.skipif(Path("/sys/class/powercap").is_dir(), reason="host has a powercap interface")
def test_default_root_without_powercap_is_unavailable() -> None:
    with pytest.raises(TelemetryUnavailable, match="no RAPL powercap interface at /sys/class"):
        RaplSource()
