"""Fake sources for tests and ``telemetry=fake``: scripted readings and a simulated GPU.

Nothing here touches hardware. :class:`ScriptedSource` replays readings given as a list or a
callable, can stall (sleep) to show that a slow source does not stall training, and can raise.
:class:`FakeGpuSource` simulates one GPU's utilisation, power, energy counter and temperature so
that the RLE pipeline can run end to end on a machine without a GPU; its tags say ``fake``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import ClassVar

from rle.errors import ConfigError, TelemetryUnavailable
from rle.telemetry.base import HOST, RANK, Scope

__all__ = ["FakeGpuSource", "ScriptedSource", "UnavailableSource"]

Reading = Mapping[str, float]
Script = Sequence[Reading] | Callable[[int], Reading]


class ScriptedSource:
    """A fake source that returns scripted readings, one per ``sample()`` call.

    Args:
        readings: A sequence of readings, or a callable ``f(call_index) -> reading`` (it may
            raise to simulate a failing source). Values are converted to float.
        name: Source name.
        cycle: With a sequence: start again after the last reading; otherwise an exhausted
            script returns empty readings.
        stall_s: Seconds to block in every ``sample()`` (simulates a hung sensor).
        sleep: Function used to block (``time.sleep``; tests pass a fake clock's sleep or an
            event wait).
        scope: ``"rank"`` (default) or ``"host"``.
        tags: Run tags the source declares (e.g. ``{"power_source.cpu": "fake"}``).

    Attributes:
        calls: Number of ``sample()`` calls so far.
        closed: Whether ``close()`` was called.
    """

    def __init__(
        self,
        readings: Script = (),
        name: str = "scripted",
        *,
        cycle: bool = True,
        stall_s: float = 0.0,
        sleep: Callable[[float], object] = time.sleep,
        scope: Scope = RANK,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        if scope not in (HOST, RANK):
            raise ConfigError(f"{name}: scope must be 'host' or 'rank', got {scope!r}")
        self._name = name
        self._readings = readings
        self._cycle = cycle
        self._stall_s = float(stall_s)
        self._sleep = sleep
        self.scope: Scope = scope
        self._tags = {str(k): str(v) for k, v in (tags or {}).items()}
        self.calls = 0
        self.closed = False

    @property
    def name(self) -> str:
        """Source name."""
        return self._name

    def tags(self) -> dict[str, str]:
        """Run tags given to the constructor.

        Returns:
            A copy of the tags.
        """
        return dict(self._tags)

    def _reading(self, index: int) -> Reading:
        if callable(self._readings):
            return self._readings(index)
        if not self._readings:
            return {}
        if self._cycle:
            return self._readings[index % len(self._readings)]
        return self._readings[index] if index < len(self._readings) else {}

    def sample(self) -> dict[str, float]:
        """Return the next scripted reading (after stalling ``stall_s`` if set).

        Returns:
            The reading with float values.
        """
        index = self.calls
        self.calls += 1
        if self._stall_s > 0:
            self._sleep(self._stall_s)
        return {str(k): float(v) for k, v in self._reading(index).items()}

    def close(self) -> None:
        """Mark the source closed."""
        self.closed = True


class UnavailableSource:
    """A fake source that is never available: ``__init__`` raises ``TelemetryUnavailable``.

    Used to test how factories report unavailable sources.

    Args:
        reason: Message of the error.
        name: Source name.

    Raises:
        TelemetryUnavailable: Always.
    """

    scope: ClassVar[Scope] = RANK

    def __init__(self, reason: str = "simulated unavailable source", name: str = "unavailable"):
        raise TelemetryUnavailable(f"{name}: {reason}")

    @property
    def name(self) -> str:  # pragma: no cover - never constructed
        """Source name."""
        return "unavailable"

    def sample(self) -> dict[str, float]:  # pragma: no cover - never constructed
        """Never called."""
        return {}

    def close(self) -> None:  # pragma: no cover - never constructed
        """Never called."""


class FakeGpuSource:
    """A simulated GPU (scope ``rank``) emitting the NVML source's main keys for ``gpu_<index>``.

    Model, evaluated at every ``sample()`` on the monotonic clock:

    * utilisation: the next value of ``util_pct`` (cycled), %;
    * power: ``idle_w + (limit_w - idle_w) · util/100``, W; energy: its integral, J;
    * temperature: first-order approach to ``ambient_c + heat_c_per_w · power`` with time
      constant ``thermal_tau_s``, °C.

    Keys: ``gpu_<i>_utilization_percentage``, ``gpu_<i>_power_usage_watts``,
    ``gpu_<i>_power_limit_watts``, ``gpu_<i>_power_usage_percentage``, ``gpu_<i>_energy_joules``,
    ``gpu_<i>_temperature_celsius``, ``gpu_<i>_slowdown_temperature_celsius``.

    Args:
        index: GPU index used in the keys.
        util_pct: Utilisation per sample, % (a number or a sequence cycled over samples).
        limit_w: Simulated enforced power limit, W.
        idle_w: Simulated idle power, W.
        ambient_c: Simulated temperature at zero power, °C.
        heat_c_per_w: Steady-state temperature rise per watt, °C/W.
        thermal_tau_s: Thermal time constant, s (> 0).
        slowdown_c: Simulated slowdown threshold, °C.
        name: Source name (default ``"fake_gpu_<index>"``).
        monotonic: Monotonic clock in seconds (injectable for tests).

    Raises:
        ConfigError: A parameter is out of range.
    """

    scope: ClassVar[Scope] = RANK

    def __init__(
        self,
        index: int = 0,
        util_pct: float | Sequence[float] = 50.0,
        *,
        limit_w: float = 300.0,
        idle_w: float = 50.0,
        ambient_c: float = 35.0,
        heat_c_per_w: float = 0.15,
        thermal_tau_s: float = 60.0,
        slowdown_c: float = 90.0,
        name: str | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not limit_w > idle_w >= 0 or not thermal_tau_s > 0:
            raise ConfigError("FakeGpuSource needs limit_w > idle_w >= 0 and thermal_tau_s > 0")
        self._index = int(index)
        self._name = name or f"fake_gpu_{self._index}"
        self._utils = [float(util_pct)] if isinstance(util_pct, int | float) else list(util_pct)
        if not self._utils:
            raise ConfigError(f"{self._name}: util_pct must not be empty")
        self._limit_w = float(limit_w)
        self._idle_w = float(idle_w)
        self._ambient_c = float(ambient_c)
        self._heat_c_per_w = float(heat_c_per_w)
        self._tau_s = float(thermal_tau_s)
        self._slowdown_c = float(slowdown_c)
        self._monotonic = monotonic
        self._calls = 0
        self._last_s = monotonic()
        self._energy_j = 0.0
        self._temp_c = self._ambient_c + self._heat_c_per_w * self._idle_w

    @property
    def name(self) -> str:
        """Source name."""
        return self._name

    def tags(self) -> dict[str, str]:
        """Run tags: power and temperature are simulated.

        Returns:
            ``{"power_source.gpu_<i>": "fake", "temp_source.gpu_<i>": "fake"}``.
        """
        device = f"gpu_{self._index}"
        return {f"power_source.{device}": "fake", f"temp_source.{device}": "fake"}

    def sample(self) -> dict[str, float]:
        """Advance the simulation to now and return one reading.

        Returns:
            The keys listed in the class docstring.
        """
        now_s = self._monotonic()
        dt_s = max(0.0, now_s - self._last_s)
        self._last_s = now_s
        util = min(100.0, max(0.0, self._utils[self._calls % len(self._utils)]))
        self._calls += 1
        power_w = self._idle_w + (self._limit_w - self._idle_w) * util / 100.0
        self._energy_j += power_w * dt_s
        target_c = self._ambient_c + self._heat_c_per_w * power_w
        self._temp_c = target_c + (self._temp_c - target_c) * math.exp(-dt_s / self._tau_s)
        p = f"gpu_{self._index}_"
        return {
            p + "utilization_percentage": util,
            p + "power_usage_watts": power_w,
            p + "power_limit_watts": self._limit_w,
            p + "power_usage_percentage": 100.0 * power_w / self._limit_w,
            p + "energy_joules": self._energy_j,
            p + "temperature_celsius": self._temp_c,
            p + "slowdown_temperature_celsius": self._slowdown_c,
        }

    def close(self) -> None:
        """Nothing to release."""
