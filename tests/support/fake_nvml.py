"""A fake NVML behind an autospecced ``pynvml`` mock: physical GPUs with vendor units.

Use with ``unittest.mock.patch("rle.telemetry.gpu.pynvml", autospec=True)``; the autospec keeps
every call's signature honest, :func:`install_fake_nvml` gives the mock the real constants,
``NVMLError`` classes and ctypes structs, and answers each query from a :class:`FakeGpu`
(vendor units: mW, mJ, bytes), or raises ``NVMLError`` for the fields a GPU does not support.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pynvml as real_pynvml

_GPU_FUNCTIONS = (
    "nvmlDeviceGetUtilizationRates",
    "nvmlDeviceGetMemoryInfo",
    "nvmlDeviceGetPowerUsage",
    "nvmlDeviceGetEnforcedPowerLimit",
    "nvmlDeviceGetTotalEnergyConsumption",
    "nvmlDeviceGetTemperature",
    "nvmlDeviceGetTemperatureThreshold",
    "nvmlDeviceGetClockInfo",
    "nvmlDeviceGetCurrentClocksEventReasons",
    "nvmlDeviceGetCurrentClocksThrottleReasons",
    "nvmlDeviceGetFanSpeed",
    "nvmlDeviceGetFieldValues",
    "nvmlDeviceGetName",
    "nvmlDeviceGetIndex",
)


@dataclass
class FakeGpu:
    """One physical GPU as NVML reports it (vendor units)."""

    uuid: str
    nvml_index: int = 0
    name: str = "NVIDIA Fake GPU"
    util_pct: int = 50
    mem_used_b: int = 8_000_000_000
    mem_total_b: int = 80_000_000_000
    power_mw: int = 250_000
    limit_mw: int = 400_000
    energy_mj: int = 1_234_567
    temp_c: int = 61
    mem_temp_c: int | None = 72
    slowdown_c: int = 90
    sm_mhz: int = 1980
    mem_mhz: int = 2619
    gfx_mhz: int = 1975
    throttle_mask: int = 0x4
    fan_pct: int = 40
    unsupported: set[str] = field(default_factory=set)
    """pynvml function names that raise NOT_SUPPORTED on this GPU."""
    errors: dict[str, int] = field(default_factory=dict)
    """pynvml function name -> NVML error code raised on every call (transient failures)."""
    calls: dict[str, int] = field(default_factory=dict)


def _copy_real_api(mock: Any) -> None:
    """Give the mock the real constants, exception classes and structs (not mockable)."""
    for name in dir(real_pynvml):
        value = getattr(real_pynvml, name)
        is_constant = name.startswith("NVML_") and isinstance(value, int)
        if is_constant or name.startswith(("NVMLError", "c_nvml")):
            setattr(mock, name, value)


def _error(code: int) -> Exception:
    return real_pynvml.NVMLError(code)


def install_fake_nvml(
    mock: Any, gpus: Iterable[FakeGpu] = (), *, init_error: int | None = None
) -> list[FakeGpu]:
    """Make an autospecced ``pynvml`` mock answer from fake GPUs.

    Args:
        mock: The object from ``patch("rle.telemetry.gpu.pynvml", autospec=True)``.
        gpus: The machine's physical GPUs in NVML order.
        init_error: NVML error code ``nvmlInit`` raises (e.g. DRIVER_NOT_LOADED), or None.

    Returns:
        The GPUs (handles are the FakeGpu objects themselves).
    """
    gpus = list(gpus)
    _copy_real_api(mock)

    def init() -> None:
        if init_error is not None:
            raise _error(init_error)

    mock.nvmlInit.side_effect = init
    mock.nvmlShutdown.return_value = None
    mock.nvmlDeviceGetCount.side_effect = lambda: len(gpus)

    def by_uuid(uuid: str | bytes) -> FakeGpu:
        text = uuid.decode() if isinstance(uuid, bytes) else uuid
        for gpu in gpus:
            if gpu.uuid == text:
                return gpu
        raise _error(real_pynvml.NVML_ERROR_NOT_FOUND)

    mock.nvmlDeviceGetHandleByUUID.side_effect = by_uuid
    mock.nvmlDeviceGetHandleByIndex.side_effect = lambda i: gpus[i]

    def answer(fn_name: str, gpu: FakeGpu, *args: Any) -> Any:
        gpu.calls[fn_name] = gpu.calls.get(fn_name, 0) + 1
        if fn_name in gpu.unsupported:
            raise _error(real_pynvml.NVML_ERROR_NOT_SUPPORTED)
        if fn_name in gpu.errors:
            raise _error(gpu.errors[fn_name])
        if fn_name == "nvmlDeviceGetUtilizationRates":
            return real_pynvml.c_nvmlUtilization_t(gpu=gpu.util_pct, memory=10)
        if fn_name == "nvmlDeviceGetMemoryInfo":
            return real_pynvml.c_nvmlMemory_t(
                total=gpu.mem_total_b, free=gpu.mem_total_b - gpu.mem_used_b, used=gpu.mem_used_b
            )
        if fn_name == "nvmlDeviceGetPowerUsage":
            return gpu.power_mw
        if fn_name == "nvmlDeviceGetEnforcedPowerLimit":
            return gpu.limit_mw
        if fn_name == "nvmlDeviceGetTotalEnergyConsumption":
            return gpu.energy_mj
        if fn_name == "nvmlDeviceGetTemperature":
            (sensor,) = args
            assert sensor == real_pynvml.NVML_TEMPERATURE_GPU
            return gpu.temp_c
        if fn_name == "nvmlDeviceGetTemperatureThreshold":
            (threshold,) = args
            assert threshold == real_pynvml.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN
            return gpu.slowdown_c
        if fn_name == "nvmlDeviceGetClockInfo":
            (clock,) = args
            return {
                real_pynvml.NVML_CLOCK_SM: gpu.sm_mhz,
                real_pynvml.NVML_CLOCK_MEM: gpu.mem_mhz,
                real_pynvml.NVML_CLOCK_GRAPHICS: gpu.gfx_mhz,
            }[clock]
        if fn_name in (
            "nvmlDeviceGetCurrentClocksEventReasons",
            "nvmlDeviceGetCurrentClocksThrottleReasons",
        ):
            return gpu.throttle_mask
        if fn_name == "nvmlDeviceGetFanSpeed":
            return gpu.fan_pct
        if fn_name == "nvmlDeviceGetFieldValues":
            (field_ids,) = args
            assert list(field_ids) == [real_pynvml.NVML_FI_DEV_MEMORY_TEMP]
            value = real_pynvml.c_nvmlFieldValue_t()
            value.fieldId = real_pynvml.NVML_FI_DEV_MEMORY_TEMP
            if gpu.mem_temp_c is None:
                value.nvmlReturn = real_pynvml.NVML_ERROR_NOT_SUPPORTED
            else:
                value.nvmlReturn = real_pynvml.NVML_SUCCESS
                value.valueType = real_pynvml.NVML_VALUE_TYPE_UNSIGNED_INT
                value.value.uiVal = gpu.mem_temp_c
            return [value]
        if fn_name == "nvmlDeviceGetName":
            return gpu.name
        if fn_name == "nvmlDeviceGetIndex":
            return gpu.nvml_index
        raise AssertionError(f"fake NVML does not implement {fn_name}")  # pragma: no cover

    for fn_name in _GPU_FUNCTIONS:

        def side_effect(handle: FakeGpu, *args: Any, _fn: str = fn_name) -> Any:
            return answer(_fn, handle, *args)

        getattr(mock, fn_name).side_effect = side_effect
    return gpus
