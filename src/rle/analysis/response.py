"""The sweep parent's response curve: each swept value against what the hardware did.

One row per child run (:func:`child_responses`), one panel per quantity
(:data:`QUANTITIES`: utilisation, achieved duty cycle, power, temperature, energy, RLE), one line
per device, and in each panel a note for every quantity this hardware did not measure
(:func:`absence_notes`, e.g. ``CPU power: no sensor on this machine``), never a silently missing
panel. Values come from a child's summary metrics when it has them (``summary/...``,
``rle/<device>/rle_smoothed_mean``), else from its metric histories (mean, peak or sum of the
step-level series). Pure apart from the ``history`` callable (no MLflow import).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rle.tracking import keys

__all__ = [
    "MIN_WIDTH_PX",
    "QUANTITIES",
    "Quantity",
    "absence_notes",
    "child_responses",
    "device_label",
    "devices_of",
    "plot_response_curve",
    "response_curve",
]

MIN_WIDTH_PX = 1200
"""The response-curve PNG is at least this wide (pixels)."""


@dataclass(frozen=True)
class Quantity:
    """One response of the curve.

    Attributes:
        column: CSV column of all devices together (``<column>.<device>`` per device).
        label: Axis label with its unit.
        noun: What a note calls it (``CPU power: ...``).
        summaries: Run-level metric keys, ``{dev}`` for the device; the first one present wins.
        history: Step-level series used without a summary: a column of
            :func:`rle.tracking.keys.device_quantity_keys` (per device) or a metric key.
        reduce: How the series becomes one value: ``mean``, ``max``, ``sum`` (per-window energy)
            or ``p95``.
        combine: How devices add up in ``column``: ``mean``, ``sum`` or ``max``.
        per_device: Whether the quantity belongs to a device (the duty cycle does not).
        panel: Panel the quantity is drawn in (``power_p95_watts`` shares the power panel).
    """

    column: str
    label: str
    noun: str
    summaries: tuple[str, ...]
    history: str | None
    reduce: str
    combine: str
    per_device: bool = True
    panel: str = ""


QUANTITIES: tuple[Quantity, ...] = (
    Quantity(
        "util_mean_percentage",
        "Mean utilisation (%)",
        "utilisation",
        (
            "summary/{dev}_utilization_mean_percentage",
            "summary/{dev}_utilization_percentage_mean",
        ),
        "util_pct",
        "mean",
        "mean",
    ),
    Quantity(
        "duty_cycle_achieved",
        "Achieved duty cycle (fraction)",
        "achieved duty cycle",
        (
            "summary/duty_cycle_mean",
            "summary/duty_cycle_achieved_mean",
            "summary/synthetic_duty_cycle_achieved_mean",
        ),
        keys.SYNTHETIC_DUTY_CYCLE_ACHIEVED,
        "mean",
        "mean",
        per_device=False,
    ),
    Quantity(
        "power_mean_watts",
        "Power (W): mean, p95 dashed",
        "power",
        ("summary/{dev}_power_mean_watts", "summary/{dev}_power_w_mean"),
        "power_w",
        "mean",
        "sum",
    ),
    Quantity(
        "power_p95_watts",
        "p95 power (W)",
        "power",
        ("summary/{dev}_power_p95_watts", "summary/{dev}_power_w_p95"),
        "power_w",
        "p95",
        "sum",
        panel="power_mean_watts",
    ),
    Quantity(
        "temperature_peak_celsius",
        "Peak temperature (°C)",
        "temperature",
        ("summary/{dev}_temperature_max_celsius", "summary/{dev}_temperature_c_max"),
        "temp_c",
        "max",
        "max",
    ),
    Quantity(
        "energy_joules",
        "Energy per run (J)",
        "energy",
        (
            "summary/{dev}_energy_joules",
            "summary/{dev}_package_energy_joules",
            "summary/{dev}_energy_j",
        ),
        "energy_joules",
        "sum",
        "sum",
    ),
    Quantity(
        "rle_mean",
        "Mean RLE (dimensionless)",
        "RLE",
        ("rle/{dev}/rle_smoothed_mean", "summary/{dev}_rle_mean"),
        "rle_smoothed",
        "mean",
        "mean",
    ),
)
"""The responses, in panel order."""

_DEVICE = re.compile(r"^(?:node_\d+/)?(?:cpu|gpu_\d+)$")
_SUMMARY_DEVICE = re.compile(r"^summary/((?:node_\d+/)?(?:cpu|gpu_\d+))_")


def device_label(device: str) -> str:
    """``cpu`` -> ``CPU``, ``gpu_0`` -> ``GPU 0``, ``node_1/gpu_0`` -> ``node 1 GPU 0``."""
    node, local = keys.split_node(device)
    name = "CPU" if local == "cpu" else "GPU " + local.removeprefix("gpu_")
    return (node.rstrip("/").replace("_", " ") + " " + name) if node else name


def devices_of(metrics: Iterable[str], tags: Mapping[str, str]) -> list[str]:
    """The devices a run has telemetry or source tags for (``cpu`` first, then GPUs)."""
    found: set[str] = set()
    for key in metrics:
        split = keys.split_system_key(key) or keys.split_rle_key(key)
        if split is not None and _DEVICE.match(split[0]):
            found.add(split[0])
        elif m := _SUMMARY_DEVICE.match(key):
            found.add(m.group(1))
    for tag in tags:
        for prefix in ("power_source.", "temp_source."):
            if tag.startswith(prefix) and _DEVICE.match(tag.removeprefix(prefix)):
                found.add(tag.removeprefix(prefix))
    return sorted(found, key=lambda d: (keys.split_node(d)[0], keys.split_node(d)[1] != "cpu", d))


def _reduce(values: Sequence[float], how: str) -> float:
    vals = [v for v in values if math.isfinite(v)]
    if not vals:
        return math.nan
    if how == "max":
        return max(vals)
    if how == "sum":
        return float(sum(vals))
    if how == "p95":
        import numpy as np

        return float(np.quantile(vals, 0.95))
    return float(sum(vals) / len(vals))


def _combine(values: Sequence[float], how: str) -> float:
    vals = [v for v in values if math.isfinite(v)]
    if not vals:
        return math.nan
    return _reduce(vals, how)


def child_responses(
    metrics: Mapping[str, float],
    tags: Mapping[str, str] | None = None,
    history: Callable[[str], Sequence[float]] | None = None,
) -> dict[str, float]:
    """One child's responses: ``<column>`` (devices together) and ``<column>.<device>``.

    Args:
        metrics: The child's latest metric values (summaries are logged once, so latest = value).
        tags: Its tags (device discovery from ``power_source.<device>`` / ``temp_source.*``).
        history: ``key -> values`` of a metric's history, used where no summary exists;
            ``None``: summaries only.

    Returns:
        ``{column: value}``, NaN where the child has neither a summary nor a series.
    """
    devices = devices_of(metrics, tags or {})
    out: dict[str, float] = {}
    for q in QUANTITIES:
        per: list[float] = []
        for dev in devices if q.per_device else [""]:
            value = math.nan
            for template in q.summaries:
                v = metrics.get(template.format(dev=dev))
                if v is not None and math.isfinite(v):
                    value = float(v)
                    break
            if math.isnan(value) and q.history is not None and history is not None:
                key = keys.device_quantity_keys(dev).get(q.history) if dev else q.history
                if key is not None and key in metrics:
                    value = _reduce([float(v) for v in history(key)], q.reduce)
            if dev:
                out[f"{q.column}.{dev}"] = value
            per.append(value)
        out[q.column] = _combine(per, q.combine)
    return out


def _absent_reason(q: Quantity, device: str, tags: Mapping[str, str]) -> str:
    """Why ``device`` has no ``q`` in a run with these tags (one short phrase)."""
    power = tags.get(keys.power_source_tag(device))
    temp = tags.get(keys.temp_source_tag(device))
    if q.noun == "power":
        return "no sensor on this machine" if power in (None, "none") else "not logged"
    if q.noun == "temperature":
        return "no sensor on this machine" if temp in (None, "none") else "not logged"
    if q.noun == "energy":
        if power in (None, "none"):
            return "no sensor on this machine"
        return f"no energy counter ({power} gives power only)"
    if q.noun == "RLE":
        absent = tags.get(f"rle.{device}.absent")
        return f"absent, {absent.split(' (')[0]}" if absent else "not computed"
    return "not measured"


def absence_notes(
    frame: Any, tags: Sequence[Mapping[str, str]], devices: Sequence[str]
) -> dict[str, list[str]]:
    """Per panel, one line for each quantity the children did not measure, and why.

    Args:
        frame: The response-curve table of the finished children (:func:`response_curve`).
        tags: The finished children's tags.
        devices: Every device seen in any child.

    Returns:
        ``{panel column: ["CPU power: no sensor on this machine", ...]}``.
    """
    first = tags[0] if tags else {}
    notes: dict[str, list[str]] = {}
    for q in QUANTITIES:
        if q.panel:  # drawn with (and explained by) another quantity
            continue
        lines: list[str] = []
        if not q.per_device:
            if q.column not in frame or not frame[q.column].notna().any():
                lines.append(
                    f"{q.noun.capitalize()}: not logged (only the synthetic workload logs it)"
                )
        else:
            for dev in devices:
                col = f"{q.column}.{dev}"
                if col not in frame or not frame[col].notna().any():
                    lines.append(f"{device_label(dev)} {q.noun}: {_absent_reason(q, dev, first)}")
            if not devices:
                lines.append(f"{q.noun.capitalize()}: no telemetry in these runs")
            elif not any(keys.split_node(d)[1].startswith("gpu_") for d in devices):
                lines.append(f"GPU {q.noun}: no GPU used by these runs")
        if lines:
            notes[q.column] = lines
    return notes


def response_curve(rows: Sequence[Mapping[str, Any]], swept: Sequence[str]) -> Any:
    """Tidy response-curve table: one row per child, sorted by the swept parameters.

    Args:
        rows: Per child: ``run_id``, ``status``, swept parameter values and response columns.
        swept: Swept parameter names (config keys).

    Returns:
        A ``pandas.DataFrame``.
    """
    import pandas as pd

    frame = pd.DataFrame(list(rows))
    keys_ = [k for k in swept if k in frame]
    return frame.sort_values(keys_, kind="stable").reset_index(drop=True) if keys_ else frame


def _x_label(key: str) -> str:
    leaf = key.rsplit(".", 1)[-1]
    if leaf == "intensity":
        return f"{key} (target duty cycle, fraction)"
    for suffix, unit in (("_s", "s"), ("_hz", "Hz"), ("_w", "W"), ("_c", "°C")):
        if leaf.endswith(suffix):
            return f"{key} ({unit})"
    return key


def plot_response_curve(
    frame: Any,
    swept: Sequence[str],
    notes: Mapping[str, Sequence[str]],
    devices: Sequence[str],
    path: Path,
    title: str = "",
    dpi: int = 100,
) -> Path:
    """Draw the response curve: a panel per quantity, a line per device, notes in the panels.

    Args:
        frame: :func:`response_curve` rows (only ``status == FINISHED`` rows are drawn).
        swept: Swept keys; the first numeric one is the x axis (else the first, as categories),
            the others split lines.
        notes: :func:`absence_notes`, written inside their panels.
        devices: Devices to draw, in legend order.
        path: PNG to write (at least :data:`MIN_WIDTH_PX` pixels wide).
        title: Figure title (default: ``Response curve over <x>``).
        dpi: Resolution.

    Returns:
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    import pandas as pd

    ok = frame[frame["status"] == "FINISHED"] if "status" in frame else frame
    present = [k for k in swept if k in ok]
    numeric = [k for k in present if pd.api.types.is_numeric_dtype(ok[k])]
    x = numeric[0] if numeric else (present[0] if present else None)
    others = [k for k in present if k != x]
    categories: list[str] = []
    if x is not None and x not in numeric:
        categories = sorted({str(v) for v in ok[x]})

    def xs(part: Any) -> list[float]:
        if x is None:
            return list(range(len(part)))
        if categories:
            return [float(categories.index(str(v))) for v in part[x]]
        return [float(v) for v in part[x]]

    panels = [q for q in QUANTITIES if not q.panel]
    cols = 2
    rows = math.ceil(len(panels) / cols)
    width_in = max(14.0, MIN_WIDTH_PX / dpi + 0.5)
    fig, axes = plt.subplots(rows, cols, figsize=(width_in, 3.6 * rows), squeeze=False)
    colours = matplotlib.colormaps["tab10"]
    groups = list(ok.groupby(others, sort=True)) if others else [((), ok)]
    for k, q in enumerate(panels):
        ax = axes[k // cols][k % cols]
        drawn = False
        lines = [(q, "-")] + [(p, "--") for p in QUANTITIES if p.panel == q.column]
        for gi, (gkey, part) in enumerate(groups):
            part = part.sort_values(x) if x is not None else part
            suffix = ""
            if others:
                values = gkey if isinstance(gkey, tuple) else (gkey,)
                suffix = " " + " ".join(
                    f"{o.rsplit('.', 1)[-1]}={v}" for o, v in zip(others, values, strict=True)
                )
            for di, dev in enumerate(devices if q.per_device else [""]):
                for quantity, style in lines:
                    col = f"{quantity.column}.{dev}" if dev else quantity.column
                    if col not in part or not part[col].notna().any():
                        continue
                    name = (device_label(dev) if dev else "achieved") + suffix
                    if style == "--":
                        name += " p95"
                    ax.plot(
                        xs(part),
                        part[col].astype(float),
                        style,
                        marker="o",
                        ms=5,
                        color=colours((di + gi * len(devices)) % 10),
                        label=name,
                    )
                    drawn = True
        if (
            drawn
            and q.column == "duty_cycle_achieved"
            and x is not None
            and x.endswith("intensity")
            and not categories
        ):
            vals = sorted({float(v) for v in ok[x]})
            ax.plot(vals, vals, ":", color="0.4", label="target (= intensity)")
        ax.set_title(q.label.split(" (")[0].split(":")[0], fontsize=11)
        ax.set_ylabel(q.label, fontsize=10)
        ax.grid(alpha=0.3)
        text = "\n".join(notes.get(q.column, []))
        if drawn:
            # headroom above the data for the legend (right) and the notes (left): no overlap
            entries = len(ax.get_legend_handles_labels()[1])
            rows_needed = max(entries, text.count("\n") + 1 if text else 0)
            lo, hi = ax.get_ylim()
            ax.set_ylim(lo, hi + (hi - lo) * 0.13 * (rows_needed + 1))
            ax.legend(fontsize=8, loc="upper right", framealpha=0.9)
            if text:
                ax.text(
                    0.02,
                    0.97,
                    text,
                    transform=ax.transAxes,
                    ha="left",
                    va="top",
                    fontsize=9,
                    color="0.25",
                )
        else:
            ax.set_yticks([])
            ax.text(
                0.5,
                0.5,
                text or f"{q.noun}: no value in these runs",
                transform=ax.transAxes,
                ha="center",
                va="center",
                fontsize=10,
                color="0.25",
                wrap=True,
            )
        if x is not None:
            ax.set_xlabel(_x_label(x), fontsize=10)
            if categories:
                ax.set_xticks(range(len(categories)))
                ax.set_xticklabels(categories)
            elif not drawn:
                ax.set_xticks(sorted({float(v) for v in ok[x]}))
    for k in range(len(panels), rows * cols):
        axes[k // cols][k % cols].axis("off")
    n = len(ok)
    fig.suptitle(
        title or f"Response curve over {x}: {n} finished child run{'s' if n != 1 else ''}",
        fontsize=13,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
