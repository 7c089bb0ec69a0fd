"""The sweep response curve: summaries preferred, histories as fallback, notes for what is absent."""

from __future__ import annotations

import math
from pathlib import Path

from PIL import Image

from rle.analysis.response import (
    MIN_WIDTH_PX,
    absence_notes,
    child_responses,
    devices_of,
    plot_response_curve,
    response_curve,
)


def _size(png: Path) -> tuple[int, int]:
    with Image.open(png) as image:
        return image.size


CPU_ONLY_TAGS = {
    "power_source.cpu": "none",
    "temp_source.cpu": "none",
    "rle.cpu.absent": "no power source (set telemetry.cpu_power=estimated for an estimated CPU power)",
}


def test_summary_metrics_win_over_histories() -> None:
    metrics = {
        "system/cpu_utilization_percentage": 10.0,  # latest value: not what the curve shows
        "synthetic/duty_cycle_achieved": 0.26,
        "summary/duty_cycle_mean": 0.405,
    }
    histories = {"system/cpu_utilization_percentage": [20.0, 40.0, math.nan]}
    r = child_responses(metrics, CPU_ONLY_TAGS, lambda k: histories.get(k, []))
    assert r["duty_cycle_achieved"] == 0.405  # the summary, not the last value or the mean
    assert r["util_mean_percentage.cpu"] == 30.0  # the history's mean, NaN ignored
    assert math.isnan(r["power_mean_watts.cpu"])
    # the summary of utilisation, once it exists, replaces the history
    r = child_responses(
        {**metrics, "summary/cpu_utilization_percentage_mean": 33.0}, CPU_ONLY_TAGS, None
    )
    assert r["util_mean_percentage"] == 33.0


def test_devices_add_up_per_quantity() -> None:
    r = child_responses(
        {
            "summary/gpu_0_power_mean_watts": 100.0,
            "summary/gpu_1_power_mean_watts": 150.0,
            "summary/gpu_0_energy_joules": 10.0,
            "summary/cpu_package_energy_joules": 5.0,
        }
    )
    assert r["power_mean_watts"] == 250.0
    assert r["energy_joules"] == 15.0
    assert devices_of(["summary/gpu_1_power_mean_watts", "rle/cpu/e_th", "x/y"], {}) == [
        "cpu",
        "gpu_1",
    ]


def _cpu_only_frame() -> object:
    rows = []
    for x, util, duty in ((0.3, 24.0, 0.3), (0.8, 37.0, 0.79)):
        r = child_responses(
            {"summary/cpu_utilization_mean_percentage": util, "summary/duty_cycle_mean": duty},
            CPU_ONLY_TAGS,
        )
        rows.append({"run_id": str(x), "status": "FINISHED", "workload.intensity": x, **r})
    return response_curve(rows, ["workload.intensity"])


def test_absent_quantities_get_a_note_each() -> None:
    frame = _cpu_only_frame()
    notes = absence_notes(frame, [CPU_ONLY_TAGS], ["cpu"])
    assert "CPU power: no sensor on this machine" in notes["power_mean_watts"]
    assert "CPU temperature: no sensor on this machine" in notes["temperature_peak_celsius"]
    assert "CPU energy: no sensor on this machine" in notes["energy_joules"]
    assert "CPU RLE: absent, no power source" in notes["rle_mean"]
    assert "GPU power: no GPU used by these runs" in notes["power_mean_watts"]
    assert "duty_cycle_achieved" not in notes  # measured
    assert [n for n in notes["util_mean_percentage"] if n.startswith("CPU")] == []


def test_plot_is_wide_enough(tmp_path: Path) -> None:
    frame = _cpu_only_frame()
    png = plot_response_curve(
        frame,
        ["workload.intensity"],
        absence_notes(frame, [CPU_ONLY_TAGS], ["cpu"]),
        ["cpu"],
        tmp_path / "curve.png",
        dpi=60,  # even at a low resolution
    )
    width, height = _size(png)
    assert width >= MIN_WIDTH_PX
    assert height > 600


def test_categorical_sweeps_plot_too(tmp_path: Path) -> None:
    rows = [
        {
            "run_id": w,
            "status": "FINISHED",
            "workload.name": w,
            **child_responses({"summary/cpu_utilization_mean_percentage": u}),
        }
        for w, u in (("b", 10.0), ("a", 20.0))
    ]
    frame = response_curve(rows, ["workload.name"])
    assert list(frame["run_id"]) == ["a", "b"]
    plot_response_curve(frame, ["workload.name"], {}, ["cpu"], tmp_path / "c.png")
    assert _size(tmp_path / "c.png")[0] >= MIN_WIDTH_PX
