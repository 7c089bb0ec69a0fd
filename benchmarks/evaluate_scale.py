"""How fast the evaluation reads a large tracking store (issue 6).

Fills a temporary SQLite store with synthetic runs (default 100 runs x 2,000 steps x 30 metrics,
written with ``log_batch`` in chunks of 1,000 as the training logger does; no sample artifacts, so
the evaluation reads the step-level ``system/`` and ``rle/`` histories too), then times:

* the evaluation's reading (``rle.evaluate._read``: bulk ``SELECT`` of the 14 keys it needs) for
  10, 25, 50 and 100 % of the runs (points per second should stay flat: linear in points);
* the baseline: the same 14 histories read with one ``MlflowClient.get_metric_history`` call per
  run and key, and every one of the 30 histories one call at a time;
* the whole ``run_evaluation`` (reading, analysis, CSVs, report; plots off).

Usage::

    python benchmarks/evaluate_scale.py                      # 100 x 2000 x 30 (fill ~10 min on 2 cores)
    python benchmarks/evaluate_scale.py --runs 20            # smaller
    python benchmarks/evaluate_scale.py --store /tmp/b --reuse   # keep/reuse a filled store
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

TRAIN = [
    "train/loss",
    "train/grad_norm",
    "train/lr",
    "train/samples_per_second",
    "train/tokens_per_second",
    "train/energy_joules_per_step",
    "train/samples_per_joule",
]
SYSTEM = [
    "system/cpu_utilization_percentage",
    "system/system_memory_usage_megabytes",
    "system/system_memory_usage_percentage",
    "system/gpu_0_utilization_percentage",
    "system/gpu_0_memory_usage_megabytes",
    "system/gpu_0_memory_usage_percentage",
    "system/gpu_0_power_usage_watts",
    "system/gpu_0_power_usage_percentage",
    "system/gpu_0_power_usage_max_watts",
    "system/gpu_0_temperature_celsius",
    "system/gpu_0_sm_clock_megahertz",
    "system/gpu_0_energy_joules",
    "system/gpu_0_throttle_reasons",
    "system/rank_0/process_cpu_percentage",
    "system/rank_0/process_memory_rss_megabytes",
    "system/telemetry_overhead_milliseconds",
]
RLE = [
    f"rle/gpu_0/{t}"
    for t in (
        "rle_smoothed",
        "e_th",
        "e_pw",
        "stability",
        "a_load",
        "t_sustain_seconds",
        "collapse",
    )
]
ALL_KEYS = TRAIN + SYSTEM + RLE


def _series(rng: np.random.Generator, steps: int, heavy: bool) -> dict[str, np.ndarray]:
    s = np.arange(1, steps + 1, dtype=float)
    power = (250.0 if heavy else 120.0) + 10 * np.sin(s / 50) + rng.normal(0, 3, steps)
    temp = 40 + 0.1 * power + 5 * (1 - np.exp(-s / 300)) + rng.normal(0, 0.3, steps)
    grad = 20 * np.exp(-s / 500) + 2 + np.abs(rng.normal(0, 1, steps))
    out = {
        "train/loss": 5 * np.exp(-s / 800) + 1 + rng.normal(0, 0.05, steps),
        "train/grad_norm": grad,
        "train/lr": np.full(steps, 1e-4),
        "train/samples_per_second": 8 + rng.normal(0, 0.2, steps),
        "train/tokens_per_second": 8192 + rng.normal(0, 200, steps),
        "train/energy_joules_per_step": power * 0.5,
        "train/samples_per_joule": 8 / (power * 0.5),
        "system/gpu_0_power_usage_watts": power,
        "system/gpu_0_power_usage_max_watts": power + 5,
        "system/gpu_0_power_usage_percentage": power / 3,
        "system/gpu_0_temperature_celsius": temp,
        "system/gpu_0_energy_joules": power * 0.5,
        "system/gpu_0_utilization_percentage": np.clip(power / 3, 0, 100),
        "system/gpu_0_sm_clock_megahertz": 1800 - (temp > 70) * 200.0,
        "system/gpu_0_throttle_reasons": np.where(temp > 70, 0x20, 0).astype(float),
        "rle/gpu_0/rle_smoothed": 0.8 - 0.001 * (power - 120) + rng.normal(0, 0.01, steps),
        "rle/gpu_0/collapse": (rng.random(steps) < 0.01).astype(float),
    }
    for key in ALL_KEYS:
        if key not in out:
            out[key] = rng.normal(50, 5, steps)
    return out


def fill(root: Path, runs: int, steps: int, n_metrics: int) -> float:
    from mlflow.entities import Metric

    from rle.paths import resolve_tracking
    from rle.tracking.logger import client_for, create_run, end_run

    loc = resolve_tracking(None, root=root)
    client = client_for(loc)
    keys = ALL_KEYS[:n_metrics]
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for i in range(runs):
        heavy = i % 2 == 1
        _, run_id = create_run(loc, "bench", f"run{i}", {"workload": "heavy" if heavy else "light"})
        data = _series(rng, steps, heavy)
        base = 1_700_000_000_000 + i * 10_000_000
        ts = base + 500 * np.arange(1, steps + 1)
        batch = [
            Metric(k, float(data[k][j]), int(ts[j]), j + 1) for j in range(steps) for k in keys
        ]
        for c in range(0, len(batch), 1000):
            client.log_batch(run_id, metrics=batch[c : c + 1000], synchronous=True)
        end_run(loc, run_id, "FINISHED")
        if (i + 1) % 10 == 0:
            el = time.perf_counter() - t0
            print(
                f"  filled {i + 1}/{runs} runs in {el:.0f} s ({(i + 1) * steps * len(keys) / el:,.0f} points/s)",
                flush=True,
            )
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--metrics", type=int, default=30, choices=range(14, 31), metavar="14..30")
    ap.add_argument(
        "--store", type=Path, default=None, help="project root of the store (default: a temp dir)"
    )
    ap.add_argument("--reuse", action="store_true", help="reuse a store filled by an earlier call")
    ap.add_argument(
        "--baseline-runs",
        type=int,
        default=None,
        help="runs for the per-call baselines (default all)",
    )
    ap.add_argument(
        "--permutations", type=int, default=199, help="n_permutations of the full evaluation"
    )
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    root = args.store or Path(tempfile.mkdtemp(prefix="rle-evalbench-"))
    os.environ["RLE_PROJECT_ROOT"] = str(root)
    os.environ["MLFLOW_EXPERIMENT_NAME"] = "bench"
    from rle.paths import resolve_tracking

    db = root / "mlruns" / "mlflow.db"
    if not (args.reuse and db.is_file()):
        if db.exists():
            shutil.rmtree(root / "mlruns")
        print(
            f"Filling {args.runs} runs x {args.steps} steps x {args.metrics} metrics into {db} ...",
            flush=True,
        )
        fill_s = fill(root, args.runs, args.steps, args.metrics)
        print(
            f"fill: {fill_s:.1f} s ({args.runs * args.steps * args.metrics / fill_s:,.0f} points/s via log_batch)"
        )

    import pandas as pd

    from rle.evaluate import _read
    from rle.tracking.reader import RunReader, Selection

    loc = resolve_tracking(None, root=root)
    reader = RunReader(loc)
    t0 = time.perf_counter()
    runs = reader.select_runs(Selection(("bench",))).runs
    select_s = time.perf_counter() - t0
    n = len(runs)
    keys_present = sorted(runs["metrics"].iloc[0])
    print(f"\n{n} runs, {len(keys_present)} metrics per run; selection {select_s:.2f} s")

    rows = []
    for frac in (0.1, 0.25, 0.5, 1.0):
        k = max(1, round(n * frac))
        sub = runs.iloc[:k]
        reader = RunReader(loc)
        counted: list[int] = []
        inner = reader.metric_histories

        def counting(run_ids, metric_keys, _inner=inner, _counted=counted):  # type: ignore[no-untyped-def]
            frame = _inner(run_ids, metric_keys)
            _counted.append(len(frame))
            return frame

        reader.metric_histories = counting  # type: ignore[method-assign]
        t0 = time.perf_counter()
        data, read_s = _read(reader, sub, "workload")
        wall = time.perf_counter() - t0
        points = sum(counted)
        rows.append(
            {
                "runs": k,
                "points": points,
                "read_s": read_s,
                "frames_s": wall,
                "runs_per_s": k / read_s,
                "points_per_s": points / read_s,
            }
        )
    fast = pd.DataFrame(rows)
    print(
        "\nEvaluation reading (rle.evaluate._read: bulk SELECT of the keys it needs; frames_s adds building the per-device frames):"
    )
    print(fast.to_string(index=False, float_format=lambda v: f"{v:,.2f}"))

    from rle.tracking import keys as K

    needed = (
        list(K.TRAIN_KEYS_FOR_EVALUATION)
        + [k for k in K.device_quantity_keys("gpu_0").values()]
        + [K.device_quantity_keys("cpu")["util_pct"]]
    )
    needed = [k for k in needed if k in keys_present]
    nb = args.baseline_runs or n
    ids = list(runs["run_id"].iloc[:nb])
    reader = RunReader(loc)
    t0 = time.perf_counter()
    bulk = reader.metric_histories(ids, needed)
    bulk_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    base = reader.metric_histories_per_call(ids, needed)
    base_s = time.perf_counter() - t0
    assert len(base) == len(bulk), (len(base), len(bulk))
    t0 = time.perf_counter()
    every = reader.metric_histories_per_call(ids, keys_present)
    every_s = time.perf_counter() - t0
    print(f"\nSame {len(needed)} histories of {nb} runs ({len(bulk):,} points):")
    print(
        f"  bulk SELECT (evaluation):           {bulk_s:8.2f} s  {nb / bulk_s:8.2f} runs/s  {len(bulk) / bulk_s:12,.0f} points/s"
    )
    print(
        f"  one get_metric_history per history: {base_s:8.2f} s  {nb / base_s:8.2f} runs/s  {len(base) / base_s:12,.0f} points/s  -> bulk is {base_s / bulk_s:.1f}x faster"
    )
    print(
        f"  every one of the {len(keys_present)} histories, one call each: {every_s:8.2f} s  {nb / every_s:8.2f} runs/s  ({len(every):,} points) -> bulk is {every_s / bulk_s:.1f}x faster"
    )

    from hydra import compose, initialize_config_dir

    from rle.evaluate import run_evaluation
    from rle.paths import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            config_name="evaluate",
            overrides=[
                "evaluation.plots.enabled=false",
                f"evaluation.correlation.n_permutations={args.permutations}",
            ],
        )
    t0 = time.perf_counter()
    res = run_evaluation(cfg)
    total = time.perf_counter() - t0
    print(
        f"\nFull run_evaluation ({res.status}, {len(res.runs)} runs, {len(res.correlations):,} correlation rows, "
        f"{args.permutations} permutations, plots off): {total:.1f} s = {len(res.runs) / total:.2f} runs/s; "
        + ", ".join(f"{k} {v:.1f} s" for k, v in res.timings_s.items())
    )
    if res.classifier is not None and res.classifier.available:
        print(f"classifier LOO accuracy {res.classifier.accuracy:.2f}")
    print(f"\nPython {platform.python_version()}, {os.cpu_count()} CPUs, store {db}")


if __name__ == "__main__":
    main()
