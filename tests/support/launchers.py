"""What the launcher tests share: the tiny job's overrides, its environment and the run check.

``tests/test_launchers.py`` (rle.train, strategy=ddp, torchrun, the srun environment) and
``tests/test_slurm_real.py`` (srun under a real slurmctld + slurmd) start the same job and assert
the same outcome: one FINISHED run with every rank's (and node's) telemetry and no clash tag.
"""

from __future__ import annotations

import os
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Run

from rle.tracking.reader import read_samples

__all__ = ["ARGS", "TIMEOUT_S", "one_finished_run", "run_env"]

ARGS = (
    "workload=distilgpt2_tiny",
    "trainer.max_steps=4",
    "trainer.enable_progress_bar=false",
    "telemetry=cpu_only",
    "telemetry.sample_hz=5",
    "data.block_size=32",
    "data.batch_size=2",
    "data.tokenizer_vocab_size=300",
)
TIMEOUT_S = 300


def run_env(root: Path) -> dict[str, str]:
    """This environment without MLflow/SLURM variables, the project root at ``root``, offline."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "SLURM_"))}
    env.update(RLE_PROJECT_ROOT=str(root), HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    return env


def one_finished_run(root: Path, ranks: int, nodes: int = 1) -> Run:
    """Assert ``root``'s store holds one FINISHED run with every rank's and node's telemetry.

    Returns:
        The run, for further checks.
    """
    client = MlflowClient(f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 1, [(r.info.run_name, r.info.status) for r in runs]
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert "telemetry.key_clash" not in run.data.tags
    for r in range(ranks):
        assert f"system/rank_{r}/process_cpu_percentage" in run.data.metrics
    frame = read_samples(run.info.run_id, client.tracking_uri)
    assert set(frame["rank"]) == set(range(ranks))
    assert set(frame["node_rank"]) == set(range(nodes))
    if nodes > 1:
        for n in range(nodes):
            assert f"system/node_{n}/system_memory_usage_percentage" in run.data.metrics
        assert {f"node_{n}/cpu" for n in range(nodes)} <= set(frame["device"])
    return run
