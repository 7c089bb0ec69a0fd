"""TelemetryCallback in a user's own Lightning code: every MLflow route, steps and keys like Lightning's.

Real Trainers and a real SQLite store; FakeGpuSource stands in for NVML (this machine has no GPU).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import mlflow
import pytest
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities import grad_norm
from mlflow import MlflowClient

from rle import TelemetryCallback
from rle.tracking.reader import read_samples
from support.tiny import TinyModule

FAKE_GPU = {"_target_": "rle.telemetry.fake.FakeGpuSource", "index": 0}
CPU = {"_target_": "rle.telemetry.cpu.CpuHostSource", "per_core": False}
PROCESS = {"_target_": "rle.telemetry.cpu.ProcessSource"}
SOURCES = {"gpu": FAKE_GPU, "cpu": CPU, "process": PROCESS}


@pytest.fixture
def uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


class LoggingModule(TinyModule):
    """Logs its own loss and Lightning's grad_norm utility, as users do."""

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = super().training_step(batch, batch_idx)
        self.log("train/loss", loss)
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.log_dict(grad_norm(self, norm_type=2))


class ManualTwoOptimizers(TinyModule):
    """Manual optimization with two optimizers (GAN-style); returns no loss."""

    def __init__(self) -> None:
        super().__init__(step_sleep_s=0.05)
        self.automatic_optimization = False
        self.other = torch.nn.Linear(8, 1)

    def training_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        opt_a, opt_b = self.optimizers()
        for opt, layer in ((opt_a, self.layer), (opt_b, self.other)):
            loss = torch.nn.functional.mse_loss(layer(x), y)
            opt.zero_grad()
            self.manual_backward(loss)
            opt.step()

    def configure_optimizers(self) -> Any:
        sgd = torch.optim.SGD(self.layer.parameters(), lr=0.1)
        adam = torch.optim.Adam(
            [{"params": self.other.weight}, {"params": self.other.bias, "lr": 0.01}], lr=0.001
        )
        return [sgd, adam]


def _trainer(logger: Any, steps: int = 6, every: int = 2, **kwargs: Any) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=steps,
        log_every_n_steps=every,
        logger=logger,
        callbacks=[TelemetryCallback(sources=SOURCES, sample_hz=20), *kwargs.pop("callbacks", [])],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


def _history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]


def test_lightning_mlflow_logger_gets_metrics_tags_and_samples_on_the_modules_steps(
    uri: str,
) -> None:
    logger = MLFlowLogger(experiment_name="mine", tracking_uri=uri)
    _trainer(logger).fit(LoggingModule(step_sleep_s=0.06))
    client = MlflowClient(uri)
    run = client.get_run(logger.run_id)
    assert len(client.search_runs([run.info.experiment_id])) == 1
    # tags and artifacts reached Lightning's run through logger.experiment / logger.run_id
    assert run.data.tags["power_source.gpu_0"] == "fake"
    assert "gpu" in run.data.tags["telemetry.sources"]
    artifacts = [a.path for a in client.list_artifacts(logger.run_id, "telemetry")]
    assert "telemetry/samples" in artifacts
    frame = read_samples(logger.run_id, client.tracking_uri)
    assert {"gpu_0", "cpu"} <= set(frame["device"])
    # rle's grad_norm sits on the module's own steps, with the module's own value
    theirs = _history(client, logger.run_id, "grad_2.0_norm_total")
    ours = _history(client, logger.run_id, "train/grad_norm")
    assert [s for s, _ in ours] == [s for s, _ in theirs] == [1, 3, 5]
    for (_, a), (_, b) in zip(ours, theirs, strict=True):
        assert a == pytest.approx(b, rel=1e-6)
    # hardware metrics share those steps
    assert [s for s, _ in _history(client, logger.run_id, "system/gpu_0_power_usage_watts")] == [
        1,
        3,
        5,
    ]
    # the module logs train/loss itself: rle does not write it a second time
    assert [s for s, _ in _history(client, logger.run_id, "train/loss")] == [1, 3, 5]


def test_a_fluent_run_without_a_lightning_logger_gets_everything(uri: str) -> None:
    mlflow.set_tracking_uri(uri)
    try:
        with mlflow.start_run() as active:
            _trainer(False, steps=4, every=1).fit(TinyModule(step_sleep_s=0.06))
        run_id = active.info.run_id
    finally:
        mlflow.set_tracking_uri(None)
    client = MlflowClient(uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert [s for s, _ in _history(client, run_id, "train/grad_norm")] == [0, 1, 2, 3]
    assert [s for s, _ in _history(client, run_id, "train/loss")] == [0, 1, 2, 3]
    assert "rle/gpu_0/rle_smoothed" in run.data.metrics
    assert run.data.tags["power_source.gpu_0"] == "fake"
    assert "telemetry/samples" in [a.path for a in client.list_artifacts(run_id, "telemetry")]


def test_no_mlflow_route_is_a_clear_error_at_setup() -> None:
    assert mlflow.active_run() is None
    with pytest.raises(
        MisconfigurationException, match=r"MLFlowLogger.*mlflow\.start_run.*rle\.train"
    ):
        _trainer(False, steps=2).fit(TinyModule())


def test_manual_optimization_with_two_optimizers_logs_lr_per_optimizer_and_group(uri: str) -> None:
    logger = MLFlowLogger(experiment_name="manual", tracking_uri=uri)
    _trainer(logger, steps=8, every=1).fit(ManualTwoOptimizers())
    client = MlflowClient(uri)
    metrics = client.get_run(logger.run_id).data.metrics
    # LearningRateMonitor's names: one group -> lr-SGD, two groups -> lr-Adam/pg1, lr-Adam/pg2
    assert metrics["train/lr-SGD"] == pytest.approx(0.1)
    assert metrics["train/lr-Adam/pg1"] == pytest.approx(0.001)
    assert metrics["train/lr-Adam/pg2"] == pytest.approx(0.01)
    assert "train/grad_norm" in metrics
    assert "train/loss" not in metrics  # the module returned no loss: nothing is invented


def test_lr_names_match_lightnings_learning_rate_monitor(uri: str) -> None:
    logger = MLFlowLogger(experiment_name="lrmon", tracking_uri=uri)
    lr_monitor = LearningRateMonitor(logging_interval="step")
    _trainer(logger, steps=4, every=1, callbacks=[lr_monitor]).fit(ManualTwoOptimizers())
    metrics = MlflowClient(uri).get_run(logger.run_id).data.metrics
    lightning_names = {k for k in metrics if k.startswith("lr-")}
    assert lightning_names == {"lr-SGD", "lr-Adam/pg1", "lr-Adam/pg2"}
    # with Lightning's own monitor present rle leaves the LR to it: no second copy
    assert not [k for k in metrics if k.startswith("train/lr")]


def test_mlflows_own_system_metrics_monitor_keeps_its_keys(uri: str) -> None:
    mlflow.set_tracking_uri(uri)
    mlflow.set_system_metrics_sampling_interval(3600)  # the monitor writes nothing in this test
    try:
        with mlflow.start_run(log_system_metrics=True) as active:
            _trainer(False, steps=4, every=1).fit(TinyModule(step_sleep_s=0.06))
        run_id = active.info.run_id
    finally:
        mlflow.set_system_metrics_sampling_interval(None)
        mlflow.set_tracking_uri(None)
    run = MlflowClient(uri).get_run(run_id)
    assert run.data.tags["telemetry.mlflow_system_metrics"].startswith("on")
    # keys MLflow's monitor writes are left to it; rle's other keys are there
    assert "system/cpu_utilization_percentage" not in run.data.metrics
    assert "system/gpu_0_utilization_percentage" not in run.data.metrics
    assert "system/rank_0/process_cpu_percentage" in run.data.metrics
    assert "system/gpu_0_temperature_celsius" in run.data.metrics
