"""Hardware inventory of this host, as short run tags (``hw.*``).

Sourced from the standard places: CPU model from ``/proc/cpuinfo`` (Linux) or
:func:`platform.processor`, core counts and memory from psutil, GPUs from NVML (``nvidia-ml-py``:
name, memory, UUID, driver) and the CUDA runtime version from torch. What cannot be read is left
out, never guessed.

Tags (values are text, units in the key):

================== ==================================================================
``cpu``             CPU model name
``cpu_cores``       physical cores (logical in ``cpu_threads``)
``memory_gib``      total system memory, GiB
``gpu_count``       NVML devices on the host
``gpu_<i>``         NVML name of device ``i``
``gpu_<i>_mem_gib`` its total memory, GiB
``gpu_<i>_uuid``    first 13 characters of its UUID (enough to tell devices apart)
``driver``          NVIDIA driver version
``cuda``            CUDA runtime version torch was built with
================== ==================================================================
"""

from __future__ import annotations

import contextlib
import logging
import platform
from pathlib import Path

__all__ = ["hardware_inventory"]

log = logging.getLogger(__name__)

_GIB = 1024**3


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip() or None
    except OSError:
        pass
    return platform.processor() or None


def _gpus() -> dict[str, str]:
    try:
        import pynvml
    except ImportError:
        return {}
    try:
        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - NVMLError: no driver or no GPU
        return {}
    out: dict[str, str] = {}
    try:
        count = pynvml.nvmlDeviceGetCount()
        out["gpu_count"] = str(count)
        driver = pynvml.nvmlSystemGetDriverVersion()
        out["driver"] = driver.decode() if isinstance(driver, bytes) else str(driver)
        for i in range(count):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(handle)
            out[f"gpu_{i}"] = name.decode() if isinstance(name, bytes) else str(name)
            mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
            out[f"gpu_{i}_mem_gib"] = f"{mem.total / _GIB:.1f}"
            uuid = pynvml.nvmlDeviceGetUUID(handle)
            out[f"gpu_{i}_uuid"] = (uuid.decode() if isinstance(uuid, bytes) else str(uuid))[:13]
    except Exception as e:  # noqa: BLE001 - report what was read so far
        log.info("NVML inventory incomplete: %s", e)
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()
    return out


def hardware_inventory() -> dict[str, str]:
    """Describe this host's CPU, memory and GPUs.

    Returns:
        Tag name (without the ``hw.`` prefix) to text value; keys that cannot be read are absent
        (see the module docstring for the keys and units).
    """
    import psutil

    out: dict[str, str] = {}
    model = _cpu_model()
    if model:
        out["cpu"] = model
    cores = psutil.cpu_count(logical=False)
    threads = psutil.cpu_count(logical=True)
    if cores:
        out["cpu_cores"] = str(cores)
    if threads:
        out["cpu_threads"] = str(threads)
    out["memory_gib"] = f"{psutil.virtual_memory().total / _GIB:.1f}"
    out.update(_gpus())
    try:
        import torch

        if torch.version.cuda:
            out["cuda"] = str(torch.version.cuda)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return out
