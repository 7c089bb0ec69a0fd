"""Against a real ``mlflow server``: an outage mid-run, a server gone for good, concurrent jobs, secrets.

Every point the training loop hands to the logger is counted (a wrapper around
``MLflowRunLogger.log_metrics``) and must be in the store exactly once at the end.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
import os
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient
from omegaconf import DictConfig

from rle.sync import main as sync_main
from rle.tracking import logger as logger_mod
from rle.train import run_training
from support.mlflow_server import MlflowServer, TcpProxy, train_job

# Issue 15: CI runs the server tests twice (tests/conftest.py: attempt). Not the four concurrent
# jobs (~35 s a run on 2 cores): concurrency is repeated by test_postgres.py and the importer
# race tests, and a second run would push `make test` past its time budget.
REPEATED = pytest.mark.usefixtures("attempt")

SLOW_SYNTHETIC = (
    "workload=synthetic_cpu",
    "workload.intensity=0.05",
    "workload.period_s=0.1",
    "workload.workers=1",
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
    "telemetry=fake",
    "telemetry.sample_hz=10",
    "tracking.flush_interval_s=0.25",
)
"""A job of about 0.1 s per step that mostly sleeps (the machine has 2 cores)."""

TRAIN_KEYS = (
    "train/loss",
    "train/grad_norm",
    "train/lr-AdamW/pg1",
    "train/lr-AdamW/pg2",
    "train/samples_per_second",
    "train/tokens_per_second",
)

TINY = (
    "workload=distilgpt2_tiny",
    "trainer.accelerator=cpu",
    "trainer.max_steps=3",
    "trainer.enable_progress_bar=false",
    "data.block_size=32",
    "data.batch_size=2",
    "data.tokenizer_vocab_size=300",
    "telemetry=fake",
    "telemetry.sample_hz=10",
)


@pytest.fixture(autouse=True)
def _fast_http(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", f"server-{uuid.uuid4().hex[:8]}")


class PointCounter:
    """Counts what the training loop hands to ``MLflowRunLogger.log_metrics``, per key."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.points: dict[str, list[int]] = {}
        original = logger_mod.MLflowRunLogger.log_metrics

        def counting(logger: Any, metrics: Any, step: int | None = None) -> None:
            for k in metrics:
                self.points.setdefault(k, []).append(int(step or 0))
            original(logger, metrics, step=step)

        monkeypatch.setattr(logger_mod.MLflowRunLogger, "log_metrics", counting)

    @property
    def total(self) -> int:
        return sum(len(v) for v in self.points.values())


def _stored(client: MlflowClient, run_id: str) -> dict[str, list[int]]:
    keys = client.get_run(run_id).data.metrics
    return {k: sorted(m.step for m in client.get_metric_history(run_id, k)) for k in keys}


def _assert_every_point_once(counter: PointCounter, stored: dict[str, list[int]]) -> None:
    assert set(stored) == set(counter.points)
    for key, steps in counter.points.items():
        assert stored[key] == sorted(steps), key  # each logged point once, none missing
    assert sum(len(v) for v in stored.values()) == counter.total


@REPEATED
@pytest.mark.slow
def test_server_stopped_mid_run_and_restarted_loses_nothing(
    own_mlflow_server: MlflowServer,
    compose_cfg: Callable[..., DictConfig],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = own_mlflow_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    counter = PointCounter(monkeypatch)
    outage: dict[str, float] = {}

    def stop_and_restart() -> None:
        # wait until the run has sent a few steps, then take the server away for a while
        client = MlflowClient(server.uri)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
            if runs and len(client.get_metric_history(runs[0].info.run_id, "train/loss")) >= 5:
                break
            time.sleep(0.2)
        outage["steps_before"] = float(len(counter.points.get("train/loss", [])))
        server.stop()
        outage["stopped"] = time.monotonic()
        time.sleep(2.0)
        server.start()
        outage["restarted"] = time.monotonic()
        outage["steps_at_restart"] = float(len(counter.points.get("train/loss", [])))

    helper = threading.Thread(target=stop_and_restart, daemon=True)
    helper.start()
    result = run_training(
        compose_cfg(*SLOW_SYNTHETIC, "trainer.max_steps=200", "tracking.drain_timeout_s=120")
    )
    helper.join(120)
    assert server.starts == 2, "the server was never restarted"
    assert result.status == "FINISHED"
    assert 5 <= outage["steps_before"] < 200  # stopped in the middle of training
    print(outage)
    # training went on while the server was away (the logger never waits for the network); that
    # the sender got through again shows in the store below: every step, each point once
    assert outage["steps_at_restart"] > outage["steps_before"]

    client = MlflowClient(server.uri)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    stored = _stored(client, result.run_id)
    assert stored["train/loss"] == list(range(200))
    _assert_every_point_once(counter, stored)
    arts = {a.path for a in client.list_artifacts(result.run_id, "telemetry")}
    assert "telemetry/samples" in arts  # events.jsonl only when there were events
    assert [a.path for a in client.list_artifacts(result.run_id, "config")] == ["config/train.yaml"]
    spool = Path(os.environ["RLE_PROJECT_ROOT"]) / "outputs" / "spool" / result.run_id
    assert not spool.exists()  # drained: nothing left to replay


@REPEATED
@pytest.mark.slow
def test_server_gone_for_the_whole_run_then_sync_replays_it_all(
    mlflow_server: MlflowServer,
    tiny_cfg: Callable[..., DictConfig],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # the run reaches the server through a proxy, which goes away right after the run is created
    proxy = TcpProxy(mlflow_server.port).start()
    try:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", proxy.uri)
        original = logger_mod.create_run

        def create_then_cut(*args: Any, **kwargs: Any) -> tuple[str, str]:
            ids = original(*args, **kwargs)
            proxy.stop()
            return ids

        monkeypatch.setattr(logger_mod, "create_run", create_then_cut)
        counter = PointCounter(monkeypatch)
        t0 = time.monotonic()
        result = run_training(tiny_cfg("tracking.drain_timeout_s=2"))
        assert time.monotonic() - t0 < 60  # an absent server does not hold the job up
    finally:
        proxy.stop()
    assert result.status == "FINISHED"
    assert not result.drained  # the job knows the store did not get everything
    spool = Path(os.environ["RLE_PROJECT_ROOT"]) / "outputs" / "spool" / result.run_id
    assert result.spool_dir == str(spool)
    assert f"python -m rle.sync {spool}" in caplog.text
    client = MlflowClient(mlflow_server.uri)
    assert client.get_run(result.run_id).info.status == "RUNNING"  # its status is spooled too
    assert not client.get_run(result.run_id).data.metrics

    assert sync_main([str(spool), "--tracking-uri", mlflow_server.uri]) == 0
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["trainer.max_steps"] == "3"
    assert run.data.tags["trainer.strategy"]
    stored = _stored(client, result.run_id)
    assert stored["train/loss"] == [0, 1, 2]
    _assert_every_point_once(counter, stored)
    assert [a.path for a in client.list_artifacts(result.run_id, "config")] == ["config/train.yaml"]

    # replaying again, even forcing every batch out again, adds nothing
    assert sync_main([str(spool), "--tracking-uri", mlflow_server.uri]) == 0
    assert sync_main([str(spool), "--tracking-uri", mlflow_server.uri, "--force"]) == 0
    _assert_every_point_once(counter, _stored(client, result.run_id))


@pytest.fixture(scope="module")
def job_context() -> multiprocessing.context.BaseContext:
    """Worker processes forked from a server that has imported the training stack once."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(
        ["torch", "lightning", "transformers", "mlflow", "rle.train", "support.mlflow_server"]
    )
    return ctx


@pytest.mark.slow
@pytest.mark.parametrize("store", ["sqlite", "server"])
def test_four_concurrent_jobs_into_one_store_keep_all_their_points(
    store: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    job_context: multiprocessing.context.BaseContext,
) -> None:
    env = {
        "RLE_PROJECT_ROOT": str(tmp_path / "shared"),
        "MLFLOW_EXPERIMENT_NAME": os.environ["MLFLOW_EXPERIMENT_NAME"],
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "HF_HUB_OFFLINE": "1",
    }
    if store == "server":
        server: MlflowServer = request.getfixturevalue("mlflow_server")
        env["MLFLOW_TRACKING_URI"] = uri = server.uri
    else:  # a new SQLite file: the four jobs also race to create its schema
        uri = "sqlite:///" + (tmp_path / "shared" / "mlruns" / "mlflow.db").as_posix()
    jobs = [
        job_context.Process(  # type: ignore[attr-defined]
            target=train_job,
            args=([*TINY, "trainer.max_steps=4", f"seed={i}", f"run_name=job{i}"], env),
        )
        for i in range(4)
    ]
    for j in jobs:
        j.start()
    try:
        for j in jobs:
            j.join(240)
    finally:
        for j in jobs:
            if j.is_alive():
                j.kill()
                j.join()
    assert [j.exitcode for j in jobs] == [0, 0, 0, 0]
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(os.environ["MLFLOW_EXPERIMENT_NAME"])
    runs = client.search_runs([exp.experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["job0", "job1", "job2", "job3"]
    for r in runs:
        assert r.info.status == "FINISHED"
        stored = _stored(client, r.info.run_id)
        for key in TRAIN_KEYS:
            assert stored[key] == [0, 1, 2, 3], (r.info.run_name, key)


SECRETS = {
    "MLFLOW_TRACKING_PASSWORD": "pw-Xq7Zr9kL",
    "MLFLOW_TRACKING_TOKEN": "tok-8Hd2mPq4",
    "HF_TOKEN": "hf_sEcReTvAlUe",
    "TEAM_DEPLOY_KEY": "deploy-Ab12Cd",  # secret only through tracking.secret_pattern below
}


@REPEATED
@pytest.mark.parametrize("store", ["sqlite", pytest.param("server", marks=pytest.mark.slow)])
def test_secrets_never_reach_params_tags_or_the_config_artifact(
    store: str,
    request: pytest.FixtureRequest,
    tiny_cfg: Callable[..., DictConfig],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    for k, v in SECRETS.items():
        monkeypatch.setenv(k, v)
    if store == "server":
        server: MlflowServer = request.getfixturevalue("mlflow_server")
        monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    cfg = tiny_cfg(
        "tracking.secret_pattern='(?i)(^|[_.])(token|password|deploy_key)($|[_.])'",
        f"+tracking.tags.note=uses {SECRETS['MLFLOW_TRACKING_TOKEN']}",
        f"+workload.model.api_key={SECRETS['HF_TOKEN']}",
        "+data.deploy_key=whatever",
        f"run_name=run-{SECRETS['TEAM_DEPLOY_KEY']}",
    )
    result = run_training(cfg)
    client = MlflowClient(os.environ.get("MLFLOW_TRACKING_URI") or result.tracking_uri)
    run = client.get_run(result.run_id)
    logged = [
        *run.data.params.items(),
        *run.data.tags.items(),
        run.info.run_name,
        *run.data.metrics,
        Path(
            client.download_artifacts(result.run_id, "config/train.yaml", str(tmp_path))
        ).read_text(),
    ]
    text = repr(logged)
    for name, value in SECRETS.items():
        assert value not in text, name
    assert run.data.params["data.deploy_key"] == "***REDACTED***"
    assert run.data.tags["note"] == "uses ***REDACTED***"
    assert run.data.params["data.tokenizer_vocab_size"] == "300"  # not a secret name
