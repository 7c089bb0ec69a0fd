"""Hydra multirun through the real CLI: one parent run, children tagged with it, a response curve."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from rle.paths import resolve_tracking
from rle.tracking.reader import read_samples
from rle.tracking.redact import REDACTED
from rle.tracking.sweep import (
    MLflowSweepCallback,
    RedactHydraOutputs,
    _responses,
    _sweep_params,
    response_curve,
)

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
    assert out.returncode == 1, out.stderr[-3000:]  # one job failed
    client = MlflowClient(resolve_tracking(None).uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    parents = [r for r in runs if r.data.tags.get("rle.role") == "sweep_parent"]
    assert len(parents) == 1
    parent = parents[0]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    # the job with lr=bad fails before its run exists (a config error); the sweep goes on
    assert len(children) == len(runs) - 1 == 2
    assert {c.data.params["workload.optim.lr"] for c in children} == {"0.001", "0.002"}
    # children are named by their swept values, so the UI tells them apart
    assert sorted(c.info.run_name for c in children) == [
        "distilgpt2_tiny lr=0.001",
        "distilgpt2_tiny lr=0.002",
    ]
    assert all(c.data.tags["rle.sweep_id"] == parent.data.tags["rle.sweep_id"] for c in children)
    assert parent.data.params["sweep.workload.optim.lr"] == "0.001,0.002,bad"
    assert parent.info.run_name == "sweep distilgpt2_tiny lr=0.001,0.002,bad"
    assert parent.data.tags["rle.children.finished"] == "2"
    # the refused job has no run but counts as a failed job
    jobs = {k: parent.data.tags[f"rle.jobs.{k}"] for k in ("total", "failed", "refused")}
    assert jobs == {"total": "3", "failed": "1", "refused": "1"}
    assert sorted(c.data.tags["rle.sweep_job"] for c in children) == ["0", "1"]
    assert parent.info.status == "FINISHED"
    arts = {a.path for a in client.list_artifacts(parent.info.run_id, "response_curve")}
    assert arts == {"response_curve/response_curve.csv", "response_curve/response_curve.png"}
    curve = pd.read_csv(
        client.download_artifacts(parent.info.run_id, "response_curve/response_curve.csv")
    )
    assert list(curve["workload.optim.lr"]) == [0.001, 0.002]
    assert curve["util_mean_percentage"].notna().all()
    assert curve["temperature_peak_celsius"].isna().all()  # no sensor here: NaN, not 0


def test_synthetic_intensity_sweep_in_the_store(tmp_path: Path) -> None:
    """A 2-child synthetic sweep: distinct names, applicable params only, a wide curve PNG."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "rle.train",
            "-m",
            "workload=synthetic",
            "workload.intensity=0.3,0.8",
            "workload.period_s=0.05",
            "workload.workers=1",
            "trainer.accelerator=cpu",
            "trainer.max_steps=8",
            "trainer.enable_progress_bar=false",
            "telemetry=cpu_only",
            "telemetry.sample_hz=10",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ),
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    client = MlflowClient(resolve_tracking(None).uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    parent = next(r for r in runs if r.data.tags.get("rle.role") == "sweep_parent")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    names = sorted(c.info.run_name for c in children)
    assert names == ["synthetic intensity=0.3", "synthetic intensity=0.8"]
    assert parent.info.run_name == "sweep synthetic intensity=0.3,0.8"
    for c in children:
        params = c.data.params
        assert "None" not in params.values()
        assert not [k for k in params if k.startswith(("data.", "workload.ramp", "workload.sine"))]
        assert not [k for k in params if k.startswith("workload.step")]
        assert params["workload.pattern"] == "constant"
    png = client.download_artifacts(parent.info.run_id, "response_curve/response_curve.png")
    with Image.open(png) as image:
        assert image.size[0] >= 1200
    curve = pd.read_csv(
        client.download_artifacts(parent.info.run_id, "response_curve/response_curve.csv")
    )
    assert list(curve["workload.intensity"]) == [0.3, 0.8]
    assert list(curve["run_name"]) == names
    # the achieved duty cycle follows the target (mean over the run, not the last step's value)
    assert curve["duty_cycle_achieved"].iloc[1] > curve["duty_cycle_achieved"].iloc[0]
    assert curve["util_mean_percentage.cpu"].notna().all()


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
        c.info.status == "FINISHED" and c.data.tags["trainer.strategy"] == "ddp" for c in children
    )
    for c in children:  # both ranks' samples are in each child's one run
        frame = read_samples(c.info.run_id, client.tracking_uri)
        assert set(frame["rank"]) == {0, 1}


# ------------------------------------------------------------------------------------------ secrets

TOKEN = "tok_live_0a1b2c3d4e5f6a7b"
GHP = "ghp_" + "Z9y8X7w6V5u4T3s2R1q0P9o8N7m6L5k4J3i2"
PASSWORD = "pw-5e3b1c9d7f"


def _multirun_cfg(tmp_path: Path, overrides: list[str]) -> DictConfig:
    cfg = OmegaConf.create(
        {
            "tracking": {
                "uri": f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}",
                "experiment_name": "secrets",
                "secret_pattern": None,
            },
            "hydra": {
                "overrides": {"task": overrides},
                "sweep": {"dir": str(tmp_path / "multirun" / "d" / "t")},
                "runtime": {"output_dir": str(tmp_path / "multirun" / "d" / "t" / "0")},
                "mode": "MULTIRUN",
                "output_subdir": ".hydra",
            },
        }
    )
    assert isinstance(cfg, DictConfig)
    return cfg


SECRET_OVERRIDES = [
    "workload.intensity=0.2,0.4",
    f"+workload.api_token={TOKEN}",
    f"+deploy_key={GHP}",
    "+db.password=plain-words-only",
    f"run_name=job-{PASSWORD}",
]


def test_sweep_params_are_redacted(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    params = _sweep_params(_multirun_cfg(tmp_path, SECRET_OVERRIDES))
    assert params == {
        "sweep.workload.intensity": "0.2,0.4",
        "sweep.workload.api_token": REDACTED,
        "sweep.deploy_key": REDACTED,
        "sweep.db.password": REDACTED,
        "sweep.run_name": f"job-{REDACTED}",
    }


def test_sweep_parent_run_stores_no_secret(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    cfg = _multirun_cfg(tmp_path, SECRET_OVERRIDES)
    cb = MLflowSweepCallback()
    cb.on_multirun_start(cfg)
    cb.on_multirun_end(cfg)
    client = MlflowClient(str(cfg.tracking.uri))
    assert cb.parent_run_id is not None
    run = client.get_run(cb.parent_run_id)
    assert run.data.params["sweep.workload.intensity"] == "0.2,0.4"
    everything = " ".join(
        [run.info.run_name or "", *run.data.params.values(), *run.data.tags.values()]
    )
    for planted in (TOKEN, GHP, "plain-words-only", PASSWORD):
        assert planted not in everything
    assert run.info.run_name == "sweep intensity=0.2,0.4"
    db = (tmp_path / "store" / "mlflow.db").read_bytes()
    for planted in (TOKEN, GHP, "plain-words-only", PASSWORD):
        assert planted.encode() not in db


def test_redact_hydra_outputs_callback_rewrites_job_and_sweep_files(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    cfg = _multirun_cfg(tmp_path, SECRET_OVERRIDES)
    sweep = Path(str(cfg.hydra.sweep.dir))
    jobs = [sweep / "0", sweep / "1"]
    for job in jobs:
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(
            OmegaConf.to_yaml(OmegaConf.create(SECRET_OVERRIDES))
        )
        (job / ".hydra" / "config.yaml").write_text(
            OmegaConf.to_yaml(OmegaConf.create({"workload": {"api_token": TOKEN}}))
        )
    (sweep / "multirun.yaml").write_text(OmegaConf.to_yaml(cfg))

    def leaks(path: Path) -> list[str]:
        raw = path.read_text()
        return [p for p in (TOKEN, GHP, "plain-words-only", PASSWORD) if p in raw]

    cb = RedactHydraOutputs()
    cb.on_job_start(cfg)
    assert leaks(jobs[0] / ".hydra" / "overrides.yaml") == []
    assert leaks(jobs[0] / ".hydra" / "config.yaml") == []
    assert leaks(sweep / "multirun.yaml") == []
    assert leaks(jobs[1] / ".hydra" / "overrides.yaml") != []  # another job's: not yet
    cb.on_multirun_end(cfg)
    for job in jobs:
        for f in (job / ".hydra").iterdir():
            assert leaks(f) == [], f
            assert (f.stat().st_mode & 0o777) == 0o600
