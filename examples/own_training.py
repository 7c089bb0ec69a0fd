"""rle in your own training script: Lightning's MLFlowLogger plus one callback.

    python examples/own_training.py                     # SQLite store ./mlruns/mlflow.db
    MLFLOW_TRACKING_URI=http://127.0.0.1:5000 python examples/own_training.py
    torchrun --standalone --nproc_per_node=2 examples/own_training.py --devices 2

Prints the run id; the run holds the module's own metrics, rle's ``train/*``, ``system/*`` and
``rle/*`` metrics on the same steps, rle's tags and the raw samples (``telemetry/samples/``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import lightning as L
from lightning.pytorch.loggers import MLFlowLogger

sys.path.insert(0, str(Path(__file__).resolve().parent))
from my_model import Regression, RegressionData  # noqa: E402

from rle import StopOnSignal, TelemetryCallback  # noqa: E402
from rle.tracking.logger import ensure_store  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-steps", type=int, default=30)
    parser.add_argument("--devices", type=int, default=1)
    args = parser.parse_args()
    uri = (
        os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlruns' / 'mlflow.db'}"
    )
    ensure_store(uri)  # every torchrun rank opens the store: create a new one's schema once
    logger = MLFlowLogger(experiment_name="my-project", tracking_uri=uri, log_model=False)
    # SIGTERM/SIGINT (a scheduler pre-empting the job): every rank stops after the same step
    stop = StopOnSignal()
    trainer = L.Trainer(
        accelerator="auto",
        devices=args.devices,
        max_steps=args.max_steps,
        log_every_n_steps=5,
        logger=logger,
        callbacks=[TelemetryCallback(), stop],  # real hardware: psutil, NVML, RAPL, hwmon
        enable_checkpointing=False,
        enable_progress_bar=False,
    )
    trainer.fit(Regression(), datamodule=RegressionData())
    if trainer.is_global_zero:
        print(f"run_id={logger.run_id}")  # noqa: T201
    if stop.signum is not None:  # pre-empted: Lightning ended the run FINISHED, say KILLED
        if trainer.is_global_zero:
            logger.experiment.set_terminated(logger.run_id, "KILLED")
        sys.exit(128 + stop.signum)


if __name__ == "__main__":
    main()
