"""One MLflow run per job whatever launches it: rle.train alone, strategy=ddp, torchrun, SLURM.

Real processes (gloo on CPU) into a real SQLite store. SLURM here runs as two processes carrying
the environment variables exactly as ``srun --nodes=1 --ntasks-per-node=2`` sets them (named as
such: no slurmctld), which is what Lightning's SLURMEnvironment reads; ``test_slurm_real.py`` runs
the same job through ``srun`` under a real single-host slurmctld + slurmd.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from support.launchers import ARGS, TIMEOUT_S, one_finished_run, run_env
from support.mlflow_server import free_port

pytestmark = pytest.mark.slow


def _torchrun() -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run"]


def _start(cmd: list[str], env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)


def _wait_all(procs: list[subprocess.Popen[bytes]], logs: list[Path]) -> None:
    try:
        for p, log in zip(procs, logs, strict=True):
            assert p.wait(timeout=TIMEOUT_S) == 0, log.read_text()[-4000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()


def test_strategy_ddp_two_cpu_processes_is_one_run(tmp_path: Path) -> None:
    log = tmp_path / "job.log"
    cmd = [sys.executable, "-m", "rle.train", *ARGS, "trainer.devices=2", "trainer.strategy=ddp"]
    _wait_all([_start(cmd, run_env(tmp_path), tmp_path, log)], [log])
    one_finished_run(tmp_path, ranks=2)


def test_torchrun_standalone_two_processes_is_one_run(tmp_path: Path) -> None:
    log = tmp_path / "job.log"
    cmd = [*_torchrun(), "--standalone", "--nproc_per_node=2", "-m", "rle.train", *ARGS]
    _wait_all([_start(cmd, run_env(tmp_path), tmp_path, log)], [log])
    one_finished_run(tmp_path, ranks=2)


def test_torchrun_two_nodes_on_loopback_is_one_run(tmp_path: Path) -> None:
    port = free_port()
    procs, logs = [], []
    for node in (0, 1):
        logs.append(tmp_path / f"node{node}.log")
        cmd = [
            *_torchrun(),
            "--nnodes=2",
            f"--node_rank={node}",
            "--nproc_per_node=1",
            "--master_addr=127.0.0.1",
            f"--master_port={port}",
            "-m",
            "rle.train",
            *ARGS,
        ]
        procs.append(_start(cmd, run_env(tmp_path), tmp_path, logs[-1]))
    _wait_all(procs, logs)
    one_finished_run(tmp_path, ranks=2, nodes=2)


def test_slurm_srun_environment_two_tasks_is_one_run(tmp_path: Path) -> None:
    job_id = str(40000 + free_port() % 1000)
    master_port = str(free_port())
    procs, logs = [], []
    for task in (0, 1):
        env = run_env(tmp_path)
        env.update(  # `srun --nodes=1 --ntasks-per-node=2` sets these per task (and more)
            SLURM_JOB_ID=job_id,
            SLURM_JOB_NAME="rle-test",
            SLURM_NTASKS="2",
            SLURM_NTASKS_PER_NODE="2",
            SLURM_NNODES="1",
            SLURM_NODEID="0",
            SLURM_PROCID=str(task),
            SLURM_LOCALID=str(task),
            SLURM_NODELIST="127.0.0.1",
            SLURM_STEP_NUM_TASKS="2",
        )
        env["MASTER_PORT"] = master_port
        logs.append(tmp_path / f"task{task}.log")
        cmd = [sys.executable, "-m", "rle.train", *ARGS]
        procs.append(_start(cmd, env, tmp_path, logs[-1]))
    _wait_all(procs, logs)
    one_finished_run(tmp_path, ranks=2)


def test_sigterm_while_waiting_for_peers_exits_promptly_and_ends_the_run(tmp_path: Path) -> None:
    env = run_env(tmp_path)
    env.update(NODE_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    log = tmp_path / "job.log"
    cmd = [
        sys.executable,
        "-m",
        "rle.train",
        *ARGS,
        "trainer.num_nodes=2",
        "launch.rendezvous_timeout_s=600",
    ]
    proc = _start(cmd, env, tmp_path, log)
    db = tmp_path / "mlruns" / "mlflow.db"
    deadline = time.monotonic() + 120
    client = MlflowClient(f"sqlite:///{db}")
    while time.monotonic() < deadline:  # until the run exists (the rendezvous comes next)
        if db.exists() and any(
            client.search_runs([e.experiment_id for e in client.search_experiments()])
        ):
            break
        time.sleep(0.5)
    time.sleep(3)
    proc.send_signal(signal.SIGTERM)
    try:
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM, log.read_text()[-3000:]
    finally:
        proc.kill()
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [r.info.status for r in runs] == ["KILLED"]


def test_rendezvous_that_cannot_complete_fails_within_the_timeout(tmp_path: Path) -> None:
    env = run_env(tmp_path)
    env.update(NODE_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    cmd = [
        sys.executable,
        "-m",
        "rle.train",
        *ARGS,
        "trainer.num_nodes=2",
        "launch.rendezvous_timeout_s=5",
    ]
    out = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert out.returncode != 0
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [r.info.status for r in runs] == ["FAILED"]


def test_the_callback_in_a_users_own_torchrun_script_is_one_run(tmp_path: Path) -> None:
    log = tmp_path / "job.log"
    script = Path(__file__).resolve().parents[1] / "examples" / "own_training.py"
    cmd = [*_torchrun(), "--standalone", "--nproc_per_node=2", str(script), "--devices", "2",
           "--max-steps", "10"]  # fmt: skip
    _wait_all([_start(cmd, run_env(tmp_path), tmp_path, log)], [log])
    one_finished_run(tmp_path, ranks=2)


def test_a_users_own_module_runs_under_rle_train_from_its_config_dir(tmp_path: Path) -> None:
    examples = Path(__file__).resolve().parents[1] / "examples"
    cmd = [sys.executable, "-m", "rle.train", "--config-dir", "conf", "workload=regression",
           "trainer.max_steps=3", "trainer.enable_progress_bar=false", "telemetry=cpu_only"]  # fmt: skip
    out = subprocess.run(
        cmd, cwd=examples, env=run_env(tmp_path), capture_output=True, text=True, timeout=TIMEOUT_S
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.info.status == "FINISHED"
    assert run.data.tags["workload"] == "regression"
    # the module logs train/loss itself; rle adds grad_norm and the hardware on the same steps
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == [0, 1, 2]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/grad_norm")] == [
        0,
        1,
        2,
    ]
