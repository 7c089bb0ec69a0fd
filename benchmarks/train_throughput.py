"""DistilGPT-2 training throughput on 1 and 2 processes (the main job's workload).

Runs ``rle.train.run_training`` for ``workload=distilgpt2`` (random-init DistilGPT-2 offline,
batch 4 x 128 tokens per process) with trainer.devices=1 and =2 into a temporary store and prints
the median ``train/samples_per_second`` after the first 3 steps (the ramp-up) for each.

Usage: python benchmarks/train_throughput.py [--steps 12] [--devices 1 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--devices", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as root:
        os.environ["RLE_PROJECT_ROOT"] = root
        from hydra import compose, initialize_config_dir
        from mlflow import MlflowClient

        from rle.paths import CONF_DIR
        from rle.train import run_training

        for n in args.devices:
            with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
                cfg = compose(
                    "train",
                    [
                        "workload=distilgpt2",
                        "trainer.accelerator=cpu",
                        f"trainer.devices={n}",
                        f"trainer.max_steps={args.steps}",
                        "trainer.enable_progress_bar=false",
                    ],
                )
            result = run_training(cfg)
            hist = MlflowClient(result.tracking_uri).get_metric_history(
                result.run_id, "train/samples_per_second"
            )
            values = [m.value for m in sorted(hist, key=lambda m: m.step)][3:]
            print(
                f"devices={n}: median {statistics.median(values):.2f} samples/s over steps 4..{args.steps} (batch 4 x 128 tokens per process)"
            )  # noqa: T201


if __name__ == "__main__":
    main()
