"""Where each device's RLE inputs came from, and which numbers are therefore not measurements.

A device's RLE is only as real as its inputs (``docs/rle-metric.md`` §2.7, §2.8, §6.5). The v2 monitor
wrote the constant **125 W** as CPU power and fell back to **50 °C** for the CPU temperature
(§3), so a v2 CPU "RLE" is ``0.468 × util`` and says nothing about power or heat; older v0.3
builds logged a CPU α of 0 (tag ``rle.excluded.<device>``). This module decides per run and
device, from the importer's tags (``power_source``/``temp_source`` per row or per run) **and**
from the data itself (an input that is exactly a known placeholder constant in every sample), which
inputs are placeholders, whether the RLE built from them is kept, and the true reason of every
N/A that follows (collapse detection disabled, v2 collapse flags discarded by design, ...).

:func:`standard_samples` brings an imported samples table into the live logger's terms;
:func:`device_provenance` judges each device; :func:`apply_provenance` removes what is not a
measurement from the device frames, so that fingerprints and correlations never see it.

Pure pandas/NumPy; no MLflow.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

__all__ = [
    "NOT_MEASURED",
    "PLACEHOLDER_VALUES",
    "PROVENANCE_COLUMNS",
    "V2_COLLAPSE_REASON",
    "DeviceProvenance",
    "apply_provenance",
    "device_provenance",
    "is_v2_table",
    "standard_samples",
]

NOT_MEASURED: tuple[str, ...] = ("placeholder", "estimated")
"""Source tags whose readings are not measurements (their values become NaN)."""

PLACEHOLDER_VALUES: dict[str, tuple[float, str]] = {
    "power_w": (125.0, "W"),
    "temp_c": (50.0, "°C"),
}
"""The lab monitors' placeholder constants (§3, §6.5): CPU power 125 W (v2, = ``--rated-cpu``) and
the 50 °C temperature fallback. An input equal to one of these in every sample is a placeholder."""

V2_COLLAPSE_REASON = (
    "N/A: v2 collapse flags are discarded by design (docs/rle-metric.md §4.2: a one-sample drop test "
    "without gates or hysteresis, not a detector)"
)
"""The spike–collapse note of an imported v2 recording."""

PROVENANCE_COLUMNS: tuple[str, ...] = (
    "run_id",
    "device",
    "power",
    "temperature",
    "rle",
    "collapse",
    "evidence",
)
"""Columns of ``provenance.csv``: per run and device, the power and temperature source
(``measured``, ``placeholder``, ``estimated``, ``none`` or a tag value such as ``nvml``), whether
the RLE is ``kept`` or ``excluded``, the collapse status and the evidence behind the verdict."""

_MIN_CONSTANT_SAMPLES = 30


@dataclass
class DeviceProvenance:
    """The verdict on one device of one run.

    Attributes:
        device: Device label (``cpu``, ``gpu_0``).
        power: Power source: a tag value (``nvml``, ``rapl``, ``fake``, ``placeholder``,
            ``estimated``, ``none``), ``placeholder`` when the data is the constant placeholder,
            ``measured`` when untagged and varying, or ``absent``.
        temperature: Temperature source, the same way.
        placeholder_inputs: Inputs found to be placeholders (``power_w``, ``temp_c``).
        rle_excluded: Whether the device's RLE (``rle_raw``, ``rle_smoothed``) and collapse flags
            are removed from the analysis.
        rle_reason: ``"N/A: ..."`` note for every statistic of the removed RLE (empty if kept).
        collapse_reason: ``"N/A: ..."`` note when the device has no collapse events to match
            (empty when it has a collapse series).
        evidence: What the verdict rests on (tags, constant values), for the report.
    """

    device: str
    power: str = "absent"
    temperature: str = "absent"
    placeholder_inputs: list[str] = field(default_factory=list)
    rle_excluded: bool = False
    rle_reason: str = ""
    collapse_reason: str = ""
    evidence: list[str] = field(default_factory=list)

    def row(self, run_id: str) -> dict[str, str]:
        """One ``provenance.csv`` row (:data:`PROVENANCE_COLUMNS`)."""
        return {
            "run_id": run_id,
            "device": self.device,
            "power": self.power,
            "temperature": self.temperature,
            "rle": "excluded" if self.rle_excluded else "kept",
            "collapse": self.collapse_reason.removeprefix("N/A: ") or "detected",
            "evidence": "; ".join(self.evidence),
        }


def is_v2_table(table: pd.DataFrame | None) -> bool:
    """Whether a samples table is an imported v2 recording (the only format with ``workload_state``)."""
    return table is not None and "workload_state" in table and "wall_time_s" not in table


def standard_samples(table: pd.DataFrame | None) -> pd.DataFrame | None:
    """An imported run's samples table (:mod:`rle.ingest`) in the live logger's terms.

    Imported tables carry UTC ``timestamp`` values instead of ``wall_time_s`` and say per row
    where power and temperature came from; placeholder and estimated readings are not
    measurements, so they become NaN (as the importer does for the logged metrics). A v2
    recording's ``collapse`` flags are not collapse events (§4.2) and become NaN too. Live tables
    (with ``wall_time_s``) are returned unchanged.

    Args:
        table: the raw samples (``telemetry/samples/``) of one run, or ``None``.

    Returns:
        The table with ``wall_time_s`` (UTC epoch s), or ``None``.
    """
    if table is None or "wall_time_s" in table or "timestamp" not in table:
        return table
    out = table.copy()
    times = pd.to_datetime(out["timestamp"], utc=True, errors="coerce")
    out["wall_time_s"] = (times - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
    for col, source in (("temp_c", "temp_source"), ("power_w", "power_source")):
        if col in out and source in out:
            fake = out[source].astype(str).str.lower().isin(NOT_MEASURED)
            out[col] = pd.to_numeric(out[col], errors="coerce").mask(fake)
    if "workload_state" in out and "collapse" in out:
        # a v2 recording (the only format with workload_state): its `collapse` is a one-sample
        # drop test without gates or hysteresis, never reported as events (docs/rle-metric.md §4.2, D3)
        out["collapse"] = np.nan
    return out


def _source(rows: pd.DataFrame, column: str, tags: Mapping[str, str], tag: str) -> str | None:
    """The tagged source of an input: the rows' ``<column>`` values, else the run tag."""
    if column in rows:
        values = sorted({str(v).strip().lower() for v in rows[column].dropna()})
        if values:
            return "+".join(values)
    value = tags.get(tag)
    return str(value).strip().lower() if value else None


def _constant_placeholder(rows: pd.DataFrame, column: str) -> str | None:
    """Evidence text when ``column`` is the placeholder constant in every finite sample."""
    if column not in rows or column not in PLACEHOLDER_VALUES:
        return None
    v = pd.to_numeric(rows[column], errors="coerce").to_numpy(dtype=np.float64)
    v = v[np.isfinite(v)]
    value, unit = PLACEHOLDER_VALUES[column]
    if v.size >= _MIN_CONSTANT_SAMPLES and np.all(v == value):
        return f"{column} is the constant {value:g} {unit} in all {v.size} samples"
    return None


def device_provenance(
    raw: pd.DataFrame | None,
    tags: Mapping[str, str] | None = None,
    devices: Iterable[str] | None = None,
) -> dict[str, DeviceProvenance]:
    """Judge each device's RLE inputs from the **raw** samples table and the run's tags.

    Placeholders are found two ways: a ``placeholder`` source tag (per row in imported tables,
    ``power_source``/``temp_source``; per run, ``power_source.<device>``/``temp_source.<device>``),
    or an input that equals its placeholder constant (:data:`PLACEHOLDER_VALUES`) in every one of
    at least 30 samples, tagged or not (a real sensor does not read exactly 125 W, or exactly
    50 °C, for half a minute under load). A device with any placeholder input, or tagged
    ``rle.excluded.<device>`` by the importer, has its RLE excluded.

    Args:
        raw: The run's samples table as read (before :func:`standard_samples` masks values), or
            ``None`` (runs with step metrics only: judged from tags alone).
        tags: The run's tags.
        devices: Devices to judge (default: those in ``raw``).

    Returns:
        ``{device: DeviceProvenance}``.
    """
    tags = {str(k): str(v) for k, v in (tags or {}).items()}
    names: list[str] = []
    if devices is not None:
        names = [str(d) for d in devices]
    elif raw is not None and "device" in raw:
        names = sorted({str(d) for d in raw["device"].dropna()} - {""})
    v2 = is_v2_table(raw)
    out: dict[str, DeviceProvenance] = {}
    for device in names:
        if device.startswith("rank_"):
            continue
        rows = (
            raw[raw["device"].astype(str) == device]
            if raw is not None and "device" in raw
            else pd.DataFrame()
        )
        p = DeviceProvenance(device)
        for col, src_col, tag, attr in (
            ("power_w", "power_source", f"power_source.{device}", "power"),
            ("temp_c", "temp_source", f"temp_source.{device}", "temperature"),
        ):
            source = _source(rows, src_col, tags, tag)
            constant = _constant_placeholder(rows, col)
            has = col in rows and pd.to_numeric(rows[col], errors="coerce").notna().any()
            if source is not None:
                setattr(p, attr, source)
                if "placeholder" in source.split("+"):
                    p.evidence.append(f"{col} tagged {src_col}=placeholder")
            elif constant is not None:
                setattr(p, attr, "placeholder")
            else:
                setattr(p, attr, "measured" if has else "absent")
            if constant is not None:
                p.evidence.append(constant)
            if "placeholder" in getattr(p, attr).split("+") or constant is not None:
                setattr(p, attr, "placeholder")
                p.placeholder_inputs.append(col)
        excluded_tag = tags.get(f"rle.excluded.{device}")
        if p.placeholder_inputs:
            p.rle_excluded = True
            what = ", ".join(
                f"{c} = {PLACEHOLDER_VALUES[c][0]:g} {PLACEHOLDER_VALUES[c][1]}"
                for c in p.placeholder_inputs
            )
            formula = (
                " (v2: rle_raw = 0.468 × util)"
                if v2 and set(p.placeholder_inputs) == {"power_w", "temp_c"}
                else ""
            )
            p.rle_reason = (
                f"N/A: {device}'s RLE is built from placeholder inputs ({what}){formula}: "
                "not a measurement, excluded like the placeholders themselves"
            )
        elif excluded_tag:
            p.rle_excluded = True
            p.evidence.append(f"tag rle.excluded.{device}={excluded_tag}")
            p.rle_reason = (
                f"N/A: {device}'s RLE is excluded by the importer (rle.excluded.{device}="
                f"{excluded_tag}: older builds logged α = 0, docs/rle-metric.md §2.7)"
            )
        if v2:
            p.collapse_reason = V2_COLLAPSE_REASON
        elif p.rle_excluded:
            p.collapse_reason = f"N/A: no collapse detection: {p.rle_reason.removeprefix('N/A: ')}"
        elif p.temperature in ("absent", "none"):
            p.collapse_reason = (
                f"N/A: no collapse detection on {device}: no temperature sensor "
                f"(temp_source={p.temperature}), so the detector is disabled (docs/rle-metric.md §2.8)"
            )
        out[device] = p
    return out


def apply_provenance(
    frames: Mapping[str, pd.DataFrame], verdicts: Mapping[str, DeviceProvenance]
) -> tuple[dict[str, pd.DataFrame], dict[str, dict[str, str]]]:
    """Remove placeholder inputs and the RLE built from them from the device frames.

    Args:
        frames: ``{device: frame}`` (:func:`rle.analysis.align.device_frames`).
        verdicts: :func:`device_provenance` of the same run.

    Returns:
        ``(frames, missing_reasons)``: the frames without placeholder ``power_w``/``temp_c``
        columns and, for excluded devices, without ``rle_raw``/``rle_smoothed``/``collapse``;
        and ``{device: {column: "N/A: why"}}`` for every column removed.
    """
    out: dict[str, pd.DataFrame] = {}
    reasons: dict[str, dict[str, str]] = {}
    for device, frame in frames.items():
        p = verdicts.get(device)
        if p is None:
            out[device] = frame
            continue
        drop: dict[str, str] = {}
        for col in p.placeholder_inputs:
            value, unit = PLACEHOLDER_VALUES[col]
            drop[col] = (
                f"N/A: {device}'s {col} is the monitor's placeholder constant ({value:g} {unit}), "
                "not a measurement"
            )
        if p.rle_excluded:
            for col in ("rle_raw", "rle_smoothed", "collapse"):
                drop[col] = p.rle_reason
        out[device] = frame.drop(columns=[c for c in drop if c in frame])
        reasons[device] = drop
    return out, reasons
