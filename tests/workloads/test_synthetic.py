"""The synthetic duty-cycle LightningModule: builder validation, a short CPU fit, worker cleanup."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from typing import Any

import lightning as L
import psutil
import pytest
import torch
from omegaconf import DictConfig

from rle.errors import ConfigError
from rle.tracking import keys
from rle.workloads.load import Pattern
from rle.workloads.synthetic import (
    SyntheticDataModule,
    SyntheticLoadModule,
    build_synthetic_workload,
)
from support.runif import requires_gpu

CPU = ("workload=synthetic_cpu", "trainer.accelerator=cpu")


class Recorder(L.Callback):
    """Records what the telemetry callback would read at each step, and the worker pids."""

    def __init__(self) -> None:
        self.metrics: list[dict[str, float]] = []
        self.steps: list[int] = []
        self.grad_finite: list[bool] = []
        self.losses: list[float] = []
        self.pids: set[int] = set()

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: Any, batch: Any, batch_idx: int
    ) -> None:
        self.pids.update(pl_module.worker_pids)

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: Any, optimizer: Any) -> None:
        grads = [p.grad for p in pl_module.parameters()]
        self.grad_finite.append(
            all(g is not None for g in grads)
            and bool(torch.isfinite(torch.nn.utils.get_total_norm(grads)))
            and float(torch.nn.utils.get_total_norm(grads)) > 0
        )

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.steps.append(trainer.global_step)
        self.metrics.append(pl_module.step_metrics())
        self.losses.append(float(outputs["loss"]))


def _fit(module: SyntheticLoadModule, max_steps: int = 5) -> Recorder:
    rec = Recorder()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=max_steps,
        max_epochs=-1,
        logger=False,
        callbacks=[rec],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        gradient_clip_val=1.0,
    )
    trainer.fit(module, datamodule=SyntheticDataModule())
    return rec


def _gone(pids: set[int]) -> bool:
    return not any(
        psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids
    )


# ------------------------------------------------------------------------------------------ builder


def test_builder_makes_a_cpu_workload(compose_cfg: Callable[..., DictConfig]) -> None:
    cfg = compose_cfg(*CPU, "workload.duration_s=1.0", "workload.period_s=0.3")
    w = build_synthetic_workload(cfg, intra_op_threads=2)
    m = w.module
    assert isinstance(m, SyntheticLoadModule)
    assert m.steps_for_duration == 4  # ceil(1.0 / 0.3)
    assert (m.period_s, m.matrix_size, m.workers, m.device_kind) == (0.3, 256, 2, "cpu")
    assert w.tags == {"synthetic.device": "cpu", "synthetic.pattern": "constant"}
    assert w.params["synthetic.steps_for_duration"] == 4
    assert w.tokens_per_sample is None
    assert m.step_metrics() == {}  # nothing before the first step


def test_every_synthetic_option_has_a_name(compose_cfg: Callable[..., DictConfig]) -> None:
    names = {
        o: compose_cfg(f"workload={o}").workload.name
        for o in ("synthetic", "synthetic_cpu", "synthetic_gpu")
    }
    assert names == {
        "synthetic": "synthetic",
        "synthetic_cpu": "synthetic_cpu",
        "synthetic_gpu": "synthetic_gpu",
    }


def test_ramp_spans_max_steps_periods_without_a_duration(
    compose_cfg: Callable[..., DictConfig],
) -> None:
    cfg = compose_cfg(
        *CPU, "workload.pattern=ramp", "trainer.max_steps=50", "workload.period_s=0.2"
    )
    m = build_synthetic_workload(cfg, None).module
    assert m.pattern_duration_s == pytest.approx(10.0)
    assert m.steps_for_duration is None


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (("workload.intensity=1.5",), r"workload.intensity=1.5 is outside \[0, 1\]"),
        (
            ("workload.intensity=-0.2",),
            r"workload.intensity=-0.2 is outside \[0, 1\].*between 0 and 1",
        ),
        (("workload.period_s=0",), r"workload.period_s must be a positive number of seconds"),
        (("workload.period_s=-0.1",), r"workload.period_s must be a positive number of seconds"),
        (("workload.matrix_size=0",), r"workload.matrix_size must be >= 1"),
        (
            ("workload.pattern=zigzag",),
            r"workload.pattern='zigzag' is not a known pattern.*constant, ramp",
        ),
        (("workload.device=tpu",), r"workload.device='tpu' is not one of auto, cpu, gpu"),
        (("workload.workers=0",), r"workload.workers must be an integer >= 1"),
        (("workload.duration_s=-5",), r"workload.duration_s must be a positive number"),
        (("workload.pattern=step", "trainer.max_steps=-1"), r"pattern=step spans the run duration"),
        (("trainer.accelerator=gpu",), r"workload.device=cpu but trainer.accelerator=gpu"),
    ],
)
def test_bad_config_is_a_config_error(
    compose_cfg: Callable[..., DictConfig], overrides: tuple[str, ...], match: str
) -> None:
    cfg = compose_cfg(*CPU, *overrides)
    with pytest.raises(ConfigError, match=match):
        build_synthetic_workload(cfg, 2)


def test_gpu_load_without_cuda_is_a_config_error(
    compose_cfg: Callable[..., DictConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = compose_cfg("workload=synthetic_gpu", "trainer.accelerator=gpu")
    with pytest.raises(
        ConfigError, match=r"workload.device=gpu .* no CUDA GPU is visible.*never falls back"
    ):
        build_synthetic_workload(cfg, None)
    with pytest.raises(ConfigError, match=r"no CUDA GPU is visible"):
        SyntheticLoadModule(Pattern(), device="gpu")


def test_gpu_load_on_a_cpu_trainer_is_a_config_error(
    compose_cfg: Callable[..., DictConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    cfg = compose_cfg("workload=synthetic_gpu", "trainer.accelerator=cpu")
    with pytest.raises(
        ConfigError, match=r"workload.device=gpu but trainer.accelerator=cpu; use trainer=gpu"
    ):
        build_synthetic_workload(cfg, None)


# ---------------------------------------------------------------------------------------------- fit


def test_fit_runs_duty_cycle_periods_with_real_gradients() -> None:
    module = SyntheticLoadModule(
        Pattern("constant", intensity=0.5), period_s=0.05, matrix_size=32, workers=2
    )
    rec = _fit(module, max_steps=5)

    assert rec.steps == [1, 2, 3, 4, 5]
    assert rec.grad_finite == [True] * 5
    assert all(math.isfinite(v) for v in rec.losses)
    assert {tuple(sorted(m)) for m in rec.metrics} == {
        (keys.SYNTHETIC_DUTY_CYCLE_ACHIEVED, keys.SYNTHETIC_INTENSITY_TARGET)
    }
    assert [m[keys.SYNTHETIC_INTENSITY_TARGET] for m in rec.metrics] == [0.5] * 5
    achieved = [m[keys.SYNTHETIC_DUTY_CYCLE_ACHIEVED] for m in rec.metrics]
    assert statistics.median(achieved) == pytest.approx(0.5, abs=0.15)
    # one extra worker process ran, and it is gone after fit
    assert len(rec.pids) == 1
    assert module.worker_pids == []
    assert _gone(rec.pids)


def test_pattern_changes_per_period_and_duration_stops_the_run() -> None:
    pattern = Pattern("step", step_levels=(0.2, 0.8))
    module = SyntheticLoadModule(pattern, period_s=0.02, matrix_size=8, workers=1, duration_s=0.1)
    assert module.steps_for_duration == 5
    rec = _fit(module, max_steps=-1)  # the module's duration ends the run
    assert rec.steps == [1, 2, 3, 4, 5]
    targets = [m[keys.SYNTHETIC_INTENSITY_TARGET] for m in rec.metrics]
    assert targets[0] == 0.2
    assert targets[-1] == 0.8
    assert targets == sorted(targets)


class _Exploding(SyntheticLoadModule):
    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        if batch_idx == 2:
            raise RuntimeError("boom")
        return super().training_step(batch, batch_idx)


def test_workers_stop_when_training_fails() -> None:
    module = _Exploding(Pattern("constant", intensity=0.3), period_s=0.02, matrix_size=8, workers=2)
    rec = Recorder()
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=5,
        logger=False,
        callbacks=[rec],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit(module, datamodule=SyntheticDataModule())
    assert len(rec.pids) == 1
    assert module.worker_pids == []
    assert _gone(rec.pids)


def test_cpu_module_on_a_gpu_is_refused_at_setup() -> None:
    module = SyntheticLoadModule(Pattern(), device="cpu", matrix_size=8)
    module._device = torch.device("cuda", 0)  # what Lightning fakes before setup on a GPU trainer
    with pytest.raises(
        ConfigError, match=r"workload.device=cpu but the trainer placed the module on cuda:0"
    ):
        module.setup("fit")


@requires_gpu
def test_gpu_duty_cycle() -> None:
    module = SyntheticLoadModule(Pattern("constant", intensity=0.5), period_s=0.05, device="gpu")
    rec = Recorder()
    trainer = L.Trainer(
        accelerator="gpu",
        devices=1,
        max_steps=5,
        logger=False,
        callbacks=[rec],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=SyntheticDataModule())
    achieved = [m[keys.SYNTHETIC_DUTY_CYCLE_ACHIEVED] for m in rec.metrics]
    assert statistics.median(achieved) == pytest.approx(0.5, abs=0.15)
    assert module.worker_pids == []
