"""Figures of an evaluation: scatter plots, the lag plot and the fingerprint comparison.

Matplotlib with the non-interactive Agg backend; every function writes one PNG and returns its
path. A figure without data still gets written, with a sentence saying why it is empty. Pure
(no MLflow).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["fingerprint_plot", "lag_plot", "scatter_plot"]

_LABELS = {
    "train/grad_norm": "grad_norm (total L2 norm)",
    "train/loss": "training loss",
    "rle_smoothed": "RLE (smoothed, 1)",
    "temp_c": "temperature (°C)",
    "power_w": "power (W)",
    "util_pct": "utilisation (%)",
}


def _plt() -> object:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _label(name: str) -> str:
    return _LABELS.get(name, name)


def _colours(groups: Sequence[str]) -> dict[str, object]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    return {g: cmap(i % 10) for i, g in enumerate(sorted(set(groups)))}


def _empty(ax: object, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, transform=ax.transAxes)  # type: ignore[attr-defined]
    ax.set_xticks([])  # type: ignore[attr-defined]
    ax.set_yticks([])  # type: ignore[attr-defined]


def scatter_plot(
    points: pd.DataFrame, x: str, y: str, path: Path, title: str, dpi: int = 120
) -> Path:
    """Scatter of two step-aligned series, coloured by group (workload), marker by device.

    Args:
        points: Rows with ``group``, ``device``, ``run_id`` and columns ``x`` and ``y``.
        x: Column on the x axis.
        y: Column on the y axis.
        path: PNG to write.
        title: Figure title.
        dpi: Resolution.

    Returns:
        ``path``.
    """
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 5.5))  # type: ignore[attr-defined]
    data = points
    if len(points) and x in points and y in points:
        data = points[np.isfinite(points[x].astype(float)) & np.isfinite(points[y].astype(float))]
    else:
        data = points.iloc[0:0]
    if data.empty:
        _empty(
            ax, f"No step with both {x} and {y}\n(no run of the selection has this device series)"
        )
    else:
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
    return path


def lag_plot(
    lags: pd.DataFrame, pairs: Sequence[tuple[str, str]], path: Path, detrend: str, dpi: int = 120
) -> Path:
    """Lagged correlation r(lag) per pair, one line per run and device, coloured by group.

    Args:
        lags: Rows with ``run_id``, ``group``, ``device``, ``x``, ``y``, ``lag_s``, ``r`` and
            ``null_q95`` (the permutation null's 95th percentile of |r|).
        pairs: ``(x, y)`` pairs, one panel each.
        path: PNG to write.
        detrend: How the series were detrended (for the title).
        dpi: Resolution.

    Returns:
        ``path``.
    """
    plt = _plt()
    n = max(1, len(pairs))
    cols = 2 if n > 1 else 1
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.2 * cols, 4.0 * rows), squeeze=False)  # type: ignore[attr-defined]
    colours = _colours(list(lags["group"].astype(str))) if len(lags) else {}
    for k, (x, y) in enumerate(pairs or [("", "")]):
        ax = axes[k // cols][k % cols]
        sub = lags[(lags["x"] == x) & (lags["y"] == y)] if len(lags) else lags
        sub = sub[np.isfinite(sub["r"].astype(float))] if len(sub) else sub
        if sub.empty:
            _empty(
                ax,
                f"{_label(y)} vs {_label(x)}:\nno lagged correlation defined\n(too few points or no series)",
            )
            ax.set_title(f"{y} vs {x}", fontsize=10)
            continue
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
        ax.set_ylabel("r")
        ax.set_ylim(-1.05, 1.05)
        ax.set_title(f"{_label(y)} vs {_label(x)}", fontsize=10)
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
    return path


def fingerprint_plot(
    runs: pd.DataFrame,
    groups: pd.DataFrame,
    features: Mapping[str, str],
    path: Path,
    dpi: int = 120,
) -> Path:
    """Small multiples: one panel per feature, bars per group and device, dots per run.

    Args:
        runs: Per-run fingerprint rows (``group``, ``device``, features).
        groups: Aggregated rows (``group``, ``device``, features).
        features: ``{column: axis label with unit}``; features without any value are skipped.
        path: PNG to write.
        dpi: Resolution.

    Returns:
        ``path``.
    """
    plt = _plt()
    present = [f for f in features if f in groups and groups[f].notna().any()]
    n = max(1, len(present))
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.6 * rows), squeeze=False)  # type: ignore[attr-defined]
    if not present:
        _empty(
            axes[0][0], "No fingerprint feature has a value\n(no telemetry in the selected runs)"
        )
    colours = _colours(list(groups["group"].astype(str))) if len(groups) else {}
    keys = (
        [(str(g), str(d)) for g, d in zip(groups["group"], groups["device"], strict=True)]
        if len(groups)
        else []
    )
    for k, feat in enumerate(present):
        ax = axes[k // cols][k % cols]
        for i, (g, d) in enumerate(keys):
            val = groups[(groups["group"].astype(str) == g) & (groups["device"].astype(str) == d)][
                feat
            ].iloc[0]
            if np.isfinite(val):
                ax.bar(i, val, color=colours[g], alpha=0.55, edgecolor=colours[g])
            else:  # absent, never drawn as zero
                ax.text(i, 0.0, "n/a", ha="center", va="bottom", fontsize=8, color="0.45")
            per = runs[(runs["group"].astype(str) == g) & (runs["device"].astype(str) == d)][
                feat
            ].astype(float)
            per = per[np.isfinite(per)]
            if len(per):
                jitter = np.linspace(-0.15, 0.15, len(per)) if len(per) > 1 else np.zeros(1)
                ax.scatter(i + jitter, per, color="black", s=10, zorder=3)
        ax.set_xticks(range(len(keys)))
        ax.set_xticklabels([f"{g}\n{d}" for g, d in keys], fontsize=8, rotation=0)
        ax.set_title(features[feat], fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    for k in range(len(present), rows * cols):
        if k > 0 or present:
            axes[k // cols][k % cols].axis("off")
    fig.suptitle(
        "Workload fingerprints (bars: workload over pooled runs; dots: single runs)", fontsize=11
    )
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)  # type: ignore[attr-defined]
    return path
