"""Real SLURM: ``srun --nodes=1 --ntasks-per-node=2`` under a local slurmctld + slurmd is one run.

The fixture starts Debian's ``slurm-wlm`` daemons on localhost (installing the package as root
with apt if it is missing; see :mod:`support.slurm`), so the two tasks carry every variable a real
``srun`` sets and Lightning's SLURMEnvironment, not a hand-made environment, makes them one job.
Plain ``--ntasks=2``, which Lightning does not support, is refused by every task. Where Slurm
cannot be installed or started the tests are skipped with the reason.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from support.launchers import ARGS, TIMEOUT_S, one_finished_run, run_env
from support.mlflow_server import free_port
from support.slurm import SlurmCluster, SlurmUnavailable, ensure_slurm

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def slurm() -> Iterator[SlurmCluster]:
    """A running single-node cluster for this module; skipped (with why) where there can be none."""
    try:
        cluster = SlurmCluster(ensure_slurm(install_timeout_s=300)).start()
    except SlurmUnavailable as exc:
        pytest.skip(f"no real Slurm on this machine: {exc}")
    try:
        yield cluster
    finally:
        cluster.stop()


def _srun(slurm: SlurmCluster, root: Path, *tasks: str) -> tuple[int, str]:
    """``srun --nodes=1 <tasks> rle.train ARGS`` on the cluster: its exit code and output's end."""
    env = {**run_env(root), "SLURM_CONF": str(slurm.conf), "MASTER_PORT": str(free_port())}
    cmd = [slurm.tools["srun"], "--nodes=1", *tasks, "--cpus-per-task=1",
           "--job-name=rle-slurm-test", f"--chdir={root}",
           sys.executable, "-m", "rle.train", *ARGS]  # fmt: skip
    log = root / "srun.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=root, stdout=out, stderr=subprocess.STDOUT)
    try:
        code = proc.wait(timeout=TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()  # srun's end cancels the step; the fixture cancels whatever is left
            proc.wait(timeout=30)
    return code, log.read_text()[-4000:] + "\n" + slurm.logs()


def test_srun_two_tasks_under_a_real_slurmctld_is_one_run(
    slurm: SlurmCluster, tmp_path: Path
) -> None:
    code, output = _srun(slurm, tmp_path, "--ntasks-per-node=2")
    assert code == 0, output

    run = one_finished_run(tmp_path, ranks=2)
    tags = run.data.tags
    assert tags["rle.launcher"] == "slurm"  # Lightning's SLURMEnvironment was detected
    assert tags["trainer.strategy"] == "ddp"
    assert tags["trainer.devices"] == "2"  # from SLURM_NTASKS_PER_NODE: no trainer.devices given
    assert tags["trainer.num_nodes"] == "1"


def test_srun_ntasks_without_per_node_is_refused_and_leaves_no_running_run(
    slurm: SlurmCluster, tmp_path: Path
) -> None:
    # Lightning's SLURMEnvironment requires --ntasks-per-node (plain --ntasks sets no
    # SLURM_NTASKS_PER_NODE): every task refuses it as a configuration error (exit 2, which srun
    # passes on) before a run could be left RUNNING.
    code, output = _srun(slurm, tmp_path, "--ntasks=2")
    assert code == 2, output
    db = tmp_path / "mlruns" / "mlflow.db"
    if db.exists():
        client = MlflowClient(f"sqlite:///{db}")
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
        assert all(r.info.status == "FAILED" for r in runs), [r.info.status for r in runs]
