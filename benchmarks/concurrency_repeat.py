"""Concurrent store creation and imports, many rounds in a row (issue 15: "pass 20 times in a row").

Each round writes one legacy lab recording (two interleaved sessions, so two segments) and:

1. starts two ``python -m rle.ingest`` of that file at once into a **new** SQLite store (both
   processes race to create the schema: the shared lock of ``rle.tracking.logger.ensure_store``
   must make one create it while the other waits, and the two imports must make one run per
   segment);
2. starts two more imports of the same file at once into the now **existing** store (they must
   add nothing: the file's runs are already there).

A round passes when every process exits 0 and the store holds exactly the two segment runs, both
FINISHED. Prints one line per round and the tally::

    python benchmarks/concurrency_repeat.py --rounds 20
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "support"))

import rle_lab_writers as W  # noqa: E402
from mlflow import MlflowClient  # noqa: E402

from rle.tracking import keys  # noqa: E402

TIMEOUT_S = 240


def _two_imports(path: Path, uri: str) -> list[str]:
    """Two concurrent imports of ``path``; the error text of each that failed."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [sys.executable, "-m", "rle.ingest", str(path), "--experiment", "race",
           "--tracking-uri", uri]  # fmt: skip
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        for _ in range(2)
    ]
    errors = []
    for p in procs:
        try:
            out = p.communicate(timeout=TIMEOUT_S)[0].decode(errors="replace")
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            return [f"an import did not finish within {TIMEOUT_S} s"]
        if p.returncode != 0:
            errors.append(f"exit {p.returncode}: {out[-1500:]}")
    return errors


def _store_state(uri: str) -> list[tuple[str, str]]:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("race")
    runs = client.search_runs([exp.experiment_id]) if exp else []
    return sorted((r.data.tags.get(keys.TAG_SEGMENT, "?"), r.info.status) for r in runs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    expected = [("0", "FINISHED"), ("1", "FINISHED")]
    passed = 0
    seconds = []
    for i in range(1, args.rounds + 1):
        t0 = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="rle-race-") as tmp:
            root = Path(tmp)
            a = W.v03_lines(40, seed=i)
            b = W.v03_lines(20, seed=1000 + i, start=W.T0 + dt.timedelta(seconds=10.45))
            path = W.write_lines(
                root / "rle_20251028_08.csv", [W.header("v03"), *W.interleave(a, b)]
            )
            uri = "sqlite:///" + (root / "store" / "mlflow.db").as_posix()
            (root / "store").mkdir()
            problems = [f"new store: {e}" for e in _two_imports(path, uri)]
            if not problems and _store_state(uri) != expected:
                problems.append(f"new store holds {_store_state(uri)}")
            if not problems:
                problems += [f"existing store: {e}" for e in _two_imports(path, uri)]
                if not problems and _store_state(uri) != expected:
                    problems.append(f"existing store holds {_store_state(uri)}")
        seconds.append(time.monotonic() - t0)
        ok = not problems
        passed += ok
        print(f"round {i:2d}: {'pass' if ok else 'FAIL'} ({seconds[-1]:.1f} s)", flush=True)  # noqa: T201
        for p in problems:
            print(f"    {p}")  # noqa: T201
    print(  # noqa: T201
        f"{passed}/{args.rounds} rounds passed in a row"
        if passed == args.rounds
        else f"{passed}/{args.rounds} rounds passed",
        f"(median {statistics.median(seconds):.1f} s per round: 2 + 2 concurrent imports)",
    )
    return 0 if passed == args.rounds else 1


if __name__ == "__main__":
    raise SystemExit(main())
