"""Hydra multirun through the real CLI: one parent run, children tagged with it, a response curve."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from rle.paths import resolve_tracking
from rle.tracking.sweep import _responses, response_curve

TINY = [
    "workload=distilgpt2_tiny",
    "trainer.accelerator=cpu",
    "trainer.max_steps=2",
    "trainer.enable_progress_bar=false",
    "data.block_size=32",
    "data.tokenizer_vocab_size=300",
    "telemetry.sample_hz=10",
    "telemetry.cpu_power=estimated",
]


def test_multirun_is_a_parent_with_children_and_a_response_curve(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "rle.train", "-m", *TINY, "workload.optim.lr=0.001,0.002,bad"],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ),
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    client = MlflowClient(resolve_tracking(None).uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    parents = [r for r in runs if r.data.tags.get("rle.role") == "sweep_parent"]
    assert len(parents) == 1
    parent = parents[0]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    # the job with lr=bad fails before its run exists (a config error); the sweep goes on
    assert len(children) == len(runs) - 1 == 2
    assert {c.data.params["workload.optim.lr"] for c in children} == {"0.001", "0.002"}
    assert all(c.data.tags["rle.sweep_id"] == parent.data.tags["rle.sweep_id"] for c in children)
    assert parent.data.params["sweep.workload.optim.lr"] == "0.001,0.002,bad"
    assert parent.data.tags["rle.children.finished"] == "2"
    assert parent.info.status == "FINISHED"
    arts = {a.path for a in client.list_artifacts(parent.info.run_id, "response_curve")}
    assert arts == {"response_curve/response_curve.csv", "response_curve/response_curve.png"}
    curve = pd.read_csv(
        client.download_artifacts(parent.info.run_id, "response_curve/response_curve.csv")
    )
    assert list(curve["workload.optim.lr"]) == [0.001, 0.002]
    assert curve["util_mean_percentage"].notna().all()
    assert curve["temperature_peak_celsius"].isna().all()  # no sensor here: NaN, not 0


def test_responses_are_nan_safe_and_sum_devices() -> None:
    r = _responses(
        {
            "summary/gpu_0_utilization_mean_percentage": 50.0,
            "summary/gpu_1_utilization_mean_percentage": 70.0,
            "summary/gpu_0_power_mean_watts": 100.0,
            "summary/gpu_1_power_mean_watts": 150.0,
            "summary/gpu_0_temperature_max_celsius": 60.0,
            "summary/gpu_1_temperature_max_celsius": 70.0,
        }
    )
    assert r["util_mean_percentage"] == 60.0
    assert r["power_mean_watts"] == 250.0
    assert r["temperature_peak_celsius"] == 70.0
    assert r["rle_mean"] != r["rle_mean"]  # NaN
    frame = response_curve([{"x": 2.0, "run_id": "b"}, {"x": 1.0, "run_id": "a"}], ["x"])
    assert list(frame["run_id"]) == ["a", "b"]


@pytest.mark.slow
def test_ddp_inside_a_multirun() -> None:
    overrides = [o for o in TINY if not o.startswith("telemetry.cpu_power")]
    out = subprocess.run(
        [sys.executable, "-m", "rle.train", "-m", *overrides, "trainer.devices=2", "seed=1,2"],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ),
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    client = MlflowClient(resolve_tracking(None).uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    children = [r for r in runs if r.data.tags.get("rle.role") == "sweep_child"]
    assert len(children) == 2
    assert all(
        c.info.status == "FINISHED" and c.data.tags["trainer.strategy"] == "ddp_spawn"
        for c in children
    )
    for c in children:  # both ranks' samples are in each child's one run
        frame = pd.read_parquet(
            client.download_artifacts(c.info.run_id, "telemetry/samples.parquet")
        )
        assert set(frame["rank"]) == {0, 1}
