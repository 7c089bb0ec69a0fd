"""Shared fixtures: composed configs, a temporary project root (SQLite store in tmp_path), env hygiene."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from rle.paths import CONF_DIR

# Tests never reach the Hugging Face hub (the `network` marker opts in) and never start
# MLflow's own system-metrics monitor.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every test gets its own project root (tracking store under tmp_path) and no MLflow env."""
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("RLE_PROJECT_ROOT", str(tmp_path / "project"))


@pytest.fixture
def compose_cfg() -> Iterator[Callable[..., DictConfig]]:
    """Compose ``conf/<config_name>.yaml`` with overrides, the way ``@hydra.main`` would."""

    def _compose(*overrides: str, config_name: str = "train") -> DictConfig:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name=config_name, overrides=list(overrides))

    yield _compose
    GlobalHydra.instance().clear()


REPEAT = int(os.environ.get("RLE_TEST_REPEAT", "2"))
"""How many times the flakiness-prone modules run in one session (``RLE_TEST_REPEAT``, default 2)."""


@pytest.fixture(scope="module", params=range(1, REPEAT + 1), ids=lambda n: f"attempt{n}")
def attempt(request: pytest.FixtureRequest) -> int:
    """The repetition (1, 2, ...) of a module that asks for it.

    Issue 15: CI runs the signal and server tests twice to catch flakiness. A module opts in with
    ``pytestmark = pytest.mark.usefixtures("attempt")``: every test of it runs once per attempt,
    attempt by attempt (the fixture is module-scoped, so module fixtures such as the signal tests'
    jobs are made anew for each attempt when they depend on it). ``RLE_TEST_REPEAT=20 make test``
    repeats them 20 times; ``RLE_TEST_REPEAT=1`` once.
    """
    return int(request.param)


TINY = (
    "workload=distilgpt2_tiny",
    "trainer.accelerator=cpu",
    "trainer.max_steps=3",
    "trainer.enable_progress_bar=false",
    "data.block_size=32",
    "data.batch_size=2",
    "data.tokenizer_vocab_size=300",
)
"""Overrides for a tiny, fast training job."""


@pytest.fixture
def tiny_cfg(compose_cfg: Callable[..., DictConfig]) -> Callable[..., DictConfig]:
    """Compose the tiny job, plus extra overrides."""

    def _tiny(*extra: str) -> DictConfig:
        return compose_cfg(*TINY, *extra)

    return _tiny
