"""The telemetry source interface, the sample type and pure window aggregation.

A telemetry source is a tiny unit behind one interface (:class:`TelemetrySource`): ``sample()``
returns one reading as a flat ``{quantity_name: value}`` mapping whose names carry their unit
(``gpu_0_power_usage_watts``, ``cpu_package_temperature_celsius``), in the names MLflow uses for
the same quantity, without the ``system/`` prefix. The background sampler stamps each reading
with wall-clock time, monotonic time and the training step (:class:`Sample`); the functions here
reduce the samples of one logging window to one value per key (:func:`aggregate_window`) and
extract the inputs of the RLE index per device (:func:`rle_inputs`).

Window statistics, by key:

* counters (``*_joules``): the energy spent in the window, the sum of consecutive increases of
  the counter, starting from the last reading of the previous window (the ``carry``), so no
  energy is lost between windows;
* bitmasks (``*_throttle_reasons``): bitwise OR of the readings;
* everything else: the mean; power and temperature readings (``*_watts``, ``*_celsius``, other
  than limits and thresholds) also get their maximum under a key with the statistic before the
  unit (``gpu_0_power_usage_max_watts``).

Missing readings are never zeros: a key that no sample carries (or carries only as NaN) is absent
from the window.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal, Protocol, TypedDict, runtime_checkable

__all__ = [
    "HOST",
    "RANK",
    "RleInputs",
    "Sample",
    "Scope",
    "TelemetrySource",
    "WindowAggregator",
    "WindowSummary",
    "aggregate_window",
    "is_bitmask_key",
    "is_counter_key",
    "max_key",
    "prefix_keys",
    "rle_inputs",
    "source_scope",
    "source_tags",
]

Scope = Literal["host", "rank"]
HOST: Final[Scope] = "host"
"""Scope of a source that measures the whole node (sampled once per node, local rank 0)."""
RANK: Final[Scope] = "rank"
"""Scope of a source that measures one DDP rank (its process, its GPUs)."""

CPU_DEFAULT_LIMIT_C: Final[float] = 80.0
"""Default CPU temperature limit of the RLE index in °C (``docs/rle-metric.md`` §2.8)."""


@runtime_checkable
class TelemetrySource(Protocol):
    """One telemetry source: a device or a part of the host, read on demand.

    Implementations raise :class:`rle.errors.TelemetryUnavailable` from ``__init__`` when the
    source cannot work on this machine, do any priming there, and keep no buffer. Two optional
    attributes are read with defaults by :func:`source_scope` and :func:`source_tags`:
    ``scope`` (``"host"`` or ``"rank"``, class attribute, default ``"rank"``) and
    ``tags() -> dict[str, str]`` (run tags describing what the source measures, e.g.
    ``{"power_source.cpu": "rapl"}``).
    """

    @property
    def name(self) -> str:
        """Short name of the source, used in log lines (``"cpu"``, ``"gpu"``)."""
        ...

    def sample(self) -> dict[str, float]:
        """Read every quantity once.

        Returns:
            ``{quantity_name: value}``; names carry their unit. A quantity that cannot be read
            now is absent (never 0).

        Raises:
            rle.errors.TelemetryUnavailable: The whole source failed for this reading.
        """
        ...

    def close(self) -> None:
        """Release handles (NVML, files). Idempotent."""
        ...


def source_scope(source: object) -> Scope:
    """Return the scope of a source or source class (``"rank"`` unless it says ``"host"``).

    Args:
        source: A telemetry source instance or class.

    Returns:
        ``"host"`` for node-wide sources, ``"rank"`` otherwise.
    """
    return HOST if getattr(source, "scope", RANK) == HOST else RANK


def source_tags(source: object) -> dict[str, str]:
    """Return the run tags a source declares (``{}`` when it declares none).

    Args:
        source: A telemetry source.

    Returns:
        Tag name to value, e.g. ``{"power_source.gpu_0": "nvml", "gpu_0.uuid": "GPU-…"}``.
    """
    tags = getattr(source, "tags", None)
    if not callable(tags):
        return {}
    return {str(k): str(v) for k, v in tags().items()}


@dataclass(frozen=True, slots=True)
class Sample:
    """One reading of every source, stamped by the sampler.

    Attributes:
        wall_time_s: UTC wall-clock time when sampling began, seconds since the Unix epoch.
        monotonic_s: Monotonic clock when sampling began, seconds (only differences matter).
        global_step: The training step (``trainer.global_step``) current when sampling began.
        values: ``{quantity_name: value}`` merged from every source, units in the names.
        sample_duration_s: Time spent reading all sources for this sample, seconds.
        failed_sources: Names of the sources whose ``sample()`` raised for this sample.
    """

    wall_time_s: float
    monotonic_s: float
    global_step: int
    values: Mapping[str, float]
    sample_duration_s: float
    failed_sources: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class WindowSummary:
    """The samples of one logging window reduced to one value per key.

    Attributes:
        values: Window statistic per key (see the module docstring); keys absent from every
            sample are absent here.
        sample_count: Number of samples in the window.
        sampling_time_s: Total time spent sampling in the window (sum of
            ``Sample.sample_duration_s``), seconds.
        carry: Last finite reading of every counter key, to pass to the next window.
        first_wall_time_s: Wall-clock time of the first sample (NaN for an empty window).
        last_wall_time_s: Wall-clock time of the last sample (NaN for an empty window).
    """

    values: dict[str, float]
    sample_count: int
    sampling_time_s: float
    carry: dict[str, float]
    first_wall_time_s: float
    last_wall_time_s: float


_UNITS: Final[tuple[str, ...]] = (
    "percentage",
    "megabytes",
    "watts",
    "celsius",
    "joules",
    "megahertz",
    "seconds",
    "milliseconds",
)
_STATIC_MARKERS: Final[tuple[str, ...]] = ("_limit_", "slowdown_")


def is_counter_key(key: str) -> bool:
    """Return whether a key is a cumulative counter (energy in joules).

    Args:
        key: Quantity name.

    Returns:
        True for ``*_joules`` keys.
    """
    return key.endswith("_joules")


def is_bitmask_key(key: str) -> bool:
    """Return whether a key is a bitmask combined with bitwise OR (NVML throttle reasons).

    Args:
        key: Quantity name.

    Returns:
        True for ``*_throttle_reasons`` keys.
    """
    return key.endswith("_throttle_reasons")


def _has_max(key: str) -> bool:
    if not (key.endswith("_watts") or key.endswith("_celsius")):
        return False
    return not any(marker in key for marker in _STATIC_MARKERS)


def max_key(key: str) -> str:
    """Return the key of a quantity's window maximum: the statistic goes before the unit.

    Args:
        key: Quantity name ending in a unit word, e.g. ``"gpu_0_power_usage_watts"``.

    Returns:
        E.g. ``"gpu_0_power_usage_max_watts"``; ``key + "_max"`` when it has no known unit.
    """
    stem, sep, unit = key.rpartition("_")
    if sep and unit in _UNITS:
        return f"{stem}_max_{unit}"
    return f"{key}_max"


def prefix_keys(values: Mapping[str, float], prefix: str) -> dict[str, float]:
    """Return the values with every key prefixed, e.g. ``"rank_1/"`` or ``"system/"``.

    Args:
        values: Quantity name to value.
        prefix: String put in front of every key.

    Returns:
        A new dict with prefixed keys.
    """
    return {f"{prefix}{key}": value for key, value in values.items()}


def _finite(value: float) -> bool:
    return not math.isnan(value) and not math.isinf(value)


def _counter_delta(readings: Sequence[float]) -> float:
    """Sum of consecutive increases; a decrease (counter reset) contributes nothing."""
    return sum(max(0.0, b - a) for a, b in zip(readings, readings[1:], strict=False))


def aggregate_window(
    samples: Sequence[Sample], carry: Mapping[str, float] | None = None
) -> WindowSummary:
    """Reduce the samples of one window to one value per key (pure).

    Args:
        samples: The window's samples in time order (e.g. one ``Sampler.drain()``).
        carry: ``WindowSummary.carry`` of the previous window: the last reading of each counter,
            so the energy between the previous window's last sample and this window's first is
            counted here. ``None`` for the first window.

    Returns:
        The window summary. Counter keys hold the energy of the window in joules; with fewer than
        two readings (carry included) a counter is absent. NaN and infinite readings are ignored.
    """
    carry = dict(carry or {})
    series: dict[str, list[float]] = {}
    for sample in samples:
        for key, value in sample.values.items():
            series.setdefault(key, []).append(float(value))

    values: dict[str, float] = {}
    new_carry = dict(carry)
    for key, raw in series.items():
        readings = [v for v in raw if _finite(v)]
        if is_counter_key(key):
            chain = ([carry[key]] if key in carry else []) + readings
            if readings:
                new_carry[key] = readings[-1]
            if len(chain) >= 2:
                values[key] = _counter_delta(chain)
        elif not readings:
            continue
        elif is_bitmask_key(key):
            mask = 0
            for v in readings:
                mask |= int(v)
            values[key] = float(mask)
        else:
            values[key] = math.fsum(readings) / len(readings)
            if _has_max(key):
                values[max_key(key)] = max(readings)

    return WindowSummary(
        values=values,
        sample_count=len(samples),
        sampling_time_s=math.fsum(s.sample_duration_s for s in samples),
        carry=new_carry,
        first_wall_time_s=samples[0].wall_time_s if samples else math.nan,
        last_wall_time_s=samples[-1].wall_time_s if samples else math.nan,
    )


class WindowAggregator:
    """Stateful wrapper of :func:`aggregate_window` that keeps the counter carry between windows.

    Example:
        >>> agg = WindowAggregator()
        >>> summary = agg(sampler.drain())  # doctest: +SKIP
    """

    def __init__(self) -> None:
        self._carry: dict[str, float] = {}

    @property
    def carry(self) -> dict[str, float]:
        """Last reading of every counter seen so far (copy)."""
        return dict(self._carry)

    def __call__(self, samples: Sequence[Sample]) -> WindowSummary:
        """Aggregate one window and remember its counter readings for the next.

        Args:
            samples: The window's samples in time order.

        Returns:
            The window summary (see :func:`aggregate_window`).
        """
        summary = aggregate_window(samples, self._carry)
        self._carry = summary.carry
        return summary


class RleInputs(TypedDict):
    """The inputs of the RLE index for one device at one sample (NaN where missing).

    Keys: ``util_pct`` (utilisation, %), ``temp_c`` (temperature, °C), ``power_w`` (power, W),
    ``rated_w`` (rated or limit power, W), ``limit_c`` (temperature limit, °C).
    """

    util_pct: float
    temp_c: float
    power_w: float
    rated_w: float
    limit_c: float


_GPU_KEY = re.compile(r"^gpu_(\d+)_")
_CPU_KEYS: Final[tuple[str, ...]] = (
    "cpu_utilization_percentage",
    "cpu_package_temperature_celsius",
    "cpu_package_power_watts",
)


def _get(values: Mapping[str, float], key: str) -> float:
    value = values.get(key)
    return math.nan if value is None else float(value)


def _devices(keys: Iterable[str]) -> list[int]:
    found = {int(m.group(1)) for key in keys if (m := _GPU_KEY.match(key))}
    return sorted(found)


def _energy_power_w(
    values: Mapping[str, float],
    previous_values: Mapping[str, float] | None,
    interval_s: float | None,
    key: str,
) -> float:
    """Mean power in W from a counter delta, NaN when it cannot be computed."""
    if previous_values is None or interval_s is None or not interval_s > 0:
        return math.nan
    delta_j = _get(values, key) - _get(previous_values, key)
    if not delta_j >= 0:  # NaN, or a counter reset
        return math.nan
    return delta_j / interval_s


def rle_inputs(
    values: Mapping[str, float],
    *,
    cpu_rated_w: float | None = None,
    cpu_limit_c: float = CPU_DEFAULT_LIMIT_C,
    previous_values: Mapping[str, float] | None = None,
    interval_s: float | None = None,
) -> dict[str, RleInputs]:
    """Extract the RLE inputs per device from one sample's values.

    Devices are ``"cpu"`` (when any CPU utilisation, package temperature or package power is
    present) and ``"gpu_<i>"`` for every GPU index found in the keys.

    Args:
        values: One sample's ``{quantity_name: value}`` (``Sample.values``, without prefix).
        cpu_rated_w: Rated CPU package power in W from the config; used when the RAPL long-term
            limit (``cpu_package_power_limit_watts``) is not in ``values``.
        cpu_limit_c: CPU temperature limit in °C.
        previous_values: The previous sample's values. With ``interval_s``, a GPU's power is the
            mean over the interval from its energy counter (``docs/rle-metric.md`` §2.8) instead of
            NVML's power reading, where both samples carry the counter.
        interval_s: Monotonic time between the previous sample and this one, seconds.

    Returns:
        ``{device: RleInputs}``. GPU: rated power = NVML enforced power limit, temperature limit
        = NVML slowdown threshold. Any input not available is NaN, never 0.
    """
    out: dict[str, RleInputs] = {}
    if any(key in values for key in _CPU_KEYS):
        rated = _get(values, "cpu_package_power_limit_watts")
        if math.isnan(rated) and cpu_rated_w is not None:
            rated = float(cpu_rated_w)
        out["cpu"] = RleInputs(
            util_pct=_get(values, "cpu_utilization_percentage"),
            temp_c=_get(values, "cpu_package_temperature_celsius"),
            power_w=_get(values, "cpu_package_power_watts"),
            rated_w=rated,
            limit_c=float(cpu_limit_c),
        )
    for index in _devices(values):
        p = f"gpu_{index}_"
        power_w = _energy_power_w(values, previous_values, interval_s, p + "energy_joules")
        if math.isnan(power_w):
            power_w = _get(values, p + "power_usage_watts")
        out[f"gpu_{index}"] = RleInputs(
            util_pct=_get(values, p + "utilization_percentage"),
            temp_c=_get(values, p + "temperature_celsius"),
            power_w=power_w,
            rated_w=_get(values, p + "power_limit_watts"),
            limit_c=_get(values, p + "slowdown_temperature_celsius"),
        )
    return out
