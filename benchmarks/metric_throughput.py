"""Throughput of the RLE metric: batch ``compute`` and the incremental engine, per profile.

Measures, for each profile (``default``, ``legacy_v03``, ``legacy_v2``):

* ``compute`` on a 1-million-row stream (samples per second),
* ``compute`` on one day of 1 Hz samples (86,400 rows; goal < 0.5 s),
* the incremental engine (``update(state, sample)``) fed one sample dict at a time, as the live
  sampler does (samples per second and µs per sample; goal < 50 µs).

Usage::

    python benchmarks/metric_throughput.py                 # print the figures
    python benchmarks/metric_throughput.py --write         # also update benchmarks/RESULTS.md
    python benchmarks/metric_throughput.py --rows 200000 --engine-rows 50000   # quicker
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rle.metric import compute, init_state, update

HEADING = "## Metric throughput (issue 3)"
RESULTS = Path(__file__).with_name("RESULTS.md")
DAY_ROWS = 86_400
PROFILES: dict[str, dict[str, Any]] = {
    "default": {"device": "gpu_0", "rated_w": 300.0, "limit_c": 87.0},
    "legacy_v03": {"device": "gpu"},
    "legacy_v2": {"device": "gpu"},
}


def make_stream(n: int, seed: int = 0) -> pd.DataFrame:
    """A realistic 1 Hz GPU stream: drifting load, whole-degree temperatures, some NaN gaps."""
    rng = np.random.default_rng(seed)
    util = np.clip(70 + np.cumsum(rng.normal(0, 2, n)) % 60 + rng.normal(0, 5, n), 0, 100)
    temp = np.round(65 + 10 * np.sin(np.arange(n) / 900.0) + rng.normal(0, 0.4, n))
    power = 60 + 2.0 * util + rng.normal(0, 4, n)
    util[rng.random(n) < 0.001] = np.nan
    temp[rng.random(n) < 0.001] = np.nan
    power[rng.random(n) < 0.001] = np.nan
    jitter = rng.uniform(0.0, 0.03, n)  # the lab's uncompensated sleep: 1.001-1.03 s periods
    t = 1.7e9 + np.cumsum(1.0 + jitter)
    return pd.DataFrame(
        {
            "timestamp": pd.to_datetime(t, unit="s", utc=True),
            "util_pct": np.round(util),
            "temp_c": temp,
            "power_w": np.round(power, 2),
        }
    )


def time_compute(frame: pd.DataFrame, profile: str, repeats: int) -> float:
    """Best wall time of ``compute`` over ``repeats`` runs, s."""
    kwargs = PROFILES[profile]
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        compute(frame, profile=profile, **kwargs)
        best = min(best, time.perf_counter() - start)
    return best


def time_engine(frame: pd.DataFrame, profile: str) -> float:
    """Wall time of feeding every row to the incremental engine as a sample dict, s."""
    kwargs = dict(PROFILES[profile])
    device = kwargs.pop("device")
    t = (frame["timestamp"].astype("int64").to_numpy() / 1e9).tolist()  # epoch seconds
    util = frame["util_pct"].tolist()
    temp = frame["temp_c"].tolist()
    power = frame["power_w"].tolist()
    state = init_state(device, profile, **kwargs)
    start = time.perf_counter()
    for i in range(len(t)):
        sample = {"timestamp": t[i], "util_pct": util[i], "temp_c": temp[i], "power_w": power[i]}
        state, _ = update(state, sample)
    return time.perf_counter() - start


def run(rows: int, engine_rows: int, repeats: int) -> list[dict[str, Any]]:
    big = make_stream(rows)
    day = big.iloc[:DAY_ROWS].copy() if rows >= DAY_ROWS else make_stream(DAY_ROWS)
    eng = big.iloc[:engine_rows]
    results = []
    for profile in PROFILES:
        compute(day.iloc[:1000], profile=profile, **PROFILES[profile])  # warm-up (imports)
        t_big = time_compute(big, profile, repeats=1)
        t_day = time_compute(day, profile, repeats=repeats)
        t_eng = time_engine(eng, profile)
        row = {
            "profile": profile,
            "compute_rows": rows,
            "compute_s": t_big,
            "compute_samples_per_s": rows / t_big,
            "day_s": t_day,
            "engine_rows": engine_rows,
            "engine_s": t_eng,
            "engine_samples_per_s": engine_rows / t_eng,
            "engine_us_per_sample": 1e6 * t_eng / engine_rows,
        }
        results.append(row)
        print(
            f"{profile:11s} compute {rows:>9,} rows: {t_big:7.3f} s = {rows / t_big:12,.0f} samples/s"
            f" | 86,400 rows: {t_day:6.3f} s"
            f" | engine {engine_rows:>9,} samples: {engine_rows / t_eng:10,.0f} samples/s"
            f" = {1e6 * t_eng / engine_rows:6.1f} µs/sample",
            flush=True,
        )
    return results


def markdown(results: list[dict[str, Any]]) -> str:
    cpu = platform.processor() or platform.machine()
    lines = [
        HEADING,
        "",
        f"`python benchmarks/metric_throughput.py` on {os.cpu_count()} CPU cores ({cpu}), "
        f"Python {platform.python_version()}, NumPy {np.__version__}, pandas {pd.__version__}; "
        "synthetic 1 Hz GPU stream with jittered periods and 0.1 % NaN gaps. Goals: one day "
        "(86,400 rows) through `compute` in < 0.5 s; incremental engine < 50 µs per sample.",
        "",
        f"| profile | `compute`, {results[0]['compute_rows']:,} rows (samples/s) "
        "| `compute`, 86,400 rows (s) | engine (samples/s) | engine (µs/sample) |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| `{r['profile']}` | {r['compute_samples_per_s']:,.0f} ({r['compute_s']:.2f} s) "
            f"| {r['day_s']:.3f} | {r['engine_samples_per_s']:,.0f} "
            f"| {r['engine_us_per_sample']:.1f} |"
        )
    lines.append("")
    lines.append(
        f"`compute` rows: {results[0]['compute_rows']:,}; engine samples: "
        f"{results[0]['engine_rows']:,} (one `update` per sample dict, as the live sampler feeds "
        "it). `compute` on 86,400 rows is the best of several runs."
    )
    return "\n".join(lines) + "\n"


def write_section(text: str, path: Path = RESULTS) -> None:
    """Create ``path`` or replace only this benchmark's section in it."""
    if not path.exists():
        path.write_text("# Benchmark results\n\n" + text, encoding="utf-8")
        return
    old = path.read_text(encoding="utf-8")
    pattern = re.compile(rf"^{re.escape(HEADING)}\n.*?(?=^## |\Z)", re.DOTALL | re.MULTILINE)
    if pattern.search(old):
        new = pattern.sub(lambda _: text + "\n", old, count=1)
    else:
        new = old.rstrip("\n") + "\n\n" + text
    path.write_text(new.rstrip("\n") + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows for compute")
    parser.add_argument(
        "--engine-rows", type=int, default=1_000_000, help="samples for the incremental engine"
    )
    parser.add_argument("--repeats", type=int, default=5, help="runs of the 86,400-row compute")
    parser.add_argument("--write", action="store_true", help=f"update {RESULTS.name}")
    args = parser.parse_args()
    results = run(args.rows, min(args.engine_rows, args.rows), args.repeats)
    text = markdown(results)
    print()
    print(text)
    if args.write:
        write_section(text)
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
