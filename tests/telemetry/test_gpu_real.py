"""Real NVML on cuda:0 (skips visibly without a CUDA GPU)."""

from __future__ import annotations

import time

from rle.telemetry.gpu import NvmlGpuSource, cuda_device_uuids
from support.runif import requires_gpu


@requires_gpu
def test_real_nvml_fields_for_cuda_0() -> None:
    source = NvmlGpuSource(devices=cuda_device_uuids([0]))
    try:
        first = source.sample()
        time.sleep(0.5)
        second = source.sample()
    finally:
        source.close()
    assert second["gpu_0_power_usage_watts"] > 0
    assert second["gpu_0_temperature_celsius"] > 0
    assert second["gpu_0_power_limit_watts"] > 0
    assert 0 <= second["gpu_0_utilization_percentage"] <= 100
    assert second["gpu_0_energy_joules"] > first["gpu_0_energy_joules"]
    assert source.tags()["power_source.gpu_0"] == "nvml"
