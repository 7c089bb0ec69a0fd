"""Telemetry: hardware sources behind one interface, a background sampler, window statistics.

Typical use (what the telemetry callback does)::

    built = build_sources(cfg.telemetry.sources, include_host=local_rank == 0,
                          overrides={"gpu": {"devices": cuda_device_uuids([local_rank])}})
    # put built.tags on the run once
    sampler = Sampler(built.sources.values(), sample_hz=cfg.telemetry.sample_hz)
    aggregate = WindowAggregator()
    sampler.start()
    # training thread, every optimizer step:
    sampler.set_step(trainer.global_step)
    # at a logging step: mean / max / energy delta / OR over the window
    summary = aggregate(sampler.drain())
    # at the end
    sampler.stop()
    final = sampler.sample_now()
    built.close()

Importing this package touches no hardware; NVML is initialised only when a GPU source is built.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from rle.errors import TelemetryUnavailable
from rle.telemetry.base import (
    HOST,
    RANK,
    RleInputs,
    Sample,
    TelemetrySource,
    WindowAggregator,
    WindowSummary,
    aggregate_window,
    max_key,
    prefix_keys,
    rle_inputs,
    source_scope,
    source_tags,
)
from rle.telemetry.sampler import Sampler
from rle.tracking.keys import (
    TAG_TELEMETRY_SOURCES,
    TAG_TELEMETRY_UNAVAILABLE,
    power_source_tag,
    temp_source_tag,
    unavailable_reason_tag,
)

__all__ = [
    "DEFAULT_SOURCES",
    "HOST",
    "RANK",
    "RleInputs",
    "Sample",
    "Sampler",
    "SourceSet",
    "TelemetrySource",
    "WindowAggregator",
    "WindowSummary",
    "aggregate_window",
    "build_sources",
    "max_key",
    "prefix_keys",
    "rle_inputs",
]

logger = logging.getLogger(__name__)

DEFAULT_SOURCES: Final[Mapping[str, Mapping[str, Any]]] = {
    "cpu": {"_target_": "rle.telemetry.cpu.CpuHostSource"},
    "process": {"_target_": "rle.telemetry.cpu.ProcessSource"},
    "gpu": {"_target_": "rle.telemetry.gpu.NvmlGpuSource"},
    "rapl": {"_target_": "rle.telemetry.rapl.RaplSource"},
    "hwmon": {"_target_": "rle.telemetry.hwmon.HwmonTemperatureSource"},
}
"""The default source set (``conf/telemetry/default.yaml`` mirrors it): host CPU and memory,
this process, the job's NVIDIA GPUs, RAPL package power and hwmon package temperature."""

_MAX_REASON_CHARS: Final[int] = 500
_NONE: Final[str] = "none"


@dataclass
class SourceSet:
    """The sources that could be built, those that could not, and the run tags describing both.

    Attributes:
        sources: Live sources by configured name, in configuration order.
        unavailable: Reason per configured source name that was dropped.
        tags: Run tags: ``telemetry.sources``, ``telemetry.unavailable`` (comma lists, ``none``
            when empty), ``telemetry.unavailable.<name>`` (reason), ``power_source.<device>``,
            ``temp_source.<device>`` and what the sources declare (e.g. ``gpu_0.uuid``).
    """

    sources: dict[str, TelemetrySource] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def close(self) -> None:
        """Close every live source (errors are logged, not raised)."""
        for name, source in self.sources.items():
            try:
                source.close()
            except Exception as e:  # noqa: BLE001 - closing one source must not skip the others
                logger.warning("telemetry source %s failed to close: %r", name, e)


def _unavailable_cause(error: BaseException) -> TelemetryUnavailable | None:
    """The ``TelemetryUnavailable`` in an exception's ``__cause__`` chain (Hydra wraps errors)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, TelemetryUnavailable):
            return current
        seen.add(id(current))
        current = current.__cause__
    return None


def _target_scope(target: object) -> str:
    from hydra.utils import get_object

    try:
        return source_scope(get_object(str(target)))
    except Exception:  # noqa: BLE001 - instantiate reports bad targets with full context
        return RANK


def _declared_gpu_ordinals(entry: Mapping[str, Any], kwargs: Mapping[str, Any]) -> list[int]:
    devices = kwargs.get("devices", entry.get("devices"))
    if not isinstance(devices, Mapping):
        return []
    return sorted(int(ordinal) for ordinal in devices)


def build_sources(
    cfg: Mapping[str, Any],
    *,
    include_host: bool = True,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> SourceSet:
    """Instantiate the configured telemetry sources; drop and report the unavailable ones.

    Every entry of ``cfg`` that is a mapping with ``_target_`` is instantiated with
    ``hydra.utils.instantiate`` (other entries, e.g. ``sample_hz``, are skipped). A source whose
    ``__init__`` raises :class:`~rle.errors.TelemetryUnavailable` is dropped with **one**
    warning line and recorded in ``unavailable`` and the tags. If RAPL measures the CPU power, an
    also-configured estimated CPU power source is dropped (measured wins, never mixed).

    Args:
        cfg: ``{name: {"_target_": "...", **kwargs}}`` (a dict or an OmegaConf ``DictConfig``),
            e.g. :data:`DEFAULT_SOURCES` or ``cfg.telemetry.sources``.
        include_host: Build host-scoped sources (CPU, memory, RAPL, hwmon). Pass True on one
            process per node (local rank 0) only; other ranks build just their own process and
            GPUs. When True, ``power_source.cpu`` and ``temp_source.cpu`` are always tagged
            (``none`` when nothing measures them).
        overrides: Extra keyword arguments per source name, passed to ``instantiate`` (may hold
            objects, e.g. ``{"gpu": {"devices": {0: "GPU-…"}}}``).

    Returns:
        The :class:`SourceSet`.

    Raises:
        hydra.errors.InstantiationException: An entry is misconfigured (wrong target or
            arguments); only ``TelemetryUnavailable`` is treated as "unavailable".
    """
    from hydra.utils import instantiate

    overrides = overrides or {}
    result = SourceSet()
    host_configured = False
    gpu_ordinals_missing: list[int] = []
    for name, entry in cfg.items():
        if not isinstance(entry, Mapping) or "_target_" not in entry:
            continue
        name = str(name)
        if _target_scope(entry["_target_"]) == HOST:
            if not include_host:
                continue
            host_configured = True
        kwargs = dict(overrides.get(name, {}))
        try:
            source = instantiate(entry, **kwargs)
        except Exception as e:
            cause = _unavailable_cause(e)
            if cause is None:
                raise
            reason = str(cause)
            result.unavailable[name] = reason
            gpu_ordinals_missing += _declared_gpu_ordinals(entry, kwargs)
            logger.warning("telemetry source %s unavailable: %s", name, reason)
            continue
        if source_scope(source) == HOST:
            if not include_host:
                source.close()
                continue
            host_configured = True
        result.sources[name] = source

    declared = {name: source_tags(source) for name, source in result.sources.items()}
    cpu_power = {declared[n].get(power_source_tag("cpu")) for n in result.sources}
    if "rapl" in cpu_power and "estimated" in cpu_power:
        for name in [
            n for n in result.sources if declared[n].get(power_source_tag("cpu")) == "estimated"
        ]:
            result.sources.pop(name).close()
            del declared[name]
            reason = "superseded: RAPL measures the CPU package power"
            result.unavailable[name] = reason
            logger.warning("telemetry source %s not used: %s", name, reason)

    tags: dict[str, str] = {}
    if host_configured:
        tags[power_source_tag("cpu")] = _NONE
        tags[temp_source_tag("cpu")] = _NONE
    for ordinal in gpu_ordinals_missing:
        tags[power_source_tag(f"gpu_{ordinal}")] = _NONE
        tags[temp_source_tag(f"gpu_{ordinal}")] = _NONE
    for source_declared in declared.values():
        tags.update(source_declared)
    tags[TAG_TELEMETRY_SOURCES] = ",".join(result.sources) or _NONE
    tags[TAG_TELEMETRY_UNAVAILABLE] = ",".join(result.unavailable) or _NONE
    for name, reason in result.unavailable.items():
        tags[unavailable_reason_tag(name)] = reason[:_MAX_REASON_CHARS]
    result.tags = tags
    return result
