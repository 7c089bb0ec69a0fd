"""The lab's correlation analyses reproduced (rle.analysis.legacy), on hand-checkable examples."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy.stats import pearsonr

from rle.analysis.legacy import (
    legacy_joint_session,
    legacy_lag_report,
    legacy_lag_summary,
    session_type,
)
from rle.errors import DataError

BASE = 1761638400.0  # 2025-10-28T08:00:00Z


def _iso(t: float) -> str:
    """Naive UTC ISO text, as the v2 monitor wrote it."""
    return pd.Timestamp(t, unit="s").isoformat()


def _v2(
    times: list[float], rle: list[float], temp: list[float], *, with_cpu: bool = True
) -> pd.DataFrame:
    rows = []
    for t, r, c in zip(times, rle, temp, strict=True):
        if with_cpu:  # CPU row first, same timestamp, values that must not be used
            rows.append(
                {"timestamp": _iso(t), "device": "cpu", "rle_smoothed": 99.0, "temp_c": 50.0}
            )
        rows.append({"timestamp": _iso(t), "device": "gpu", "rle_smoothed": r, "temp_c": c})
    return pd.DataFrame(rows)


def _entry(t: float, grad: float | None, loss: float | None, step: int) -> dict[str, Any]:
    return {"step": step, "step_counter": step, "timestamp_shared": t, "timestamp_iso": "local",
            "loss": loss, "grad_norm": grad, "learning_rate": 5e-5, "epoch": 0.0}  # fmt: skip


def test_joint_session_hand_example() -> None:
    """Nearest within 2.0 s (inclusive), ties to the earlier row, GPU rows only, summary counted."""
    v2 = _v2([BASE + k for k in range(5)], [1, 2, 3, 4, 5], [50, 51, 52, 53, 54])
    entries = [
        _entry(BASE + 0.1, 1, 4, 1),  # → row 0
        _entry(BASE + 1.5, 2, 3, 2),  # tie between rows 1 and 2 → row 1 (rle 2)
        _entry(BASE + 2.9, 4, 2, 3),  # → row 3
        _entry(BASE + 6.0, 8, 1, 4),  # exactly 2.0 s after row 4 → matched
        _entry(BASE + 6.1, None, None, 4),  # summary entry: 2.1 s away, unmatched, still counted
    ]
    out = legacy_joint_session(entries, v2)
    assert out["aligned_samples"] == 5
    # grad [1,2,4,8] ↔ rle [1,2,4,5]: r = 16/√(28.75·10); temp = rle + 49; loss [4,3,2,1]
    assert out["correlations"]["gpu_grad_rle"] == pytest.approx(16 / math.sqrt(287.5), abs=1e-12)
    assert out["correlations"]["gpu_temp_grad"] == pytest.approx(16 / math.sqrt(287.5), abs=1e-12)
    assert out["correlations"]["gpu_loss_rle"] == pytest.approx(-7 / math.sqrt(50), abs=1e-12)
    # k = -3 leaves one pair: r is NaN, and upstream's max(..., key=abs) keeps a leading NaN
    assert out["peak_lag"] == -3
    assert math.isnan(out["peak_correlation"])
    assert out["causal_order"] is True
    assert set(out) == {
        "aligned_samples",
        "correlations",
        "peak_lag",
        "peak_correlation",
        "causal_order",
    }


def test_joint_session_accepts_parsed_frames_and_mixed_timestamps() -> None:
    times = [BASE + k for k in range(30)]
    rng = np.random.default_rng(0)
    rle, temp = rng.random(30).tolist(), (60 + rng.integers(0, 3, 30)).astype(float).tolist()
    pairs = zip(rng.random(30), rng.random(30), strict=True)
    entries = [_entry(BASE + k + 0.3, float(g), float(lo), k) for k, (g, lo) in enumerate(pairs)]
    text = _v2(times, rle, temp)
    parsed = text.assign(timestamp=pd.to_datetime(text["timestamp"]).dt.tz_localize("UTC"))
    mixed = text.copy()
    mixed.loc[::2, "timestamp"] = mixed.loc[::2, "timestamp"] + "Z"
    a = legacy_joint_session(entries, text)
    assert legacy_joint_session(entries, parsed) == a
    assert legacy_joint_session(entries, mixed) == a
    assert legacy_joint_session(pd.DataFrame(entries), text) == a


def _brute_force_joint(
    entries: list[dict[str, Any]], times: list[float], rle: list[float], temp: list[float]
) -> dict[str, Any]:
    """An independent transcription of §8.3 with NumPy loops."""
    t_rle = np.array(times)
    rows = []
    for e in sorted(entries, key=lambda e: e["timestamp_shared"]):
        d = np.abs(t_rle - e["timestamp_shared"])
        j = int(np.argmin(d))  # first minimum: the earlier row on a tie
        ok = d[j] <= 2.0
        g = np.nan if e["grad_norm"] is None else e["grad_norm"]
        lo = np.nan if e["loss"] is None else e["loss"]
        rows.append((g, lo, rle[j] if ok else np.nan, temp[j] if ok else np.nan))
    g, lo, r, c = (np.array(x, dtype=float) for x in zip(*rows, strict=True))

    def corr(x: np.ndarray, y: np.ndarray) -> float:
        m = np.isfinite(x) & np.isfinite(y)
        return float(np.corrcoef(x[m], y[m])[0, 1]) if m.sum() > 1 else math.nan

    def shift(x: np.ndarray, k: int) -> np.ndarray:
        out = np.full_like(x, np.nan)
        if k > 0:
            out[k:] = x[:-k]
        elif k < 0:
            out[:k] = x[-k:]
        else:
            out[:] = x
        return out

    lags = [(k, corr(shift(g, k), r) if k < 0 else corr(g, shift(r, k))) for k in range(-3, 4)]
    best = lags[0]
    for k, v in lags[1:]:
        if abs(v) > abs(best[1]):
            best = (k, v)
    return {
        "aligned_samples": len(rows),
        "correlations": {
            "gpu_grad_rle": corr(g, r),
            "gpu_temp_grad": corr(c, g),
            "gpu_loss_rle": corr(lo, r),
        },
        "peak_lag": best[0],
        "peak_correlation": best[1],
        "causal_order": best[0] < 0,
    }


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_joint_session_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    times = [BASE + 1.0 * k + 0.001 * k for k in range(60)]
    rle, temp = (
        rng.random(60).tolist(),
        (55 + np.cumsum(rng.integers(-1, 2, 60))).astype(float).tolist(),
    )
    t_train = BASE + 5 + np.cumsum(rng.uniform(0.3, 0.5, 100))
    entries = [
        _entry(float(t), float(rng.random() * 10), float(4 - 0.01 * k), k)
        for k, t in enumerate(t_train)
    ]
    entries.append(_entry(float(t_train[-1] + 0.2), None, None, 99))
    got = legacy_joint_session(entries, _v2(times, rle, temp))
    want = _brute_force_joint(entries, times, rle, temp)
    assert got["aligned_samples"] == want["aligned_samples"] == 101
    for k, v in want["correlations"].items():
        assert got["correlations"][k] == pytest.approx(v, abs=1e-12)
    assert (got["peak_lag"], got["causal_order"]) == (want["peak_lag"], want["causal_order"])
    assert got["peak_correlation"] == pytest.approx(want["peak_correlation"], abs=1e-12)


def test_joint_session_errors() -> None:
    v2 = _v2([BASE], [1.0], [50.0])
    with pytest.raises(DataError, match="no entries"):
        legacy_joint_session([], v2)
    with pytest.raises(DataError, match="lacks columns"):
        legacy_joint_session([_entry(BASE, 1, 1, 1)], v2.drop(columns="temp_c"))


# ------------------------------------------------------------------------------ lag report


def _lag_session(n: int = 12) -> tuple[list[dict[str, Any]], pd.DataFrame, np.ndarray, np.ndarray]:
    """Ticks at BASE+k+0.7 (truncated to BASE+k), steps at BASE+k+0.2; CPU and GPU rows equal."""
    rng = np.random.default_rng(7)
    grad, rle = rng.random(n), rng.random(n)
    rows = []
    for k in range(n):
        for dev in ("cpu", "gpu"):
            rows.append({"timestamp": _iso(BASE + k + 0.7), "device": dev, "rle_smoothed": rle[k]})
    entries = [_entry(BASE + k + 0.2, float(grad[k]), 1.0, k) for k in range(n)]
    entries.append(_entry(BASE + n + 0.2, None, None, n))
    return entries, pd.DataFrame(rows), grad, rle


def test_lag_report_hand_example() -> None:
    entries, frame, grad, rle = _lag_session()
    report = legacy_lag_report({"reproducibility_test_1": (entries, frame)}, analysis_timestamp="T")
    assert report["analysis_timestamp"] == "T"
    assert report["total_sessions"] == 1
    assert report["session_types"] == ["Training (Reproducibility)"]
    (res,) = report["detailed_results"]
    assert res["session_dir"] == "reproducibility_test_1"
    assert res["samples"] == 24  # CPU and GPU rows both aligned (interleaved, as upstream)
    # truncation to whole seconds: row k (t = k.7 → k) meets step k (k.2), not step k+1 (k+1.2)
    g, r = np.repeat(grad, 2), np.repeat(rle, 2)
    lags = res["lag_correlations"]
    assert set(lags) == set(range(-3, 4))
    r0, p0 = pearsonr(g, r)
    assert lags[0] == {"correlation": pytest.approx(r0, abs=1e-12), "p_value": pytest.approx(p0, abs=1e-12),
                       "interpretation": "No lag"}  # fmt: skip
    r2, _ = pearsonr(g[:-2], r[2:])
    assert lags[2]["correlation"] == pytest.approx(r2, abs=1e-12)
    assert lags[2]["interpretation"] == "grad_norm leads by 2s"
    rm3, _ = pearsonr(g[3:], r[:-3])
    assert lags[-3]["correlation"] == pytest.approx(rm3, abs=1e-12)
    assert lags[-3]["interpretation"] == "RLE leads by 3s"
    best = max(lags, key=lambda k: abs(lags[k]["correlation"]))
    assert res["peak_lag"] == best
    assert res["peak_correlation"] == lags[best]["correlation"]


def test_lag_report_skips_short_sessions_and_types() -> None:
    entries, frame, _, _ = _lag_session(12)
    short_entries, short_frame, _, _ = _lag_session(4)  # 8 aligned rows < 10
    report = legacy_lag_report(
        {
            "workload_independence_gpu_inference": (entries, frame),
            "tiny": (short_entries, short_frame),
            "workload_independence_cpu_inference": (entries, frame),
        }
    )
    assert report["total_sessions"] == 2
    assert report["session_types"] == ["GPU Inference", "CPU Inference"]
    assert session_type("some/dir/unknown_run") == "Unknown"
    summary = legacy_lag_summary(report)
    assert set(summary) == {"GPU Inference", "CPU Inference"}
    gpu = summary["GPU Inference"]
    assert gpu["sessions"] == 1
    assert gpu["peak_correlation_std"] == 0.0


def test_opposite_sign_conventions_on_the_same_data() -> None:
    """RLE one row ahead of grad_norm: both analyses peak at lag -1, with opposite labels."""
    rng = np.random.default_rng(3)
    n = 40
    grad = rng.random(n + 1)
    rle = grad[1:]  # rle[i] = grad[i+1]
    frame = pd.DataFrame({"timestamp": [_iso(BASE + k) for k in range(n)], "device": "gpu", "rle_smoothed": rle,
                          "temp_c": 60.0})  # fmt: skip
    entries = [_entry(BASE + k + 0.1, float(grad[k]), 1.0, k) for k in range(n)]
    joint = legacy_joint_session(entries, frame)
    assert joint["peak_lag"] == -1
    assert joint["peak_correlation"] == pytest.approx(1.0)
    assert joint["causal_order"] is True  # the lab printed "grad_norm → RLE"
    report = legacy_lag_report({"reproducibility_x": (entries, frame)})
    (res,) = report["detailed_results"]
    assert res["peak_lag"] == -1
    assert res["lag_correlations"][-1]["interpretation"] == "RLE leads by 1s"


def test_lag_summary_majorities() -> None:
    def res(kind: str, lag: int, r: float) -> dict[str, Any]:
        return {"session_type": kind, "peak_lag": lag, "peak_correlation": r}

    report = {
        "detailed_results": [
            res("A", 1, -0.1),
            res("A", 2, -0.3),
            res("A", -1, 0.2),
            res("B", 0, 0.1),
        ]
    }
    s = legacy_lag_summary(report)
    assert s["A"]["dominant_direction"].startswith("grad_norm → RLE")
    assert s["A"]["correlation_sign"].startswith("negative")
    assert s["A"]["peak_lag_mean"] == pytest.approx(2 / 3)
    assert s["A"]["peak_lag_std"] == pytest.approx(np.std([1, 2, -1]))
    assert s["B"]["dominant_direction"] == "bidirectional or synchronous"
    assert s["B"]["correlation_sign"].startswith("positive")


def test_lab_spike_count_is_every_step_above_mean_plus_one_std() -> None:
    from rle.analysis.correlation import grad_norm_spikes
    from rle.analysis.legacy import legacy_spikes

    g = np.ones(30)
    g[[5, 6, 7, 20]] = [9.0, 10.0, 9.5, 12.0]  # one three-step burst and one single step
    values = [*g.tolist(), None]  # the training log's summary entry has no grad_norm
    lab = legacy_spikes(values)
    threshold = g.mean() + g.std(ddof=1)
    assert lab["steps"] == 30
    assert lab["threshold"] == pytest.approx(threshold)
    assert lab["mean_grad_norm"] == pytest.approx(g.mean())
    assert lab["spike_steps"] == 4
    assert lab["spike_indices"] == [5, 6, 7, 20]
    merged, _ = grad_norm_spikes(np.arange(30.0), g, 1.0)
    assert merged.size == 2  # rle merges the burst into one spike event
    assert legacy_spikes(values, ddof=0)["threshold"] == pytest.approx(g.mean() + g.std())
    assert legacy_spikes([1.0])["spike_steps"] == 0
