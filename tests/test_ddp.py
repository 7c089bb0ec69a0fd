"""2-process CPU DDP in this process (gloo, ddp_spawn): one run holding both ranks' data.

``strategy=ddp`` (the default for several devices) re-launches the command line, so it is tested
through the CLI in ``test_launchers.py``; here ``ddp_spawn`` keeps the in-process path tested.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from mlflow import MlflowClient
from omegaconf import DictConfig

from rle.paths import resolve_tracking
from rle.tracking.reader import read_samples
from rle.train import run_training


@pytest.mark.slow
def test_two_process_cpu_ddp_is_one_run_with_both_ranks(
    tiny_cfg: Callable[..., DictConfig],
) -> None:
    result = run_training(
        tiny_cfg(
            "trainer.devices=2",
            "trainer.strategy=ddp_spawn",
            "trainer.max_steps=6",
            "telemetry.sample_hz=10",
            "telemetry.cpu_power=estimated",
        )
    )
    client = MlflowClient(resolve_tracking(None).uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.tags["trainer.strategy"] == "ddp_spawn"
    assert run.data.tags["trainer.devices"] == "2"
    grad_steps = [m.step for m in client.get_metric_history(result.run_id, "train/grad_norm")]
    loss_steps = [m.step for m in client.get_metric_history(result.run_id, "train/loss")]
    assert grad_steps == loss_steps == [0, 1, 2, 3, 4, 5]
    metrics = run.data.metrics
    assert "system/rank_0/process_cpu_percentage" in metrics
    assert "system/rank_1/process_cpu_percentage" in metrics
    for key in [
        k for k in metrics if k.startswith(("system/", "rle/")) and not k.endswith("_mean")
    ]:
        assert set(m.step for m in client.get_metric_history(result.run_id, key)) <= set(
            grad_steps
        ), key
    frame = read_samples(result.run_id, client.tracking_uri)
    assert set(frame["rank"]) == {0, 1}
    assert run.data.tags["power_source.cpu"] == "estimated"
