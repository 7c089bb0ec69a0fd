"""Streamed samples: parts uploaded while the run runs, a SIGKILL keeps them, monitors work alone.

Real Trainers into real SQLite stores; FakeGpuSource stands in for NVML.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import pandas as pd
import pytest
from lightning.pytorch.loggers import MLFlowLogger
from mlflow import MlflowClient

from rle.callbacks.dynamics import TrainingDynamicsMonitor
from rle.callbacks.hardware import HardwareMonitor
from rle.callbacks.telemetry import TelemetryCallback
from rle.paths import resolve_tracking
from rle.sync import main as sync_main
from rle.tracking.logger import MLflowRunLogger, create_run, ensure_store
from rle.tracking.reader import read_samples
from support.tiny import TinyModule

FAKE_GPU = {"_target_": "rle.telemetry.fake.FakeGpuSource", "index": 0}


def _trainer(callback: Any, logger: Any, steps: int) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=steps,
        log_every_n_steps=1,
        logger=logger,
        callbacks=[callback],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


def _parts(client: MlflowClient, run_id: str) -> list[str]:
    return [a.path for a in client.list_artifacts(run_id, "telemetry/samples/rank_0")]


def test_parts_are_uploaded_during_the_run_and_read_as_one_table() -> None:
    loc = resolve_tracking(None)
    exp_id, run_id = create_run(loc, "test", "r", {})
    callback = TelemetryCallback(sources={"gpu": FAKE_GPU}, sample_hz=20, upload_every_s=0.3)
    _trainer(callback, MLflowRunLogger(loc.uri, run_id, exp_id), steps=12).fit(
        TinyModule(step_sleep_s=0.12)
    )
    client = MlflowClient(loc.uri)
    parts = _parts(client, run_id)
    assert len(parts) >= 3  # ~1.5 s of training, a part every 0.3 s, plus the last one
    frame = read_samples(run_id, loc.uri)
    assert frame is not None
    assert frame["wall_time_s"].is_monotonic_increasing
    assert set(frame["device"]) == {"gpu_0"}
    schema = json.loads(
        Path(client.download_artifacts(run_id, "telemetry/samples_schema.json")).read_text()
    )
    assert schema["ranks"] == {"0": {"rows": len(frame), "parts": len(parts)}}
    assert schema["columns"]["gpu_0_power_usage_watts"] == "double"
    preview = pd.read_csv(client.download_artifacts(run_id, "telemetry/samples_preview.csv"))
    assert len(preview) == min(len(frame), 200)
    assert list(preview["wall_time_s"]) == pytest.approx(list(frame["wall_time_s"][: len(preview)]))


def test_inventory_and_summary_metrics() -> None:
    loc = resolve_tracking(None)
    exp_id, run_id = create_run(loc, "test", "r", {})
    callback = TelemetryCallback(sources={"gpu": FAKE_GPU}, sample_hz=20)
    _trainer(callback, MLflowRunLogger(loc.uri, run_id, exp_id), steps=4).fit(
        TinyModule(step_sleep_s=0.12)
    )
    run = MlflowClient(loc.uri).get_run(run_id)
    tags, metrics = run.data.tags, run.data.metrics
    import psutil

    assert tags["hw.cpu_threads"] == str(psutil.cpu_count(logical=True))
    assert float(tags["hw.memory_gib"]) == pytest.approx(
        psutil.virtual_memory().total / 2**30, abs=0.1
    )
    assert metrics["summary/train_samples_per_second_mean"] > 0
    assert metrics["summary/energy_joules"] == pytest.approx(metrics["summary/gpu_0_energy_joules"])


def test_each_monitor_works_alone_with_lightnings_logger(tmp_path: Path) -> None:
    uri = "sqlite:///" + (tmp_path / "alone.db").as_posix()
    ensure_store(uri)
    client = MlflowClient(uri)

    hw_logger = MLFlowLogger(experiment_name="alone", tracking_uri=uri)
    _trainer(HardwareMonitor(sources={"gpu": FAKE_GPU}, sample_hz=20), hw_logger, 3).fit(
        TinyModule(step_sleep_s=0.12)
    )
    hw = client.get_run(hw_logger.run_id).data.metrics
    assert "rle/gpu_0/rle_smoothed" in hw
    assert "system/gpu_0_power_usage_watts" in hw
    assert not any(k.startswith("train/") and "joule" not in k for k in hw)
    assert _parts(client, hw_logger.run_id)

    dyn_logger = MLFlowLogger(experiment_name="alone", tracking_uri=uri)
    _trainer(TrainingDynamicsMonitor(), dyn_logger, 3).fit(TinyModule())
    dyn = client.get_run(dyn_logger.run_id).data.metrics
    assert {"train/loss", "train/grad_norm", "train/samples_per_second"} <= set(dyn)
    assert not any(k.startswith(("system/", "rle/")) for k in dyn)
    steps = [m.step for m in client.get_metric_history(dyn_logger.run_id, "train/grad_norm")]
    assert steps == [0, 1, 2]


@pytest.mark.slow
def test_a_sigkilled_job_keeps_its_samples_up_to_the_last_upload(tmp_path: Path) -> None:
    root = tmp_path / "job"
    root.mkdir()
    uri = "sqlite:///" + (root / "mlruns" / "mlflow.db").as_posix()
    env = {**os.environ, "RLE_PROJECT_ROOT": str(root), "MLFLOW_EXPERIMENT_NAME": "kill"}
    env.pop("MLFLOW_TRACKING_URI", None)
    log = root / "job.log"
    with log.open("w") as fh:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "rle.train",
                "workload=synthetic_cpu",
                "workload.intensity=0.1",
                "workload.period_s=0.1",
                "workload.workers=1",
                "trainer.accelerator=cpu",
                "trainer.max_steps=-1",
                "trainer.enable_progress_bar=false",
                "telemetry=fake",
                "telemetry.sample_hz=10",
                "telemetry.upload_every_s=1",
                "tracking.flush_interval_s=0.5",
            ],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    try:
        run_id, parts = None, []
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and len(parts) < 2:
            assert proc.poll() is None, log.read_text()[-3000:]
            time.sleep(0.5)
            if not (root / "mlruns" / "mlflow.db").exists():
                continue
            try:
                ensure_store(uri)
                client = MlflowClient(uri)
                exp = client.get_experiment_by_name("kill")
                runs = client.search_runs([exp.experiment_id]) if exp else []
                if runs:
                    run_id = runs[0].info.run_id
                    parts = _parts(client, run_id)
            except Exception:  # noqa: BLE001 - the job may be creating the schema
                continue
        assert run_id is not None, log.read_text()[-3000:]
        assert len(parts) >= 2, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    spool = root / "outputs" / "spool" / run_id
    if spool.exists():
        sync_main([str(spool)])  # parts spooled but not yet sent
    client = MlflowClient(uri)
    assert client.get_run(run_id).info.status == "RUNNING"  # nobody ended it
    frame = read_samples(run_id, uri)
    assert frame is not None
    assert len(frame) >= 10  # > 1 s of 10 Hz samples survived the kill
    assert frame["global_step"].is_monotonic_increasing
