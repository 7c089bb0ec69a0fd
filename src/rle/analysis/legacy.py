"""The original RLE lab's correlation analyses, reproduced exactly (``docs/rle-metric.md`` §8.3).

Both functions are pure (pandas/NumPy/SciPy) and keep the lab's choices, including the ones §9
lists as defects (C1-C3): lags counted in rows and labelled as seconds, opposite sign
conventions in the two analyses, ``aligned_samples`` counting training rows, CPU and GPU rows
interleaved in the lag report. They exist to reproduce published numbers from imported bundles;
new analyses use :mod:`rle.analysis.correlation`.

* :func:`legacy_joint_session` reproduces ``analysis_<id>.json`` of a joint-session bundle
  (upstream ``run_joint_session.py``, ``analyze_correlation``).
* :func:`legacy_lag_report` reproduces ``lag_analysis_report.json`` (upstream
  ``lag_analysis_comprehensive.py``); :func:`legacy_lag_summary` the per-type summary it prints.
* :func:`legacy_spikes` reproduces the lab's spike counts ("Spikes detected: 3 training steps",
  "Spike threshold: 46.03 (mean + 1 std)"): **every step** above ``mean + k·std`` counts, where
  rle's own :func:`rle.analysis.correlation.grad_norm_spikes` merges consecutive spike steps into
  one event.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import pearsonr

from rle.errors import DataError

__all__ = [
    "JOINT_LAGS",
    "legacy_joint_session",
    "legacy_lag_report",
    "legacy_lag_summary",
    "legacy_spikes",
    "session_type",
]

JOINT_LAGS: tuple[int, ...] = tuple(range(-3, 4))
"""Lags of both analyses, in rows (the lab labelled them seconds)."""
_TOLERANCE_S = 2.0
_MIN_ALIGNED = 10


def _training_frame(entries: Sequence[Mapping[str, Any]] | pd.DataFrame) -> pd.DataFrame:
    frame = entries.copy() if isinstance(entries, pd.DataFrame) else pd.DataFrame(list(entries))
    if "timestamp_shared" not in frame.columns:
        raise DataError("training log entries have no 'timestamp_shared' (epoch seconds) field")
    for col in ("loss", "grad_norm"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce") if col in frame else np.nan
    frame["timestamp_shared"] = pd.to_numeric(frame["timestamp_shared"], errors="coerce")
    return frame


def _utc_times(col: pd.Series) -> pd.Series:
    """UTC datetimes (ns) from datetimes or ISO text; naive values are UTC (the v2 monitor's)."""
    return pd.to_datetime(col, utc=True, format="ISO8601").dt.as_unit("ns")


def _corr(a: pd.Series, b: pd.Series) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(a.corr(b))


def legacy_joint_session(
    training_log_entries: Sequence[Mapping[str, Any]] | pd.DataFrame,
    v2_frame: pd.DataFrame,
) -> dict[str, Any]:
    """Reproduce the computed fields of a joint session's ``analysis_<id>.json``.

    Left: every training-log entry, including the final summary entry, at
    ``timestamp_shared`` (epoch s). Right: the v2 **GPU rows** at their UTC timestamps. As-of
    merge, nearest within 2.0 s, ties to the earlier row. Pearson (pandas ``Series.corr``,
    pairwise complete): ``gpu_grad_rle`` = grad_norm ↔ rle_smoothed, ``gpu_temp_grad`` =
    temp_c ↔ grad_norm, ``gpu_loss_rle`` = loss ↔ rle_smoothed. Lags k = −3..3 in training
    rows: k < 0 correlates ``grad_norm.shift(k)`` with ``rle_smoothed``, k > 0 ``grad_norm``
    with ``rle_smoothed.shift(k)``. The peak is Python's ``max`` by ``|r|`` over k = −3..3 in
    order (so a NaN at k = −3 wins, as upstream); ``causal_order = peak_lag < 0``.

    Args:
        training_log_entries: The training log as read (list of objects) or a frame with
            ``timestamp_shared`` (epoch s), ``loss``, ``grad_norm``.
        v2_frame: v2 monitor rows with ``timestamp`` (UTC datetimes or the file's ISO text),
            ``device`` (``gpu``/``cpu``; if absent, every row is taken as GPU),
            ``rle_smoothed`` and ``temp_c``; in file order.

    Returns:
        ``{"aligned_samples": int, "correlations": {"gpu_grad_rle", "gpu_temp_grad",
        "gpu_loss_rle"}, "peak_lag": int, "peak_correlation": float, "causal_order": bool}``;
        correlations may be NaN.

    Raises:
        rle.errors.DataError: No training entries, or missing columns.
    """
    if len(training_log_entries) == 0:
        raise DataError(
            "the training log has no entries: nothing to align (the lab wrote no analysis)"
        )
    train = _training_frame(training_log_entries)
    missing = {"timestamp", "rle_smoothed", "temp_c"} - set(v2_frame.columns)
    if missing:
        raise DataError(f"v2 frame lacks columns {sorted(missing)}")
    train["_t"] = pd.to_datetime(train["timestamp_shared"], unit="s", utc=True).dt.as_unit("ns")
    gpu = v2_frame
    if "device" in gpu.columns:
        gpu = gpu.loc[gpu["device"].astype(str).str.strip().str.lower() == "gpu"]
    right = pd.DataFrame(
        {
            "_t": _utc_times(gpu["timestamp"]).to_numpy(),
            "rle_smoothed": pd.to_numeric(gpu["rle_smoothed"], errors="coerce").to_numpy(),
            "temp_c": pd.to_numeric(gpu["temp_c"], errors="coerce").to_numpy(),
        }
    )
    left = train[["_t", "loss", "grad_norm"]]
    merged = pd.merge_asof(
        left.sort_values("_t"),
        right.sort_values("_t"),
        on="_t",
        direction="nearest",
        tolerance=pd.Timedelta(seconds=_TOLERANCE_S),
    )
    grad, rle, temp, loss = (merged[c] for c in ("grad_norm", "rle_smoothed", "temp_c", "loss"))
    correlations = {
        "gpu_grad_rle": _corr(grad, rle),
        "gpu_temp_grad": _corr(temp, grad),
        "gpu_loss_rle": _corr(loss, rle),
    }
    lag_correlations: list[tuple[int, float]] = []
    for lag in JOINT_LAGS:
        if lag < 0:
            r = _corr(grad.shift(lag), rle)
        elif lag > 0:
            r = _corr(grad, rle.shift(lag))
        else:
            r = _corr(grad, rle)
        lag_correlations.append((lag, r))
    peak_lag, peak_corr = max(lag_correlations, key=lambda x: abs(x[1]))
    return {
        "aligned_samples": len(merged),
        "correlations": correlations,
        "peak_lag": int(peak_lag),
        "peak_correlation": float(peak_corr),
        "causal_order": bool(peak_lag < 0),
    }


def session_type(session_dir: str | Path) -> str:
    """The lab's recording type from a directory name (§8.3).

    Returns:
        ``"Training (Reproducibility)"``, ``"CPU Inference"``, ``"GPU Inference"`` or
        ``"Unknown"``.
    """
    name = Path(session_dir).name.lower()
    if "reproducibility" in name:
        return "Training (Reproducibility)"
    if "cpu_inference" in name:
        return "CPU Inference"
    if "gpu_inference" in name:
        return "GPU Inference"
    return "Unknown"


def _pearson(x: pd.Series, y: pd.Series) -> tuple[float, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = pearsonr(x.to_numpy(dtype=np.float64), y.to_numpy(dtype=np.float64))
    return float(res[0]), float(res[1])


def _lag_correlations(data: pd.DataFrame) -> dict[int, dict[str, Any]]:
    grad, rle = data["grad_norm"], data["rle_smoothed"]
    out: dict[int, dict[str, Any]] = {}
    for lag in JOINT_LAGS:
        if lag == 0:
            corr, p = _pearson(grad, rle)
        elif len(data) > abs(lag):
            if lag > 0:  # "grad_norm leads": grad_norm[:-k] with rle_smoothed[k:]
                corr, p = _pearson(grad.iloc[:-lag], rle.iloc[lag:])
            else:  # "RLE leads": grad_norm[|k|:] with rle_smoothed[:k]
                corr, p = _pearson(grad.iloc[abs(lag) :], rle.iloc[:lag])
        else:
            corr, p = math.nan, math.nan
        out[lag] = {
            "correlation": corr,
            "p_value": p,
            "interpretation": (
                f"{'grad_norm' if lag > 0 else 'RLE'} leads by {abs(lag)}s"
                if lag != 0
                else "No lag"
            ),
        }
    return out


def _lag_session(session_dir: str, entries: Any, v2_frame: pd.DataFrame) -> dict[str, Any] | None:
    train = _training_frame(entries)
    rle = v2_frame.copy()
    times = _utc_times(rle["timestamp"])
    rle["unix_timestamp"] = ((times - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)).astype(
        "float64"
    )
    rle["rle_smoothed"] = pd.to_numeric(rle["rle_smoothed"], errors="coerce")
    train["unix_timestamp"] = train["timestamp_shared"].astype("float64")
    left = rle[["unix_timestamp", "rle_smoothed"]]
    right = train[["unix_timestamp", "grad_norm", "loss"]]
    merged = pd.merge_asof(
        left.sort_values("unix_timestamp"),
        right.sort_values("unix_timestamp"),
        on="unix_timestamp",
        direction="nearest",
        tolerance=_TOLERANCE_S,
    )
    merged = merged.dropna(subset=["grad_norm", "rle_smoothed"])
    if len(merged) < _MIN_ALIGNED:
        return None
    lags = _lag_correlations(merged)
    peak_lag = max(
        lags,
        key=lambda k: abs(lags[k]["correlation"]) if not np.isnan(lags[k]["correlation"]) else -1,
    )
    return {
        "session_dir": session_dir,
        "session_type": session_type(session_dir),
        "samples": len(merged),
        "peak_lag": int(peak_lag),
        "peak_correlation": lags[peak_lag]["correlation"],
        "lag_correlations": lags,
    }


def legacy_lag_report(
    sessions: Mapping[str, tuple[Sequence[Mapping[str, Any]] | pd.DataFrame, pd.DataFrame]],
    *,
    analysis_timestamp: str | None = None,
) -> dict[str, Any]:
    """Reproduce the lab's comprehensive lag report (``lag_analysis_report.json``).

    Per session: left = **all** v2 rows (CPU and GPU interleaved, file order) at their UTC
    timestamp truncated to whole epoch seconds; right = training entries at
    ``timestamp_shared``; as-of merge, nearest within 2 s; rows without ``grad_norm`` or
    ``rle_smoothed`` dropped; sessions with fewer than 10 rows are skipped. ``scipy.stats.pearsonr``
    for k = −3..3 in rows: k > 0 pairs ``grad_norm[:-k]`` with ``rle_smoothed[k:]`` ("grad_norm
    leads"), k < 0 ``grad_norm[|k|:]`` with ``rle_smoothed[:k]`` ("RLE leads"), the opposite
    label to :func:`legacy_joint_session`. Peak = max ``|r|``, NaN ignored.

    Args:
        sessions: Session directory (its name gives the type, :func:`session_type`) →
            ``(training log entries, v2 rows)``, in the order to report.
        analysis_timestamp: Value of ``analysis_timestamp``; defaults to now (local, ISO).

    Returns:
        ``{"analysis_timestamp", "total_sessions", "session_types", "detailed_results":
        [{"session_dir", "session_type", "samples", "peak_lag", "peak_correlation",
        "lag_correlations": {lag: {"correlation", "p_value", "interpretation"}}}]}`` with
        integer lag keys (``json.dump`` writes them as strings, as upstream).
    """
    results = []
    for session_dir, (entries, frame) in sessions.items():
        res = _lag_session(str(session_dir), entries, frame)
        if res is not None:
            results.append(res)
    types: list[str] = []
    for res in results:
        if res["session_type"] not in types:
            types.append(res["session_type"])
    return {
        "analysis_timestamp": analysis_timestamp or pd.Timestamp.now().isoformat(),
        "total_sessions": len(results),
        "session_types": types,
        "detailed_results": results,
    }


def legacy_lag_summary(report: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The per-type summary the lab printed with its lag report.

    Args:
        report: Output of :func:`legacy_lag_report`.

    Returns:
        Session type → ``{"sessions", "peak_correlation_mean", "peak_correlation_std",
        "peak_lag_mean", "peak_lag_std", "dominant_direction", "correlation_sign"}``; standard
        deviations are population (ddof = 0), direction and sign by majority as upstream.
    """
    by_type: dict[str, list[Mapping[str, Any]]] = {}
    for res in report["detailed_results"]:
        by_type.setdefault(res["session_type"], []).append(res)
    out: dict[str, dict[str, Any]] = {}
    for kind, results in by_type.items():
        corrs = np.asarray([r["peak_correlation"] for r in results], dtype=np.float64)
        lags = np.asarray([r["peak_lag"] for r in results], dtype=np.float64)
        pos, neg, zero = int((lags > 0).sum()), int((lags < 0).sum()), int((lags == 0).sum())
        if pos > neg and pos > zero:
            direction = "grad_norm → RLE (optimization drives thermal)"
        elif neg > pos and neg > zero:
            direction = "RLE → grad_norm (thermal drives optimization)"
        else:
            direction = "bidirectional or synchronous"
        n_pos, n_neg = int((corrs > 0).sum()), int((corrs < 0).sum())
        if n_pos > n_neg:
            sign = "positive (grad_norm ↑ → RLE ↑)"
        elif n_neg > n_pos:
            sign = "negative (grad_norm ↑ → RLE ↓)"
        else:
            sign = "mixed"
        out[kind] = {
            "sessions": len(results),
            "peak_correlation_mean": float(np.mean(corrs)),
            "peak_correlation_std": float(np.std(corrs)),
            "peak_lag_mean": float(np.mean(lags)),
            "peak_lag_std": float(np.std(lags)),
            "dominant_direction": direction,
            "correlation_sign": sign,
        }
    return out


def legacy_spikes(
    grad_norm: Sequence[float] | pd.Series | np.ndarray, k: float = 1.0, ddof: int = 1
) -> dict[str, Any]:
    """The lab's spike statistics of a grad_norm series: every step above ``mean + k·std``.

    The lab counted spike **steps** ("Spikes detected: 3 training steps", threshold "mean + 1
    std"); it did not merge consecutive steps into events, as rle's spike–collapse matching does.

    Args:
        grad_norm: grad_norm per training step (training-log order), shape ``(n,)``; NaN and
            missing values (the summary entry) are ignored.
        k: Threshold in standard deviations (the lab: 1).
        ddof: Delta degrees of freedom of the standard deviation (1: pandas' ``Series.std``, as
            docs/rle-metric.md §8.1 prescribes; 0: NumPy's ``np.std``).

    Returns:
        ``{"steps": finite values, "mean_grad_norm", "std_grad_norm", "threshold",
        "spike_steps": count of steps above the threshold, "spike_indices": their positions in
        the input}``; mean/std/threshold NaN with fewer than ``ddof + 1`` values.
    """
    v = pd.to_numeric(pd.Series(np.asarray(grad_norm, dtype=object)), errors="coerce").to_numpy(
        dtype=np.float64
    )
    ok = np.isfinite(v)
    n = int(ok.sum())
    if n <= ddof:
        return {
            "steps": n,
            "mean_grad_norm": math.nan,
            "std_grad_norm": math.nan,
            "threshold": math.nan,
            "spike_steps": 0,
            "spike_indices": [],
        }
    mean = float(v[ok].mean())
    std = float(v[ok].std(ddof=ddof))
    threshold = mean + k * std
    idx = np.flatnonzero(ok & (v > threshold))
    return {
        "steps": n,
        "mean_grad_norm": mean,
        "std_grad_norm": std,
        "threshold": threshold,
        "spike_steps": int(idx.size),
        "spike_indices": [int(i) for i in idx],
    }
