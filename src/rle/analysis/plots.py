"""Figures of an evaluation: scatter plots, the lag plot and the fingerprint comparison.

Matplotlib with the non-interactive Agg backend; every function writes one PNG and returns its
path with a list of notes on what it leaves out, or, when there is nothing to draw, writes nothing
and returns an :class:`EmptyPlot` saying what is missing and why instead of the path (the report
prints these lines in place of the figures). Axis labels spell out
their units; RLE and correlations are dimensionless. Pure (no MLflow).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["EmptyPlot", "fingerprint_plot", "has_values", "lag_plot", "scatter_plot"]

_LABELS = {
    "train/grad_norm": "grad_norm (total L2 norm of the gradients, dimensionless)",
    "train/loss": "training loss (nats per token)",
    "rle_smoothed": "RLE, smoothed (dimensionless)",
    "temp_c": "temperature (°C)",
    "power_w": "power (W)",
    "util_pct": "utilisation (%)",
}
_SHORT = {
    "train/grad_norm": "grad_norm",
    "train/loss": "training loss",
    "rle_smoothed": "RLE",
    "temp_c": "temperature",
    "power_w": "power",
    "util_pct": "utilisation",
}
_WHY_ABSENT = {
    "rle_smoothed": "it needs a device's power and utilisation; see Input provenance",
    "temp_c": "no temperature sensor was read",
    "power_w": "no power sensor was read",
    "util_pct": "no utilisation was sampled",
}


@dataclass(frozen=True)
class EmptyPlot:
    """A figure that was not written because it would have been empty.

    Attributes:
        name: The file it would have been (``scatter_grad_norm_vs_rle.png``).
        reason: What is missing and why, one line.
    """

    name: str
    reason: str

    def note(self) -> str:
        """The report's line for it."""
        return f"`{self.name}` not written: {self.reason}."


def _plt() -> object:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _label(name: str) -> str:
    return _LABELS.get(name, name)


def _short(name: str) -> str:
    return _SHORT.get(name, name)


def _missing(names: Sequence[str], present: Sequence[str]) -> list[str]:
    """The series of ``names`` not in ``present``, each with why it is absent."""
    return [
        _short(n) + (f" ({_WHY_ABSENT[n]})" if n in _WHY_ABSENT else "")
        for n in names
        if n not in present
    ]


def _why_missing(names: Sequence[str], present: Sequence[str]) -> str:
    """Why a pair has no point: the series no run has, and what that series needs."""
    missing = _missing(names, present)
    if not missing:
        return "the two series never overlap in time"
    return "no run of the selection logged " + " or ".join(missing)


def _colours(groups: Sequence[str]) -> dict[str, object]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    return {g: cmap(i % 10) for i, g in enumerate(sorted(set(groups)))}


def has_values(frame: pd.DataFrame, column: str) -> bool:
    """Whether ``frame[column]`` exists and has a finite number."""
    if column not in frame or not len(frame):
        return False
    return bool(np.isfinite(pd.to_numeric(frame[column], errors="coerce").astype(float)).any())


def scatter_plot(
    points: pd.DataFrame, x: str, y: str, path: Path, title: str, dpi: int = 120
) -> tuple[Path | EmptyPlot, list[str]]:
    """Scatter of two step-aligned series, coloured by group (workload), marker by device.

    Args:
        points: Rows with ``group``, ``device``, ``run_id`` and columns ``x`` and ``y``.
        x: Column on the x axis.
        y: Column on the y axis.
        path: PNG to write.
        title: Figure title.
        dpi: Resolution.

    Returns:
        ``(path, [])``, or ``(EmptyPlot, [])`` (nothing written) when no step has both series.
    """
    data = points.iloc[0:0]
    if len(points) and x in points and y in points:
        data = points[np.isfinite(points[x].astype(float)) & np.isfinite(points[y].astype(float))]
    if data.empty:
        present = [c for c in (x, y) if has_values(points, c)]
        return EmptyPlot(
            path.name,
            f"no step with both {_short(x)} and {_short(y)}: {_why_missing([x, y], present)}",
        ), []
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 5.5))  # type: ignore[attr-defined]
    colours = _colours(list(data["group"].astype(str)))
    markers = ["o", "s", "^", "D", "v", "P", "X"]
    devices = sorted(set(data["device"].astype(str)))
    for g, colour in colours.items():
        for j, dev in enumerate(devices):
            sub = data[(data["group"].astype(str) == g) & (data["device"].astype(str) == dev)]
            if sub.empty:
                continue
            n_runs = sub["run_id"].nunique()
            ax.scatter(
                sub[x],
                sub[y],
                s=14,
                alpha=0.6,
                color=colour,
                marker=markers[j % len(markers)],
                label=f"{g} · {dev} ({n_runs} run{'s' if n_runs != 1 else ''}, {len(sub)} steps)",
            )
    ax.legend(fontsize=8, loc="best", framealpha=0.8)
    ax.set_xlabel(_label(x))
    ax.set_ylabel(_label(y))
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=11)
    fig.text(
        0.01,
        0.01,
        "Telemetry interpolated to optimizer-step times; raw values (trends not removed).",
        fontsize=7,
        color="0.4",
    )
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=dpi)
    plt.close(fig)  # type: ignore[attr-defined]
    return path, []


def lag_plot(
    lags: pd.DataFrame,
    pairs: Sequence[tuple[str, str]],
    path: Path,
    detrend: str,
    dpi: int = 120,
    series: Sequence[str] | None = None,
) -> tuple[Path | EmptyPlot, list[str]]:
    """Lagged correlation r(lag) per pair, one line per run and device, coloured by group.

    Only pairs with a defined lagged correlation get a panel; the others are named in the notes.

    Args:
        lags: Rows with ``run_id``, ``group``, ``device``, ``x``, ``y``, ``lag_s``, ``r`` and
            ``null_q95`` (the permutation null's 95th percentile of |r|).
        pairs: ``(x, y)`` pairs, one panel each.
        path: PNG to write.
        detrend: How the series were detrended (for the title).
        dpi: Resolution.
        series: The series that have values in some run (to say why a pair is missing);
            ``None``: unknown.

    Returns:
        ``(path or EmptyPlot, notes)``: the figure (an :class:`EmptyPlot`, nothing written, when
        no pair has a value) and one line per pair left out.
    """
    drawn: list[tuple[str, str, pd.DataFrame]] = []
    short_of_data: list[str] = []  # both series exist, r is undefined
    missing: list[str] = []  # series no run has
    for x, y in pairs:
        sub = lags[(lags["x"] == x) & (lags["y"] == y)] if len(lags) else lags
        sub = sub[np.isfinite(sub["r"].astype(float))] if len(sub) else sub
        if not sub.empty:
            drawn.append((x, y, sub))
        elif series is not None and not {x, y} <= set(series):
            missing += [m for m in _missing([x, y], series) if m not in missing]
        else:
            short_of_data.append(f"{_short(y)} vs {_short(x)}")
    why = []
    if missing:
        why.append("no run of the selection logged " + ", ".join(missing))
    if short_of_data:
        why.append(
            f"{', '.join(short_of_data)}: too few aligned samples or a constant series "
            "(N/A notes in `correlations.csv`)"
        )
    if not drawn:
        return EmptyPlot(
            path.name, "no lagged correlation is defined: " + ("; ".join(why) or "no pair")
        ), []
    notes = [f"`{path.name}` has panels for some pairs only: {'; '.join(why)}."] if why else []
    plt = _plt()
    n = len(drawn)
    cols = 2 if n > 1 else 1
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.2 * cols, 4.0 * rows), squeeze=False)  # type: ignore[attr-defined]
    colours = _colours(list(lags["group"].astype(str)))
    for k, (x, y, sub) in enumerate(drawn):
        ax = axes[k // cols][k % cols]
        seen: set[str] = set()
        for (_, device), line in sub.groupby(["run_id", "device"], sort=True):
            g = str(line["group"].iloc[0])
            name = f"{g} · {device}"
            line = line.sort_values("lag_s")
            ax.plot(
                line["lag_s"],
                line["r"],
                marker="o",
                ms=3,
                lw=1.2,
                color=colours[g],
                alpha=0.8,
                label=None if name in seen else name,
            )
            seen.add(name)
        band = sub.groupby("lag_s")["null_q95"].median().dropna()
        if len(band):
            ax.fill_between(
                band.index,
                -band.to_numpy(),
                band.to_numpy(),
                color="0.85",
                zorder=0,
                label="95% permutation null (median)",
            )
        ax.axvline(0.0, color="0.3", lw=0.8)
        ax.axhline(0.0, color="0.3", lw=0.8)
        ax.set_xlabel("lag (s); > 0: hardware follows training")
        ax.set_ylabel("Pearson r (dimensionless)")
        ax.set_ylim(-1.05, 1.05)
        ax.set_title(f"{_label(y)} vs {_short(x)}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    for k in range(n, rows * cols):
        axes[k // cols][k % cols].axis("off")
    fig.suptitle(
        f"Lagged cross-correlation, {detrend} detrended, r = corr(train(t), hw(t + lag)); per run and device",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)  # type: ignore[attr-defined]
    return path, notes


def fingerprint_plot(
    runs: pd.DataFrame,
    groups: pd.DataFrame,
    features: Mapping[str, str],
    path: Path,
    dpi: int = 120,
) -> tuple[Path | EmptyPlot, list[str]]:
    """Small multiples: one panel per feature, bars per group and device, dots per run.

    A group and device without a value for a feature gets a grey "n/a" label inside the panel
    (at mid-height, never on an axis), not a zero bar.

    Args:
        runs: Per-run fingerprint rows (``group``, ``device``, features).
        groups: Aggregated rows (``group``, ``device``, features).
        features: ``{column: axis label with unit}``; features without any value get no panel.
        path: PNG to write.
        dpi: Resolution.

    Returns:
        ``(path or EmptyPlot, notes)``: the figure (an :class:`EmptyPlot`, nothing written, when
        no feature has a value) and a line naming the features left out.
    """
    present = [f for f in features if f in groups and groups[f].notna().any()]
    absent = [features[f] for f in features if f not in present]
    if not present:
        return EmptyPlot(
            path.name, "no fingerprint feature has a value (no telemetry in the selected runs)"
        ), []
    notes = (
        [
            f"`{path.name}` has no panel for {'; '.join(absent)}: no selected run measured "
            "them on any device."
        ]
        if absent
        else []
    )
    plt = _plt()
    n = len(present)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.6 * rows), squeeze=False)  # type: ignore[attr-defined]
    colours = _colours(list(groups["group"].astype(str)))
    keys = [(str(g), str(d)) for g, d in zip(groups["group"], groups["device"], strict=True)]
    for k, feat in enumerate(present):
        ax = axes[k // cols][k % cols]
        for i, (g, d) in enumerate(keys):
            val = groups[(groups["group"].astype(str) == g) & (groups["device"].astype(str) == d)][
                feat
            ].iloc[0]
            if np.isfinite(val):
                ax.bar(i, val, color=colours[g], alpha=0.55, edgecolor=colours[g])
            else:  # absent, never drawn as zero; placed in axes height, clear of the ticks
                ax.text(
                    i,
                    0.5,
                    "n/a",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="0.45",
                    transform=ax.get_xaxis_transform(),
                )
            per = runs[(runs["group"].astype(str) == g) & (runs["device"].astype(str) == d)][
                feat
            ].astype(float)
            per = per[np.isfinite(per)]
            if len(per):
                jitter = np.linspace(-0.15, 0.15, len(per)) if len(per) > 1 else np.zeros(1)
                ax.scatter(i + jitter, per, color="black", s=10, zorder=3)
        ax.set_xlim(-0.6, len(keys) - 0.4)  # text does not widen the axes: keep n/a inside
        ax.set_xticks(range(len(keys)))
        ax.set_xticklabels([f"{g}\n{d}" for g, d in keys], fontsize=8, rotation=0)
        ax.set_title(features[feat], fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    for k in range(len(present), rows * cols):
        axes[k // cols][k % cols].axis("off")
    fig.suptitle(
        "Workload fingerprints (bars: workload over pooled runs; dots: single runs)", fontsize=11
    )
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)  # type: ignore[attr-defined]
    return path, notes
