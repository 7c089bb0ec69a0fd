"""Incremental engine: same numbers as ``compute`` sample by sample; pure state; errors."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import os
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rle.errors import MetricInputError
from rle.metric import (
    DefaultState,
    LegacyV03State,
    LegacyV2State,
    RLEStream,
    compute,
    init_state,
    run_stream,
    update,
)

NAN = math.nan
# more examples for a soak run: RLE_METRIC_EXAMPLES=5000 pytest tests/metric/test_stream.py
EXAMPLES = int(os.environ.get("RLE_METRIC_EXAMPLES", "120"))

# ---------------------------------------------------------------------------------------------
# Property: batch and incremental paths agree on random streams
# ---------------------------------------------------------------------------------------------

_steps = st.one_of(
    st.sampled_from([1.0, 1.0, 1.0, 0.5, 2.0]),  # regular ticks (exact window boundaries)
    st.floats(0.01, 3.0),  # irregular sampling
    st.floats(3.0, 45.0),  # stalls and gaps
)
_util = st.one_of(st.integers(0, 100).map(float), st.floats(0.0, 100.0), st.just(NAN))
_temp = st.one_of(
    st.integers(30, 95).map(float),  # whole degrees, as NVML reports
    st.floats(30.0, 95.0),
    st.just(NAN),
)
_power = st.one_of(st.floats(0.0, 400.0), st.just(0.0), st.just(NAN))


@st.composite
def _streams(draw: st.DrawFn) -> tuple[pd.DataFrame, str, str, dict[str, Any]]:
    n = draw(st.integers(1, 90))
    steps = draw(st.lists(_steps, min_size=n, max_size=n))
    t = 1.7e9 + np.concatenate(([0.0], np.cumsum(steps[: n - 1])))
    # smooth ramps make the heating gates pass; random values make RLE drop below the peak
    ramp = draw(st.booleans())
    temps = draw(st.lists(_temp, min_size=n, max_size=n))
    if ramp:
        temps = [x if math.isnan(x) else 70.0 + 0.15 * i for i, x in enumerate(temps)]
    frame = pd.DataFrame(
        {
            "timestamp": t,
            "util_pct": draw(st.lists(_util, min_size=n, max_size=n)),
            "temp_c": temps,
            "power_w": draw(st.lists(_power, min_size=n, max_size=n)),
        }
    )
    if draw(st.booleans()):
        frame["timestamp"] = pd.to_datetime(frame["timestamp"], unit="s", utc=True)
    if draw(st.booleans()):
        rated = draw(st.lists(st.sampled_from([NAN, 150.0, 250.0]), min_size=n, max_size=n))
        frame["rated_w"] = rated
    if draw(st.booleans()):
        frame["limit_c"] = draw(
            st.lists(st.sampled_from([NAN, 80.0, 90.0]), min_size=n, max_size=n)
        )
    profile = draw(st.sampled_from(["default", "legacy_v03", "legacy_v2"]))
    device = draw(st.sampled_from(["gpu_0", "cpu"]))
    overrides: dict[str, Any] = {}
    if profile == "default":
        overrides["load.rated_w.gpu"] = 300.0
        overrides["thermal.limit_c.gpu"] = draw(st.sampled_from([83.0, 90.0]))
        overrides["load.rated_w.cpu"] = draw(st.sampled_from([None, 125.0]))
        overrides["load.cpu_power_fallback"] = draw(st.sampled_from(["none", "rated_times_util"]))
        overrides["collapse.warmup_s"] = draw(st.sampled_from([0.0, 5.0, 60.0]))
        overrides["collapse.hysteresis_s"] = draw(st.sampled_from([0.0, 2.0, 7.0]))
        overrides["collapse.drop_frac"] = draw(st.sampled_from([0.65, 0.95]))
        overrides["stability.window_s"] = draw(st.sampled_from([10.0, 3.0]))
        overrides["thermal.slope_window_s"] = draw(st.sampled_from([30.0, 4.0]))
        overrides["smooth.window_s"] = draw(st.sampled_from([5.0, 2.5]))
    elif profile == "legacy_v03":
        overrides["load.cpu_power_fallback"] = draw(
            st.sampled_from(["none", "rated_times_util", "zero"])
        )
        overrides["collapse.warmup_s"] = draw(st.sampled_from([0.0, 5.0, 60.0]))
        overrides["collapse.hysteresis_s"] = draw(st.sampled_from([0, 2, 7]))
        overrides["collapse.drop_frac"] = draw(st.sampled_from([0.65, 0.95]))
        overrides["stability.window_s"] = draw(st.sampled_from([10, 4]))
        if device == "cpu" and draw(st.booleans()):
            frame["cpu_freq_ghz"] = draw(st.sampled_from([2.5, NAN]))
    else:
        overrides["smooth.window_s"] = draw(st.sampled_from([5, 3]))
        overrides["thermal.tau_clamp"] = draw(st.sampled_from([(0.0, 600.0), (0.0, 90.0)]))
    return frame, profile, device, overrides


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(case=_streams())
def test_batch_and_incremental_agree(
    case: tuple[pd.DataFrame, str, str, dict[str, Any]], outputs_close: Any
) -> None:
    frame, profile, device, overrides = case
    batch = compute(frame, device=device, profile=profile, **overrides)
    stream = run_stream(frame, device=device, profile=profile, **overrides)
    outputs_close(batch, stream)
    if "cycles_per_joule" in batch.columns:
        np.testing.assert_allclose(
            batch["cycles_per_joule"], stream["cycles_per_joule"], rtol=1e-12
        )


@settings(
    max_examples=max(EXAMPLES // 3, 1),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(case=_streams(), split=st.integers(0, 90))
def test_resuming_from_a_state_gives_the_same_points(
    case: tuple[pd.DataFrame, str, str, dict[str, Any]], split: int, outputs_close: Any
) -> None:
    frame, profile, device, overrides = case
    split = min(split, len(frame))
    full = run_stream(frame, device=device, profile=profile, **overrides)
    state = init_state(device, profile, **overrides)
    head = run_stream(frame.iloc[:split], state=state)
    for sample in frame.iloc[:split].to_dict("records"):
        state, _ = update(state, {k: (None if pd.isna(v) else v) for k, v in sample.items()})
    tail = run_stream(frame.iloc[split:], state=state)
    if split and split < len(frame):
        outputs_close(full, pd.concat([head, tail]))


# ---------------------------------------------------------------------------------------------
# Engine behaviour
# ---------------------------------------------------------------------------------------------


def _sample(t: Any, util: float = 80.0, temp: float = 65.0, power: float = 200.0) -> dict[str, Any]:
    return {"timestamp": t, "util_pct": util, "temp_c": temp, "power_w": power}


def test_init_state_types() -> None:
    assert isinstance(init_state("gpu_0"), DefaultState)
    assert isinstance(init_state("cpu", "legacy_v03"), LegacyV03State)
    assert isinstance(init_state("gpu", "legacy_v2"), LegacyV2State)
    state = init_state("gpu_3", rated_w=250.0, limit_c=88.0, collapse={"drop_frac": 0.6})
    assert state.profile.rated_w("gpu") == 250.0
    assert state.profile.limit_c("gpu") == 88.0
    assert state.profile.collapse.drop_frac == 0.6
    assert state.kind == "gpu"
    assert state.device == "gpu_3"


def test_update_is_pure() -> None:
    s0 = init_state("gpu_0", rated_w=300.0, limit_c=85.0)
    s1, p1 = update(s0, _sample(0.0))
    s2, p2 = update(s1, _sample(1.0, util=50.0))
    s2b, p2b = update(s1, _sample(1.0, util=50.0))
    assert s0 == init_state("gpu_0", rated_w=300.0, limit_c=85.0)  # untouched
    assert s2 == s2b
    assert p2 == p2b
    assert s2.n == 2
    assert s2.t_last_s == 1.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        s2.n = 5  # type: ignore[misc]


def test_point_keys_and_types() -> None:
    state = init_state("gpu_0", rated_w=300.0, limit_c=85.0)
    state, point = update(state, _sample(dt.datetime(2025, 10, 28, 8, 0, tzinfo=dt.UTC)))
    assert set(point) == {
        "rle_raw",
        "rle_smoothed",
        "rle_norm",
        "E_th",
        "E_pw",
        "stability",
        "a_load",
        "t_sustain_s",
        "rolling_peak",
        "collapse",
        "power_estimated",
    }
    assert point["collapse"] == 0
    assert point["power_estimated"] is False
    assert point["rle_raw"] == pytest.approx(0.8 / (200 / 300) * 600 / 601)
    assert math.isnan(point["rle_norm"])


def test_missing_fields_are_nan() -> None:
    state = init_state("cpu", "default", rated_w=125.0)
    state, point = update(state, {"timestamp": 0.0, "util_pct": 40.0, "temp_c": pd.NA})
    assert math.isnan(point["rle_raw"])
    assert math.isnan(point["t_sustain_s"])
    assert point["stability"] == 1.0


def test_timestamps_must_increase() -> None:
    state = init_state("gpu_0", rated_w=300.0, limit_c=85.0)
    state, _ = update(state, _sample(10.0))
    with pytest.raises(MetricInputError, match="duplicate timestamp"):
        update(state, _sample(10.0))
    with pytest.raises(MetricInputError, match=r"unsorted \(decreasing\) timestamp"):
        update(state, _sample(9.0))
    with pytest.raises(MetricInputError, match="lacks 'timestamp'"):
        update(state, {"util_pct": 1.0})
    with pytest.raises(MetricInputError, match="must be finite"):
        update(state, _sample(math.nan))
    with pytest.raises(MetricInputError, match="'util_pct' must be a number"):
        update(state, {"timestamp": 11.0, "util_pct": "busy"})


def test_datetime_and_epoch_timestamps_agree() -> None:
    a = RLEStream("gpu_0", rated_w=300.0, limit_c=85.0)
    b = RLEStream("gpu_0", rated_w=300.0, limit_c=85.0)
    start = pd.Timestamp("2025-10-28T08:00:00.408689Z")
    for i in range(20):
        pa = a.update(_sample(start.value / 1e9 + i, util=50 + i, temp=60 + 0.3 * i))
        pb = b.update(_sample(start + pd.Timedelta(seconds=i), util=50 + i, temp=60 + 0.3 * i))
        for key in ("rle_raw", "stability", "t_sustain_s"):
            assert pa[key] == pytest.approx(pb[key], rel=1e-9)


def test_rle_stream_wrapper_and_seed() -> None:
    stream = RLEStream("gpu", "legacy_v03")
    assert stream.device == "gpu"
    assert stream.profile.name == "legacy_v03"
    stream.seed(t_first=-100.0, rolling_peak=0.5)
    point = stream.update(_sample(0.0))
    assert point["rolling_peak"] == pytest.approx(max(point["rle_smoothed"], 0.5 * 0.998))
    again = RLEStream.from_state(stream.state)
    assert again.state is stream.state


def test_run_stream_needs_device_or_state() -> None:
    with pytest.raises(MetricInputError, match="needs a device or a state"):
        run_stream([_sample(0.0)])
    out = run_stream([_sample(0.0), _sample(1.0)], device="gpu", profile="legacy_v2")
    assert list(out["rle_raw"]) == [0.0, pytest.approx(0.8 * (83 - 65) / 83 / 0.8 * 600 / 601)]


def test_v2_history_trim_matches_batch(outputs_close: Any) -> None:
    n = 1600
    rng = np.random.default_rng(5)
    frame = pd.DataFrame(
        {
            "timestamp": np.arange(n, dtype=float),
            "util_pct": rng.integers(0, 101, n).astype(float),
            "temp_c": rng.integers(50, 85, n).astype(float),
            "power_w": 100.0,
        }
    )
    state = init_state("gpu", "legacy_v2")
    for sample in frame.to_dict("records"):
        state, _ = update(state, sample)
    assert isinstance(state, LegacyV2State)
    assert state.history_len == 500 + (n - 1 - 1000) % 501  # cut 1000 -> 500
    outputs_close(
        compute(frame, device="gpu", profile="legacy_v2"),
        run_stream(frame, device="gpu", profile="legacy_v2"),
    )
