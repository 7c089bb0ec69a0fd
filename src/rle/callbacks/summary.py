"""End-of-run summaries of one rank's raw samples (pure: a table in, metrics/tags/events out).

Each rank summarises the devices it sampled from its own streamed sample files
(:mod:`rle.telemetry.samples_file`), one part at a time (:class:`SummaryAccumulator`); rank 0
gathers the small results and logs them. Nothing here
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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from rle.tracking import keys

__all__ = [
    "SUMMARY_COLUMNS",
    "SampleSummary",
    "SummaryAccumulator",
    "first_rows_at",
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
    """Summarise one rank's raw samples held in one table.

    The same as feeding ``frame`` to a :class:`SummaryAccumulator` in one chunk.

    Args:
        frame: pandas DataFrame of sample rows (columns of ``telemetry/samples``: ``device``,
            ``monotonic_s`` s, ``wall_time_s`` UTC epoch s, ``global_step``, ``rank``, the RLE
            inputs and terms, ``*_energy_joules`` counters in J). Rows of ``device`` ``rank_<r>``
            (process-only rows) are not devices and are skipped.
        node_prefix: ``node_<r>/`` on multi-node jobs (energy counters are named per node), else "".

    Returns:
        The :class:`SampleSummary`; empty for an empty frame.
    """
    acc = SummaryAccumulator(node_prefix)
    if frame is None or len(frame) == 0 or "device" not in frame:
        return acc.finish()
    acc.add(frame)
    return acc.finish(lambda device, starts: first_rows_at(frame, device, starts))


def first_rows_at(frame: Any, device: str, starts: Iterable[float]) -> dict[float, Any]:
    """``{start: first row of device whose monotonic_s == start}`` in one table (or one part).

    Args:
        frame: Sample rows (pandas DataFrame with ``device`` and ``monotonic_s``).
        device: The device.
        starts: ``monotonic_s`` values to look up, s.

    Returns:
        The rows found (pandas Series), by start time; starts not in ``frame`` are absent.
    """
    if "device" not in frame or "monotonic_s" not in frame:
        return {}
    sub = frame[(frame["device"] == device) & frame["monotonic_s"].isin(list(starts))]
    out: dict[float, Any] = {}
    for _, row in sub.iterrows():
        out.setdefault(float(row["monotonic_s"]), row)
    return out


class _DeviceStats:
    """Running statistics of one device's rows (see :class:`SummaryAccumulator`)."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {"rle_smoothed": 0.0, "util_pct": 0.0}
        self.counts: dict[str, int] = {"rle_smoothed": 0, "util_pct": 0, "t_sustain_s": 0}
        self.temp_max_c = -math.inf
        self.temp_n = 0
        self.power_w: list[np.ndarray] = []
        self.times_s: list[np.ndarray] = []
        self.flags: list[np.ndarray] = []

    def add(self, df: Any) -> None:
        for col in ("rle_smoothed", "util_pct"):
            if col in df:
                v = _floats(df[col])
                v = v[~np.isnan(v)]
                self.sums[col] += float(v.sum())
                self.counts[col] += int(v.size)
        if "t_sustain_s" in df:
            self.counts["t_sustain_s"] += int(df["t_sustain_s"].notna().sum())
        if "temp_c" in df:
            t = _floats(df["temp_c"])
            t = t[~np.isnan(t)]
            if t.size:
                self.temp_max_c = max(self.temp_max_c, float(t.max()))
                self.temp_n += int(t.size)
        if "power_w" in df:
            pw = _floats(df["power_w"])
            pw = pw[~np.isnan(pw)]
            if pw.size:
                self.power_w.append(pw)
        # the collapse detector needs the whole series: 9 bytes per sample (time, flag)
        self.times_s.append(_floats(df["monotonic_s"]))
        flag = df.get("collapse")
        self.flags.append(
            np.zeros(len(df), dtype=bool)
            if flag is None
            else pd.to_numeric(flag, errors="coerce").fillna(0).to_numpy() != 0
        )


def _floats(col: Any) -> np.ndarray:
    """A column as float64 (NaN where missing or not a number)."""
    out: np.ndarray = pd.to_numeric(col, errors="coerce").to_numpy(
        dtype=np.float64, na_value=np.nan
    )
    return out


class SummaryAccumulator:
    """A rank's end-of-run summary built from its sample rows one chunk at a time.

    Each rank feeds it its streamed Parquet parts one by one (:meth:`add`), so the summary never
    holds the rank's rows: per device it keeps sums, counts and maxima, the non-missing power
    readings (8 bytes each, for the exact 95th percentile) and the time and collapse flag of every
    sample (9 bytes each, for the collapse detector of ``docs/rle-metric.md`` §4.5). Energy
    counters keep their first and last reading. :meth:`finish` gives what
    :func:`summarize_samples` gives for the same rows in one table.

    Args:
        node_prefix: ``node_<r>/`` on multi-node jobs (energy counters are named per node), else "".
    """

    def __init__(self, node_prefix: str = "") -> None:
        self.node_prefix = node_prefix
        self._devices: dict[str, _DeviceStats] = {}
        self._energy: dict[str, list[float]] = {}  # column -> [first, last, readings]

    def add(self, frame: Any) -> None:
        """Take a chunk of sample rows (a pandas DataFrame; rows in the order they were written).

        Raises:
            KeyError: If the chunk has ``device`` rows but no ``monotonic_s`` column.
        """
        if frame is None or len(frame) == 0 or "device" not in frame:
            return
        for col in [c for c in frame.columns if str(c).endswith("_energy_joules")]:
            vals = _floats(frame[col])
            vals = vals[~np.isnan(vals)]
            if vals.size:
                first_last = self._energy.setdefault(col, [float(vals[0]), 0.0, 0])
                first_last[1] = float(vals[-1])
                first_last[2] += int(vals.size)
        for device, df in frame.groupby("device", sort=False):
            dev = str(device)
            if dev.startswith("rank_"):
                continue  # process-only rows: not a device
            self._devices.setdefault(dev, _DeviceStats()).add(df)

    def finish(
        self, rows_at: Callable[[str, Sequence[float]], Mapping[float, Any]] | None = None
    ) -> SampleSummary:
        """The summary of every chunk added.

        Args:
            rows_at: ``rows_at(device, starts)`` returns, for each start time (``monotonic_s``,
                s) of a collapse event, that device's first row at that time (a mapping with
                ``wall_time_s``, ``global_step``, ``rank`` and the RLE inputs): the event's
                hardware context. Called once per device with events; without it, events carry
                only their device, duration and start time.

        Returns:
            The :class:`SampleSummary` (finite metrics only).
        """
        out = SampleSummary()
        for dev, st in self._devices.items():
            _device_summary(dev, st, out, rows_at)
        total = 0.0
        seen = False
        for col, (first, last, n) in self._energy.items():
            if n > 1:
                delta = last - first
                out.metrics[f"summary/{self.node_prefix}{col}"] = delta
                total += delta
                seen = True
        if seen:
            out.energy_joules = total
        out.metrics = {k: v for k, v in out.metrics.items() if math.isfinite(v)}
        return out


def _device_summary(
    dev: str,
    st: _DeviceStats,
    out: SampleSummary,
    rows_at: Callable[[str, Sequence[float]], Mapping[float, Any]] | None,
) -> None:
    metrics, tags = out.metrics, out.tags
    if st.counts["rle_smoothed"]:
        metrics[keys.rle_key(dev, "rle_smoothed_mean")] = (
            st.sums["rle_smoothed"] / st.counts["rle_smoothed"]
        )
        if not st.counts["t_sustain_s"]:
            tags[f"rle.{dev}.collapse"] = "disabled: no temperature sensor"
        else:
            out.events.extend(_collapse(dev, st, metrics, rows_at))
    else:
        missing = []
        if not st.counts["util_pct"]:
            missing.append("utilisation")
        if not st.power_w:
            missing.append("power source")
        tags[f"rle.{dev}.absent"] = (
            f"no {' and no '.join(missing)} (set telemetry.cpu_power=estimated for an estimated "
            "CPU power)"
            if missing
            else "inputs not measured"
        )
    if st.counts["util_pct"]:
        metrics[f"summary/{dev}_utilization_mean_percentage"] = (
            st.sums["util_pct"] / st.counts["util_pct"]
        )
    if st.power_w:
        power = np.concatenate(st.power_w)
        metrics[f"summary/{dev}_power_mean_watts"] = float(power.mean())
        metrics[f"summary/{dev}_power_p95_watts"] = float(np.quantile(power, 0.95))
    if st.temp_n:
        metrics[f"summary/{dev}_temperature_max_celsius"] = st.temp_max_c


def _collapse(
    dev: str,
    st: _DeviceStats,
    metrics: dict[str, float],
    rows_at: Callable[[str, Sequence[float]], Mapping[float, Any]] | None,
) -> list[dict[str, Any]]:
    """Collapse summary metrics (into ``metrics``) and events with hardware context."""
    from rle.metric import collapse_events, collapse_summary

    times = np.concatenate(st.times_s)
    order = np.argsort(times, kind="stable")
    cf = pd.DataFrame({"timestamp": times[order], "collapse": np.concatenate(st.flags)[order]})
    summary = collapse_summary(cf)
    for k in ("collapse_events", "collapse_seconds", "collapse_fraction"):
        if k in summary and math.isfinite(float(summary[k])):
            metrics[keys.rle_key(dev, k)] = float(summary[k])
    found = collapse_events(cf)
    if not len(found):
        return []
    starts = [float(s) for s in found["start"]]
    context = rows_at(dev, starts) if rows_at is not None else {}
    events: list[dict[str, Any]] = []
    for start, duration_s in zip(starts, found["duration_s"], strict=True):
        event: dict[str, Any] = {"device": dev, "duration_s": float(duration_s)}
        at = context.get(start)
        if at is not None:
            event.update(
                start_wall_time_s=float(at["wall_time_s"]),
                global_step=int(at["global_step"]),
                rank=int(at["rank"]),
            )
            for c in RLE_INPUT_COLUMNS:
                if c in at and at[c] == at[c]:
                    event[c] = float(at[c])
        else:
            event["start_monotonic_s"] = start
        events.append(event)
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
