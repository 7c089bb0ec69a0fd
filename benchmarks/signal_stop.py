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

from mlflow import MlflowClient

from rle.tracking.reader import read_samples

JOB = (
    "workload=synthetic_cpu",
    "workload.intensity=0.1",
    "workload.period_s=0.1",
    "workload.workers=1",
    "trainer.accelerator=cpu",
    "trainer.devices=2",
    "trainer.max_steps=2000",
    "trainer.enable_progress_bar=false",
    "telemetry=fake",
    "telemetry.sample_hz=10",
    "tracking.flush_interval_s=0.5",
)
TORCHRUN = (sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2")
LAUNCHERS = {
    "ddp": ((sys.executable, "-m", "rle.train"), "trainer.strategy=ddp"),
    "spawn": ((sys.executable, "-m", "rle.train"), "trainer.strategy=ddp_spawn"),
    "torchrun": ((*TORCHRUN, "-m", "rle.train"), "trainer.strategy=ddp"),
}
CASES = [f"{launcher}-{target}" for launcher in LAUNCHERS for target in ("main", "group")]


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _one(case: str, signum: int, steps: int, root: Path) -> str:
    launcher, target = case.split("-")
    argv, strategy = LAUNCHERS[launcher]
    uri = "sqlite:///" + (root / "mlruns" / "mlflow.db").as_posix()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(RLE_PROJECT_ROOT=str(root), MLFLOW_EXPERIMENT_NAME="signals")
    with (root / "job.log").open("w") as log:
        proc = subprocess.Popen(
            [*argv, *JOB, strategy], stdout=log, stderr=subprocess.STDOUT, env=env,
            start_new_session=True,
        )  # fmt: skip
    deadline = time.monotonic() + 300
    run_id = None
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            client = MlflowClient(uri)
            exp = client.get_experiment_by_name("signals")
            runs = client.search_runs([exp.experiment_id]) if exp else []
            if runs and len(client.get_metric_history(runs[0].info.run_id, "train/loss")) >= steps:
                run_id = runs[0].info.run_id
                break
        except Exception:  # the job may be creating the store right now
            pass
        time.sleep(0.3)
    if run_id is None:
        os.killpg(proc.pid, signal.SIGKILL)
        return f"| {case} | - | no {steps} steps (see {root / 'job.log'}) | | | | |"
    t0 = time.monotonic()
    if target == "group":
        os.killpg(proc.pid, signum)
    else:
        proc.send_signal(signum)
    try:
        rc: int | str = proc.wait(120)
    except subprocess.TimeoutExpired:
        rc = "no exit in 120 s"
    exit_s = time.monotonic() - t0
    time.sleep(2.0)
    left = _group_alive(proc.pid)
    if left:
        os.killpg(proc.pid, signal.SIGKILL)
    client = MlflowClient(uri)
    run = client.get_run(run_id)
    end_ms = run.info.end_time or 0
    late = sum(
        sum(m.timestamp > end_ms for m in client.get_metric_history(run_id, key))
        for key in run.data.metrics
    )
    frame = read_samples(run_id, uri)
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
