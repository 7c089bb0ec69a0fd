"""The built wheel, installed outside the checkout, works as a library and as CLIs (slow).

Builds the wheel with pip, installs it (no dependencies) into a fresh virtual environment whose
dependencies come from the test's own environment (a ``.pth`` line to its site-packages, which
does not carry the editable install of the checkout), then runs everything from a directory
outside the checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from mlflow import MlflowClient

pytestmark = pytest.mark.slow

CHECKOUT = Path(__file__).resolve().parents[1]
TINY = (
    "workload=distilgpt2_tiny",
    "trainer.max_steps=3",
    "trainer.enable_progress_bar=false",
    "telemetry=cpu_only",
    "data.block_size=32",
    "data.batch_size=2",
    "data.tokenizer_vocab_size=300",
)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("wheel")
    dist = root / "dist"
    source = root / "source"  # a copy: building writes build/ and *.egg-info beside the sources
    shutil.copytree(CHECKOUT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(CHECKOUT / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(source)],
        check=True,
        timeout=600,
    )
    (wheel,) = dist.glob("rle-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "--no-deps",
            "--no-index",
            "-q",
            str(wheel),
        ],
        check=True,
        timeout=300,
    )
    return venv


def _run(venv: Path, cwd: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "RLE_", "PYTHON"))}
    env.update(HF_HUB_OFFLINE="1", PATH=f"{venv / 'bin'}:{env.get('PATH', '')}")
    return subprocess.run(
        list(argv), cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False
    )


def test_the_package_comes_from_the_wheel_with_its_config(installed: Path, tmp_path: Path) -> None:
    out = _run(
        installed,
        tmp_path,
        "python",
        "-c",
        "import rle, rle.paths as p; print(rle.__file__); print(p.CONF_DIR)",
    )
    assert out.returncode == 0, out.stderr
    module, conf = out.stdout.split()
    assert module.startswith(str(installed))
    assert not module.startswith(str(CHECKOUT))
    assert (Path(conf) / "train.yaml").is_file()


@pytest.mark.parametrize("cli", ["rle-train", "rle-evaluate", "rle-ingest", "rle-sync"])
def test_every_cli_answers_help_from_another_directory(
    installed: Path, tmp_path: Path, cli: str
) -> None:
    out = _run(installed, tmp_path, cli, "--help")
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip()


def test_a_three_step_run_lands_in_the_launch_directory(installed: Path, tmp_path: Path) -> None:
    out = _run(installed, tmp_path, "rle-train", *TINY, "hydra.job.chdir=true")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    db = tmp_path / "mlruns" / "mlflow.db"  # the launch directory, not Hydra's run dir
    assert db.is_file()
    assert not list((tmp_path / "outputs").rglob("mlflow.db"))
    client = MlflowClient(f"sqlite:///{db}")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.info.status == "FINISHED"
    assert "train/grad_norm" in run.data.metrics


def test_the_example_runs_against_the_installed_wheel(installed: Path, tmp_path: Path) -> None:
    for name in ("own_training.py", "my_model.py"):
        (tmp_path / name).write_text((CHECKOUT / "examples" / name).read_text())
    out = _run(installed, tmp_path, "python", "own_training.py", "--max-steps", "10")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    run_id = out.stdout.strip().splitlines()[-1].removeprefix("run_id=")
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    metrics = run.data.metrics
    assert {"train/grad_norm", "train/loss", "grad_norm_total"} <= set(metrics)
    assert any(k.startswith("system/") and "cpu" in k for k in metrics)  # real host telemetry
    assert "telemetry.sources" in run.data.tags
    assert "telemetry/samples" in [a.path for a in client.list_artifacts(run_id, "telemetry")]
    # the module's own grad_norm and rle's share steps and values; train/loss has one writer
    ours = [(m.step, m.value) for m in client.get_metric_history(run_id, "train/grad_norm")]
    theirs = [(m.step, m.value) for m in client.get_metric_history(run_id, "grad_norm_total")]
    assert [s for s, _ in ours] == [s for s, _ in theirs]
    assert all(
        abs(a - b) <= 1e-6 * max(1.0, abs(b)) for (_, a), (_, b) in zip(ours, theirs, strict=True)
    )
    loss_steps = [m.step for m in client.get_metric_history(run_id, "train/loss")]
    assert len(loss_steps) == len(set(loss_steps))
