"""Telemetry at scale: rank 0's resident memory over time and bytes gathered per logging step.

For each sampling rate (1/10/100 Hz by default) and rank count (1/2/4 CPU processes, gloo DDP via
Lightning's ``strategy="ddp"``), trains a small linear model for ``--duration`` seconds with
``TelemetryCallback`` (a fake GPU per rank standing in for NVML, plus the real psutil host and
process sources) into a temporary SQLite store through Lightning's ``MLFlowLogger``, and measures
on rank 0:

* resident set size (psutil RSS) sampled every 0.5 s from the start of training to its last batch:
  at the end of warm-up (a third of the training time, which includes the first Parquet part
  written and uploaded: ``upload_every_s=10``, so pyarrow's one-time set-up is not counted as
  growth) and at the end of training, and the growth between them in MB and MB per minute. The
  sampling stops in the first callback's ``on_train_end``, before the telemetry's end-of-run
  summary (which reads the sample parts back once); what that summary adds is reported on its own
  ("end-of-run summary": RSS after ``fit`` minus RSS at the last batch);
* the same growth for the train-only baseline (``TelemetryCallback(sources={})``: the same trainer,
  training dynamics and ``MLFlowLogger``, no hardware monitor), once per rank count, and the
  callback's own growth: telemetry minus baseline;
* the pickled size of everything the telemetry gather brings to rank 0 per logging step (all
  ranks' windows), median and max over the logging steps in which every rank had samples (a
  window without samples is smaller), in bytes. The max includes the first window, which also
  carries the sources' tags once.

Goals (issue 14): memory flat after warm-up (no growth with run length beyond the Parquet
writer's row-group buffer) and gather bytes per step independent of the sampling rate.

Each configuration runs in its own process (Lightning's DDP launcher re-runs the script for the
other ranks). Usage::

    python benchmarks/telemetry_scale.py                       # the table, 30 s per configuration
    python benchmarks/telemetry_scale.py --hz 50 --ranks 1 --duration 150   # the long single run
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
logging.getLogger("lightning.fabric").setLevel(logging.ERROR)
logging.getLogger("rle").setLevel(logging.ERROR)


def _one(hz: float, duration_s: float, ranks: int, out: Path, mode: str = "telemetry") -> None:
    """Run one configuration (every rank of it runs this function)."""
    import lightning as L
    import psutil
    import torch
    from lightning.pytorch.loggers import MLFlowLogger
    from torch.utils.data import DataLoader, TensorDataset

    import rle.callbacks.hardware as hardware
    from rle.callbacks.telemetry import TelemetryCallback

    gathered_bytes: list[int] = []
    real_gather = hardware.gather_to_rank_zero

    def measuring_gather(window: Any, rank: int, world_size: int) -> Any:
        result = real_gather(window, rank, world_size)
        if result is not None and all(w.sample_count for w in result):
            # windows in which every rank had samples: the full size (empty windows are smaller)
            gathered_bytes.append(sum(len(pickle.dumps(w)) for w in result))
        return result

    hardware.gather_to_rank_zero = measuring_gather  # type: ignore[assignment]

    class Linear(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(32, 1)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            time.sleep(0.02)  # ~50 steps/s: the logging cadence of a fast training loop
            return torch.nn.functional.mse_loss(self.layer(x), y)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.01)

        def train_dataloader(self) -> DataLoader[Any]:
            x = torch.randn(4096, 32)
            return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=8)

    rss: list[tuple[float, float]] = []
    stop = threading.Event()
    proc = psutil.Process()

    class Watch(L.Callback):
        """Sample RSS during training (process start-up, DDP set-up and end-of-run excluded).

        First in the callback list, so its ``on_train_end`` runs before the telemetry's.
        """

        def __init__(self) -> None:
            self.t0 = 0.0
            self.thread: threading.Thread | None = None

        def sample(self) -> None:
            rss.append((time.monotonic() - self.t0, proc.memory_info().rss / 1e6))

        def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            self.t0 = time.monotonic()

            def watch() -> None:
                while not stop.wait(0.5):
                    self.sample()

            self.thread = threading.Thread(target=watch, daemon=True)
            self.thread.start()

        def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            stop.set()
            if self.thread is not None:
                self.thread.join()
            self.sample()  # the last batch's RSS

    watch = Watch()
    uri = "sqlite:///" + (out.parent / "bench.db").as_posix()
    sources = {
        "gpu": {"_target_": "rle.telemetry.fake.FakeGpuSource", "index": 0},
        "cpu": {"_target_": "rle.telemetry.cpu.CpuHostSource"},
        "process": {"_target_": "rle.telemetry.cpu.ProcessSource"},
    }
    trainer = L.Trainer(
        accelerator="cpu",
        devices=ranks,
        strategy="ddp" if ranks > 1 else "auto",
        max_time={"seconds": duration_s},
        max_epochs=-1,
        log_every_n_steps=1,
        logger=MLFlowLogger(experiment_name="scale", tracking_uri=uri),
        callbacks=[watch]
        + {
            "telemetry": [TelemetryCallback(sources=sources, sample_hz=hz, upload_every_s=10.0)],
            "train-only": [TelemetryCallback(sources={})],
            "none": [],
        }[mode],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(Linear())
    after_fit = proc.memory_info().rss / 1e6
    if trainer.is_global_zero:
        out.write_text(
            json.dumps({"rss": rss, "after_fit": after_fit, "gathered_bytes": gathered_bytes})
        )


def _run(hz: float, ranks: int, duration_s: float, mode: str = "telemetry") -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
        env.pop("MLFLOW_TRACKING_URI", None)
        cmd = [
            sys.executable,
            os.path.abspath(__file__),
            "--one",
            "--hz",
            str(hz),
            "--ranks",
            str(ranks),
        ]
        cmd += ["--duration", str(duration_s), "--out", str(out), "--mode", mode]
        subprocess.run(cmd, check=True, env=env, timeout=duration_s * 3 + 300, cwd=tmp)
        data = json.loads(out.read_text())
    rss = data["rss"]
    warm = [m for t, m in rss if t >= duration_s / 3]
    gathered = data["gathered_bytes"]
    span_min = max((rss[-1][0] - duration_s / 3) / 60.0, 1e-9)
    late = [m for t, m in rss if t >= 2 * duration_s / 3]
    return {
        "rss_two_thirds_mb": late[0],
        "rss_warm_mb": warm[0],
        "rss_end_mb": warm[-1],
        "growth_mb": warm[-1] - warm[0],
        "growth_mb_per_min": (warm[-1] - warm[0]) / span_min,
        "end_summary_mb": data["after_fit"] - rss[-1][1],
        "gather_bytes_per_step": float(statistics.median(gathered)) if gathered else math.nan,
        "gather_bytes_max": float(max(gathered)) if gathered else math.nan,
        "steps": float(len(gathered)),
    }


def main() -> None:
    """Print the table (or run one configuration with ``--one``)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--hz", type=float, nargs="*", default=[1.0, 10.0, 100.0])
    p.add_argument("--ranks", type=int, nargs="*", default=[1, 2, 4])
    p.add_argument("--duration", type=float, default=30.0, help="seconds per configuration")
    p.add_argument(
        "--mode",
        choices=["telemetry", "train-only", "none"],
        default="telemetry",
        help="telemetry (default); train-only: TelemetryCallback(sources={}); none: no callback "
        "(the baselines of Lightning + MLFlowLogger alone)",
    )
    p.add_argument(
        "--no-baseline",
        action="store_true",
        help="skip the train-only baseline run per rank count (telemetry mode only)",
    )
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        _one(args.hz[0], args.duration, args.ranks[0], args.out, args.mode)
        return
    baseline = args.mode == "telemetry" and not args.no_baseline
    print(  # noqa: T201
        f"mode {args.mode}, {args.duration:.0f} s per configuration; RSS of rank 0 (psutil)"
    )
    print(  # noqa: T201
        "| sample_hz | ranks | steps | RSS after warm-up (MB) | RSS at end of training (MB) "
        "| growth (MB) | growth (MB/min) | baseline growth (MB) | callback's own growth (MB) "
        "| end-of-run summary (MB) | gathered per logging step, median (bytes) | max (bytes) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")  # noqa: T201
    for ranks in args.ranks:
        base = _run(args.hz[0], ranks, args.duration, "train-only") if baseline else None
        for hz in args.hz:
            r = _run(hz, ranks, args.duration, args.mode)
            b = f"{base['growth_mb']:+.1f}" if base else "-"
            own = f"{r['growth_mb'] - base['growth_mb']:+.1f}" if base else "-"
            print(  # noqa: T201
                f"| {hz:g} | {ranks} | {r['steps']:.0f} | {r['rss_warm_mb']:.1f} | "
                f"{r['rss_end_mb']:.1f} | {r['growth_mb']:+.1f} | {r['growth_mb_per_min']:+.2f} | "
                f"{b} | {own} | {r['end_summary_mb']:+.1f} | "
                f"{r['gather_bytes_per_step']:.0f} | {r['gather_bytes_max']:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
