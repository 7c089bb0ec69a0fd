"""NVIDIA GPUs through NVML; the only module of ``rle`` that imports ``pynvml`` (nvidia-ml-py).

Design (``docs/conventions.md`` 5):

* ``pynvml`` is imported guarded and no NVML function runs at import time; ``nvmlInit`` runs
  once per source in ``__init__`` and is balanced by ``nvmlShutdown`` in ``close()`` (NVML counts
  init/shutdown pairs).
* The GPUs are those the job uses, given as ``{cuda_ordinal: uuid}``. NVML ignores
  ``CUDA_VISIBLE_DEVICES`` and may order devices differently from CUDA, so each CUDA device is
  mapped to its NVML handle by UUID (:func:`cuda_device_uuids` reads the UUIDs from torch). Keys
  use the CUDA ordinal as the job sees it: ``gpu_<i>_…``.
* One decorator (:func:`_nvml_errors`) turns every ``NVMLError`` into
  :class:`~rle.errors.TelemetryUnavailable` (``raise … from e``);
  :class:`NvmlFieldUnsupported` marks permanent per-field failures (NOT_SUPPORTED, …). A field
  that fails is absent from the reading (never 0) and never loses the other fields; unsupported
  fields are detected once in ``__init__`` and not queried again.
* Vendor units are converted here: mW → W, mJ → J, bytes → MB (1e6).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, ParamSpec, TypeVar

from rle.errors import TelemetryUnavailable
from rle.telemetry.base import RANK, Scope

try:
    import pynvml
except ImportError:  # pragma: no cover - nvidia-ml-py is a dependency; guarded for slim installs
    pynvml = None

__all__ = [
    "NVML_QUANTITIES",
    "NvmlFieldUnsupported",
    "NvmlGpuSource",
    "cuda_device_uuids",
    "normalize_uuid",
    "nvml_is_available",
]

logger = logging.getLogger(__name__)

NVML_QUANTITIES: tuple[str, ...] = (
    "utilization_percentage",
    "memory_usage_megabytes",
    "memory_usage_percentage",
    "power_usage_watts",
    "power_limit_watts",
    "power_usage_percentage",
    "energy_joules",
    "temperature_celsius",
    "memory_temperature_celsius",
    "slowdown_temperature_celsius",
    "sm_clock_megahertz",
    "memory_clock_megahertz",
    "graphics_clock_megahertz",
    "throttle_reasons",
    "fan_speed_percentage",
)
"""Every per-GPU quantity :class:`NvmlGpuSource` can emit, without the ``gpu_<i>_`` prefix."""

_P = ParamSpec("_P")
_R = TypeVar("_R")

_MILLI = 1000.0
_BYTES_PER_MEGABYTE = 1e6
# NVML return codes that mean "this field will never work on this device/driver".
_PERMANENT_ERROR_NAMES = (
    "NVML_ERROR_NOT_SUPPORTED",
    "NVML_ERROR_FUNCTION_NOT_FOUND",
    "NVML_ERROR_NO_PERMISSION",
    "NVML_ERROR_INVALID_ARGUMENT",
    "NVML_ERROR_NOT_FOUND",
)


class NvmlFieldUnsupported(TelemetryUnavailable):
    """An NVML query is permanently unavailable on this device (NOT_SUPPORTED and similar)."""


def _permanent_codes() -> set[int]:
    return {
        code
        for code in (getattr(pynvml, name, None) for name in _PERMANENT_ERROR_NAMES)
        if isinstance(code, int)
    }


def _nvml_errors(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Translate ``pynvml.NVMLError`` raised by ``fn`` into ``TelemetryUnavailable``.

    Permanent per-field errors (NOT_SUPPORTED, FUNCTION_NOT_FOUND, NO_PERMISSION, …) become
    :class:`NvmlFieldUnsupported`; every other NVML error becomes ``TelemetryUnavailable``.
    """

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return fn(*args, **kwargs)
        except pynvml.NVMLError as e:
            message = f"NVML {fn.__name__.lstrip('_')}: {e}"
            if getattr(e, "value", None) in _permanent_codes():
                raise NvmlFieldUnsupported(message) from e
            raise TelemetryUnavailable(message) from e

    return wrapper


def nvml_is_available() -> bool:
    """Return whether NVML can be initialised here (initialises and shuts down once).

    Returns:
        True when nvidia-ml-py is installed and ``nvmlInit`` succeeds.
    """
    if pynvml is None:
        return False
    try:
        _init()
    except TelemetryUnavailable:
        return False
    _shutdown()
    return True


def normalize_uuid(uuid: object) -> str:
    """Return a GPU UUID in NVML's spelling (``GPU-xxxxxxxx-…`` or ``MIG-…``).

    Args:
        uuid: A UUID as torch reports it (``torch.cuda.get_device_properties(i).uuid``, printed
            without prefix) or as NVML does.

    Returns:
        The UUID with NVML's ``GPU-`` prefix unless it already has ``GPU-`` or ``MIG-``.
    """
    text = str(uuid).strip()
    if text.startswith(("GPU-", "MIG-")):
        return text
    return f"GPU-{text}"


def cuda_device_uuids(ordinals: Iterable[int] | None = None) -> dict[int, str]:
    """Return the NVML UUID of CUDA devices as this process sees them (after CUDA_VISIBLE_DEVICES).

    Args:
        ordinals: CUDA ordinals (``cuda:<i>``) to look up; all visible devices when None.

    Returns:
        ``{cuda_ordinal: "GPU-…"}``; empty when torch sees no CUDA device.

    Raises:
        TelemetryUnavailable: torch is not installed.
    """
    try:
        import torch
    except ImportError as e:  # pragma: no cover - torch is a dependency
        raise TelemetryUnavailable("torch is not installed; pass GPU UUIDs explicitly") from e
    if not torch.cuda.is_available():
        return {}
    indices = list(range(torch.cuda.device_count())) if ordinals is None else list(ordinals)
    return {i: normalize_uuid(torch.cuda.get_device_properties(i).uuid) for i in indices}


@_nvml_errors
def _init() -> None:
    pynvml.nvmlInit()


@_nvml_errors
def _shutdown() -> None:
    pynvml.nvmlShutdown()


@_nvml_errors
def _handle_by_uuid(uuid: str) -> Any:
    return pynvml.nvmlDeviceGetHandleByUUID(uuid)


@_nvml_errors
def _device_name(handle: Any) -> str:
    name = pynvml.nvmlDeviceGetName(handle)
    return name.decode() if isinstance(name, bytes) else str(name)


@_nvml_errors
def _device_index(handle: Any) -> int:
    return int(pynvml.nvmlDeviceGetIndex(handle))


# One reader per NVML query; each returns quantity suffixes (after "gpu_<i>_") and values.


@_nvml_errors
def _utilization(handle: Any) -> dict[str, float]:
    return {"utilization_percentage": float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)}


@_nvml_errors
def _memory(handle: Any) -> dict[str, float]:
    info = pynvml.nvmlDeviceGetMemoryInfo(handle)
    out = {"memory_usage_megabytes": float(info.used) / _BYTES_PER_MEGABYTE}
    if info.total > 0:
        out["memory_usage_percentage"] = 100.0 * float(info.used) / float(info.total)
    return out


@_nvml_errors
def _power(handle: Any) -> dict[str, float]:
    return {"power_usage_watts": float(pynvml.nvmlDeviceGetPowerUsage(handle)) / _MILLI}


@_nvml_errors
def _power_limit(handle: Any) -> dict[str, float]:
    return {"power_limit_watts": float(pynvml.nvmlDeviceGetEnforcedPowerLimit(handle)) / _MILLI}


@_nvml_errors
def _energy(handle: Any) -> dict[str, float]:
    mj = pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    return {"energy_joules": float(mj) / _MILLI}


@_nvml_errors
def _temperature(handle: Any) -> dict[str, float]:
    celsius = pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU)
    return {"temperature_celsius": float(celsius)}


@_nvml_errors
def _slowdown_temperature(handle: Any) -> dict[str, float]:
    celsius = pynvml.nvmlDeviceGetTemperatureThreshold(
        handle, pynvml.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN
    )
    return {"slowdown_temperature_celsius": float(celsius)}


@_nvml_errors
def _sm_clock(handle: Any) -> dict[str, float]:
    return {
        "sm_clock_megahertz": float(pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM))
    }


@_nvml_errors
def _memory_clock(handle: Any) -> dict[str, float]:
    mhz = pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_MEM)
    return {"memory_clock_megahertz": float(mhz)}


@_nvml_errors
def _graphics_clock(handle: Any) -> dict[str, float]:
    mhz = pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_GRAPHICS)
    return {"graphics_clock_megahertz": float(mhz)}


@_nvml_errors
def _throttle_reasons(handle: Any) -> dict[str, float]:
    try:
        mask = pynvml.nvmlDeviceGetCurrentClocksEventReasons(handle)
    except pynvml.NVMLError as e:
        if getattr(e, "value", None) not in _permanent_codes():
            raise
        # Drivers before r535 only have the older name of the same bitmask.
        mask = pynvml.nvmlDeviceGetCurrentClocksThrottleReasons(handle)
    return {"throttle_reasons": float(int(mask))}


@_nvml_errors
def _fan_speed(handle: Any) -> dict[str, float]:
    return {"fan_speed_percentage": float(pynvml.nvmlDeviceGetFanSpeed(handle))}


_FIELD_VALUE_ATTRS = {
    "NVML_VALUE_TYPE_DOUBLE": "dVal",
    "NVML_VALUE_TYPE_UNSIGNED_INT": "uiVal",
    "NVML_VALUE_TYPE_UNSIGNED_LONG": "ulVal",
    "NVML_VALUE_TYPE_UNSIGNED_LONG_LONG": "ullVal",
    "NVML_VALUE_TYPE_SIGNED_LONG_LONG": "sllVal",
    "NVML_VALUE_TYPE_SIGNED_INT": "siVal",
    "NVML_VALUE_TYPE_UNSIGNED_SHORT": "usVal",
}


@_nvml_errors
def _memory_temperature(handle: Any) -> dict[str, float]:
    (field,) = pynvml.nvmlDeviceGetFieldValues(handle, [pynvml.NVML_FI_DEV_MEMORY_TEMP])
    if field.nvmlReturn != pynvml.NVML_SUCCESS:
        raise pynvml.NVMLError(field.nvmlReturn)
    for type_name, attr in _FIELD_VALUE_ATTRS.items():
        if field.valueType == getattr(pynvml, type_name):
            value = float(getattr(field.value, attr))
            break
    else:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
    if value <= 0:  # some boards answer SUCCESS with 0 for a sensor they do not have
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
    return {"memory_temperature_celsius": value}


_Reader = Callable[[Any], dict[str, float]]

_FIELDS: tuple[tuple[str, _Reader], ...] = (
    ("utilization", _utilization),
    ("memory", _memory),
    ("power", _power),
    ("power_limit", _power_limit),
    ("energy", _energy),
    ("temperature", _temperature),
    ("memory_temperature", _memory_temperature),
    ("sm_clock", _sm_clock),
    ("memory_clock", _memory_clock),
    ("graphics_clock", _graphics_clock),
    ("throttle_reasons", _throttle_reasons),
    ("fan_speed", _fan_speed),
)
"""(field name, reader) queried at every sample; the slowdown threshold is read once."""


class _Device:
    """One GPU of the job: its CUDA ordinal, NVML handle and the fields it supports."""

    def __init__(self, ordinal: int, uuid: str, handle: Any) -> None:
        self.ordinal = ordinal
        self.uuid = uuid
        self.handle = handle
        self.prefix = f"gpu_{ordinal}_"
        self.fields: list[tuple[str, _Reader]] = []
        self.unsupported: list[str] = []
        self.static: dict[str, float] = {}
        self.warned: set[str] = set()


class NvmlGpuSource:
    """The job's NVIDIA GPUs through NVML (scope ``rank``: each rank samples its own GPUs).

    Keys, per GPU ``<i>`` (CUDA ordinal as the job sees it); a key is absent where the device or
    driver does not support it:

    * ``gpu_<i>_utilization_percentage``: NVML ``utilization.gpu``, %.
    * ``gpu_<i>_memory_usage_megabytes``, ``gpu_<i>_memory_usage_percentage``: memory used,
      bytes / 1e6 and % of total.
    * ``gpu_<i>_power_usage_watts``: power draw (NVML's averaged reading), W (from mW).
    * ``gpu_<i>_power_limit_watts``: enforced power limit, W (from mW).
    * ``gpu_<i>_power_usage_percentage``: power draw as % of the enforced limit.
    * ``gpu_<i>_energy_joules``: total-energy counter since the driver loaded, J (from mJ);
      cumulative, window statistics take its deltas.
    * ``gpu_<i>_temperature_celsius``: core temperature, °C.
    * ``gpu_<i>_memory_temperature_celsius``: memory temperature via NVML field values, °C.
    * ``gpu_<i>_slowdown_temperature_celsius``: slowdown threshold, °C (read once).
    * ``gpu_<i>_sm_clock_megahertz``, ``gpu_<i>_memory_clock_megahertz``,
      ``gpu_<i>_graphics_clock_megahertz``: current clocks, MHz.
    * ``gpu_<i>_throttle_reasons``: NVML clock event (throttle) reasons bitmask.
    * ``gpu_<i>_fan_speed_percentage``: fan speed, % of maximum.

    Args:
        devices: ``{cuda_ordinal: uuid}`` of the GPUs this rank uses (UUIDs as NVML or torch
            spell them). None: every CUDA device visible to this process, via
            :func:`cuda_device_uuids`.
        name: Source name used in logs and errors.

    Raises:
        TelemetryUnavailable: nvidia-ml-py missing, NVML cannot initialise (no driver/GPU), no
            GPU given or visible, or a UUID has no NVML device.
    """

    scope: ClassVar[Scope] = RANK

    def __init__(self, devices: Mapping[int, str] | None = None, name: str = "gpu") -> None:
        self._name = name
        self._closed = True
        if pynvml is None:
            raise TelemetryUnavailable(f"{name}: nvidia-ml-py (pynvml) is not installed")
        uuids = cuda_device_uuids() if devices is None else dict(devices)
        if not uuids:
            raise TelemetryUnavailable(f"{name}: no CUDA device visible to this process")
        try:
            _init()
        except TelemetryUnavailable as e:
            raise TelemetryUnavailable(f"{name}: cannot initialise NVML: {e}") from e
        self._closed = False
        self._devices: list[_Device] = []
        try:
            for ordinal, raw_uuid in sorted((int(o), u) for o, u in uuids.items()):
                uuid = normalize_uuid(raw_uuid)
                try:
                    handle = _handle_by_uuid(uuid)
                except TelemetryUnavailable as e:
                    raise TelemetryUnavailable(
                        f"{name}: cuda:{ordinal} ({uuid}) has no NVML device: {e}"
                    ) from e
                device = _Device(ordinal, uuid, handle)
                self._probe(device)
                self._devices.append(device)
        except TelemetryUnavailable:
            self.close()
            raise

    def _probe(self, device: _Device) -> None:
        """Find the fields the device supports; read the static ones."""
        try:
            device.static.update(_slowdown_temperature(device.handle))
        except TelemetryUnavailable:
            device.unsupported.append("slowdown_temperature")
        for field_name, reader in _FIELDS:
            try:
                reader(device.handle)
            except NvmlFieldUnsupported:
                device.unsupported.append(field_name)
                continue
            except TelemetryUnavailable as e:
                logger.warning(
                    "%s: gpu_%s %s failed when probed: %s",
                    self._name,
                    device.ordinal,
                    field_name,
                    e,
                )
            device.fields.append((field_name, reader))
        if device.unsupported:
            logger.info(
                "%s: gpu_%s (%s) does not support: %s",
                self._name,
                device.ordinal,
                device.uuid,
                ", ".join(device.unsupported),
            )

    @property
    def name(self) -> str:
        """Source name."""
        return self._name

    @property
    def ordinals(self) -> list[int]:
        """CUDA ordinals of the GPUs read."""
        return [device.ordinal for device in self._devices]

    def unsupported_fields(self, ordinal: int) -> list[str]:
        """Names of the fields GPU ``ordinal`` does not support (e.g. ``["fan_speed"]``).

        Args:
            ordinal: CUDA ordinal.

        Returns:
            Field names, in probe order.

        Raises:
            KeyError: No such GPU in this source.
        """
        for device in self._devices:
            if device.ordinal == ordinal:
                return list(device.unsupported)
        raise KeyError(ordinal)

    def tags(self) -> dict[str, str]:
        """Run tags per GPU: power and temperature provenance and identity.

        Returns:
            ``power_source.gpu_<i>`` (``nvml`` or ``none``), ``temp_source.gpu_<i>`` (``nvml`` or
            ``none``), ``gpu_<i>.uuid``, ``gpu_<i>.nvml_index``, ``gpu_<i>.name`` where readable.
        """
        tags: dict[str, str] = {}
        for device in self._devices:
            fields = {field_name for field_name, _ in device.fields}
            label = f"gpu_{device.ordinal}"
            has_power = bool(fields & {"power", "energy"})
            tags[f"power_source.{label}"] = "nvml" if has_power else "none"
            tags[f"temp_source.{label}"] = "nvml" if "temperature" in fields else "none"
            tags[f"{label}.uuid"] = device.uuid
            try:
                tags[f"{label}.nvml_index"] = str(_device_index(device.handle))
                tags[f"{label}.name"] = _device_name(device.handle)
            except TelemetryUnavailable:
                pass
        return tags

    def _warn_once(self, device: _Device, field_name: str, error: Exception) -> None:
        if field_name in device.warned:
            logger.debug("%s: gpu_%s %s: %s", self._name, device.ordinal, field_name, error)
            return
        device.warned.add(field_name)
        logger.warning(
            "%s: gpu_%s %s could not be read: %s (further failures at DEBUG)",
            self._name,
            device.ordinal,
            field_name,
            error,
        )

    def sample(self) -> dict[str, float]:
        """Read every supported field of every GPU once.

        Returns:
            The keys listed in the class docstring; a field that fails now is absent.
        """
        out: dict[str, float] = {}
        for device in self._devices:
            reading: dict[str, float] = dict(device.static)
            dropped: list[tuple[str, _Reader]] = []
            for field_name, reader in device.fields:
                try:
                    reading.update(reader(device.handle))
                except NvmlFieldUnsupported as e:
                    dropped.append((field_name, reader))
                    device.unsupported.append(field_name)
                    self._warn_once(device, field_name, e)
                except TelemetryUnavailable as e:
                    self._warn_once(device, field_name, e)
            for entry in dropped:
                device.fields.remove(entry)
            power_w = reading.get("power_usage_watts")
            limit_w = reading.get("power_limit_watts")
            if power_w is not None and limit_w is not None and limit_w > 0:
                reading["power_usage_percentage"] = 100.0 * power_w / limit_w
            out.update({device.prefix + key: value for key, value in reading.items()})
        return out

    def close(self) -> None:
        """Shut NVML down once (balances the ``nvmlInit`` of ``__init__``). Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            _shutdown()
        except TelemetryUnavailable as e:
            logger.debug("%s: nvmlShutdown failed: %s", self._name, e)
