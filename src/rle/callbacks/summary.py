"""End-of-run summaries of one rank's raw samples (pure: a table in, metrics/tags/events out).

Each rank summarises the devices it sampled from its own streamed sample files
(:mod:`rle.telemetry.samples_file`); rank 0 gathers the small results and logs them. Nothing here
touches MLflow or Lightning, so the summaries are tested on tables directly.

Summary metrics (logged once, at the last step; "summary" means a statistic over the whole run,
not a time series):

============================================== ========= =======================================
key                                            unit      statistic
============================================== ========= =======================================
``summary/<device>_utilization_mean_percentage`` %       mean utilisation over all samples
``summary/<device>_power_mean_watts``            W       mean power
``summary/<device>_power_p95_watts``             W       95th percentile of power
``summary/<device>_temperature_max_celsius``     °C      peak temperature
``summary/[node_<r>/]<counter>_energy_joules``   J       last minus first reading of the counter
``summary/energy_joules``                        J       sum of the above over every device
``rle/<device>/rle_smoothed_mean``               1       mean smoothed RLE
``rle/<device>/collapse_events|_seconds|_fraction`` -/s/1 collapse detector (docs/rle-metric.md §6)
============================================== ========= =======================================
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rle.tracking import keys

__all__ = [
    "SUMMARY_COLUMNS",
    "SampleSummary",
    "merge_summaries",
    "summarize_samples",
    "summary_columns",
]

RLE_INPUT_COLUMNS = ("util_pct", "temp_c", "power_w", "rated_w", "limit_c")
SUMMARY_COLUMNS = (
    "device",
    "wall_time_s",
    "monotonic_s",
    "global_step",
    "rank",
    "rle_smoothed",
    "t_sustain_s",
    "collapse",
    *RLE_INPUT_COLUMNS,
)
"""Columns :func:`summarize_samples` reads (plus every ``*_energy_joules`` counter)."""


def summary_columns(names: Iterable[str]) -> list[str]:
    """The columns of a sample table that :func:`summarize_samples` needs, in table order."""
    return [n for n in names if n in SUMMARY_COLUMNS or n.endswith("_energy_joules")]


@dataclass
class SampleSummary:
    """What one rank's samples say about the whole run.

    Attributes:
        metrics: Summary metric key to value (finite values only).
        tags: Run tags (why a device has no RLE or no collapse detection).
        events: Collapse events with their hardware context, one dict per event.
        energy_joules: Energy measured by this rank's counters, J (NaN: no counter).
        ranks: Global rank (as text) to ``{"rows": ..., "parts": ...}`` of its sample files.
        columns: Column name to Arrow type of rank 0's samples (empty elsewhere).
        preview: The first rows of rank 0's samples (a pandas DataFrame), or ``None``.
    """

    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    energy_joules: float = math.nan
    ranks: dict[str, dict[str, int]] = field(default_factory=dict)
    columns: dict[str, str] = field(default_factory=dict)
    preview: Any = None


def summarize_samples(frame: Any, node_prefix: str = "") -> SampleSummary:
    """Summarise one rank's raw samples.

    Args:
        frame: pandas DataFrame of sample rows (columns of ``telemetry/samples``: ``device``,
            ``monotonic_s`` s, ``wall_time_s`` UTC epoch s, ``global_step``, ``rank``, the RLE
            inputs and terms, ``*_energy_joules`` counters in J). Rows of ``device`` ``rank_<r>``
            (process-only rows) are not devices and are skipped.
        node_prefix: ``node_<r>/`` on multi-node jobs (energy counters are named per node), else "".

    Returns:
        The :class:`SampleSummary`; empty for an empty frame.
    """
    out = SampleSummary()
    if frame is None or len(frame) == 0 or "device" not in frame:
        return out
    devices = [d for d in frame["device"].dropna().unique() if not str(d).startswith("rank_")]
    for device in devices:
        dev = str(device)
        df = frame[frame["device"] == device].sort_values("monotonic_s")
        _device_summary(dev, df, out)
    total = 0.0
    seen = False
    for col in [c for c in frame.columns if str(c).endswith("_energy_joules")]:
        vals = frame[col].dropna()
        if len(vals) > 1:
            delta = float(vals.iloc[-1] - vals.iloc[0])
            out.metrics[f"summary/{node_prefix}{col}"] = delta
            total += delta
            seen = True
    if seen:
        out.energy_joules = total
    out.metrics = {k: v for k, v in out.metrics.items() if math.isfinite(v)}
    return out


def _has(df: Any, col: str) -> bool:
    return col in df and bool(df[col].notna().any())


def _device_summary(dev: str, df: Any, out: SampleSummary) -> None:
    metrics, tags = out.metrics, out.tags
    if _has(df, "rle_smoothed"):
        metrics[keys.rle_key(dev, "rle_smoothed_mean")] = float(df["rle_smoothed"].mean())
        if not _has(df, "t_sustain_s"):
            tags[f"rle.{dev}.collapse"] = "disabled: no temperature sensor"
        else:
            out.events.extend(_collapse(dev, df, metrics))
    else:
        missing = [c for c in ("util_pct", "power_w") if not _has(df, c)]
        names = ["power source" if c == "power_w" else "utilisation" for c in missing]
        tags[f"rle.{dev}.absent"] = (
            f"no {' and no '.join(names)} (set telemetry.cpu_power=estimated for an estimated "
            "CPU power)"
            if missing
            else "inputs not measured"
        )
    if _has(df, "util_pct"):
        metrics[f"summary/{dev}_utilization_mean_percentage"] = float(df["util_pct"].mean())
    if _has(df, "power_w"):
        power = df["power_w"].dropna()
        metrics[f"summary/{dev}_power_mean_watts"] = float(power.mean())
        metrics[f"summary/{dev}_power_p95_watts"] = float(power.quantile(0.95))
    if _has(df, "temp_c"):
        metrics[f"summary/{dev}_temperature_max_celsius"] = float(df["temp_c"].max())


def _collapse(dev: str, df: Any, metrics: dict[str, float]) -> list[dict[str, Any]]:
    """Collapse summary metrics (into ``metrics``) and events with hardware context."""
    from rle.metric import collapse_events, collapse_summary

    cf = df.assign(timestamp=df["monotonic_s"])[["timestamp", "collapse"]]
    summary = collapse_summary(cf)
    for k in ("collapse_events", "collapse_seconds", "collapse_fraction"):
        if k in summary and math.isfinite(float(summary[k])):
            metrics[keys.rle_key(dev, k)] = float(summary[k])
    events: list[dict[str, Any]] = []
    for _, e in collapse_events(cf).iterrows():
        at = df.iloc[(df["monotonic_s"] - float(e["start"])).abs().argmin()]
        events.append(
            {
                "device": dev,
                "start_wall_time_s": float(at["wall_time_s"]),
                "duration_s": float(e.get("duration_s", float("nan"))),
                "global_step": int(at["global_step"]),
                "rank": int(at["rank"]),
                **{c: float(at[c]) for c in RLE_INPUT_COLUMNS if c in at and at[c] == at[c]},
            }
        )
    return events


def merge_summaries(parts: Iterable[SampleSummary]) -> SampleSummary:
    """Merge the ranks' summaries (devices are disjoint across ranks; energy adds up).

    Also adds ``summary/energy_joules``, the job's measured energy in J, when any rank has a counter.
    """
    out = SampleSummary()
    total = 0.0
    seen = False
    for p in parts:
        out.metrics.update(p.metrics)
        out.tags.update(p.tags)
        out.events.extend(p.events)
        out.ranks.update(p.ranks)
        out.columns.update(p.columns)
        if p.preview is not None and out.preview is None:
            out.preview = p.preview
        if math.isfinite(p.energy_joules):
            total += p.energy_joules
            seen = True
    if seen:
        out.energy_joules = total
        out.metrics["summary/energy_joules"] = total
    return out


def step_metric_means(sums: Mapping[str, tuple[float, int]]) -> dict[str, float]:
    """``summary/<key>_mean`` from running sums: ``{key: (sum, count)}`` -> mean per key.

    ``synthetic/duty_cycle_achieved`` becomes ``summary/synthetic_duty_cycle_achieved_mean``.
    """
    return {f"summary/{k.replace('/', '_')}_mean": s / n for k, (s, n) in sums.items() if n > 0}
