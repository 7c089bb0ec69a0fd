"""Calibrate the synthetic duty-cycle load: commanded intensity vs achieved duty cycle and CPU use.

Runs :class:`rle.workloads.synthetic.SyntheticLoadModule` through a Lightning ``Trainer`` (CPU, no
logger, no MLflow) at each intensity for a few seconds and prints a Markdown table:

- achieved duty cycle of the training process per step (median, and 10th-90th percentile),
- the spawned workers' measured duty cycle,
- system-wide CPU utilisation (``psutil.cpu_percent`` over the measured steps, all cores),
- the load's own CPU use (CPU time of the training process and its workers / wall time / cores),
  which other processes on a shared machine do not inflate.

Usage::

    .venv/bin/python benchmarks/synthetic_calibration.py            # 0.25, 0.5, 0.75, 1.0; 6 s each
    .venv/bin/python benchmarks/synthetic_calibration.py --seconds 10 --period-s 0.25
    .venv/bin/python benchmarks/synthetic_calibration.py --repeats 3   # on a shared, busy machine

Heavy imports live inside functions: spawned workers re-import this file as ``__mp_main__``.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import time
import warnings
from typing import Any


def _percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def run_one(
    intensity: float, seconds: float, period_s: float, matrix_size: int, workers: int
) -> dict[str, Any]:
    import lightning as L
    import psutil

    from rle.tracking import keys
    from rle.workloads.load import Pattern
    from rle.workloads.synthetic import SyntheticDataModule, SyntheticLoadModule

    warmup_steps = 3

    class Probe(L.Callback):
        def __init__(self) -> None:
            self.duty: list[float] = []
            self.procs: list[psutil.Process] = []
            self.t0 = 0.0
            self.cpu0 = 0.0
            self.result: dict[str, Any] = {}

        def _cpu_s(self) -> float:
            total = 0.0
            for p in self.procs:
                try:
                    t = p.cpu_times()
                    total += t.user + t.system
                except psutil.NoSuchProcess:
                    pass
            return total

        def on_train_batch_end(
            self, trainer: L.Trainer, m: Any, outputs: Any, batch: Any, i: int
        ) -> None:
            step = trainer.global_step
            if step == warmup_steps:  # start measuring after the warm-up steps
                self.procs = [psutil.Process()] + [psutil.Process(p) for p in m.worker_pids]
                psutil.cpu_percent(interval=None)
                self.t0, self.cpu0 = time.monotonic(), self._cpu_s()
            elif step > warmup_steps:
                self.duty.append(m.step_metrics()[keys.SYNTHETIC_DUTY_CYCLE_ACHIEVED])

        def on_train_end(self, trainer: L.Trainer, m: Any) -> None:  # before the workers stop
            wall_s = time.monotonic() - self.t0
            self.result = {
                "system_cpu_pct": psutil.cpu_percent(interval=None),
                "load_cpu_pct": 100.0
                * (self._cpu_s() - self.cpu0)
                / wall_s
                / (psutil.cpu_count() or 1),
                "worker_duty": statistics.mean(m.worker_duty_cycles())
                if m.worker_pids
                else float("nan"),
                "chunk_ms": m.chunk_s * 1e3,
            }

    steps = warmup_steps + max(5, round(seconds / period_s))
    module = SyntheticLoadModule(
        Pattern("constant", intensity=intensity),
        period_s=period_s,
        matrix_size=matrix_size,
        workers=workers,
    )
    probe = Probe()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=steps,
        max_epochs=-1,
        logger=False,
        callbacks=[probe],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        gradient_clip_val=1.0,
    )
    trainer.fit(module, datamodule=SyntheticDataModule())
    d = probe.duty
    return {
        "target": intensity,
        "steps": len(d),
        "median": statistics.median(d),
        "p10": _percentile(d, 0.1),
        "p90": _percentile(d, 0.9),
        **probe.result,
    }


def idle_cpu_pct(seconds: float = 2.0) -> float:
    import psutil

    return float(psutil.cpu_percent(interval=seconds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--intensities", type=float, nargs="+", default=[0.25, 0.5, 0.75, 1.0])
    parser.add_argument("--seconds", type=float, default=6.0, help="measured seconds per intensity")
    parser.add_argument("--period-s", type=float, default=0.1)
    parser.add_argument("--matrix-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=None, help="cores to load (default: all)")
    parser.add_argument(
        "--repeats", type=int, default=1, help="runs per intensity; the least disturbed one is kept"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    # Lightning 2.6 calls torch's deprecated LeafSpec check (same ignore as pyproject's pytest config).
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    import lightning  # noqa: F401 (sets its loggers' levels on import; quieten them afterwards)

    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)

    from rle.workloads.load import available_cores

    workers = args.workers or available_cores()
    baseline = idle_cpu_pct()
    rows = []
    for intensity in args.intensities:
        runs = [
            run_one(intensity, args.seconds, args.period_s, args.matrix_size, workers)
            for _ in range(args.repeats)
        ]
        # Keep the run least disturbed by other processes on this shared machine.
        rows.append(min(runs, key=lambda r: r["system_cpu_pct"] - r["load_cpu_pct"]))

    print(
        f"period_s={args.period_s}, matrix_size={args.matrix_size}, workers={workers} "
        f"(training process + {workers - 1} spawned), cores={os.cpu_count()}, "
        f"~{args.seconds:g} s measured per intensity after 3 warm-up steps, "
        f"best of {args.repeats} by least other-process CPU; "
        f"system CPU before the runs (no load): {baseline:.1f} %; "
        f"one forward/backward chunk: {statistics.median(r['chunk_ms'] for r in rows):.2f} ms"
    )
    print()
    print(
        "| target | achieved duty (median) | p10 - p90 | workers' duty | abs. error "
        "| system CPU % | load's own CPU % | other processes' CPU % | steps |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['target']:.2f} | {r['median']:.3f} | {r['p10']:.3f} - {r['p90']:.3f} | {r['worker_duty']:.3f} "
            f"| {abs(r['median'] - r['target']):.3f} | {r['system_cpu_pct']:.1f} | {r['load_cpu_pct']:.1f} "
            f"| {max(0.0, r['system_cpu_pct'] - r['load_cpu_pct']):.1f} | {r['steps']} |"
        )
    within = all(abs(r["median"] - r["target"]) <= 0.05 for r in rows)
    cpu = [r["system_cpu_pct"] for r in rows]
    monotonic = all(b > a for a, b in zip(cpu, cpu[1:], strict=False))
    print()
    print(f"achieved within 0.05 of target: {within}; system CPU rises monotonically: {monotonic}")


if __name__ == "__main__":
    main()
