"""Training step-time cost of the telemetry callback: off vs on at 1 Hz and 10 Hz.

Trains the same small GPT-2 (the DistilGPT-2 code path, 2 layers x 256 hidden, batch 4 x 128
tokens) with ``TelemetryCallback`` logging ``train/*`` only (telemetry off) and with the default
sources at 1 Hz and 10 Hz, alternating the three configurations for several rounds, each into a
temporary SQLite store with log_every_n_steps=1. Prints the median step time of each
configuration, the ratios, the CPU cost of one sample of all default sources, and as the last
number of its last line the median step-time ratio on/off at 1 Hz.

Usage: python benchmarks/telemetry_overhead.py [--rounds 3] [--steps 40]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from typing import Any

import lightning as L
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
logging.getLogger("rle").setLevel(logging.ERROR)

from rle.callbacks.telemetry import TelemetryCallback  # noqa: E402
from rle.paths import resolve_tracking  # noqa: E402
from rle.telemetry import DEFAULT_SOURCES, build_sources  # noqa: E402
from rle.tracking.logger import MLflowRunLogger, create_run  # noqa: E402
from rle.workloads.data import TextDataModule, load_documents  # noqa: E402
from rle.workloads.distilgpt2 import DistilGPT2Module, build_model_and_tokenizer  # noqa: E402

MODEL = {
    "pretrained": False,
    "n_layer": 2,
    "n_head": 4,
    "n_embd": 256,
    "vocab_size": 8000,
    "n_positions": 128,
}


class StepTimer(L.Callback):
    """Wall time between consecutive optimizer-step ends (callbacks' logging included)."""

    def __init__(self) -> None:
        self.times_s: list[float] = []
        self._last: float | None = None

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        now = time.perf_counter()
        if self._last is not None:
            self.times_s.append(now - self._last)
        self._last = now


def run_once(
    hz: float | None, steps: int, root: str, docs: list[str], cache: str
) -> tuple[list[float], list[float]]:
    torch.manual_seed(0)
    bundle = build_model_and_tokenizer(MODEL, docs, 8000, __import__("pathlib").Path(cache))
    dm = TextDataModule(docs, bundle.tokenizer, 128, 4)
    loc = resolve_tracking(None, root=__import__("pathlib").Path(root))
    exp_id, run_id = create_run(loc, "bench", f"hz={hz}", {})
    sources = {} if hz is None else dict(DEFAULT_SOURCES)
    timer = StepTimer()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=steps,
        log_every_n_steps=1,
        logger=MLflowRunLogger(loc.uri, run_id, exp_id),
        callbacks=[
            TelemetryCallback(sources=sources, sample_hz=hz or 1.0, tokens_per_sample=128),
            timer,
        ],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(DistilGPT2Module(bundle.model, lr=1e-3), datamodule=dm)
    from mlflow import MlflowClient

    hist = MlflowClient(loc.uri).get_metric_history(
        run_id, "system/telemetry_overhead_milliseconds"
    )
    return timer.times_s[2:], [m.value / 1000.0 for m in hist]  # drop warm-up steps


def sample_cost_ms(n: int = 200) -> float:
    built = build_sources(DEFAULT_SOURCES)
    sources = list(built.sources.values())
    t0 = time.thread_time()
    for _ in range(n):
        for s in sources:
            s.sample()
    cost = (time.thread_time() - t0) / n * 1000.0
    built.close()
    return cost


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=40)
    args = ap.parse_args()
    docs = load_documents(None)
    results: dict[str, list[float]] = {"off": [], "1Hz": [], "10Hz": []}
    overhead: dict[str, list[float]] = {"1Hz": [], "10Hz": []}
    with tempfile.TemporaryDirectory() as root, tempfile.TemporaryDirectory() as cache:
        for r in range(args.rounds):
            for name, hz in (("off", None), ("1Hz", 1.0), ("10Hz", 10.0)):
                times, cb_s = run_once(hz, args.steps, root, docs, cache)
                results[name].append(statistics.median(times))
                if name in overhead:
                    overhead[name].extend(cb_s)
                print(
                    f"round {r + 1} {name:>4}: median step {statistics.median(times) * 1000:.1f} ms"
                )  # noqa: T201
    med = {k: statistics.median(v) for k, v in results.items()}
    # paired per round (the three configurations ran back to back), robust to slow drifts
    ratio = {
        k: statistics.median(a / b for a, b in zip(results[k], results["off"], strict=True))
        for k in overhead
    }
    print(f"CPU time of one sample of all default sources: {sample_cost_ms():.3f} ms")  # noqa: T201
    print(
        f"median step time: off {med['off'] * 1000:.1f} ms, 1 Hz {med['1Hz'] * 1000:.1f} ms, 10 Hz {med['10Hz'] * 1000:.1f} ms"
    )  # noqa: T201
    for k in overhead:
        direct = statistics.median(overhead[k]) / med["off"]
        print(
            f"callback time on the training thread at {k}: median {statistics.median(overhead[k]) * 1000:.2f} ms per logged step = {direct * 100:.2f} % of a step"
        )  # noqa: T201
    print(f"ratio on/off at 10 Hz (median of paired rounds): {ratio['10Hz']:.4f}")  # noqa: T201
    print(f"ratio on/off at 1 Hz (median of paired rounds): {ratio['1Hz']:.4f}")  # noqa: T201


if __name__ == "__main__":
    main()
