"""A training job in its own process group and SQLite store, watched from outside (signal tests).

``tests/test_signals.py`` (one process) and ``tests/test_signals_ddp.py`` (two ranks under
``ddp``, ``ddp_spawn`` and torchrun) start jobs with :class:`Job`, wait for their first steps in
the store and signal them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from mlflow import MlflowClient

from rle.tracking.logger import ensure_store
from support.mlflow_server import free_port

__all__ = ["DDP_JOB", "EXPERIMENT", "TORCHRUN", "Job", "loss_steps"]

EXPERIMENT = "signals"

DDP_JOB = (
    "workload=synthetic_cpu",
    "workload.intensity=0.1",
    "workload.period_s=0.1",
    "workload.workers=1",
    "trainer.accelerator=cpu",
    "trainer.devices=2",
    "trainer.max_steps=2000",  # minutes: always still training when the signal comes
    "trainer.enable_progress_bar=false",
    "telemetry=fake",
    "telemetry.sample_hz=10",
    "tracking.flush_interval_s=0.5",
)
"""A 2-rank synthetic job (~10 steps/s, a fake GPU per rank) for the DDP signal test and benchmark;
add the strategy (``trainer.strategy=ddp`` or ``ddp_spawn``)."""
TORCHRUN = (sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2")
"""torchrun with 2 local workers; add ``-m rle.train`` and the overrides."""

_DISTRIBUTED = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "NODE_RANK",
                "GROUP_RANK", "LOCAL_WORLD_SIZE")  # fmt: skip
"""Rendezvous variables a job must not inherit: Lightning sets ``MASTER_PORT`` in the test
process when a test trains with DDP in-process, and jobs sharing that port join each other."""
_ports: set[int] = set()


def _own_port() -> int:
    """A free port no other job of this test session got."""
    while (port := free_port()) in _ports:
        pass
    _ports.add(port)
    return port


class Job:
    """``python -m rle.train *args`` (or ``argv`` as given) with its project root at ``root``.

    Args:
        root: A new folder: the job's project root (its store is ``root/mlruns/mlflow.db``).
        args: ``rle.train`` overrides.
        argv: The command before the overrides; default ``python -m rle.train``.
    """

    def __init__(self, root: Path, args: Sequence[str], argv: Sequence[str] | None = None) -> None:
        self.root = root
        self.uri = "sqlite:///" + (root / "mlruns" / "mlflow.db").as_posix()
        self.log = root / "job.log"
        root.mkdir(parents=True)
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("MLFLOW_", "SLURM_", "TORCHELASTIC_")) and k not in _DISTRIBUTED
        }
        env.update(
            MASTER_PORT=str(_own_port()),  # each job its own rendezvous (ddp, ddp_spawn)
            RLE_PROJECT_ROOT=str(root),
            MLFLOW_EXPERIMENT_NAME=EXPERIMENT,
            HF_HUB_OFFLINE="1",
            PYTHONUNBUFFERED="1",
        )
        cmd = [*(argv or (sys.executable, "-m", "rle.train")), *args]
        with self.log.open("w") as fh:
            self.proc = subprocess.Popen(
                cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )

    def run_id(self) -> str | None:
        if not (self.root / "mlruns" / "mlflow.db").exists():
            return None
        try:
            # opening a store that the job is creating would race its schema migration: take
            # the same lock the job takes (rle.tracking.logger.ensure_store)
            ensure_store(self.uri)
            client = MlflowClient(self.uri)
            exp = client.get_experiment_by_name(EXPERIMENT)
            runs = client.search_runs([exp.experiment_id]) if exp else []
        except Exception:  # the job may be creating the schema right now
            return None
        return runs[0].info.run_id if runs else None

    def wait_for_steps(self, n: int, timeout_s: float = 180.0) -> tuple[str, int]:
        """Wait until the store holds ``n`` steps of train/loss; return (run id, steps seen)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            run_id = self.run_id()
            if run_id:
                steps = len(MlflowClient(self.uri).get_metric_history(run_id, "train/loss"))
                if steps >= n:
                    return run_id, steps
            time.sleep(0.3)
        raise AssertionError(f"no {n} steps within {timeout_s} s:\n{self.log.read_text()[-3000:]}")

    def group_alive(self) -> bool:
        """Whether any process of the job's process group is still there."""
        try:
            os.killpg(self.proc.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # pragma: no cover - a reused id owned by someone else
            return False
        return True

    def stop(self) -> None:
        """SIGKILL the whole group if anything of it is left, and reap the main process."""
        if self.group_alive():
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)


def loss_steps(uri: str, run_id: str) -> list[int]:
    """The sorted steps of the run's ``train/loss`` points."""
    return sorted(m.step for m in MlflowClient(uri).get_metric_history(run_id, "train/loss"))
