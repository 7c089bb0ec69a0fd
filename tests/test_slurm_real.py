"""SLURM for real: ``srun --nodes=1 --ntasks=2`` under a single-host slurmctld + slurmd is one run.

The fixture starts Debian's ``slurm-wlm`` daemons on localhost (installing the package as root
with apt if it is missing; see :mod:`support.slurm`), so the two tasks carry every variable a real
``srun`` sets and Lightning's SLURMEnvironment, not a hand-made environment, makes them one job.
Where Slurm cannot be installed or started the test is skipped with the reason.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

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


def test_srun_two_tasks_under_a_real_slurmctld_is_one_run(
    slurm: SlurmCluster, tmp_path: Path
) -> None:
    env = {**run_env(tmp_path), "SLURM_CONF": str(slurm.conf), "MASTER_PORT": str(free_port())}
    cmd = [
        slurm.tools["srun"],
        "--nodes=1",
        "--ntasks-per-node=2",
        "--cpus-per-task=1",
        "--job-name=rle-slurm-test",
        f"--chdir={tmp_path}",
        "--kill-on-bad-exit=1",
        sys.executable,
        "-m",
        "rle.train",
        *ARGS,
    ]
    log = tmp_path / "srun.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
    try:
        code = proc.wait(timeout=TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()  # srun's end cancels the step; the fixture cancels whatever is left
            proc.wait(timeout=30)
    assert code == 0, log.read_text()[-4000:] + "\n" + slurm.logs()

    run = one_finished_run(tmp_path, ranks=2)
    tags = run.data.tags
    assert tags["rle.launcher"] == "slurm"  # Lightning's SLURMEnvironment was detected
    assert tags["trainer.strategy"] == "ddp"
    assert tags["trainer.devices"] == "2"  # from SLURM_NTASKS: no trainer.devices given
    assert tags["trainer.num_nodes"] == "1"
