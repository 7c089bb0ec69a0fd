"""Metric profiles: ``default``, ``legacy_v03`` and ``legacy_v2`` as frozen dataclasses.

A :class:`Profile` holds every window, threshold, floor, clamp and limit that the RLE metric and
its collapse detector use (``docs/rle-metric.md`` §10). Three profiles are built in:

* ``default``: our fixed formula (§2.8, §4.4). Windows, decays and hysteresis are in **seconds**
  on measured timestamps.
* ``legacy_v03``: the lab's v0.3 monitor (§2.1-§2.7, §4.1). Windows, hysteresis and the peak
  decay are in **samples** (the monitor ran at 1 Hz), the warm-up is wall-clock seconds.
* ``legacy_v2``: the lab's v2 monitor (§3, §4.2). Windows in samples.

Keys are those of the ``telemetry.rle`` config node, e.g. ``collapse.drop_frac`` or
``thermal.slope_window_s``. :func:`get_profile` builds a profile with overrides given as dotted keys
or as a nested mapping; unknown keys, keys that the chosen profile does not use and out-of-range
values raise :class:`rle.errors.MetricInputError`. A value of ``None`` always means "keep the
profile's value", so a config schema can default every key to ``None``.

Per-device values (``load.rated_w``, ``thermal.limit_c``) are :class:`PerDevice` pairs; a scalar
override sets both device kinds, ``thermal.limit_c.gpu`` sets one.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from rle.errors import MetricInputError

__all__ = [
    "PROFILE_NAMES",
    "CollapseParams",
    "DeviceKind",
    "EvidenceParams",
    "GateParams",
    "LoadParams",
    "NormCurve",
    "NormParams",
    "PerDevice",
    "Profile",
    "SmoothParams",
    "StabilityParams",
    "ThermalParams",
    "device_kind",
    "flatten_overrides",
    "get_profile",
    "profile_from_config",
    "profile_keys",
]

DeviceKind = Literal["gpu", "cpu"]
ProfileName = Literal["default", "legacy_v03", "legacy_v2"]

#: Half-life (in seconds or samples) that corresponds to the upstream decay of 0.998 per step.
HALF_LIFE_0998 = math.log(0.5) / math.log(0.998)


def device_kind(device: str) -> DeviceKind:
    """Return the device kind of a device name.

    Args:
        device: Device name such as ``"gpu_0"``, ``"gpu"`` or ``"cpu"``.

    Returns:
        ``"gpu"`` for names starting with ``gpu``, ``"cpu"`` for names starting with ``cpu``.

    Raises:
        MetricInputError: For any other name.
    """
    name = str(device).strip().lower()
    if name.startswith("gpu"):
        return "gpu"
    if name.startswith("cpu"):
        return "cpu"
    raise MetricInputError(
        f"unknown device {device!r}: expected a name starting with 'gpu' (e.g. 'gpu_0') or 'cpu'"
    )


@dataclass(frozen=True)
class PerDevice:
    """A value per device kind; ``None`` means "not configured" (taken from the data).

    Attributes:
        gpu: Value for GPUs.
        cpu: Value for the CPU.
    """

    gpu: float | None = None
    cpu: float | None = None

    def for_kind(self, kind: DeviceKind) -> float | None:
        """Return the value for ``kind`` (``"gpu"`` or ``"cpu"``)."""
        return self.gpu if kind == "gpu" else self.cpu


@dataclass(frozen=True)
class StabilityParams:
    """Stability term σ (§2.2, §2.8, §3).

    Attributes:
        kind: ``std_fraction`` (default: σ = 1/(1 + pstdev(η)) with η in 0..1), ``std_percent``
            (σ over utilisation in percent, v0.3) or ``thermal_headroom`` (v2:
            σ = max(0, (T_limit − T)/T_limit)).
        window_s: Window of the standard deviation; seconds (``default``) or samples (legacy).
        min_samples: σ = 1 while the window holds fewer samples than this.
    """

    kind: str
    window_s: float | None
    min_samples: int | None


@dataclass(frozen=True)
class LoadParams:
    """Load term α = P / P_rated (§2.2, §2.8).

    Attributes:
        rated_w: Rated power per device kind, W. ``None``: from the sample's ``rated_w``.
        alpha_floor: Floor of α in the denominator (α itself is logged unfloored).
        cpu_power_fallback: What a CPU sample without power uses: ``none`` (α = NaN, RLE = NaN),
            ``rated_times_util`` (P = rated_w · util_pct/100, flagged ``power_estimated``) or
            ``zero`` (P = 0 W: older v0.3 builds, α floored to ``alpha_floor``).
        constant_alpha: Constant α that replaces P/P_rated (``legacy_v2``: 0.8).
    """

    rated_w: PerDevice
    alpha_floor: float | None
    cpu_power_fallback: str | None
    constant_alpha: float | None


@dataclass(frozen=True)
class ThermalParams:
    """Thermal term τ (T_sustain, §2.3, §2.8, §3).

    Attributes:
        limit_c: Thermal limit per device kind, °C. ``None``: from the sample's ``limit_c``.
        slope: ``ols_window`` (default), ``one_step`` (v0.3, nominal dt) or ``two_step`` (v2).
        slope_window_s: Window of the OLS slope, s (``default`` only).
        rate_floor: Heating rates at or below this (°C/s) give τ = cap.
        tau_clamp: ``(min, max)`` clamp of τ, s.
    """

    limit_c: PerDevice
    slope: str
    slope_window_s: float | None
    rate_floor: float | None
    tau_clamp: tuple[float, float]


@dataclass(frozen=True)
class SmoothParams:
    """Smoothing of ``rle_raw`` (§2.4, §2.8).

    Attributes:
        window_s: Simple-moving-average window including the current sample; seconds
            (``default``) or samples (legacy; in ``legacy_v2`` also the peak window).
    """

    window_s: float


@dataclass(frozen=True)
class NormCurve:
    """Piecewise-linear expected RLE of ``rle_norm`` (§2.5).

    Attributes:
        base: Expected RLE at 0 % and twice the expected RLE at 100 % utilisation.
        opt: Expected RLE at the knee.
        knee_pct: Utilisation of the knee, percent.
    """

    base: float
    opt: float
    knee_pct: float


@dataclass(frozen=True)
class NormParams:
    """Legacy ``rle_norm`` (§2.5); only ``legacy_v03`` produces it.

    Attributes:
        enabled: Whether ``rle_norm`` is computed (else NaN).
        cpu: Curve for CPUs.
        gpu: Curve for GPUs.
    """

    enabled: bool
    cpu: NormCurve
    gpu: NormCurve


@dataclass(frozen=True)
class GateParams:
    """Load and heating gate of the collapse detector (§4.1, §4.4).

    Attributes:
        util_pct: Under load when utilisation exceeds this, percent.
        a_load: ... or when α exceeds this.
        heat_rate_c_per_s: Heating when the OLS slope (``default``, °C/s) or the per-sample rise
            (``legacy_v03``, °C per sample) exceeds this.
    """

    util_pct: float
    a_load: float
    heat_rate_c_per_s: float


@dataclass(frozen=True)
class EvidenceParams:
    """Thermal or power evidence of the collapse detector (§4.1, §4.4).

    Attributes:
        tau_s: Evidence when τ is below this, s.
        temp_margin_c: ... or when T exceeds T_limit minus this, °C.
        a_load: ... or when α exceeds this.
    """

    tau_s: float
    temp_margin_c: float
    a_load: float


@dataclass(frozen=True)
class CollapseParams:
    """Collapse detector (§4).

    Attributes:
        warmup_s: No collapse until this many seconds after the first sample (strict ``>``).
        peak_half_life_s: Half-life of the decaying rolling peak; seconds (``default``) or
            samples (legacy). 346.2 ≙ a decay of 0.998 per second/sample.
        drop_frac: Drop when ``rle_smoothed`` (``legacy_v2``: ``rle_raw``) falls below this
            fraction of the peak.
        hysteresis_s: Time the gated drop must hold; seconds (``default``), samples
            (``legacy_v03``); unused (0) in ``legacy_v2``.
        gate: Load and heating gate (``None`` in ``legacy_v2``).
        evidence: Evidence requirement (``None`` in ``legacy_v2``).
    """

    warmup_s: float
    peak_half_life_s: float
    drop_frac: float
    hysteresis_s: float
    gate: GateParams | None
    evidence: EvidenceParams | None


@dataclass(frozen=True)
class Profile:
    """A complete, validated parameter set of the RLE metric.

    Attributes:
        name: ``default``, ``legacy_v03`` or ``legacy_v2``; selects the formula.
        stability: σ parameters.
        load: α parameters.
        thermal: τ parameters.
        smooth: Smoothing parameters.
        norm: Legacy normalisation parameters.
        collapse: Detector parameters.
        sample_hz: Nominal sample rate, Hz (``legacy_v03``: tick = 1/sample_hz for dT/dt;
            informational in ``default``; ``legacy_v2`` hard-codes dt = 1 s).
    """

    name: str
    stability: StabilityParams
    load: LoadParams
    thermal: ThermalParams
    smooth: SmoothParams
    norm: NormParams
    collapse: CollapseParams
    sample_hz: float

    def rated_w(self, kind: DeviceKind) -> float | None:
        """Rated power of ``kind`` in W, or ``None`` if it must come from the data."""
        return self.load.rated_w.for_kind(kind)

    def limit_c(self, kind: DeviceKind) -> float | None:
        """Thermal limit of ``kind`` in °C, or ``None`` if it must come from the data."""
        return self.thermal.limit_c.for_kind(kind)

    def with_overrides(
        self, overrides: Mapping[str, Any] | None = None, /, **dotted: Any
    ) -> Profile:
        """Return a copy with overrides applied (see :func:`get_profile`)."""
        return _apply(self, overrides, dotted)


_NORM_OFF = NormParams(
    enabled=False,
    cpu=NormCurve(base=0.3, opt=5.0, knee_pct=67.0),
    gpu=NormCurve(base=0.1, opt=3.0, knee_pct=60.0),
)

_DEFAULT = Profile(
    name="default",
    stability=StabilityParams(kind="std_fraction", window_s=10.0, min_samples=5),
    load=LoadParams(
        rated_w=PerDevice(gpu=None, cpu=None),
        alpha_floor=1e-3,
        cpu_power_fallback="none",
        constant_alpha=None,
    ),
    thermal=ThermalParams(
        limit_c=PerDevice(gpu=None, cpu=80.0),
        slope="ols_window",
        slope_window_s=30.0,
        rate_floor=1e-3,
        tau_clamp=(1.0, 600.0),
    ),
    smooth=SmoothParams(window_s=5.0),
    norm=_NORM_OFF,
    collapse=CollapseParams(
        warmup_s=60.0,
        peak_half_life_s=HALF_LIFE_0998,
        drop_frac=0.65,
        hysteresis_s=7.0,
        gate=GateParams(util_pct=60.0, a_load=0.75, heat_rate_c_per_s=0.0),
        evidence=EvidenceParams(tau_s=60.0, temp_margin_c=5.0, a_load=0.95),
    ),
    sample_hz=1.0,
)

_LEGACY_V03 = Profile(
    name="legacy_v03",
    stability=StabilityParams(kind="std_percent", window_s=10, min_samples=5),
    load=LoadParams(
        rated_w=PerDevice(gpu=200.0, cpu=125.0),
        alpha_floor=1e-3,
        cpu_power_fallback="rated_times_util",
        constant_alpha=None,
    ),
    thermal=ThermalParams(
        limit_c=PerDevice(gpu=83.0, cpu=80.0),
        slope="one_step",
        slope_window_s=None,
        rate_floor=1e-3,
        tau_clamp=(1.0, 600.0),
    ),
    smooth=SmoothParams(window_s=5),
    norm=dataclasses.replace(_NORM_OFF, enabled=True),
    collapse=CollapseParams(
        warmup_s=60.0,
        peak_half_life_s=HALF_LIFE_0998,
        drop_frac=0.65,
        hysteresis_s=7,
        gate=GateParams(util_pct=60.0, a_load=0.75, heat_rate_c_per_s=0.05),
        evidence=EvidenceParams(tau_s=60.0, temp_margin_c=5.0, a_load=0.95),
    ),
    sample_hz=1,
)

_LEGACY_V2 = Profile(
    name="legacy_v2",
    stability=StabilityParams(kind="thermal_headroom", window_s=None, min_samples=None),
    load=LoadParams(
        rated_w=PerDevice(gpu=None, cpu=None),
        alpha_floor=None,
        cpu_power_fallback=None,
        constant_alpha=0.8,
    ),
    thermal=ThermalParams(
        limit_c=PerDevice(gpu=83.0, cpu=80.0),
        slope="two_step",
        slope_window_s=None,
        rate_floor=None,
        tau_clamp=(0.0, 600.0),
    ),
    smooth=SmoothParams(window_s=5),
    norm=_NORM_OFF,
    collapse=CollapseParams(
        warmup_s=0.0,
        peak_half_life_s=HALF_LIFE_0998,
        drop_frac=0.65,
        hysteresis_s=0,
        gate=None,
        evidence=None,
    ),
    sample_hz=1,
)

_PROFILES: dict[str, Profile] = {p.name: p for p in (_DEFAULT, _LEGACY_V03, _LEGACY_V2)}
PROFILE_NAMES: tuple[str, ...] = tuple(_PROFILES)

# Keys a profile does not use (§10 "n/a"): overriding them with a different value is an error.
_NORM_CURVE_KEYS = frozenset(
    f"norm.{kind}.{field}" for kind in ("cpu", "gpu") for field in ("base", "opt", "knee_pct")
)
_UNUSED: dict[str, frozenset[str]] = {
    "default": frozenset({"load.constant_alpha", "norm.enabled"}) | _NORM_CURVE_KEYS,
    "legacy_v03": frozenset({"load.constant_alpha", "thermal.slope_window_s"}),
    "legacy_v2": frozenset(
        {
            "stability.window_s",
            "stability.min_samples",
            "load.rated_w.gpu",
            "load.rated_w.cpu",
            "load.alpha_floor",
            "load.cpu_power_fallback",
            "thermal.slope_window_s",
            "thermal.rate_floor",
            "norm.enabled",
            "collapse.warmup_s",
            "collapse.hysteresis_s",
            "collapse.gate.util_pct",
            "collapse.gate.a_load",
            "collapse.gate.heat_rate_c_per_s",
            "collapse.evidence.tau_s",
            "collapse.evidence.temp_margin_c",
            "collapse.evidence.a_load",
            "sample_hz",
        }
    )
    | _NORM_CURVE_KEYS,
}

_KINDS: dict[str, dict[str, frozenset[str]]] = {
    "default": {
        "stability.kind": frozenset({"std_fraction", "std_percent"}),
        "thermal.slope": frozenset({"ols_window"}),
        "load.cpu_power_fallback": frozenset({"none", "rated_times_util"}),
    },
    "legacy_v03": {
        "stability.kind": frozenset({"std_percent"}),
        "thermal.slope": frozenset({"one_step"}),
        "load.cpu_power_fallback": frozenset({"none", "rated_times_util", "zero"}),
    },
    "legacy_v2": {
        "stability.kind": frozenset({"thermal_headroom"}),
        "thermal.slope": frozenset({"two_step"}),
        "load.cpu_power_fallback": frozenset({"none"}),
    },
}


def _leaf_keys() -> tuple[str, ...]:
    keys: list[str] = []

    def walk(obj: Any, prefix: str) -> None:
        for field in dataclasses.fields(obj):
            value = getattr(obj, field.name)
            key = f"{prefix}{field.name}"
            if dataclasses.is_dataclass(value):
                walk(value, key + ".")
            elif key != "name":
                keys.append(key)

    walk(_DEFAULT, "")
    return tuple(keys)


_LEAF_KEYS = _leaf_keys()


def profile_keys() -> tuple[str, ...]:
    """Return every settable dotted key (relative to ``telemetry.rle``)."""
    return _LEAF_KEYS


def flatten_overrides(
    overrides: Mapping[str, Any] | None = None, /, **dotted: Any
) -> dict[str, Any]:
    """Flatten nested and dotted overrides into ``{dotted.key: value}``.

    ``{"collapse": {"drop_frac": 0.7}}``, ``{"collapse.drop_frac": 0.7}`` and
    ``collapse={"drop_frac": 0.7}`` all give ``{"collapse.drop_frac": 0.7}``. Mappings below a
    group key (``thermal.limit_c``, ``load.rated_w``, ``norm.cpu``, ``norm.gpu``) are flattened
    too; a scalar given for ``thermal.limit_c`` or ``load.rated_w`` is expanded to both kinds.

    Args:
        overrides: Nested or dotted mapping (e.g. a plain-dict copy of ``telemetry.rle``).
        **dotted: Further overrides; later ones win.

    Returns:
        Flat mapping from dotted keys to values.

    Raises:
        MetricInputError: If a key is not a string.
    """
    flat: dict[str, Any] = {}

    def walk(mapping: Mapping[Any, Any], prefix: str) -> None:
        for raw_key, value in mapping.items():
            if not isinstance(raw_key, str):
                raise MetricInputError(f"override keys must be strings, got {raw_key!r}")
            key = f"{prefix}{raw_key}"
            if isinstance(value, Mapping):
                walk(value, key + ".")
            elif key in ("thermal.limit_c", "load.rated_w"):
                flat[key + ".gpu"] = value
                flat[key + ".cpu"] = value
            else:
                flat[key] = value

    if overrides is not None:
        walk(overrides, "")
    walk(dotted, "")
    return flat


def _set_in(nested: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = nested
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            raise MetricInputError(f"override {key!r}: group {part!r} is not used by this profile")
        node = child
    node[parts[-1]] = value


def _get_in(nested: Mapping[str, Any], key: str) -> Any:
    node: Any = nested
    for part in key.split("."):
        if node is None:
            return None
        node = node[part]
    return node


def _apply(
    base: Profile, overrides: Mapping[str, Any] | None, dotted: Mapping[str, Any]
) -> Profile:
    flat = flatten_overrides(overrides, **dotted)
    nested = dataclasses.asdict(base)
    unused = _UNUSED[base.name]
    for key, value in flat.items():
        if key not in _LEAF_KEYS:
            hint = ", ".join(k for k in _LEAF_KEYS if k.split(".")[0] == key.split(".")[0])
            raise MetricInputError(
                f"unknown metric parameter {key!r}" + (f" (known: {hint})" if hint else "")
            )
        if value is None:
            continue  # None keeps the profile's value
        current = _get_in(nested, key)
        if key in unused:
            if _same(value, current):
                continue
            raise MetricInputError(
                f"metric parameter {key!r} is not used by profile {base.name!r} "
                f"(its value there is {current!r}); got {value!r}"
            )
        if (
            key.startswith(("collapse.gate.", "collapse.evidence."))
            and nested["collapse"][key.split(".")[1]] is None
        ):
            raise MetricInputError(f"metric parameter {key!r} is not used by profile {base.name!r}")
        _set_in(nested, key, value)
    return _build(base.name, nested)


def _same(a: Any, b: Any) -> bool:
    try:
        if isinstance(b, tuple):
            return tuple(float(x) for x in a) == tuple(float(x) for x in b)
        if isinstance(b, str) or isinstance(a, str):
            return str(a) == str(b)
        return b is not None and float(a) == float(b)
    except (TypeError, ValueError):
        return False


def _num(
    key: str,
    value: Any,
    *,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
    integer: bool = False,
) -> float:
    if isinstance(value, bool) or value is None:
        raise MetricInputError(f"metric parameter {key!r} must be a number, got {value!r}")
    try:
        x = float(value)
    except (TypeError, ValueError) as exc:
        raise MetricInputError(f"metric parameter {key!r} must be a number, got {value!r}") from exc
    if not math.isfinite(x):
        raise MetricInputError(f"metric parameter {key!r} must be finite, got {value!r}")
    if integer and x != int(x):
        raise MetricInputError(
            f"metric parameter {key!r} counts samples in this profile and must be an integer, "
            f"got {value!r}"
        )
    if lo is not None and (x < lo or (lo_open and x == lo)):
        op = ">" if lo_open else ">="
        raise MetricInputError(f"metric parameter {key!r} must be {op} {lo:g}, got {value!r}")
    if hi is not None and (x > hi or (hi_open and x == hi)):
        op = "<" if hi_open else "<="
        raise MetricInputError(f"metric parameter {key!r} must be {op} {hi:g}, got {value!r}")
    return x


def _opt_pos(key: str, value: Any) -> float | None:
    return None if value is None else _num(key, value, lo=0.0, lo_open=True)


def _kind(name: str, key: str, value: Any) -> str:
    allowed = _KINDS[name][key]
    if str(value) not in allowed:
        raise MetricInputError(
            f"metric parameter {key!r} = {value!r} is not supported by profile {name!r} "
            f"(allowed: {', '.join(sorted(allowed))})"
        )
    return str(value)


def _build(name: str, d: Mapping[str, Any]) -> Profile:
    legacy = name != "default"
    v2 = name == "legacy_v2"

    st = d["stability"]
    stability = StabilityParams(
        kind=_kind(name, "stability.kind", st["kind"]),
        window_s=None
        if v2
        else _num("stability.window_s", st["window_s"], lo=0.0, lo_open=True, integer=legacy),
        min_samples=None
        if v2
        else int(_num("stability.min_samples", st["min_samples"], lo=1, integer=True)),
    )

    ld = d["load"]
    load = LoadParams(
        rated_w=PerDevice(
            gpu=_opt_pos("load.rated_w.gpu", ld["rated_w"]["gpu"]),
            cpu=_opt_pos("load.rated_w.cpu", ld["rated_w"]["cpu"]),
        ),
        alpha_floor=None
        if v2
        else _num("load.alpha_floor", ld["alpha_floor"], lo=0.0, lo_open=True),
        cpu_power_fallback=None
        if v2
        else _kind(name, "load.cpu_power_fallback", ld["cpu_power_fallback"]),
        constant_alpha=(
            _num("load.constant_alpha", ld["constant_alpha"], lo=0.0, lo_open=True) if v2 else None
        ),
    )

    th = d["thermal"]
    clamp = th["tau_clamp"]
    if isinstance(clamp, str | bytes) or not hasattr(clamp, "__len__") or len(clamp) != 2:
        raise MetricInputError(
            f"metric parameter 'thermal.tau_clamp' must be [min, max], got {clamp!r}"
        )
    tau_lo = _num("thermal.tau_clamp", clamp[0], lo=0.0, lo_open=not v2)
    tau_hi = _num("thermal.tau_clamp", clamp[1], lo=tau_lo, lo_open=True)
    thermal = ThermalParams(
        limit_c=PerDevice(
            gpu=_opt_pos("thermal.limit_c.gpu", th["limit_c"]["gpu"]),
            cpu=_opt_pos("thermal.limit_c.cpu", th["limit_c"]["cpu"]),
        ),
        slope=_kind(name, "thermal.slope", th["slope"]),
        slope_window_s=(
            _num("thermal.slope_window_s", th["slope_window_s"], lo=0.0, lo_open=True)
            if name == "default"
            else None
        ),
        rate_floor=None
        if v2
        else _num("thermal.rate_floor", th["rate_floor"], lo=0.0, lo_open=True),
        tau_clamp=(tau_lo, tau_hi),
    )

    smooth = SmoothParams(
        window_s=_num(
            "smooth.window_s", d["smooth"]["window_s"], lo=0.0, lo_open=True, integer=legacy
        )
    )

    nd = d["norm"]

    def curve(kind: str) -> NormCurve:
        c = nd[kind]
        return NormCurve(
            base=_num(f"norm.{kind}.base", c["base"], lo=0.0, lo_open=True),
            opt=_num(f"norm.{kind}.opt", c["opt"], lo=0.0, lo_open=True),
            knee_pct=_num(
                f"norm.{kind}.knee_pct", c["knee_pct"], lo=0.0, hi=100.0, lo_open=True, hi_open=True
            ),
        )

    enabled = nd["enabled"]
    if not isinstance(enabled, bool):
        raise MetricInputError(
            f"metric parameter 'norm.enabled' must be a boolean, got {enabled!r}"
        )
    norm = NormParams(enabled=enabled, cpu=curve("cpu"), gpu=curve("gpu"))

    cd = d["collapse"]
    gate = None
    evidence = None
    if not v2:
        g = cd["gate"]
        gate = GateParams(
            util_pct=_num("collapse.gate.util_pct", g["util_pct"], lo=0.0, hi=100.0),
            a_load=_num("collapse.gate.a_load", g["a_load"], lo=0.0),
            heat_rate_c_per_s=_num("collapse.gate.heat_rate_c_per_s", g["heat_rate_c_per_s"]),
        )
        e = cd["evidence"]
        evidence = EvidenceParams(
            tau_s=_num("collapse.evidence.tau_s", e["tau_s"], lo=0.0),
            temp_margin_c=_num("collapse.evidence.temp_margin_c", e["temp_margin_c"], lo=0.0),
            a_load=_num("collapse.evidence.a_load", e["a_load"], lo=0.0),
        )
    collapse = CollapseParams(
        warmup_s=0.0 if v2 else _num("collapse.warmup_s", cd["warmup_s"], lo=0.0),
        peak_half_life_s=_num(
            "collapse.peak_half_life_s", cd["peak_half_life_s"], lo=0.0, lo_open=True
        ),
        drop_frac=_num("collapse.drop_frac", cd["drop_frac"], lo=0.0, hi=1.0, lo_open=True),
        hysteresis_s=0
        if v2
        else _num("collapse.hysteresis_s", cd["hysteresis_s"], lo=0.0, integer=legacy),
        gate=gate,
        evidence=evidence,
    )

    sample_hz = _num(
        "sample_hz", d["sample_hz"], lo=1.0 if legacy else 0.0, lo_open=not legacy, integer=legacy
    )

    if legacy:
        # sample counts are kept as ints for readability of the frozen profile
        stability = dataclasses.replace(
            stability, window_s=None if stability.window_s is None else int(stability.window_s)
        )
        smooth = SmoothParams(window_s=int(smooth.window_s))
        collapse = dataclasses.replace(collapse, hysteresis_s=int(collapse.hysteresis_s))
        sample_hz = int(sample_hz)
    return Profile(
        name=name,
        stability=stability,
        load=load,
        thermal=thermal,
        smooth=smooth,
        norm=norm,
        collapse=collapse,
        sample_hz=sample_hz,
    )


def get_profile(
    name: str | Profile = "default", overrides: Mapping[str, Any] | None = None, /, **dotted: Any
) -> Profile:
    """Return a built-in profile, optionally with overrides.

    Examples:
        ``get_profile("default", **{"collapse.drop_frac": 0.7})``,
        ``get_profile("default", {"collapse": {"drop_frac": 0.7}})``,
        ``get_profile("legacy_v03", thermal={"limit_c": {"gpu": 85}})``.

    Args:
        name: ``default``, ``legacy_v03``, ``legacy_v2`` or a :class:`Profile` to start from.
        overrides: Nested or dotted mapping of ``telemetry.rle`` keys (§10). ``None`` values
            keep the profile's value.
        **dotted: More overrides as keyword arguments (dotted keys via ``**{...}``).

    Returns:
        A validated, frozen :class:`Profile`.

    Raises:
        MetricInputError: Unknown profile or key, a key the profile does not use, or a value
            out of range.
    """
    if isinstance(name, Profile):
        base = name
    else:
        try:
            base = _PROFILES[str(name)]
        except KeyError:
            raise MetricInputError(
                f"unknown metric profile {name!r} (known: {', '.join(PROFILE_NAMES)})"
            ) from None
    if not overrides and not dotted:
        return base
    return _apply(base, overrides, dotted)


def profile_from_config(node: Mapping[str, Any]) -> Profile:
    """Build a profile from a ``telemetry.rle`` config node (as a plain mapping).

    The node's ``profile`` key (default ``"default"``) picks the profile; every other key is an
    override (§10).

    Args:
        node: Mapping such as ``{"profile": "default", "collapse": {"drop_frac": 0.7}}``.

    Returns:
        The validated profile.

    Raises:
        MetricInputError: As :func:`get_profile`.
    """
    rest = dict(node)
    name = rest.pop("profile", None) or "default"
    return get_profile(str(name), rest)
