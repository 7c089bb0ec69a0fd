"""summarize_samples / merge_summaries: pure end-of-run statistics of raw sample tables."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rle.callbacks.summary import (
    SummaryAccumulator,
    first_rows_at,
    merge_summaries,
    step_metric_means,
    summarize_samples,
)


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


def _mixed_frame(seed: int) -> pd.DataFrame:
    """Rows of a cpu, a gpu and a process-only device interleaved in time, with gaps and events."""
    rng = np.random.default_rng(seed)
    gpu = _gpu_frame(300)
    gpu["power_w"] = rng.uniform(50, 300, 300)
    gpu.loc[rng.random(300) < 0.1, "power_w"] = np.nan  # missing readings
    gpu["collapse"] = 0.0
    gpu.loc[60:75, "collapse"] = 1.0
    gpu.loc[200:202, "collapse"] = 1.0
    cpu = _gpu_frame(300, device="cpu").drop(columns=["cpu_energy_joules", "temp_c"])
    cpu["monotonic_s"] += 0.5
    cpu["util_pct"] = rng.uniform(0, 100, 300)
    proc = pd.DataFrame({"device": "rank_0", "monotonic_s": np.arange(300.0) + 0.25, "rank": 0})
    return (
        pd.concat([gpu, cpu, proc]).sort_values("monotonic_s", kind="stable").reset_index(drop=True)
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_parts_fed_one_at_a_time_give_the_one_table_summary(seed: int) -> None:
    frame = _mixed_frame(seed)
    whole = summarize_samples(frame)
    rng = np.random.default_rng(seed)
    cuts = sorted(rng.choice(np.arange(1, len(frame)), size=7, replace=False).tolist())
    acc = SummaryAccumulator()
    for lo, hi in zip([0, *cuts], [*cuts, len(frame)], strict=True):
        acc.add(frame.iloc[lo:hi])
    parts = acc.finish(lambda device, starts: first_rows_at(frame, device, starts))
    assert parts.metrics.keys() == whole.metrics.keys()
    for key, value in whole.metrics.items():
        assert parts.metrics[key] == pytest.approx(value, rel=1e-12), key
    assert parts.tags == whole.tags
    assert parts.events == whole.events
    assert parts.energy_joules == pytest.approx(whole.energy_joules)
    # and against statistics computed here with pandas on the whole table
    gpu = frame[frame["device"] == "gpu_0"]
    assert whole.metrics["summary/gpu_0_power_p95_watts"] == pytest.approx(
        float(gpu["power_w"].dropna().quantile(0.95))
    )
    assert whole.metrics["summary/cpu_utilization_mean_percentage"] == pytest.approx(
        float(frame.loc[frame["device"] == "cpu", "util_pct"].mean())
    )
    assert whole.metrics["rle/gpu_0/collapse_events"] == 2.0
    assert [e["global_step"] for e in whole.events] == [30, 100]
    assert not any(k.startswith(("summary/rank_", "rle/rank_")) for k in whole.metrics)


def test_events_without_a_row_lookup_keep_their_start_time() -> None:
    frame = _gpu_frame()
    frame.loc[40:49, "collapse"] = 1.0
    acc = SummaryAccumulator()
    acc.add(frame)
    (event,) = acc.finish().events
    assert event["start_monotonic_s"] == 40.0
    assert event["duration_s"] > 0


def test_parquet_parts_on_disk_give_the_one_table_summary_and_event_context(
    tmp_path: Path,
) -> None:
    """The callback's path: parts written by Parquet, read back one at a time, events looked up."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from rle.callbacks.hardware import _rows_at
    from rle.telemetry.samples_file import iter_sample_parts

    frame = _mixed_frame(3)
    paths = []
    for k, (lo, hi) in enumerate([(0, 250), (250, 600), (600, len(frame))]):
        path = tmp_path / f"part-{k:05d}.parquet"
        pq.write_table(pa.Table.from_pandas(frame.iloc[lo:hi], preserve_index=False), path)
        paths.append(path)
    acc = SummaryAccumulator()
    for chunk in iter_sample_parts(paths):
        acc.add(chunk)
    streamed = acc.finish(lambda device, starts: _rows_at(paths, device, starts))
    whole = summarize_samples(frame)
    assert streamed.events == whole.events
    assert len(streamed.events) == 2
    assert {"start_wall_time_s", "global_step", "rank", "power_w"} <= set(streamed.events[0])
    assert streamed.metrics == pytest.approx(whole.metrics, rel=1e-12)
