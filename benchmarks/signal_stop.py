"""Seconds from SIGTERM/SIGINT to exit for a 2-rank job, and whether every rank stopped together.

Issue 15: a signal to the main PID or to the process group must end training "within a few
seconds" under ``ddp``, ``ddp_spawn`` and torchrun, every rank at the same step, the run KILLED
once, with no metric point after its end time. For each launcher and target this starts
``python -m rle.train`` (2 CPU ranks, the synthetic workload, a fake GPU per rank) in its own
process group and SQLite store, waits for ``--steps`` logged steps, sends the signal, and prints
one table row: seconds to exit, exit status, run status, each rank's stop step (its closing
sample's ``global_step``), points after the run's end time and processes left over::

    python benchmarks/signal_stop.py                 # every case, SIGTERM
    python benchmarks/signal_stop.py --signal INT --cases ddp-group
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from mlflow import MlflowClient  # noqa: E402

from rle.tracking.reader import read_samples  # noqa: E402
from support.jobs import DDP_JOB, TORCHRUN, Job  # noqa: E402

LAUNCHERS = {
    "ddp": (None, "trainer.strategy=ddp"),
    "spawn": (None, "trainer.strategy=ddp_spawn"),
    "torchrun": ((*TORCHRUN, "-m", "rle.train"), "trainer.strategy=ddp"),
}
CASES = [f"{launcher}-{target}" for launcher in LAUNCHERS for target in ("main", "group")]


def _one(case: str, signum: int, steps: int, root: Path) -> str:
    launcher, target = case.split("-")
    argv, strategy = LAUNCHERS[launcher]
    job = Job(root / case, (*DDP_JOB, strategy), argv)
    try:
        run_id, _ = job.wait_for_steps(steps, timeout_s=300.0)
    except AssertionError:
        job.stop()
        return f"| {case} | - | no {steps} steps (see {job.log}) | | | | |"
    t0 = time.monotonic()
    if target == "group":
        os.killpg(job.proc.pid, signum)
    else:
        job.proc.send_signal(signum)
    try:
        rc: int | str = job.proc.wait(120)
    except subprocess.TimeoutExpired:
        rc = "no exit in 120 s"
    exit_s = time.monotonic() - t0
    time.sleep(2.0)
    left = job.group_alive()
    job.stop()
    client = MlflowClient(job.uri)
    run = client.get_run(run_id)
    end_ms = run.info.end_time or 0
    late = sum(
        sum(m.timestamp > end_ms for m in client.get_metric_history(run_id, key))
        for key in run.data.metrics
    )
    frame = read_samples(run_id, job.uri)
    stops = "-" if frame is None else str(frame.groupby("rank")["global_step"].max().to_dict())
    return (
        f"| {case} | {exit_s:.1f} | {rc} | {run.info.status} | {stops} | {late} | "
        f"{'yes' if left else 'none'} |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--signal", default="TERM", choices=["TERM", "INT"])
    parser.add_argument("--cases", nargs="+", default=CASES, choices=CASES)
    parser.add_argument("--steps", type=int, default=20, help="logged steps before the signal")
    args = parser.parse_args()
    signum = int(getattr(signal, f"SIG{args.signal}"))
    print(f"SIG{args.signal} after {args.steps} logged steps")  # noqa: T201
    print(  # noqa: T201
        "| case | exit after signal (s) | exit status | run status | stop step per rank "
        "| points after end_time | processes left |"
    )
    print("|---|---|---|---|---|---|---|")  # noqa: T201
    for case in args.cases:
        with tempfile.TemporaryDirectory(prefix=f"rle-signal-{case}-") as tmp:
            print(_one(case, signum, args.steps, Path(tmp)), flush=True)  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
