from __future__ import annotations

import math

from rle.callbacks.gather import RankWindow, gather_to_rank_zero, merge_windows, rle_last


def test_merge_keeps_every_rank_and_reports_missing() -> None:
    w0 = RankWindow(
        rank=0,
        values={"cpu_utilization_percentage": 50.0, "rank_0/process_cpu_percentage": 90.0},
        rle={"cpu": {"rle_smoothed": 0.5}},
        sample_count=3,
        train_samples=8.0,
        train_tokens=1024.0,
        tags={"telemetry.sources": "cpu,process", "power_source.cpu": "none"},
    )
    w1 = RankWindow(
        rank=1,
        values={"rank_1/process_cpu_percentage": 80.0, "gpu_1_power_usage_watts": 100.0},
        rle={"gpu_1": {"rle_smoothed": 0.7}},
        sample_count=2,
        train_samples=8.0,
        train_tokens=1024.0,
        tags={"telemetry.sources": "gpu,process"},
    )
    w2 = RankWindow(rank=2, sample_count=0)
    merged = merge_windows([w2, w1, w0])
    assert merged.values == {
        "cpu_utilization_percentage": 50.0,
        "rank_0/process_cpu_percentage": 90.0,
        "rank_1/process_cpu_percentage": 80.0,
        "gpu_1_power_usage_watts": 100.0,
    }
    assert merged.rle == {"cpu": {"rle_smoothed": 0.5}, "gpu_1": {"rle_smoothed": 0.7}}
    assert (merged.train_samples, merged.train_tokens) == (16.0, 2048.0)
    assert merged.missing_ranks == [2]
    assert merged.tags["telemetry.sources"] == "cpu,gpu,process"
    assert merged.tags["power_source.cpu"] == "none"
    assert "telemetry.key_clash" not in merged.tags


def test_clashing_keys_are_reported_not_averaged() -> None:
    merged = merge_windows(
        [
            RankWindow(0, values={"k": 1.0}, sample_count=1),
            RankWindow(1, values={"k": 3.0}, sample_count=1),
        ]
    )
    assert merged.values == {"k": 1.0}
    assert merged.tags["telemetry.key_clash"] == "k"


def test_single_process_gather_is_identity() -> None:
    w = RankWindow(0, sample_count=1)
    assert gather_to_rank_zero(w, 0, 1) == [w]


def test_rle_last_takes_last_finite_and_any_collapse() -> None:
    nan = math.nan
    out = rle_last(
        [
            {"rle_smoothed": 0.4, "collapse": 1.0, "t_sustain_s": 10.0},
            {"rle_smoothed": 0.5, "collapse": 0.0, "t_sustain_s": nan},
            {"rle_smoothed": nan, "collapse": 0.0, "t_sustain_s": nan},
        ]
    )
    assert out == {"rle_smoothed": 0.5, "collapse": 1.0, "t_sustain_s": 10.0}


def test_window_size_does_not_grow_with_the_sampling_rate() -> None:
    """What crosses the gather is one value per quantity and term: no raw rows."""
    import pickle

    from rle.callbacks.gather import RankWindow as W

    small = W(0, values={"cpu_utilization_percentage": 1.0}, sample_count=300)
    large = W(0, values={"cpu_utilization_percentage": 1.0}, sample_count=10_000)
    assert len(pickle.dumps(small)) == len(pickle.dumps(large))
    assert not any(f == "rows" for f in W.__dataclass_fields__)
