"""Planted secrets are found nowhere: not in the store, the artifacts, ``outputs/`` or ``multirun/``.

One real training job and one 2-job sweep (``python -m rle.train``) run with a secret environment
variable (``MLFLOW_TRACKING_PASSWORD``, also copied into the run name), a secret-named override
(``+workload.api_token=tok_live_...``) and a token-shaped value under an innocent key
(``+deploy_key=ghp_...``). Then every byte under the temporary root (SQLite database, artifacts,
spool, Hydra's files and logs) is searched for the planted values.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import stat
import string
import subprocess
import sys
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

CLI = [sys.executable, "-m", "rle.train"]

JOB = (
    "workload=synthetic",
    "workload.workers=1",
    "trainer.max_steps=3",
    "trainer.enable_progress_bar=false",
    "telemetry=none",
)

RUN_TIMEOUT_S = 600


def _alnum(n: int) -> str:
    return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(n))


@dataclass(frozen=True)
class Planted:
    password: str  # MLFLOW_TRACKING_PASSWORD (and inside the run name)
    api_token: str  # +workload.api_token=... (a secret-named key)
    deploy_key: str  # +deploy_key=... (innocent key, token-shaped value)

    def all(self) -> dict[str, str]:
        return {
            "MLFLOW_TRACKING_PASSWORD": self.password,
            "api_token": self.api_token,
            "deploy_key": self.deploy_key,
        }


@dataclass(frozen=True)
class Runs:
    root: Path  # everything the jobs wrote is under here
    db: Path
    project: Path
    planted: Planted


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    root = tmp_path_factory.mktemp("secrets")
    planted = Planted(
        password="pw" + _alnum(20),
        api_token="tok_live_" + _alnum(24),
        deploy_key="ghp_" + _alnum(36),
    )
    db = root / "store" / "mlflow.db"
    project = root / "project"
    env = {
        **os.environ,
        "RLE_PROJECT_ROOT": str(project),
        "MLFLOW_TRACKING_PASSWORD": planted.password,
        "MLFLOW_EXPERIMENT_NAME": "secrets",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    overrides = [
        *JOB,
        f"tracking.uri=sqlite:///{db}",
        f"run_name=job-{planted.password}",
        f"+workload.api_token={planted.api_token}",
        f"+deploy_key={planted.deploy_key}",
    ]
    for extra in ([], ["-m", "workload.intensity=0.2,0.4"]):
        out = subprocess.run(
            [*CLI, *extra, *overrides],
            env=env,
            cwd=root,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
            check=False,
        )
        assert out.returncode == 0, (extra, out.stdout[-2000:], out.stderr[-3000:])
    return Runs(root=root, db=db, project=project, planted=planted)


def _leaks(path: Path, planted: Planted) -> list[str]:
    data = path.read_bytes()
    return [name for name, value in planted.all().items() if value.encode() in data]


def _files(where: Path) -> list[Path]:
    return sorted(p for p in where.rglob("*") if p.is_file())


def test_the_jobs_ran_and_stored_their_runs(runs: Runs) -> None:
    with closing(sqlite3.connect(runs.db)) as con:
        statuses = [s for (s,) in con.execute("SELECT status FROM runs")]
        roles = [v for (v,) in con.execute("SELECT value FROM tags WHERE key = 'rle.role'")]
    assert statuses == ["FINISHED"] * 4  # the single job, the sweep parent and its 2 children
    assert sorted(roles) == ["sweep_child", "sweep_child", "sweep_parent"]


def test_no_planted_secret_in_the_store(runs: Runs) -> None:
    store_files = [p for p in _files(runs.db.parent) if p.name.startswith(runs.db.name)]
    assert runs.db in store_files
    leaks = {str(p): _leaks(p, runs.planted) for p in store_files}
    assert not any(leaks.values()), leaks


def test_no_planted_secret_in_the_artifacts(runs: Runs) -> None:
    artifacts = _files(runs.db.parent / "artifacts")
    assert any(p.name == "train.yaml" for p in artifacts)  # the searched files exist
    leaks = {str(p): _leaks(p, runs.planted) for p in artifacts}
    assert not any(v for v in leaks.values()), {k: v for k, v in leaks.items() if v}


def test_no_planted_secret_in_hydra_outputs(runs: Runs) -> None:
    outputs = _files(runs.project / "outputs")
    multirun = _files(runs.project / "multirun")
    hydra_files = [p for p in outputs + multirun if p.parent.name == ".hydra"]
    assert len(hydra_files) == 3 * 3  # config, hydra, overrides for the job and the 2 sweep jobs
    assert any(p.name == "multirun.yaml" for p in multirun)
    leaks = {str(p): _leaks(p, runs.planted) for p in outputs + multirun}
    assert not any(leaks.values()), {k: v for k, v in leaks.items() if v}
    for p in hydra_files:
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p


def test_nothing_anywhere_holds_a_planted_secret(runs: Runs) -> None:
    everything = _files(runs.root)
    leaks = {str(p.relative_to(runs.root)): _leaks(p, runs.planted) for p in everything}
    assert not any(leaks.values()), {k: v for k, v in leaks.items() if v}
