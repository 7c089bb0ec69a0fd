"""NVML GPU source against an autospecced fake ``pynvml``: counts, UUID mapping, units, errors."""

from __future__ import annotations

import logging
import math
import subprocess
import sys
import textwrap

import pynvml as real_pynvml
import pytest

from rle.errors import TelemetryUnavailable
from rle.telemetry import gpu as gpu_module
from rle.telemetry.gpu import NVML_QUANTITIES, NvmlGpuSource, cuda_device_uuids, normalize_uuid
from support.fake_nvml import FakeGpu

UUIDS = ["GPU-aaaaaaaa-0000-0000-0000-000000000000", "GPU-bbbbbbbb-1111-1111-1111-111111111111"]
ALL_QUANTITIES = set(NVML_QUANTITIES)


def _gpus(n: int) -> list[FakeGpu]:
    return [
        FakeGpu(uuid=UUIDS[i], nvml_index=i, util_pct=10 + i, power_mw=100_000 + 1000 * i)
        for i in range(n)
    ]


@pytest.mark.parametrize("count", [1, 2])
def test_every_gpu_every_field_in_si_units(fake_nvml, fake_torch_cuda, count: int) -> None:
    gpus = _gpus(count)
    nvml = fake_nvml(*gpus)
    fake_torch_cuda([u.removeprefix("GPU-") for u in UUIDS[:count]])

    source = NvmlGpuSource()
    reading = source.sample()

    assert set(reading) == {f"gpu_{i}_{q}" for i in range(count) for q in ALL_QUANTITIES}
    for i, gpu in enumerate(gpus):
        p = f"gpu_{i}_"
        assert reading[p + "utilization_percentage"] == gpu.util_pct
        assert reading[p + "power_usage_watts"] == pytest.approx(gpu.power_mw / 1000)  # mW -> W
        assert reading[p + "power_limit_watts"] == pytest.approx(400.0)
        assert reading[p + "power_usage_percentage"] == pytest.approx(
            100 * gpu.power_mw / gpu.limit_mw
        )
        assert reading[p + "energy_joules"] == pytest.approx(1234.567)  # mJ -> J
        assert reading[p + "memory_usage_megabytes"] == pytest.approx(8000.0)  # bytes / 1e6
        assert reading[p + "memory_usage_percentage"] == pytest.approx(10.0)
        assert reading[p + "temperature_celsius"] == 61
        assert reading[p + "memory_temperature_celsius"] == 72
        assert reading[p + "slowdown_temperature_celsius"] == 90
        assert reading[p + "sm_clock_megahertz"] == 1980
        assert reading[p + "memory_clock_megahertz"] == 2619
        assert reading[p + "throttle_reasons"] == 4
        assert reading[p + "fan_speed_percentage"] == 40
    nvml.nvmlDeviceGetHandleByIndex.assert_not_called()
    source.close()


def test_zero_gpus_is_unavailable(fake_nvml, fake_torch_cuda) -> None:
    nvml = fake_nvml()  # device count 0: no physical GPU, torch sees none
    fake_torch_cuda([])
    with pytest.raises(TelemetryUnavailable, match="no CUDA device visible"):
        NvmlGpuSource()
    nvml.nvmlInit.assert_not_called()


def test_empty_device_mapping_is_unavailable(fake_nvml) -> None:
    fake_nvml(*_gpus(2))
    with pytest.raises(TelemetryUnavailable, match="no CUDA device"):
        NvmlGpuSource(devices={})


def test_nvml_init_failure_is_unavailable_with_cause(fake_nvml) -> None:
    fake_nvml(init_error=real_pynvml.NVML_ERROR_DRIVER_NOT_LOADED)
    with pytest.raises(TelemetryUnavailable, match="Driver Not Loaded") as info:
        NvmlGpuSource(devices={0: UUIDS[0]})
    assert "cannot initialise NVML" in str(info.value)
    chain = [info.value]
    while chain[-1].__cause__ is not None:
        chain.append(chain[-1].__cause__)
    assert isinstance(chain[-1], real_pynvml.NVMLError)  # raise ... from e, all the way down


def test_missing_library_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu_module, "pynvml", None)
    with pytest.raises(TelemetryUnavailable, match="not installed"):
        NvmlGpuSource(devices={0: UUIDS[0]})


def test_unknown_uuid_is_unavailable_and_shuts_nvml_down(fake_nvml) -> None:
    nvml = fake_nvml(*_gpus(1))
    with pytest.raises(
        TelemetryUnavailable, match=r"cuda:0 \(GPU-not-on-this-machine\) has no NVML"
    ):
        NvmlGpuSource(devices={0: "GPU-not-on-this-machine"})
    assert nvml.nvmlInit.call_count == nvml.nvmlShutdown.call_count == 1


@pytest.mark.parametrize(
    ("visible", "expected_physical"),
    [
        pytest.param("1", [1], id="CUDA_VISIBLE_DEVICES=1"),
        pytest.param("1,0", [1, 0], id="CUDA_VISIBLE_DEVICES=1,0"),
        pytest.param("0", [0], id="CUDA_VISIBLE_DEVICES=0"),
    ],
)
def test_cuda_ordinals_map_to_nvml_devices_by_uuid(
    fake_nvml, fake_torch_cuda, monkeypatch: pytest.MonkeyPatch, visible, expected_physical
) -> None:
    gpus = _gpus(2)
    nvml = fake_nvml(*gpus)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    # What CUDA does with CUDA_VISIBLE_DEVICES: ordinal i is the i-th listed physical GPU.
    fake_torch_cuda([gpus[p].uuid.removeprefix("GPU-") for p in expected_physical])

    mapping = cuda_device_uuids()
    source = NvmlGpuSource(devices=mapping)
    reading = source.sample()

    assert mapping == {i: gpus[p].uuid for i, p in enumerate(expected_physical)}
    for ordinal, physical in enumerate(expected_physical):
        assert reading[f"gpu_{ordinal}_utilization_percentage"] == gpus[physical].util_pct
        assert source.tags()[f"gpu_{ordinal}.nvml_index"] == str(physical)
        assert source.tags()[f"gpu_{ordinal}.uuid"] == gpus[physical].uuid
    assert not any(k.startswith(f"gpu_{len(expected_physical)}_") for k in reading)
    nvml.nvmlDeviceGetHandleByIndex.assert_not_called()


def test_one_rank_one_gpu_uses_its_ordinal(fake_nvml) -> None:
    gpus = _gpus(2)
    fake_nvml(*gpus)
    source = NvmlGpuSource(devices={1: UUIDS[1]})  # DDP rank 1 on cuda:1
    reading = source.sample()
    assert {k.split("_")[1] for k in reading} == {"1"}
    assert reading["gpu_1_power_usage_watts"] == pytest.approx(101.0)


@pytest.mark.parametrize(
    ("fn_name", "absent"),
    [
        ("nvmlDeviceGetFanSpeed", {"fan_speed_percentage"}),
        ("nvmlDeviceGetPowerUsage", {"power_usage_watts", "power_usage_percentage"}),
        ("nvmlDeviceGetTotalEnergyConsumption", {"energy_joules"}),
        ("nvmlDeviceGetTemperature", {"temperature_celsius"}),
        ("nvmlDeviceGetTemperatureThreshold", {"slowdown_temperature_celsius"}),
        ("nvmlDeviceGetFieldValues", {"memory_temperature_celsius"}),
        ("nvmlDeviceGetMemoryInfo", {"memory_usage_megabytes", "memory_usage_percentage"}),
        ("nvmlDeviceGetEnforcedPowerLimit", {"power_limit_watts", "power_usage_percentage"}),
    ],
)
def test_not_supported_field_is_absent_and_others_present(fake_nvml, fn_name, absent) -> None:
    gpus = _gpus(2)
    gpus[0].unsupported.add(fn_name)
    fake_nvml(*gpus)
    source = NvmlGpuSource(devices={0: UUIDS[0], 1: UUIDS[1]})

    first, second = source.sample(), source.sample()

    for reading in (first, second):
        assert {f"gpu_0_{q}" for q in absent}.isdisjoint(reading)
        assert {f"gpu_0_{q}" for q in ALL_QUANTITIES - absent} <= set(reading)
        assert {f"gpu_1_{q}" for q in ALL_QUANTITIES} <= set(reading)  # other GPU untouched
    # Probed once in __init__, never queried again.
    assert gpus[0].calls[fn_name] == 1
    assert source.tags()["power_source.gpu_0"] == "nvml"  # power or energy still measured


def test_no_power_and_no_energy_tags_power_source_none(fake_nvml) -> None:
    gpu = FakeGpu(uuid=UUIDS[0])
    gpu.unsupported |= {"nvmlDeviceGetPowerUsage", "nvmlDeviceGetTotalEnergyConsumption"}
    gpu.unsupported.add("nvmlDeviceGetTemperature")
    fake_nvml(gpu)
    tags = NvmlGpuSource(devices={0: UUIDS[0]}).tags()
    assert tags["power_source.gpu_0"] == "none"
    assert tags["temp_source.gpu_0"] == "none"


def test_memory_temperature_field_not_supported_in_field_value(fake_nvml) -> None:
    gpu = FakeGpu(uuid=UUIDS[0], mem_temp_c=None)  # call succeeds, field's own return fails
    fake_nvml(gpu)
    reading = NvmlGpuSource(devices={0: UUIDS[0]}).sample()
    assert "gpu_0_memory_temperature_celsius" not in reading
    assert reading["gpu_0_temperature_celsius"] == 61


def test_old_driver_falls_back_to_throttle_reasons_api(fake_nvml) -> None:
    gpu = FakeGpu(uuid=UUIDS[0], throttle_mask=0x24)
    gpu.errors["nvmlDeviceGetCurrentClocksEventReasons"] = real_pynvml.NVML_ERROR_FUNCTION_NOT_FOUND
    fake_nvml(gpu)
    reading = NvmlGpuSource(devices={0: UUIDS[0]}).sample()
    assert reading["gpu_0_throttle_reasons"] == 0x24


def test_transient_field_error_skips_that_sample_and_warns_once(
    fake_nvml, caplog: pytest.LogCaptureFixture
) -> None:
    gpu = FakeGpu(uuid=UUIDS[0])
    fake_nvml(gpu)
    source = NvmlGpuSource(devices={0: UUIDS[0]})
    gpu.errors["nvmlDeviceGetUtilizationRates"] = real_pynvml.NVML_ERROR_UNKNOWN

    with caplog.at_level(logging.WARNING, logger="rle.telemetry.gpu"):
        first, second = source.sample(), source.sample()
    del gpu.errors["nvmlDeviceGetUtilizationRates"]
    third = source.sample()

    assert "gpu_0_utilization_percentage" not in first
    assert "gpu_0_utilization_percentage" not in second
    assert first["gpu_0_power_usage_watts"] == pytest.approx(250.0)
    assert third["gpu_0_utilization_percentage"] == 50  # transient: queried again
    assert len([r for r in caplog.records if "utilization" in r.getMessage()]) == 1


def test_nvml_initialised_once_and_shut_down_once(fake_nvml) -> None:
    nvml = fake_nvml(*_gpus(2))
    source = NvmlGpuSource(devices={0: UUIDS[0], 1: UUIDS[1]})
    for _ in range(5):
        source.sample()
    source.close()
    source.close()
    assert nvml.nvmlInit.call_count == 1
    assert nvml.nvmlShutdown.call_count == 1


def test_readings_are_live_not_cached(fake_nvml) -> None:
    gpu = FakeGpu(uuid=UUIDS[0], energy_mj=1000)
    fake_nvml(gpu)
    source = NvmlGpuSource(devices={0: UUIDS[0]})
    first = source.sample()["gpu_0_energy_joules"]
    gpu.energy_mj = 4500
    gpu.temp_c = 75
    second = source.sample()
    assert (first, second["gpu_0_energy_joules"]) == (1.0, 4.5)
    assert second["gpu_0_temperature_celsius"] == 75


def test_real_zeros_are_kept(fake_nvml) -> None:
    fake_nvml(FakeGpu(uuid=UUIDS[0], util_pct=0, fan_pct=0, throttle_mask=0))
    reading = NvmlGpuSource(devices={0: UUIDS[0]}).sample()
    assert reading["gpu_0_utilization_percentage"] == 0
    assert reading["gpu_0_fan_speed_percentage"] == 0
    assert not any(math.isnan(v) for v in reading.values())


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("5b1a0c2e-1111-2222-3333-444455556666", "GPU-5b1a0c2e-1111-2222-3333-444455556666"),
        ("GPU-5b1a0c2e-1111", "GPU-5b1a0c2e-1111"),
        ("MIG-0c1d2e3f-aaaa", "MIG-0c1d2e3f-aaaa"),
    ],
)
def test_normalize_uuid(raw: str, expected: str) -> None:
    assert normalize_uuid(raw) == expected


def test_cuda_device_uuids_for_given_ordinals(fake_torch_cuda) -> None:
    fake_torch_cuda(["aaa", "bbb", "ccc"])
    assert cuda_device_uuids([2]) == {2: "GPU-ccc"}
    assert cuda_device_uuids() == {0: "GPU-aaa", 1: "GPU-bbb", 2: "GPU-ccc"}


def test_package_imports_without_nvml_and_never_calls_it_at_import() -> None:
    code = textwrap.dedent(
        """
        import sys, types
        calls = []
        fake = types.ModuleType("pynvml")
        fake.nvmlInit = lambda: calls.append("nvmlInit")
        sys.modules["pynvml"] = fake
        import rle.telemetry, rle.telemetry.gpu
        assert calls == [], calls
        sys.modules["pynvml"] = None  # the library is not installed
        import importlib
        gpu = importlib.reload(rle.telemetry.gpu)
        assert gpu.pynvml is None
        try:
            gpu.NvmlGpuSource(devices={0: "GPU-x"})
        except rle.errors.TelemetryUnavailable as e:
            print("unavailable:", e)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "unavailable: gpu: nvidia-ml-py (pynvml) is not installed" in done.stdout
