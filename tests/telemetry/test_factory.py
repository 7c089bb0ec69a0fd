"""build_sources: instantiate from config, drop unavailable sources with one log line, tag."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from hydra.errors import InstantiationException
from omegaconf import OmegaConf

from rle.telemetry import DEFAULT_SOURCES, Sampler, build_sources
from rle.telemetry.cpu import CpuHostSource, ProcessSource
from support.fake_nvml import FakeGpu

GPU_UUID = "GPU-12345678-aaaa-bbbb-cccc-000000000000"


def _unavailable_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "rle.telemetry" and "unavailable" in r.msg]


def _no_gpu_machine_config(empty_sysfs: Path) -> dict[str, dict[str, object]]:
    return {
        "cpu": {"_target_": "rle.telemetry.cpu.CpuHostSource"},
        "process": {"_target_": "rle.telemetry.cpu.ProcessSource"},
        "gpu": {"_target_": "rle.telemetry.gpu.NvmlGpuSource"},
        "rapl": {"_target_": "rle.telemetry.rapl.RaplSource", "sysfs_root": str(empty_sysfs)},
        "hwmon": {
            "_target_": "rle.telemetry.hwmon.HwmonTemperatureSource",
            "sysfs_root": str(empty_sysfs),
        },
    }


def test_machine_without_gpu_rapl_hwmon(tmp_path, fake_nvml, fake_torch_cuda, caplog) -> None:
    fake_nvml()
    fake_torch_cuda([])
    with caplog.at_level(logging.WARNING):
        result = build_sources(_no_gpu_machine_config(tmp_path))

    assert list(result.sources) == ["cpu", "process"]
    assert isinstance(result.sources["cpu"], CpuHostSource)
    assert isinstance(result.sources["process"], ProcessSource)
    assert set(result.unavailable) == {"gpu", "rapl", "hwmon"}
    assert result.tags["telemetry.sources"] == "cpu,process"
    assert result.tags["telemetry.unavailable"] == "gpu,rapl,hwmon"
    assert result.tags["power_source.cpu"] == "none"
    assert result.tags["temp_source.cpu"] == "none"
    assert "no CUDA device" in result.tags["telemetry.unavailable.gpu"]
    records = _unavailable_records(caplog)
    assert [r.args[0] for r in records] == ["gpu", "rapl", "hwmon"]  # one line per source
    result.close()


@pytest.mark.skipif(
    any(Path(p).exists() for p in ("/sys/class/powercap", "/sys/class/hwmon", "/dev/nvidia0")),
    reason="this host has RAPL, hwmon or an NVIDIA GPU",
)
def test_default_set_on_this_machine(caplog) -> None:
    with caplog.at_level(logging.WARNING):
        result = build_sources(DEFAULT_SOURCES)
    assert result.tags["telemetry.sources"] == "cpu,process"
    assert result.tags["telemetry.unavailable"] == "gpu,rapl,hwmon"
    assert result.tags["power_source.cpu"] == "none"
    assert result.tags["temp_source.cpu"] == "none"
    assert len(_unavailable_records(caplog)) == 3
    time.sleep(0.05)  # let CPU-time counters tick (10 ms resolution)
    sample = Sampler(result.sources.values()).sample_now()
    assert "cpu_utilization_percentage" in sample.values
    assert not any(k.startswith(("gpu_", "cpu_package_")) for k in sample.values)
    result.close()


def _full_machine(sysfs) -> Path:
    return sysfs(
        {
            "class/powercap/intel-rapl:0/name": "package-0",
            "class/powercap/intel-rapl:0/energy_uj": 5_000_000,
            "class/powercap/intel-rapl:0/max_energy_range_uj": 262_143_328_850,
            "class/powercap/intel-rapl:0/constraint_0_name": "long_term",
            "class/powercap/intel-rapl:0/constraint_0_power_limit_uw": 95_000_000,
            "class/hwmon/hwmon3/name": "coretemp",
            "class/hwmon/hwmon3/temp1_label": "Package id 0",
            "class/hwmon/hwmon3/temp1_input": 48_000,
        }
    )


def test_machine_with_everything(sysfs, fake_nvml, caplog) -> None:
    root = _full_machine(sysfs)
    fake_nvml(FakeGpu(uuid=GPU_UUID))
    cfg = OmegaConf.create(
        {
            "sample_hz": 1.0,  # not a source: skipped
            "cpu": {"_target_": "rle.telemetry.cpu.CpuHostSource", "per_core": False},
            "gpu": {"_target_": "rle.telemetry.gpu.NvmlGpuSource"},
            "rapl": {"_target_": "rle.telemetry.rapl.RaplSource", "sysfs_root": str(root)},
            "hwmon": {
                "_target_": "rle.telemetry.hwmon.HwmonTemperatureSource",
                "sysfs_root": str(root),
            },
            "disabled": {"per_core": True},  # no _target_: skipped
        }
    )
    with caplog.at_level(logging.WARNING):
        result = build_sources(cfg, overrides={"gpu": {"devices": {0: GPU_UUID}}})

    assert list(result.sources) == ["cpu", "gpu", "rapl", "hwmon"]
    assert result.unavailable == {}
    assert result.tags["telemetry.unavailable"] == "none"
    assert result.tags["power_source.cpu"] == "rapl"
    assert result.tags["temp_source.cpu"] == "hwmon"
    assert result.tags["power_source.gpu_0"] == "nvml"
    assert result.tags["temp_source.gpu_0"] == "nvml"
    assert result.tags["gpu_0.uuid"] == GPU_UUID
    assert _unavailable_records(caplog) == []
    values = Sampler(result.sources.values()).sample_now().values
    assert values["cpu_package_temperature_celsius"] == 48.0
    assert values["cpu_package_power_limit_watts"] == 95.0
    assert values["gpu_0_power_usage_watts"] == 250.0


def test_estimated_cpu_power_is_tagged_and_loses_to_rapl(sysfs, caplog) -> None:
    estimated = {"_target_": "rle.telemetry.cpu.EstimatedCpuPowerSource", "rated_w": 65}
    alone = build_sources({"cpu_power": estimated})
    assert alone.tags["power_source.cpu"] == "estimated"
    assert alone.tags["power_estimate.cpu.rated_w"] == "65"

    root = _full_machine(sysfs)
    with caplog.at_level(logging.WARNING, logger="rle.telemetry"):
        both = build_sources(
            {
                "rapl": {"_target_": "rle.telemetry.rapl.RaplSource", "sysfs_root": str(root)},
                "cpu_power": estimated,
            }
        )
    assert list(both.sources) == ["rapl"]
    assert "superseded" in both.unavailable["cpu_power"]
    assert both.tags["power_source.cpu"] == "rapl"
    messages = [r.getMessage() for r in caplog.records]
    assert sum("cpu_power" in m for m in messages) == 1
    assert not any("ESTIMATED" in m for m in messages)  # never used, never claimed


def test_estimated_power_never_on_by_default() -> None:
    assert all("Estimated" not in entry["_target_"] for entry in DEFAULT_SOURCES.values())


def test_non_zero_local_rank_builds_only_its_own_sources(tmp_path, fake_nvml) -> None:
    fake_nvml(FakeGpu(uuid=GPU_UUID))
    cfg = _no_gpu_machine_config(tmp_path)
    result = build_sources(cfg, include_host=False, overrides={"gpu": {"devices": {1: GPU_UUID}}})
    assert list(result.sources) == ["process", "gpu"]
    assert result.unavailable == {}  # host sources were not even tried
    assert "power_source.cpu" not in result.tags
    assert result.tags["power_source.gpu_1"] == "nvml"


def test_unavailable_gpu_with_known_devices_tags_them_none(fake_nvml) -> None:
    import pynvml

    fake_nvml(init_error=pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
    result = build_sources(
        {"gpu": {"_target_": "rle.telemetry.gpu.NvmlGpuSource"}},
        overrides={"gpu": {"devices": {0: GPU_UUID, 1: GPU_UUID}}},
    )
    assert result.sources == {}
    assert result.tags["telemetry.sources"] == "none"
    assert result.tags["power_source.gpu_0"] == result.tags["power_source.gpu_1"] == "none"
    assert result.tags["temp_source.gpu_1"] == "none"
    assert "NVML Shared Library Not Found" in result.unavailable["gpu"]


def test_misconfiguration_is_an_error_not_unavailable() -> None:
    with pytest.raises(InstantiationException, match="no_such_argument"):
        build_sources(
            {"cpu": {"_target_": "rle.telemetry.cpu.CpuHostSource", "no_such_argument": 1}}
        )


def test_fake_telemetry_config() -> None:
    result = build_sources(
        {
            "gpu": {"_target_": "rle.telemetry.fake.FakeGpuSource", "util_pct": [20, 80]},
            "cpu": {
                "_target_": "rle.telemetry.fake.ScriptedSource",
                "readings": [{"cpu_utilization_percentage": 30}],
                "scope": "host",
                "tags": {"power_source.cpu": "fake"},
            },
        }
    )
    assert result.tags["power_source.gpu_0"] == "fake"
    assert result.tags["power_source.cpu"] == "fake"
    assert result.tags["temp_source.cpu"] == "none"
    values = Sampler(result.sources.values()).sample_now().values
    assert values["cpu_utilization_percentage"] == 30.0
    assert values["gpu_0_utilization_percentage"] == 20.0
