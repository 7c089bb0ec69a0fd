"""J/step adds up to the measured energy whatever the sampling rate and logging cadence.

FakeGpuSource stands in for NVML: its energy counter is the integral of its scripted power.
"""

from __future__ import annotations

import lightning as L
import pytest
from mlflow import MlflowClient

from rle.callbacks.telemetry import TelemetryCallback
from rle.paths import resolve_tracking
from rle.tracking.logger import MLflowRunLogger, create_run
from rle.tracking.reader import read_samples
from support.tiny import TinyModule

FAKE_GPU = {"_target_": "rle.telemetry.fake.FakeGpuSource", "index": 0, "util_pct": [90.0, 40.0]}


@pytest.mark.filterwarnings("ignore:The number of training batches:UserWarning")
@pytest.mark.parametrize(("sample_hz", "every"), [(1.0, 1), (1.0, 50), (10.0, 1), (10.0, 50)])
def test_energy_per_step_sums_to_the_measured_energy(sample_hz: float, every: int) -> None:
    loc = resolve_tracking(None)
    exp_id, run_id = create_run(loc, "energy", "r", {})
    steps = 200
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=steps,
        log_every_n_steps=every,
        logger=MLflowRunLogger(loc.uri, run_id, exp_id),
        callbacks=[TelemetryCallback(sources={"gpu": FAKE_GPU}, sample_hz=sample_hz)],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(TinyModule(step_sleep_s=0.02))  # >= 4 s: several samples even at 1 Hz
    client = MlflowClient(loc.uri)
    points = client.get_metric_history(run_id, "train/energy_joules_per_step")
    assert len(points) >= 2
    total_j, previous = 0.0, -1
    for p in sorted(points, key=lambda p: p.step):
        total_j += p.value * (p.step - previous)
        previous = p.step
    frame = read_samples(run_id, client.tracking_uri)
    energy = frame[frame["device"] == "gpu_0"].sort_values("monotonic_s")["gpu_0_energy_joules"]
    # samples taken after the last logged point (stamped with later steps) are not in any point
    logged_energy = energy[frame["global_step"] <= previous]
    measured_j = float(logged_energy.iloc[-1] - energy.iloc[0])
    assert total_j == pytest.approx(measured_j, rel=0.02)
    # samples/J is the samples trained over the same energy: 4 samples per batch, one per step
    per_joule = {
        p.step: p.value for p in client.get_metric_history(run_id, "train/samples_per_joule")
    }
    samples, previous = 0.0, -1
    for p in sorted(points, key=lambda p: p.step):
        samples += per_joule[p.step] * p.value * (p.step - previous)
        previous = p.step
    assert samples == pytest.approx(4 * (previous + 1), rel=1e-6)
