"""Against an ``mlflow server`` backed by a real PostgreSQL: concurrent training jobs and imports.

The test starts Debian's PostgreSQL on 127.0.0.1 (installing it when absent, see
:mod:`support.postgres`; skipped visibly with the reason when that is impossible), an
``mlflow server`` on it, then 4 ``python -m rle.train`` jobs and 2 ``python -m rle.ingest`` of one
recording, all at once. Each training job counts the points it hands to its logger
(:mod:`support.counting_train`); the store must hold every one of them exactly once, and the two
imports must leave exactly one imported run with every sample.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.entities import ViewType

from rle.tracking import keys
from support import rle_lab_writers as W
from support.mlflow_server import MlflowServer
from support.postgres import PostgresCluster, PostgresUnavailable

pytestmark = pytest.mark.slow

TESTS_DIR = Path(__file__).resolve().parents[1]
STEPS = 30
JOB = (
    "workload=synthetic_cpu",
    "workload.intensity=0.05",
    "workload.period_s=0.1",
    "workload.workers=1",
    "trainer.accelerator=cpu",
    f"trainer.max_steps={STEPS}",
    "trainer.enable_progress_bar=false",
    "telemetry=fake",
    "telemetry.sample_hz=10",
    "tracking.flush_interval_s=0.25",
)
"""A job of about 0.1 s per step that mostly sleeps (the machine may have 2 cores)."""
STEP_KEYS = ("train/loss", "train/grad_norm", "synthetic/intensity_target")
"""Keys logged at every step of the synthetic job."""
SAMPLES = 120
"""Ticks in the imported recording (one GPU and one CPU sample each)."""
JOB_TIMEOUT_S = 420.0


@pytest.fixture(scope="module")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """An ``mlflow server`` (2 workers) whose backend store is a fresh PostgreSQL database."""
    pg = PostgresCluster()
    try:
        pg.start()
    except PostgresUnavailable as e:
        pytest.skip(f"PostgreSQL unavailable: {e}")
    server = MlflowServer(tmp_path_factory.mktemp("pg_mlflow"), backend_store_uri=pg.uri, workers=2)
    try:
        server.start(timeout_s=180)
        yield server
    finally:
        server.stop()
        pg.stop()


def _spawn(cmd: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with log.open("w") as fh:
        return subprocess.Popen(
            cmd,
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=log.parent,
            start_new_session=True,
        )


def _wait_all(procs: dict[str, subprocess.Popen[bytes]], timeout_s: float) -> dict[str, int]:
    """Exit codes of every process; kill the rest and fail when ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    codes: dict[str, int] = {}
    for name, p in procs.items():
        try:
            codes[name] = p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pytest.fail(f"{name} did not finish within {timeout_s:.0f} s")
    return codes


def _kill_all(procs: dict[str, subprocess.Popen[bytes]]) -> None:
    for p in procs.values():
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(30)


def _stored(client: MlflowClient, run_id: str) -> dict[str, list[int]]:
    keys_ = client.get_run(run_id).data.metrics
    return {k: sorted(m.step for m in client.get_metric_history(run_id, k)) for k in keys_}


def test_four_training_jobs_and_two_imports_at_once_deliver_every_point(
    pg_server: MlflowServer, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    train_exp, import_exp = f"pg-train-{tag}", f"pg-import-{tag}"
    recording = W.write_lines(
        tmp_path / "rle_20251028_08.csv", [W.header("v03"), *W.v03_lines(SAMPLES, seed=3)]
    )
    base_env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": pg_server.uri,
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS_DIR), os.environ.get("PYTHONPATH")])),
    }
    procs: dict[str, subprocess.Popen[bytes]] = {}
    t0 = time.monotonic()
    try:
        for i in range(4):
            root = tmp_path / f"job{i}"
            root.mkdir()
            env = {
                **base_env,
                "RLE_PROJECT_ROOT": str(root),
                "MLFLOW_EXPERIMENT_NAME": train_exp,
                "RLE_POINTS_FILE": str(root / "points.json"),
            }
            procs[f"job{i}"] = _spawn(
                [
                    sys.executable,
                    "-m",
                    "support.counting_train",
                    *JOB,
                    f"seed={i}",
                    f"run_name=job{i}",
                ],
                root / "train.log",
                env,
            )
        for i in range(2):
            root = tmp_path / f"import{i}"
            root.mkdir()
            procs[f"import{i}"] = _spawn(
                [sys.executable, "-m", "rle.ingest", str(recording), "--experiment", import_exp],
                root / "ingest.log",
                {**base_env, "RLE_PROJECT_ROOT": str(root)},
            )
        codes = _wait_all(procs, JOB_TIMEOUT_S)
    finally:
        _kill_all(procs)
    elapsed = time.monotonic() - t0
    for name, code in codes.items():
        log_text = "".join(f.read_text()[-3000:] for f in (tmp_path / name).glob("*.log"))
        assert code == 0, f"{name} exited {code}:\n{log_text}"
    print(f"4 training jobs + 2 imports against PostgreSQL: {elapsed:.0f} s")

    client = MlflowClient(pg_server.uri)
    # ---- training: 4 runs, FINISHED, every point each job logged exactly once
    exp = client.get_experiment_by_name(train_exp)
    runs = client.search_runs([exp.experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["job0", "job1", "job2", "job3"]
    total = 0
    for run in runs:
        name = run.info.run_name
        assert run.info.status == "FINISHED", name
        logged = json.loads((tmp_path / name / "points.json").read_text())
        stored = _stored(client, run.info.run_id)
        assert set(stored) == set(logged), name
        for key, steps in logged.items():
            assert stored[key] == sorted(steps), (name, key)  # each point once, none missing
        for key in STEP_KEYS:
            assert stored[key] == list(range(STEPS)), (name, key)
        total += sum(len(v) for v in stored.values())
        assert not (tmp_path / name / "outputs" / "spool" / run.info.run_id).exists(), name

    # ---- imports: one run of the recording, the other import reused it; every sample there
    iexp = client.get_experiment_by_name(import_exp)
    imported = client.search_runs([iexp.experiment_id])
    assert len(imported) == 1, [(r.info.run_id, r.info.status) for r in imported]
    run = imported[0]
    assert run.info.status == "FINISHED"
    assert run.data.tags[keys.TAG_CONTENT_SHA256]
    stored = _stored(client, run.info.run_id)
    sample_keys = [k for k in stored if k.startswith(("system/", "rle/"))]
    assert "system/gpu_0_utilization_percentage" in sample_keys
    assert "system/cpu_utilization_percentage" in sample_keys
    for key in sample_keys:
        assert stored[key] == list(range(SAMPLES)), key
    # a duplicate the losing import created, if any, was deleted, never left FINISHED
    every = client.search_runs([iexp.experiment_id], run_view_type=ViewType.ALL)
    assert [r.info.run_id for r in every if r.info.lifecycle_stage == "active"] == [run.info.run_id]
    print(f"{len(runs)} training runs, {total} metric points; {len(every)} import run(s) made")
