"""Params hold only the settings that apply to the run's workload, and never ``None``."""

from __future__ import annotations

from collections.abc import Callable

from mlflow import MlflowClient
from omegaconf import DictConfig

from rle.paths import resolve_tracking
from rle.train import applicable_config, flatten_config, run_training

SYNTHETIC = (
    "workload=synthetic",
    "workload.period_s=0.05",
    "workload.workers=1",
    "trainer.accelerator=cpu",
    "trainer.max_steps=4",
    "trainer.enable_progress_bar=false",
    "telemetry=cpu_only",
)


def _params(run_id: str) -> dict[str, str]:
    return MlflowClient(resolve_tracking(None).uri).get_run(run_id).data.params


def _flat(cfg: DictConfig) -> dict[str, object]:
    return flatten_config(applicable_config(cfg))


def test_synthetic_patterns_keep_only_their_own_settings(
    compose_cfg: Callable[..., DictConfig],
) -> None:
    constant = _flat(compose_cfg("workload=synthetic"))
    assert constant["workload.intensity"] == 0.5
    assert not [k for k in constant if k.startswith(("data.", "workload.ramp", "workload.sine"))]
    assert not [k for k in constant if k.startswith("workload.step")]
    sine = _flat(compose_cfg("workload=synthetic", "workload.pattern=sine"))
    assert {k for k in sine if k.startswith("workload.sine.")} == {
        "workload.sine.mean",
        "workload.sine.amplitude",
        "workload.sine.frequency_hz",
    }
    assert "workload.intensity" not in sine
    assert not [k for k in sine if k.startswith(("workload.ramp", "workload.step"))]
    # the variants inherit the rule from synthetic.yaml
    gpu = _flat(compose_cfg("workload=synthetic_gpu", "workload.pattern=step"))
    assert gpu["workload.step.levels"] == [0.2, 0.4, 0.6, 0.8]
    assert "workload.intensity" not in gpu


def test_token_workloads_keep_data_and_no_synthetic_keys(
    compose_cfg: Callable[..., DictConfig],
) -> None:
    flat = _flat(compose_cfg("workload=distilgpt2_tiny"))
    assert flat["data.block_size"] == 128
    assert not [k for k in flat if k.startswith("synthetic.")]
    assert not {"workload.intensity", "workload.pattern", "workload.period_s"} & set(flat)
    assert None not in flat.values()
    assert "workload.model.path" not in flat  # None leaf


def test_telemetry_off_keeps_only_the_switch(compose_cfg: Callable[..., DictConfig]) -> None:
    flat = _flat(compose_cfg("workload=synthetic", "telemetry=none"))
    assert [k for k in flat if k.startswith("telemetry.")] == ["telemetry.enabled"]


def test_module_workloads_read_no_data_group_unless_declared() -> None:
    cfg = {"workload": {"module": {"_target_": "m.M", "hidden": 4}}, "data": {"path": "x"}}
    assert "data.path" not in flatten_config(applicable_config(cfg))
    cfg["workload"]["_groups_"] = ["data"]
    assert flatten_config(applicable_config(cfg))["data.path"] == "x"
    # a builder workload without a declaration is assumed to read every group
    builder = {"workload": {"_target_": "m.build"}, "data": {"path": "x"}}
    assert flatten_config(applicable_config(builder))["data.path"] == "x"


def test_real_runs_store_only_applicable_params(
    compose_cfg: Callable[..., DictConfig], tiny_cfg: Callable[..., DictConfig]
) -> None:
    ramp = run_training(compose_cfg(*SYNTHETIC, "workload.pattern=ramp"))
    params = _params(ramp.run_id)
    assert params["workload.pattern"] == "ramp"
    assert params["workload.ramp.start"] == "0.1"
    assert not [k for k in params if k.startswith(("data.", "workload.sine", "workload.step"))]
    assert "workload.intensity" not in params
    assert "None" not in params.values()
    assert not [
        k for k in params if k.startswith("telemetry.rle.") and k != "telemetry.rle.profile"
    ]

    lm = run_training(tiny_cfg("trainer.max_steps=2"))
    params = _params(lm.run_id)
    assert params["data.block_size"] == "32"
    assert not [k for k in params if k.startswith("synthetic.")]
    assert not {"workload.intensity", "workload.pattern", "workload.ramp.start"} & set(params)
    assert "None" not in params.values()


def test_the_resolved_metric_profile_is_logged_once(
    compose_cfg: Callable[..., DictConfig],
) -> None:
    cfg = compose_cfg(*SYNTHETIC, "telemetry.rle.collapse.drop_frac=0.6")
    result = run_training(cfg)
    params = _params(result.run_id)
    assert not [k for k in params if k.startswith("telemetry.rle.")]  # no override leaves
    assert params["rle.profile.name"] == "default"
    assert float(params["rle.profile.collapse.drop_frac"]) == 0.6  # the override, resolved
    # a profile default that was not overridden is there too, with the profile's value
    from rle.metric import profile_from_config

    default = profile_from_config({"profile": "default"})
    assert float(params["rle.profile.smooth.window_s"]) == default.smooth.window_s
    assert "None" not in params.values()
