"""Every option of every config group composes, and bad choices list the valid ones."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import DictConfig

from rle.paths import CONF_DIR

GROUPS = ["workload", "data", "trainer", "tracking", "telemetry"]


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


@pytest.mark.parametrize(
    ("group", "option"), [(g, o) for g in GROUPS for o in _options(g)], ids=lambda v: str(v)
)
def test_every_option_composes(
    compose_cfg: Callable[..., DictConfig], group: str, option: str
) -> None:
    cfg = compose_cfg(f"{group}={option}")
    assert set(cfg) >= {"workload", "data", "trainer", "tracking", "seed"}
    assert cfg.trainer.log_every_n_steps >= 1
    assert cfg.workload.name


def test_defaults_are_the_main_job(compose_cfg: Callable[..., DictConfig]) -> None:
    cfg = compose_cfg()
    assert cfg.workload.name == "distilgpt2"
    assert (cfg.workload.model.n_layer, cfg.workload.model.n_head, cfg.workload.model.n_embd) == (
        6,
        12,
        768,
    )
    assert cfg.workload.model.vocab_size == 50257
    assert cfg.trainer.log_every_n_steps == 1
    assert cfg.trainer.devices == 1
    assert cfg.tracking.uri is None


def test_unknown_workload_lists_choices(compose_cfg: Callable[..., DictConfig]) -> None:
    with pytest.raises(
        MissingConfigException, match=r"(?s)Available options in 'workload'.*distilgpt2"
    ):
        compose_cfg("workload=nope")


def test_unknown_key_is_refused(compose_cfg: Callable[..., DictConfig]) -> None:
    with pytest.raises(ConfigCompositionException, match="trainer.devicez"):
        compose_cfg("trainer.devicez=2")
