"""rle.analysis.provenance: placeholder inputs found from tags and from the data, and their N/As."""

from __future__ import annotations

import numpy as np
import pandas as pd

from rle.analysis.align import device_frames
from rle.analysis.provenance import (
    V2_COLLAPSE_REASON,
    apply_provenance,
    device_provenance,
    standard_samples,
)

T0 = pd.Timestamp("2025-10-28T08:00:00Z")


def _v2_table(n: int = 40) -> pd.DataFrame:
    """An imported v2 recording: CPU on the monitor's placeholders, GPU measured by NVML."""
    rng = np.random.default_rng(0)
    times = [T0 + pd.Timedelta(seconds=i) for i in range(n)]
    util = rng.uniform(10, 90, n)
    cpu = pd.DataFrame(
        {
            "timestamp": times,
            "device": "cpu",
            "util_pct": util,
            "power_w": 125.0,
            "temp_c": 50.0,
            "rle_raw": 0.468 * util / 100,
            "rle_smoothed": 0.468 * util / 100,
            "t_sustain_s": 600.0,
            "collapse": 0.0,
            "workload_state": "idle",
            "power_source": "placeholder",
            "temp_source": "placeholder",
        }
    )
    gpu = pd.DataFrame(
        {
            "timestamp": times,
            "device": "gpu_0",
            "util_pct": util,
            "power_w": rng.uniform(60, 180, n),
            "temp_c": 55 + np.arange(n) * 0.2,
            "rle_raw": rng.uniform(0.2, 0.4, n),
            "rle_smoothed": rng.uniform(0.2, 0.4, n),
            "t_sustain_s": 300.0,
            "collapse": 0.0,
            "workload_state": "training_step",
            "power_source": "nvml",
            "temp_source": "nvml",
        }
    )
    return pd.concat([cpu, gpu], ignore_index=True)


def test_v2_cpu_rle_from_placeholders_is_excluded_with_its_reason() -> None:
    raw = _v2_table()
    verdicts = device_provenance(raw, {})
    cpu, gpu = verdicts["cpu"], verdicts["gpu_0"]
    assert cpu.placeholder_inputs == ["power_w", "temp_c"]
    assert (cpu.power, cpu.temperature) == ("placeholder", "placeholder")
    assert cpu.rle_excluded
    assert "placeholder inputs (power_w = 125 W, temp_c = 50 °C)" in cpu.rle_reason
    assert "0.468 × util" in cpu.rle_reason
    assert any("constant 125 W in all 40 samples" in e for e in cpu.evidence)
    assert not gpu.rle_excluded
    assert (gpu.power, gpu.temperature) == ("nvml", "nvml")
    # v2 collapse flags are discarded whatever the device: that is the N/A, not a missing sensor
    assert cpu.collapse_reason == gpu.collapse_reason == V2_COLLAPSE_REASON
    assert cpu.row("r")["rle"] == "excluded"

    frames = device_frames(standard_samples(raw))
    kept, reasons = apply_provenance(frames, verdicts)
    assert {"rle_smoothed", "rle_raw", "power_w", "temp_c"}.isdisjoint(kept["cpu"].columns)
    assert "util_pct" in kept["cpu"]
    assert reasons["cpu"]["rle_smoothed"] == cpu.rle_reason
    assert {"rle_smoothed", "power_w", "temp_c"} <= set(kept["gpu_0"].columns)


def test_untagged_constant_placeholders_are_found_from_the_data() -> None:
    raw = _v2_table().drop(columns=["power_source", "temp_source"])
    cpu = device_provenance(raw, {})["cpu"]
    assert cpu.rle_excluded
    assert cpu.power == "placeholder"
    short = _v2_table(n=20).drop(columns=["power_source", "temp_source"])
    # 20 samples of exactly 125 W / 50 °C could be real: not enough evidence without a tag
    assert not device_provenance(short, {})["cpu"].rle_excluded


def test_run_tags_and_excluded_devices() -> None:
    raw = _v2_table().drop(columns=["power_source", "temp_source", "workload_state"])
    raw.loc[raw["device"] == "cpu", "power_w"] = np.linspace(10, 30, 40)
    raw.loc[raw["device"] == "cpu", "temp_c"] = np.nan
    tags = {"power_source.cpu": "estimated", "rle.excluded.gpu_0": "alpha_zero"}
    verdicts = device_provenance(raw, tags)
    cpu, gpu = verdicts["cpu"], verdicts["gpu_0"]
    assert cpu.power == "estimated"
    assert not cpu.rle_excluded  # estimated power is flagged, not removed
    assert cpu.temperature == "absent"
    assert "no temperature sensor" in cpu.collapse_reason
    assert gpu.rle_excluded
    assert "rle.excluded.gpu_0=alpha_zero" in gpu.rle_reason


def test_live_tables_pass_through_and_step_metric_runs_use_tags() -> None:
    live = pd.DataFrame({"wall_time_s": [1.0, 2.0], "device": ["gpu_0", "gpu_0"]})
    assert standard_samples(live) is live
    verdicts = device_provenance(None, {"temp_source.cpu": "placeholder"}, ["cpu"])
    assert verdicts["cpu"].rle_excluded
    assert verdicts["cpu"].evidence == ["temp_c tagged temp_source=placeholder"]
