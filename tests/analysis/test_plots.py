"""Evaluation plots: an empty figure is not written but explained; partial ones say what is left out."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from rle.analysis.plots import EmptyPlot, fingerprint_plot, lag_plot, scatter_plot

FEATURES = {"util_mean_percentage": "utilisation, mean (%)", "power_mean_watts": "power, mean (W)"}


def test_scatter_without_the_series_writes_nothing_and_says_why(tmp_path: Path) -> None:
    points = pd.DataFrame(
        {
            "run_id": ["a", "a"],
            "group": ["g", "g"],
            "device": ["cpu", "cpu"],
            "train/grad_norm": [1.0, 2.0],
        }
    )
    path = tmp_path / "scatter_grad_norm_vs_rle.png"
    written, notes = scatter_plot(points, "train/grad_norm", "rle_smoothed", path, "t", dpi=40)
    assert isinstance(written, EmptyPlot)
    assert not path.exists()
    assert notes == []
    assert written.name == "scatter_grad_norm_vs_rle.png"
    assert "RLE" in written.reason
    assert written.note().startswith("`scatter_grad_norm_vs_rle.png` not written: ")

    points["rle_smoothed"] = [0.5, 0.6]
    written, _ = scatter_plot(points, "train/grad_norm", "rle_smoothed", path, "t", dpi=40)
    assert written == path
    assert path.stat().st_size > 0


def test_lag_plot_draws_only_defined_pairs(tmp_path: Path) -> None:
    lags = pd.DataFrame(
        {
            "run_id": ["a"] * 3,
            "group": ["g"] * 3,
            "device": ["gpu_0"] * 3,
            "x": ["train/grad_norm"] * 3,
            "y": ["power_w"] * 3,
            "lag_s": [-1.0, 0.0, 1.0],
            "r": [0.1, 0.5, 0.2],
            "null_q95": [0.3] * 3,
        }
    )
    pairs = [("train/grad_norm", "power_w"), ("train/grad_norm", "temp_c")]
    path = tmp_path / "lag_plot.png"
    written, notes = lag_plot(lags, pairs, path, "diff", dpi=40, series=["power_w"])
    assert written == path
    assert len(notes) == 1
    assert "temperature" in notes[0]
    written, notes = lag_plot(lags.iloc[0:0], pairs, tmp_path / "none.png", "diff", dpi=40)
    assert isinstance(written, EmptyPlot)
    assert not (tmp_path / "none.png").exists()


def test_fingerprint_plot_names_the_features_it_leaves_out(tmp_path: Path) -> None:
    groups = pd.DataFrame(
        {
            "group": ["a", "b"],
            "device": ["cpu", "cpu"],
            "util_mean_percentage": [20.0, math.nan],  # b: an "n/a" label inside the panel
            "power_mean_watts": [math.nan, math.nan],
        }
    )
    path = tmp_path / "fingerprint_comparison.png"
    written, notes = fingerprint_plot(groups, groups, FEATURES, path, dpi=40)
    assert written == path
    assert notes == [
        "`fingerprint_comparison.png` has no panel for power, mean (W): no selected run "
        "measured them on any device."
    ]
    empty = groups.assign(util_mean_percentage=math.nan)
    written, _ = fingerprint_plot(empty, empty, FEATURES, tmp_path / "e.png", dpi=40)
    assert isinstance(written, EmptyPlot)
    assert not (tmp_path / "e.png").exists()
