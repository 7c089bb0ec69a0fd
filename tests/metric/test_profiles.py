"""Profiles: §10 values, overrides, validation, and every parameter changes the outcome."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pandas as pd
import pytest

from rle.errors import MetricInputError
from rle.metric import (
    PROFILE_NAMES,
    Profile,
    compute,
    device_kind,
    flatten_overrides,
    get_profile,
    profile_from_config,
    profile_keys,
)

# ---------------------------------------------------------------------------------------------
# Built-in values (§10)
# ---------------------------------------------------------------------------------------------


def test_profile_names() -> None:
    assert PROFILE_NAMES == ("default", "legacy_v03", "legacy_v2")


def test_default_profile_matches_spec_table() -> None:
    p = get_profile("default")
    assert p.stability.kind == "std_fraction"
    assert p.stability.window_s == 10.0
    assert p.stability.min_samples == 5
    assert p.rated_w("gpu") is None  # NVML enforced power limit, from the data
    assert p.rated_w("cpu") is None
    assert p.load.alpha_floor == 1e-3
    assert p.load.cpu_power_fallback == "none"
    assert p.limit_c("gpu") is None  # NVML slowdown threshold, from the data
    assert p.limit_c("cpu") == 80.0
    assert p.thermal.slope == "ols_window"
    assert p.thermal.slope_window_s == 30.0
    assert p.thermal.rate_floor == 1e-3
    assert p.thermal.tau_clamp == (1.0, 600.0)
    assert p.smooth.window_s == 5.0
    assert p.norm.enabled is False
    assert p.collapse.warmup_s == 60.0
    assert p.collapse.peak_half_life_s == pytest.approx(346.2, abs=0.1)
    assert 0.5 ** (1.0 / p.collapse.peak_half_life_s) == pytest.approx(0.998, rel=1e-15)
    assert p.collapse.drop_frac == 0.65
    assert p.collapse.hysteresis_s == 7.0
    assert p.collapse.gate is not None
    assert p.collapse.evidence is not None
    assert (p.collapse.gate.util_pct, p.collapse.gate.a_load) == (60.0, 0.75)
    assert p.collapse.gate.heat_rate_c_per_s == 0.0
    ev = p.collapse.evidence
    assert (ev.tau_s, ev.temp_margin_c, ev.a_load) == (60.0, 5.0, 0.95)
    assert p.sample_hz == 1.0


def test_legacy_v03_profile_matches_spec_table() -> None:
    p = get_profile("legacy_v03")
    assert p.stability.kind == "std_percent"
    assert (p.stability.window_s, p.stability.min_samples) == (10, 5)
    assert (p.rated_w("gpu"), p.rated_w("cpu")) == (200.0, 125.0)
    assert p.load.cpu_power_fallback == "rated_times_util"
    assert (p.limit_c("gpu"), p.limit_c("cpu")) == (83.0, 80.0)
    assert p.thermal.slope == "one_step"
    assert p.thermal.tau_clamp == (1.0, 600.0)
    assert p.smooth.window_s == 5
    assert p.norm.enabled is True
    assert (p.norm.cpu.base, p.norm.cpu.opt, p.norm.cpu.knee_pct) == (0.3, 5.0, 67.0)
    assert (p.norm.gpu.base, p.norm.gpu.opt, p.norm.gpu.knee_pct) == (0.1, 3.0, 60.0)
    assert p.collapse.warmup_s == 60.0
    assert p.collapse.hysteresis_s == 7
    assert p.collapse.gate is not None
    assert p.collapse.gate.heat_rate_c_per_s == 0.05


def test_legacy_v2_profile_matches_spec_table() -> None:
    p = get_profile("legacy_v2")
    assert p.stability.kind == "thermal_headroom"
    assert p.load.constant_alpha == 0.8
    assert (p.limit_c("gpu"), p.limit_c("cpu")) == (83.0, 80.0)
    assert p.thermal.slope == "two_step"
    assert p.thermal.tau_clamp == (0.0, 600.0)
    assert p.smooth.window_s == 5
    assert p.norm.enabled is False
    assert p.collapse.warmup_s == 0.0
    assert p.collapse.hysteresis_s == 0
    assert p.collapse.drop_frac == 0.65
    assert p.collapse.gate is None
    assert p.collapse.evidence is None


def test_profiles_are_frozen() -> None:
    p = get_profile("default")
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.collapse.drop_frac = 0.5  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.name = "x"  # type: ignore[misc]


def test_device_kind() -> None:
    assert device_kind("gpu_0") == "gpu"
    assert device_kind("GPU") == "gpu"
    assert device_kind("cpu") == "cpu"
    with pytest.raises(MetricInputError, match="unknown device"):
        device_kind("npu_0")


# ---------------------------------------------------------------------------------------------
# Overrides
# ---------------------------------------------------------------------------------------------


def test_override_forms_are_equivalent() -> None:
    dotted = get_profile("default", **{"collapse.drop_frac": 0.7})
    nested = get_profile("default", {"collapse": {"drop_frac": 0.7}})
    kwarg = get_profile("default", collapse={"drop_frac": 0.7})
    mixed = get_profile("default", {"collapse.drop_frac": 0.7})
    assert dotted == nested == kwarg == mixed
    assert dotted.collapse.drop_frac == 0.7
    assert get_profile("default").collapse.drop_frac == 0.65  # the base is unchanged


def test_profile_from_config_node() -> None:
    node = {
        "profile": "legacy_v03",
        "stability": {"window_s": 8},
        "thermal": {"limit_c": {"gpu": 85}},
        "collapse": {"drop_frac": None},  # None keeps the profile's value
    }
    p = profile_from_config(node)
    assert p.name == "legacy_v03"
    assert p.stability.window_s == 8
    assert p.limit_c("gpu") == 85.0
    assert p.limit_c("cpu") == 80.0
    assert p.collapse.drop_frac == 0.65
    assert profile_from_config({}).name == "default"


def test_scalar_group_override_sets_both_kinds() -> None:
    p = get_profile("default", thermal={"limit_c": 90})
    assert (p.limit_c("gpu"), p.limit_c("cpu")) == (90.0, 90.0)
    assert flatten_overrides({"load": {"rated_w": 250}}) == {
        "load.rated_w.gpu": 250,
        "load.rated_w.cpu": 250,
    }


def test_overrides_from_a_profile_object_and_with_overrides() -> None:
    base = get_profile("default", **{"smooth.window_s": 3})
    p = get_profile(base, **{"collapse.hysteresis_s": 9})
    assert (p.smooth.window_s, p.collapse.hysteresis_s) == (3.0, 9.0)
    assert base.with_overrides({"collapse.warmup_s": 1}).collapse.warmup_s == 1.0


def test_tau_clamp_override() -> None:
    p = get_profile("default", **{"thermal.tau_clamp": [2, 300]})
    assert p.thermal.tau_clamp == (2.0, 300.0)


def test_profile_keys_cover_config_surface() -> None:
    keys = set(profile_keys())
    for key in (
        "stability.kind",
        "stability.window_s",
        "stability.min_samples",
        "load.rated_w.gpu",
        "load.alpha_floor",
        "load.cpu_power_fallback",
        "thermal.limit_c.cpu",
        "thermal.slope",
        "thermal.slope_window_s",
        "thermal.rate_floor",
        "thermal.tau_clamp",
        "smooth.window_s",
        "norm.enabled",
        "collapse.warmup_s",
        "collapse.peak_half_life_s",
        "collapse.drop_frac",
        "collapse.hysteresis_s",
        "collapse.gate.util_pct",
        "collapse.evidence.tau_s",
        "sample_hz",
    ):
        assert key in keys


def test_cpu_power_estimated_switch() -> None:
    p = get_profile("default", **{"load.cpu_power_fallback": "rated_times_util"})
    assert p.load.cpu_power_fallback == "rated_times_util"


def test_legacy_sample_counts_stay_integers() -> None:
    p = get_profile("legacy_v03", **{"stability.window_s": 12.0, "collapse.hysteresis_s": 3})
    assert isinstance(p.stability.window_s, int)
    assert p.stability.window_s == 12
    assert isinstance(p.collapse.hysteresis_s, int)


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


def test_unknown_profile() -> None:
    with pytest.raises(MetricInputError, match="unknown metric profile 'v3'"):
        get_profile("v3")


@pytest.mark.parametrize("key", ["collapse.drop", "foo", "collapse.gate.temp", "stability"])
def test_unknown_key(key: str) -> None:
    with pytest.raises(MetricInputError, match="unknown metric parameter"):
        get_profile("default", **{key: 1})


@pytest.mark.parametrize(
    ("profile", "key", "value"),
    [
        ("default", "stability.window_s", 0),
        ("default", "stability.window_s", -1),
        ("default", "stability.min_samples", 0),
        ("default", "stability.min_samples", 2.5),
        ("default", "load.rated_w.gpu", 0),
        ("default", "load.alpha_floor", 0),
        ("default", "thermal.limit_c.cpu", -5),
        ("default", "thermal.slope_window_s", 0),
        ("default", "thermal.rate_floor", 0),
        ("default", "thermal.tau_clamp", [0, 600]),
        ("default", "thermal.tau_clamp", [600, 1]),
        ("default", "thermal.tau_clamp", [1]),
        ("default", "smooth.window_s", 0),
        ("default", "collapse.warmup_s", -1),
        ("default", "collapse.peak_half_life_s", 0),
        ("default", "collapse.drop_frac", 0),
        ("default", "collapse.drop_frac", 1.5),
        ("default", "collapse.hysteresis_s", -1),
        ("default", "collapse.gate.util_pct", 101),
        ("default", "collapse.gate.a_load", -0.1),
        ("default", "collapse.gate.heat_rate_c_per_s", math.inf),
        ("default", "collapse.evidence.tau_s", -1),
        ("default", "collapse.evidence.temp_margin_c", -1),
        ("default", "collapse.evidence.a_load", -1),
        ("default", "collapse.drop_frac", "high"),
        ("default", "collapse.drop_frac", True),
        ("default", "sample_hz", 0),
        ("legacy_v03", "stability.window_s", 2.5),
        ("legacy_v03", "smooth.window_s", 1.5),
        ("legacy_v03", "collapse.hysteresis_s", 6.5),
        ("legacy_v03", "sample_hz", 0),
        ("legacy_v03", "norm.gpu.knee_pct", 100),
        ("legacy_v03", "norm.cpu.base", 0),
        ("legacy_v03", "norm.enabled", "yes"),
        ("legacy_v2", "load.constant_alpha", 0),
        ("legacy_v2", "thermal.tau_clamp", [-1, 600]),
    ],
)
def test_out_of_range_values(profile: str, key: str, value: Any) -> None:
    with pytest.raises(MetricInputError, match=key.split(".")[0]):
        get_profile(profile, **{key: value})


@pytest.mark.parametrize(
    ("profile", "key", "value"),
    [
        ("default", "stability.kind", "thermal_headroom"),
        ("default", "thermal.slope", "one_step"),
        ("default", "load.cpu_power_fallback", "zero"),
        ("default", "load.cpu_power_fallback", "guess"),
        ("legacy_v03", "thermal.slope", "ols_window"),
        ("legacy_v2", "stability.kind", "std_fraction"),
    ],
)
def test_unsupported_kinds(profile: str, key: str, value: str) -> None:
    with pytest.raises(MetricInputError, match="not supported"):
        get_profile(profile, **{key: value})


@pytest.mark.parametrize(
    ("profile", "key", "value"),
    [
        ("default", "load.constant_alpha", 0.8),
        ("default", "norm.enabled", True),
        ("default", "norm.gpu.base", 0.2),
        ("legacy_v03", "thermal.slope_window_s", 30),
        ("legacy_v2", "collapse.hysteresis_s", 7),
        ("legacy_v2", "collapse.gate.util_pct", 50),
        ("legacy_v2", "stability.window_s", 10),
        ("legacy_v2", "load.rated_w.gpu", 200),
        ("legacy_v2", "sample_hz", 2),
    ],
)
def test_keys_unused_by_a_profile_cannot_change(profile: str, key: str, value: Any) -> None:
    with pytest.raises(MetricInputError, match="not used by profile"):
        get_profile(profile, **{key: value})


def test_unused_keys_accept_their_own_value_and_none() -> None:
    assert get_profile("legacy_v2", **{"collapse.warmup_s": 0, "sample_hz": 1}).name == "legacy_v2"
    assert get_profile("legacy_v2", **{"stability.window_s": None}) == get_profile("legacy_v2")


def test_compute_rejects_bad_overrides(make_frame: Any) -> None:
    frame = make_frame([50.0] * 3, 60.0, 100.0)
    with pytest.raises(MetricInputError, match="unknown metric parameter"):
        compute(frame, device="gpu", rated_w=200, limit_c=83, **{"collapse.dropfrac": 0.7})
    with pytest.raises(MetricInputError, match="unknown metric profile"):
        compute(frame, device="gpu", profile="legacy_v4")
    with pytest.raises(MetricInputError, match="drop_frac"):
        compute(frame, device="gpu", rated_w=200, limit_c=83, collapse={"drop_frac": -1})


# ---------------------------------------------------------------------------------------------
# Every parameter is used: changing it changes the outcome
# ---------------------------------------------------------------------------------------------


def _varied(n: int = 150, *, seed: int = 3) -> pd.DataFrame:
    """Varying utilisation, power and temperature (rising with steps, then cooling)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n, dtype=float)
    util = np.clip(70 + 20 * np.sin(t / 7.0) + rng.normal(0, 8, n), 0, 100).round()
    temp = np.concatenate(
        (60 + np.floor(t[: n // 2] / 3.0), 60 + n // 6 - np.floor(t[n // 2 :] / 20))
    )
    power = 80 + 1.5 * util + rng.normal(0, 5, n)
    return pd.DataFrame(
        {
            "timestamp": 1.7e9 + t,
            "util_pct": util,
            "temp_c": temp,
            "power_w": power,
            "cpu_freq_ghz": 3.0,
        }
    )


def _collapse_scenario(power_a: float, power_b: float) -> pd.DataFrame:
    """100 s of efficient full load, then 60 s of lower utilisation at higher power, heating."""
    t = np.arange(160, dtype=float)
    b = t >= 100
    return pd.DataFrame(
        {
            "timestamp": 1.7e9 + t,
            "util_pct": np.where(b, 65.0, 100.0),
            "temp_c": np.where(b, 62.05 + 0.2 * (t - 100), 60.0),
            "power_w": np.where(b, power_b, power_a),
        }
    )


def _low_power(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(power_w=0.05)


def _no_power(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(power_w=np.nan)


GPU_DEFAULT = {"load.rated_w.gpu": 300.0, "thermal.limit_c.gpu": 85.0}
CPU_DEFAULT = {"load.rated_w.cpu": 125.0}
COLLAPSE_DEFAULT = {"load.rated_w.gpu": 300.0, "thermal.limit_c.gpu": 80.0}
NO_TAU_EVIDENCE = {**COLLAPSE_DEFAULT, "collapse.evidence.tau_s": 20.0}
NO_UTIL_GATE = {**COLLAPSE_DEFAULT, "collapse.gate.util_pct": 100.0}
V03_NO_TAU = {"collapse.evidence.tau_s": 20}
V03_NO_UTIL = {"collapse.gate.util_pct": 100.0}

# (profile, device, frame builder, base overrides, key, new value, column that must change)
SENSITIVITY: list[tuple[str, str, Any, dict[str, Any], str, Any, str]] = [
    ("default", "gpu_0", _varied, GPU_DEFAULT, "stability.kind", "std_percent", "stability"),
    ("default", "gpu_0", _varied, GPU_DEFAULT, "stability.window_s", 3, "stability"),
    ("default", "gpu_0", _varied, GPU_DEFAULT, "stability.min_samples", 2, "stability"),
    ("default", "gpu_0", _varied, GPU_DEFAULT, "load.rated_w.gpu", 250, "a_load"),
    ("default", "cpu", _varied, CPU_DEFAULT, "load.rated_w.cpu", 100, "a_load"),
    (
        "default",
        "gpu_0",
        lambda: _low_power(_varied()),
        GPU_DEFAULT,
        "load.alpha_floor",
        0.9,
        "E_pw",
    ),
    (
        "default",
        "cpu",
        lambda: _no_power(_varied()),
        CPU_DEFAULT,
        "load.cpu_power_fallback",
        "rated_times_util",
        "a_load",
    ),
    ("default", "gpu_0", _varied, GPU_DEFAULT, "thermal.limit_c.gpu", 95, "t_sustain_s"),
    ("default", "cpu", _varied, CPU_DEFAULT, "thermal.limit_c.cpu", 95, "t_sustain_s"),
    ("default", "gpu_0", _varied, GPU_DEFAULT, "thermal.slope_window_s", 5, "t_sustain_s"),
    ("default", "gpu_0", _varied, GPU_DEFAULT, "thermal.rate_floor", 0.3, "t_sustain_s"),
    ("default", "gpu_0", _varied, GPU_DEFAULT, "thermal.tau_clamp", [1, 100], "t_sustain_s"),
    ("default", "gpu_0", _varied, GPU_DEFAULT, "smooth.window_s", 2, "rle_smoothed"),
    (
        "default",
        "gpu_0",
        lambda: _collapse_scenario(150, 210),
        COLLAPSE_DEFAULT,
        "collapse.peak_half_life_s",
        5,
        "rolling_peak",
    ),
    (
        "default",
        "gpu_0",
        lambda: _collapse_scenario(150, 210),
        COLLAPSE_DEFAULT,
        "collapse.warmup_s",
        200,
        "collapse",
    ),
    (
        "default",
        "gpu_0",
        lambda: _collapse_scenario(150, 210),
        COLLAPSE_DEFAULT,
        "collapse.drop_frac",
        0.3,
        "collapse",
    ),
    (
        "default",
        "gpu_0",
        lambda: _collapse_scenario(150, 210),
        COLLAPSE_DEFAULT,
        "collapse.hysteresis_s",
        100,
        "collapse",
    ),
    (
        "default",
        "gpu_0",
        lambda: _collapse_scenario(150, 210),
        COLLAPSE_DEFAULT,
        "collapse.gate.util_pct",
        70,
        "collapse",
    ),
    (
        "default",
        "gpu_0",
        lambda: _collapse_scenario(150, 210),
        NO_UTIL_GATE,
        "collapse.gate.a_load",
        0.6,
        "collapse",
    ),
    (
        "default",
        "gpu_0",
        lambda: _collapse_scenario(150, 210),
        COLLAPSE_DEFAULT,
        "collapse.gate.heat_rate_c_per_s",
        0.5,
        "collapse",
    ),
    (
        "default",
        "gpu_0",
        lambda: _collapse_scenario(150, 210),
        COLLAPSE_DEFAULT,
        "collapse.evidence.tau_s",
        20,
        "collapse",
    ),
    (
        "default",
        "gpu_0",
        lambda: _collapse_scenario(150, 210),
        NO_TAU_EVIDENCE,
        "collapse.evidence.temp_margin_c",
        10,
        "collapse",
    ),
    (
        "default",
        "gpu_0",
        lambda: _collapse_scenario(150, 210),
        NO_TAU_EVIDENCE,
        "collapse.evidence.a_load",
        0.6,
        "collapse",
    ),
    # legacy_v03
    ("legacy_v03", "gpu", _varied, {}, "stability.window_s", 5, "stability"),
    ("legacy_v03", "gpu", _varied, {}, "stability.min_samples", 8, "stability"),
    ("legacy_v03", "gpu", _varied, {}, "load.rated_w.gpu", 250, "a_load"),
    ("legacy_v03", "cpu", _varied, {}, "load.rated_w.cpu", 100, "a_load"),
    ("legacy_v03", "gpu", lambda: _low_power(_varied()), {}, "load.alpha_floor", 0.9, "E_pw"),
    (
        "legacy_v03",
        "cpu",
        lambda: _no_power(_varied()),
        {},
        "load.cpu_power_fallback",
        "none",
        "a_load",
    ),
    (
        "legacy_v03",
        "cpu",
        lambda: _no_power(_varied()),
        {},
        "load.cpu_power_fallback",
        "zero",
        "rle_raw",
    ),
    ("legacy_v03", "gpu", _varied, {}, "thermal.limit_c.gpu", 70, "t_sustain_s"),
    ("legacy_v03", "cpu", _varied, {}, "thermal.limit_c.cpu", 70, "t_sustain_s"),
    ("legacy_v03", "gpu", _varied, {}, "thermal.rate_floor", 2.0, "t_sustain_s"),
    ("legacy_v03", "gpu", _varied, {}, "thermal.tau_clamp", [2, 600], "t_sustain_s"),
    ("legacy_v03", "gpu", _varied, {}, "smooth.window_s", 2, "rle_smoothed"),
    ("legacy_v03", "gpu", _varied, {}, "norm.enabled", False, "rle_norm"),
    ("legacy_v03", "gpu", _varied, {}, "norm.gpu.base", 0.5, "rle_norm"),
    ("legacy_v03", "gpu", _varied, {}, "norm.gpu.opt", 0.5, "rle_norm"),
    ("legacy_v03", "gpu", _varied, {}, "norm.gpu.knee_pct", 90, "rle_norm"),
    ("legacy_v03", "cpu", _varied, {}, "norm.cpu.base", 2.0, "rle_norm"),
    ("legacy_v03", "cpu", _varied, {}, "norm.cpu.opt", 0.5, "rle_norm"),
    ("legacy_v03", "cpu", _varied, {}, "norm.cpu.knee_pct", 90, "rle_norm"),
    ("legacy_v03", "gpu", _varied, {}, "sample_hz", 2, "t_sustain_s"),
    ("legacy_v03", "gpu", _varied, {}, "collapse.warmup_s", 10, "rolling_peak"),
    (
        "legacy_v03",
        "gpu",
        lambda: _collapse_scenario(100, 140),
        {},
        "collapse.peak_half_life_s",
        5,
        "rolling_peak",
    ),
    (
        "legacy_v03",
        "gpu",
        lambda: _collapse_scenario(100, 140),
        {},
        "collapse.warmup_s",
        200,
        "collapse",
    ),
    (
        "legacy_v03",
        "gpu",
        lambda: _collapse_scenario(100, 140),
        {},
        "collapse.drop_frac",
        0.3,
        "collapse",
    ),
    (
        "legacy_v03",
        "gpu",
        lambda: _collapse_scenario(100, 140),
        {},
        "collapse.hysteresis_s",
        100,
        "collapse",
    ),
    (
        "legacy_v03",
        "gpu",
        lambda: _collapse_scenario(100, 140),
        {},
        "collapse.gate.util_pct",
        70,
        "collapse",
    ),
    (
        "legacy_v03",
        "gpu",
        lambda: _collapse_scenario(100, 140),
        V03_NO_UTIL,
        "collapse.gate.a_load",
        0.6,
        "collapse",
    ),
    (
        "legacy_v03",
        "gpu",
        lambda: _collapse_scenario(100, 140),
        {},
        "collapse.gate.heat_rate_c_per_s",
        0.5,
        "collapse",
    ),
    (
        "legacy_v03",
        "gpu",
        lambda: _collapse_scenario(100, 140),
        {},
        "collapse.evidence.tau_s",
        20,
        "collapse",
    ),
    (
        "legacy_v03",
        "gpu",
        lambda: _collapse_scenario(100, 140),
        V03_NO_TAU,
        "collapse.evidence.temp_margin_c",
        10,
        "collapse",
    ),
    (
        "legacy_v03",
        "gpu",
        lambda: _collapse_scenario(100, 140),
        V03_NO_TAU,
        "collapse.evidence.a_load",
        0.6,
        "collapse",
    ),
    # legacy_v2
    ("legacy_v2", "gpu", _varied, {}, "load.constant_alpha", 0.5, "rle_raw"),
    ("legacy_v2", "gpu", _varied, {}, "thermal.limit_c.gpu", 90, "E_th"),
    ("legacy_v2", "cpu", _varied, {}, "thermal.limit_c.cpu", 90, "E_th"),
    ("legacy_v2", "gpu", _varied, {}, "thermal.tau_clamp", [0, 100], "t_sustain_s"),
    ("legacy_v2", "gpu", _varied, {}, "smooth.window_s", 3, "rle_smoothed"),
    ("legacy_v2", "gpu", _varied, {}, "collapse.peak_half_life_s", 5, "rolling_peak"),
    ("legacy_v2", "gpu", _varied, {}, "collapse.drop_frac", 0.95, "collapse"),
]


@pytest.mark.parametrize(
    ("profile", "device", "build", "base", "key", "value", "column"),
    SENSITIVITY,
    ids=[f"{c[0]}:{c[4]}" for c in SENSITIVITY],
)
def test_every_parameter_changes_the_outcome(
    profile: str,
    device: str,
    build: Any,
    base: dict[str, Any],
    key: str,
    value: Any,
    column: str,
) -> None:
    frame = build()
    before = compute(frame, device=device, profile=profile, **base)
    after = compute(frame, device=device, profile=profile, **{**base, key: value})
    x = before[column].to_numpy(dtype=float)
    y = after[column].to_numpy(dtype=float)
    assert not np.array_equal(x, y, equal_nan=True), f"{key} did not change {column}"
    if column == "collapse":
        assert x.any() or y.any()


def test_sensitivity_table_covers_every_used_key() -> None:
    covered = {(c[0], c[4]) for c in SENSITIVITY}
    informational = {("default", "sample_hz")}  # the default profile uses measured Δt
    fixed_kinds = {"stability.kind", "thermal.slope"}
    for name in PROFILE_NAMES:
        base = get_profile(name)
        for key in profile_keys():
            if key in fixed_kinds and name != "default":
                continue
            if key == "thermal.slope" or (name, key) in informational:
                continue
            try:
                get_profile(name, **{key: _different_value(base, key)})
            except MetricInputError as exc:
                if "not used by profile" in str(exc):
                    continue
                raise
            assert (name, key) in covered, f"no sensitivity test for {name}:{key}"


def _different_value(profile: Profile, key: str) -> Any:
    """A valid value different from the profile's (for the coverage check)."""
    special = {
        "stability.kind": "std_percent",
        "load.cpu_power_fallback": "rated_times_util"
        if profile.load.cpu_power_fallback == "none"
        else "none",
        "thermal.tau_clamp": [2, 500],
        "norm.enabled": not profile.norm.enabled,
    }
    if key in special:
        return special[key]
    node: Any = profile
    for part in key.split("."):
        node = getattr(node, part) if node is not None else None
    if node is None:
        return 7
    if isinstance(node, int):
        return node - 1 if node > 1 else node + 1
    return node * 0.9 if node > 0 else node + 1.0
