"""run_training end to end on a tiny GPT-2 into a temporary SQLite store, and the CLI's errors."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from mlflow import MlflowClient
from omegaconf import DictConfig

from rle.errors import ConfigError, DataError
from rle.paths import resolve_tracking
from rle.train import run_training

TRAIN_KEYS = {
    "train/loss",
    "train/grad_norm",
    "train/lr-AdamW/pg1",
    "train/lr-AdamW/pg2",
    "train/samples_per_second",
    "train/tokens_per_second",
}


def _client() -> MlflowClient:
    return MlflowClient(resolve_tracking(None).uri)


def _all_runs(client: MlflowClient) -> list:
    exps = client.search_experiments()
    return client.search_runs([e.experiment_id for e in exps])


def test_tiny_run_is_one_finished_run_with_metrics_params_and_config(
    tiny_cfg: Callable[..., DictConfig],
) -> None:
    result = run_training(tiny_cfg("trainer.max_steps=4"))
    client = _client()
    runs = _all_runs(client)
    assert len(runs) == 1
    run = runs[0]
    assert run.info.run_id == result.run_id
    assert run.info.status == "FINISHED" == result.status
    assert result.global_step == 4
    assert set(run.data.metrics) >= TRAIN_KEYS
    for key in TRAIN_KEYS:
        assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [0, 1, 2, 3], (
            key
        )
    assert run.data.params["trainer.max_steps"] == "4"
    assert run.data.params["workload.model.n_layer"] == "2"
    assert int(run.data.params["model.n_parameters"]) > 0
    tags = run.data.tags
    assert tags["workload"] == "distilgpt2_tiny"
    assert tags["model.init"] == "random"
    assert tags["tokenizer"] == "trained_local"
    assert len(tags["mlflow.source.git.commit"]) == 40
    for t in ("host", "torch.version", "lightning.version", "mlflow.version", "device.cpu"):
        assert tags[t]
    # MLflow's standard run context (the UI's User and Source columns)
    for t in ("mlflow.user", "mlflow.source.name", "mlflow.source.type"):
        assert tags[t]
    assert [a.path for a in client.list_artifacts(run.info.run_id, "config")] == [
        "config/train.yaml"
    ]
    losses = [m.value for m in client.get_metric_history(run.info.run_id, "train/loss")]
    assert all(v > 0 for v in losses)


def test_log_every_n_steps_sets_the_cadence(tiny_cfg: Callable[..., DictConfig]) -> None:
    result = run_training(tiny_cfg("trainer.max_steps=6", "trainer.log_every_n_steps=3"))
    steps = [m.step for m in _client().get_metric_history(result.run_id, "train/grad_norm")]
    assert steps == [2, 5]


def test_grad_norm_is_measured_before_clipping(tiny_cfg: Callable[..., DictConfig]) -> None:
    result = run_training(tiny_cfg("trainer.gradient_clip_val=1.0e-6", "trainer.max_steps=2"))
    norms = [m.value for m in _client().get_metric_history(result.run_id, "train/grad_norm")]
    assert all(n > 1e-3 for n in norms)  # clipped norms would be 1e-6


def test_failing_training_ends_failed_with_traceback(
    tiny_cfg: Callable[..., DictConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    from rle.workloads.distilgpt2 import DistilGPT2Module

    def boom(self: DistilGPT2Module, batch: dict, batch_idx: int) -> None:
        raise RuntimeError("injected failure")

    monkeypatch.setattr(DistilGPT2Module, "training_step", boom)
    with pytest.raises(RuntimeError, match="injected failure"):
        run_training(tiny_cfg())
    client = _client()
    (run,) = _all_runs(client)
    assert run.info.status == "FAILED"
    local = client.download_artifacts(run.info.run_id, "error/traceback.txt")
    assert "injected failure" in Path(local).read_text()


def test_too_many_devices_says_so(tiny_cfg: Callable[..., DictConfig]) -> None:
    n = (os.cpu_count() or 1) + 1
    with pytest.raises(ConfigError, match=f"trainer.devices={n} but this machine offers"):
        run_training(tiny_cfg(f"trainer.devices={n}"))
    assert not _all_runs(_client())  # nothing was started


def test_missing_data_file_is_a_clear_error(
    tiny_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    with pytest.raises(DataError, match="does not exist"):
        run_training(tiny_cfg(f"data.path={tmp_path / 'missing.jsonl'}"))


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rle.train", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_cli_unknown_workload_lists_choices() -> None:
    out = _cli("workload=gpt9")
    assert out.returncode != 0
    assert "distilgpt2_tiny" in out.stderr
    assert "workload" in out.stderr


def test_cli_unknown_key_lists_valid_keys() -> None:
    out = _cli("trainer.devicez=2")
    assert out.returncode != 0
    assert "trainer.devicez" in out.stderr
    assert "devices" in out.stderr  # the valid keys of trainer
    assert "max_steps" in out.stderr


def test_cli_unreachable_server_fails_fast_with_uri() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    out = _cli("workload=distilgpt2_tiny", env={"MLFLOW_TRACKING_URI": uri})
    assert out.returncode != 0
    assert f"Cannot reach the MLflow tracking server at {uri}" in out.stdout + out.stderr
    assert "Trainer.fit" not in out.stdout + out.stderr


def test_telemetry_tags_and_no_metric_for_missing_sensors(
    tiny_cfg: Callable[..., DictConfig],
) -> None:
    result = run_training(tiny_cfg("telemetry.sample_hz=10"))
    run = _client().get_run(result.run_id)
    tags = run.data.tags
    assert tags["telemetry.sources"]
    assert tags["power_source.cpu"] in {"none", "rapl"}
    if tags["power_source.cpu"] == "none":  # this machine: no RAPL, so no CPU power and no CPU RLE
        assert not [
            k for k in run.data.metrics if k.startswith(("rle/cpu/", "system/cpu_package_power"))
        ]
        assert "rle.cpu.absent" in tags


def test_telemetry_none_logs_train_metrics_only(tiny_cfg: Callable[..., DictConfig]) -> None:
    result = run_training(tiny_cfg("telemetry=none"))
    metrics = _client().get_run(result.run_id).data.metrics
    assert set(metrics) >= TRAIN_KEYS
    assert not [k for k in metrics if k.startswith(("system/", "rle/"))]
