"""summarize_samples / merge_summaries: pure end-of-run statistics of raw sample tables."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from rle.callbacks.summary import merge_summaries, step_metric_means, summarize_samples


def _gpu_frame(n: int = 100, rank: int = 0, device: str = "gpu_0") -> pd.DataFrame:
    t = np.arange(n, dtype=float)
    return pd.DataFrame(
        {
            "device": device,
            "wall_time_s": 1.7e9 + t,
            "monotonic_s": t,
            "global_step": (t // 2).astype(int),
            "rank": rank,
            "util_pct": 50.0,
            "power_w": np.linspace(100.0, 200.0, n),
            "temp_c": 40.0 + t / 10,
            "rle_smoothed": 0.5,
            "t_sustain_s": 100.0,
            "collapse": 0.0,
            f"{device}_energy_joules": 150.0 * t,
        }
    )


def test_device_statistics() -> None:
    s = summarize_samples(_gpu_frame())
    assert s.metrics["summary/gpu_0_utilization_mean_percentage"] == pytest.approx(50.0)
    assert s.metrics["summary/gpu_0_power_mean_watts"] == pytest.approx(150.0)
    assert s.metrics["summary/gpu_0_power_p95_watts"] == pytest.approx(
        float(np.quantile(np.linspace(100, 200, 100), 0.95))
    )
    assert s.metrics["summary/gpu_0_temperature_max_celsius"] == pytest.approx(49.9)
    assert s.metrics["summary/gpu_0_energy_joules"] == pytest.approx(150.0 * 99)
    assert s.energy_joules == pytest.approx(150.0 * 99)
    assert s.metrics["rle/gpu_0/collapse_events"] == 0.0
    assert s.events == []


def test_collapse_events_carry_hardware_context() -> None:
    frame = _gpu_frame()
    frame.loc[40:49, "collapse"] = 1.0
    s = summarize_samples(frame)
    assert s.metrics["rle/gpu_0/collapse_events"] == 1.0
    assert s.metrics["rle/gpu_0/collapse_seconds"] > 0
    (event,) = s.events
    assert event["device"] == "gpu_0"
    assert event["global_step"] == 20
    assert event["power_w"] == pytest.approx(frame.loc[40, "power_w"])


def test_missing_inputs_are_tagged_not_zero() -> None:
    cpu = pd.DataFrame(
        {"device": "cpu", "monotonic_s": [0.0, 1.0], "util_pct": [10.0, 20.0], "rank": 0}
    )
    s = summarize_samples(cpu)
    assert s.tags["rle.cpu.absent"].startswith("no power source")
    assert "summary/cpu_power_mean_watts" not in s.metrics
    assert math.isnan(s.energy_joules)
    no_temp = _gpu_frame().drop(columns=["temp_c"]).assign(t_sustain_s=math.nan)
    assert summarize_samples(no_temp).tags["rle.gpu_0.collapse"].startswith("disabled")


def test_process_rows_are_not_devices() -> None:
    frame = pd.DataFrame(
        {"device": ["rank_1"], "monotonic_s": [0.0], "process_cpu_percentage": [5.0]}
    )
    s = summarize_samples(frame)
    assert s.metrics == {}
    assert s.tags == {}


def test_ranks_merge_and_energy_adds_up() -> None:
    a = summarize_samples(_gpu_frame(rank=0, device="gpu_0"))
    b = summarize_samples(_gpu_frame(rank=1, device="gpu_1"))
    a.ranks, b.ranks = {"0": {"rows": 100, "parts": 1}}, {"1": {"rows": 100, "parts": 2}}
    m = merge_summaries([a, b])
    assert m.metrics["summary/energy_joules"] == pytest.approx(2 * 150.0 * 99)
    assert {"summary/gpu_0_power_mean_watts", "summary/gpu_1_power_mean_watts"} <= set(m.metrics)
    assert m.ranks == {"0": {"rows": 100, "parts": 1}, "1": {"rows": 100, "parts": 2}}


def test_node_prefix_names_the_energy_counter() -> None:
    s = summarize_samples(
        _gpu_frame(device="node_1/gpu_0").rename(
            columns={"node_1/gpu_0_energy_joules": "gpu_0_energy_joules"}
        ),
        node_prefix="node_1/",
    )
    assert "summary/node_1/gpu_0_energy_joules" in s.metrics
    assert "summary/node_1/gpu_0_power_mean_watts" in s.metrics


def test_empty_and_step_means() -> None:
    assert summarize_samples(pd.DataFrame()).metrics == {}
    assert step_metric_means({"synthetic/duty_cycle_achieved": (1.5, 3), "x": (0.0, 0)}) == {
        "summary/synthetic_duty_cycle_achieved_mean": 0.5
    }
