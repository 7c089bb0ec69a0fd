"""Tracking throughput and the training step-time cost of logging with a healthy, slow or absent server.

Starts a real ``mlflow server`` (SQLite backend, one worker, 127.0.0.1) and measures:

1. **Throughput**: metric points per second through ``MLflowRunLogger`` (background sender, spool,
   batches of <= 1000), both as seen by the training thread (``log_metrics`` calls) and delivered
   end to end (until the store holds every point), versus MLflow's plain ``MlflowClient.log_metric``
   per point and, for reference, synchronous ``log_batch`` requests of 1000 points.
2. **Step-time cost**: a fixed CPU training step (an MLP forward/backward on one thread) that logs
   ``--metrics`` values per step through the logger, with no logging (baseline), a healthy server,
   a slow one (a TCP proxy that sleeps ``--delay-s`` before forwarding each request chunk) and none
   (a closed port); conditions are interleaved over ``--rounds`` rounds and the median step time
   of each is compared with the baseline. For contrast, the old synchronous path (one
   ``log_batch`` per step on the training thread) with the healthy and the slow server.

Usage: python benchmarks/logging_throughput.py [--rounds 8] [--steps 150] [--metrics 60]
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the test suite's server and proxy helpers

os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
logging.basicConfig(level=logging.ERROR)

import torch  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import Metric  # noqa: E402

from rle.tracking.logger import MLflowRunLogger  # noqa: E402
from support.mlflow_server import MlflowServer, TcpProxy, free_port  # noqa: E402


def _new_run(client: MlflowClient, name: str) -> str:
    exp = client.get_experiment_by_name("bench") or None
    exp_id = exp.experiment_id if exp else client.create_experiment("bench")
    return str(client.create_run(exp_id, run_name=name).info.run_id)


def _points_in_store(client: MlflowClient, run_id: str, keys: list[str]) -> int:
    return sum(len(client.get_metric_history(run_id, k)) for k in keys)


# ------------------------------------------------------------------------------------ throughput


def throughput(
    server: MlflowServer, spool_root: Path, steps: int, n_metrics: int, plain_points: int
) -> dict[str, float]:
    client = MlflowClient(server.uri)
    keys = [f"m/{i:03d}" for i in range(n_metrics)]
    out: dict[str, float] = {}

    run_id = _new_run(client, "rle-logger")
    logger = MLflowRunLogger(
        server.uri,
        run_id,
        "0",
        synchronous=False,
        spool_dir=spool_root / run_id,
        flush_interval_s=1.0,
    )
    t0 = time.perf_counter()
    caller_s = 0.0
    for step in range(steps):
        values = {k: float(step) + i for i, k in enumerate(keys)}
        c0 = time.perf_counter()
        logger.log_metrics(values, step=step)
        caller_s += time.perf_counter() - c0
    assert logger.flush(600)
    total_s = time.perf_counter() - t0
    n = steps * n_metrics
    assert _points_in_store(client, run_id, keys) == n
    logger.finish("FINISHED")
    out["rle_caller_points_per_s"] = n / caller_s
    out["rle_caller_us_per_call"] = caller_s / steps * 1e6
    out["rle_delivered_points_per_s"] = n / total_s
    out["rle_points"] = n

    run_id = _new_run(client, "plain-log_metric")
    t0 = time.perf_counter()
    for i in range(plain_points):
        client.log_metric(run_id, keys[i % n_metrics], float(i), step=i // n_metrics)
    out["plain_log_metric_points_per_s"] = plain_points / (time.perf_counter() - t0)
    out["plain_points"] = plain_points

    run_id = _new_run(client, "sync-log_batch")
    ts = int(time.time() * 1000)
    batch_points = min(n, 20_000)
    t0 = time.perf_counter()
    for start in range(0, batch_points, 1000):
        client.log_batch(
            run_id,
            metrics=[
                Metric(keys[i % n_metrics], float(i), ts, i // n_metrics)
                for i in range(start, min(start + 1000, batch_points))
            ],
            synchronous=True,
        )
    out["sync_log_batch_points_per_s"] = batch_points / (time.perf_counter() - t0)
    return out


# ------------------------------------------------------------------------------------ step time


class Step:
    """A fixed CPU training step: an MLP forward/backward and an SGD update, one thread."""

    def __init__(self, width: int = 1024, batch: int = 256) -> None:
        torch.manual_seed(0)
        self.model = torch.nn.Sequential(
            torch.nn.Linear(width, width), torch.nn.ReLU(), torch.nn.Linear(width, width)
        )
        self.opt = torch.optim.SGD(self.model.parameters(), lr=1e-3)
        self.x = torch.randn(batch, width)

    def __call__(self) -> float:
        loss = self.model(self.x).pow(2).mean()
        loss.backward()
        self.opt.step()
        self.opt.zero_grad()
        return float(loss.detach())


def run_steps(
    step: Step, steps: int, n_metrics: int, log: Callable[[dict[str, float], int], None] | None
) -> tuple[list[float], float]:
    """Run ``steps`` steps; return the step times (s, warm-up dropped) and the time spent in ``log`` (s)."""
    times = []
    log_s = 0.0
    for s in range(steps):
        t0 = time.perf_counter()
        loss = step()
        if log is not None:
            t1 = time.perf_counter()
            log({f"m/{i:03d}": loss + i for i in range(n_metrics)}, s)
            log_s += time.perf_counter() - t1
        times.append(time.perf_counter() - t0)
    return times[5:], log_s


CONDITIONS = ("baseline", "healthy", "slow", "down")


def step_cost(
    server: MlflowServer, spool_root: Path, rounds: int, steps: int, n_metrics: int, delay_s: float
) -> dict[str, Any]:
    """Paired rounds: every condition once per round, in a rotating order; ratios to the round's baseline."""
    client = MlflowClient(server.uri)
    proxy = TcpProxy(server.port, delay_s=delay_s).start()
    dead_uri = f"http://127.0.0.1:{free_port()}"
    step = Step()
    medians: dict[str, list[float]] = {c: [] for c in CONDITIONS}
    log_us: dict[str, list[float]] = {c: [] for c in CONDITIONS[1:]}
    sender_cpu_ms_per_s: dict[str, list[float]] = {c: [] for c in CONDITIONS[1:]}
    try:
        for r in range(rounds):
            order = CONDITIONS[r % 4 :] + CONDITIONS[: r % 4]
            for cond in order:
                if cond == "baseline":
                    times, _ = run_steps(step, steps, n_metrics, None)
                else:
                    run_id = _new_run(client, f"{cond}-{r}")
                    uri = {"healthy": server.uri, "slow": proxy.uri, "down": dead_uri}[cond]
                    lg = MLflowRunLogger(
                        uri,
                        run_id,
                        "0",
                        synchronous=False,
                        spool_dir=spool_root / run_id,
                        drain_timeout_s=120 if cond != "down" else 0.0,
                    )
                    t0 = time.perf_counter()
                    times, log_s = run_steps(
                        step, steps, n_metrics, lambda m, s, lg=lg: lg.log_metrics(m, step=s)
                    )
                    wall_s = time.perf_counter() - t0
                    sender = lg._sender._thread  # type: ignore[union-attr]  # CPU of the sender thread
                    sender_cpu_s = time.clock_gettime(time.pthread_getcpuclockid(sender.ident))
                    lg.finish("FINISHED")  # not timed: the drain happens after training
                    log_us[cond].append(log_s / steps * 1e6)
                    sender_cpu_ms_per_s[cond].append(sender_cpu_s / wall_s * 1000)
                medians[cond].append(statistics.median(times))
        # the old path: one synchronous log_batch per step on the training thread
        for cond, uri, n_steps in (("sync_healthy", server.uri, 60), ("sync_slow", proxy.uri, 15)):
            run_id = _new_run(client, cond)
            c = MlflowClient(uri)

            def sync_log(m: dict[str, float], s: int, c: Any = c, run_id: str = run_id) -> None:
                ts = int(time.time() * 1000)
                c.log_batch(
                    run_id, metrics=[Metric(k, v, ts, s) for k, v in m.items()], synchronous=True
                )

            medians[cond] = [statistics.median(run_steps(step, n_steps, n_metrics, sync_log)[0])]
    finally:
        proxy.stop()
    return {"medians": medians, "log_us": log_us, "cpu": sender_cpu_ms_per_s}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--rounds", type=int, default=8, help="paired rounds (every condition once each)"
    )
    p.add_argument("--steps", type=int, default=150, help="training steps per condition and round")
    p.add_argument("--metrics", type=int, default=60, help="metrics logged per step")
    p.add_argument(
        "--delay-s", type=float, default=0.2, help="added latency per request chunk (slow server)"
    )
    p.add_argument(
        "--throughput-steps",
        type=int,
        default=2000,
        help="log_metrics calls in the throughput test",
    )
    p.add_argument(
        "--plain-points", type=int, default=1000, help="points sent with plain log_metric"
    )
    args = p.parse_args()
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as tmp:
        server = MlflowServer(Path(tmp) / "server").start()
        try:
            tp = throughput(
                server, Path(tmp) / "spool", args.throughput_steps, args.metrics, args.plain_points
            )
            cost = step_cost(
                server, Path(tmp) / "spool", args.rounds, args.steps, args.metrics, args.delay_s
            )
        finally:
            server.stop()

    print(
        f"# {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, torch {torch.__version__}"
    )
    print("\n## Throughput (metric points per second, local mlflow server)\n")
    print("| path | points | points/s |")
    print("|---|---:|---:|")
    print(
        f"| rle `MLflowRunLogger.log_metrics`, caller side ({args.metrics} metrics per call, {tp['rle_caller_us_per_call']:.0f} µs per call) | {tp['rle_points']:,.0f} | {tp['rle_caller_points_per_s']:,.0f} |"
    )
    print(
        f"| rle logger, delivered to the store (background sender) | {tp['rle_points']:,.0f} | {tp['rle_delivered_points_per_s']:,.0f} |"
    )
    print(
        f"| MLflow `log_metric` per point | {tp['plain_points']:,.0f} | {tp['plain_log_metric_points_per_s']:,.0f} |"
    )
    print(
        f"| MLflow `log_batch`, 1000 per request, synchronous | {min(tp['rle_points'], 20000):,.0f} | {tp['sync_log_batch_points_per_s']:,.0f} |"
    )
    med = cost["medians"]
    print(
        f"\n## Step time ({args.metrics} metrics logged per step, {args.rounds} paired rounds x "
        f"{args.steps} steps per condition)\n"
    )
    print(
        "| condition | median step (ms) | vs no logging, median of rounds [min, max] | "
        "training thread in `log_metrics` per step (µs) | sender thread CPU (ms per s) |"
    )
    print("|---|---:|---:|---:|---:|")
    labels = {
        "baseline": "no logging",
        "healthy": "rle logger, healthy server",
        "slow": f"rle logger, slow server (+{args.delay_s:.1f} s per request chunk)",
        "down": "rle logger, server down (closed port)",
        "sync_healthy": "old path: sync `log_batch` per step, healthy server (60 steps)",
        "sync_slow": "old path: sync `log_batch` per step, slow server (15 steps)",
    }
    base = med["baseline"]
    for cond, values in med.items():
        m = statistics.median(values)
        if len(values) == len(base):
            ratios = [(v / b - 1) * 100 for v, b in zip(values, base, strict=True)]
            rel = f"{statistics.median(ratios):+.1f} % [{min(ratios):+.1f}, {max(ratios):+.1f}]"
        else:
            rel = f"{(m / statistics.median(base) - 1) * 100:+.0f} %"
        us = cost["log_us"].get(cond)
        log_col = f"{statistics.median(us):.0f}" if us else "-"
        cpu = cost["cpu"].get(cond)
        cpu_col = f"{statistics.median(cpu):.1f}" if cpu else "-"
        print(f"| {labels[cond]} | {m * 1000:.2f} | {rel} | {log_col} | {cpu_col} |")
    for cond in ("slow", "down"):
        ratios = [(a / b - 1) * 100 for a, b in zip(med[cond], med["healthy"], strict=True)]
        print(f"{cond} vs healthy, median of paired rounds: {statistics.median(ratios):+.2f} %")


if __name__ == "__main__":
    main()
