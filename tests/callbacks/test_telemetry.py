"""TelemetryCallback with a real Trainer and a real SQLite store; FakeGpuSource stands in for NVML."""

from __future__ import annotations

from typing import Any

import lightning as L
import pytest
from mlflow import MlflowClient

from rle.callbacks.telemetry import TelemetryCallback
from rle.paths import resolve_tracking
from rle.tracking.logger import MLflowRunLogger, create_run
from rle.tracking.reader import read_samples
from support.tiny import TinyModule

FAKE_GPU = {
    "_target_": "rle.telemetry.fake.FakeGpuSource",
    "index": 0,
    "util_pct": [90.0, 60.0, 95.0],
}
CPU = {"_target_": "rle.telemetry.cpu.CpuHostSource", "per_core": False}
PROCESS = {"_target_": "rle.telemetry.cpu.ProcessSource"}
FINAL_ONLY = ("collapse_events", "collapse_seconds", "collapse_fraction", "rle_smoothed_mean")


def _fit(sources: dict[str, Any], steps: int = 5, **kwargs: Any) -> tuple[MlflowClient, str]:
    loc = resolve_tracking(None)
    exp_id, run_id = create_run(loc, "test", "r", {})
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=steps,
        log_every_n_steps=1,
        logger=MLflowRunLogger(loc.uri, run_id, exp_id),
        callbacks=[TelemetryCallback(sources=sources, **kwargs)],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    # each step lasts >= 0.12 s, so every window at 20 Hz holds samples
    trainer.fit(TinyModule(step_sleep_s=0.12))
    return MlflowClient(loc.uri), run_id


def _steps(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return [m.step for m in client.get_metric_history(run_id, key)]


def test_system_rle_and_train_keys_share_the_step_axis() -> None:
    client, run_id = _fit({"gpu": FAKE_GPU, "cpu": CPU, "process": PROCESS}, sample_hz=20)
    metrics = client.get_run(run_id).data.metrics
    per_step = [k for k in metrics if not k.startswith("summary/") and not k.endswith(FINAL_ONLY)]
    assert {k.split("/")[0] for k in per_step} == {"system", "rle", "train"}
    grad_steps = _steps(client, run_id, "train/grad_norm")
    assert grad_steps == [0, 1, 2, 3, 4]
    for key in per_step:
        assert _steps(client, run_id, key) == grad_steps, key


def test_exact_keys_no_metric_for_absent_sensors_and_artifacts() -> None:
    client, run_id = _fit({"gpu": FAKE_GPU, "cpu": CPU, "process": PROCESS}, sample_hz=20)
    run = client.get_run(run_id)
    metrics = set(run.data.metrics)
    for key in (
        "system/gpu_0_utilization_percentage",
        "system/gpu_0_power_usage_watts",
        "system/gpu_0_power_usage_max_watts",
        "system/gpu_0_temperature_celsius",
        "system/gpu_0_temperature_max_celsius",
        "system/gpu_0_energy_joules",
        "system/cpu_utilization_percentage",
        "system/rank_0/process_cpu_percentage",
        "system/telemetry_overhead_milliseconds",
        "rle/gpu_0/rle_smoothed",
        "rle/gpu_0/e_th",
        "rle/gpu_0/e_pw",
        "rle/gpu_0/t_sustain_seconds",
        "rle/gpu_0/collapse",
        "rle/gpu_0/collapse_events",
        "rle/gpu_0/collapse_fraction",
        "train/energy_joules_per_step",
        "train/samples_per_joule",
        "summary/gpu_0_power_mean_watts",
        "summary/gpu_0_temperature_max_celsius",
    ):
        assert key in metrics, key
    # this machine has no CPU power or temperature: absent, never zero; CPU RLE absent with a reason
    assert not [k for k in metrics if "cpu_package" in k or k.startswith("rle/cpu/")]
    tags = run.data.tags
    assert tags["power_source.cpu"] == "none"
    assert "power source" in tags["rle.cpu.absent"]
    assert "gpu" in tags["telemetry.sources"]
    assert [m.value for m in client.get_metric_history(run_id, "rle/gpu_0/collapse_events")] == [
        0.0
    ]
    frame = read_samples(run_id, client.tracking_uri)
    assert set(frame["device"]) == {"cpu", "gpu_0"}
    assert (
        frame["wall_time_s"].is_monotonic_increasing
        or frame.groupby("device")["wall_time_s"].apply(lambda s: s.is_monotonic_increasing).all()
    )
    assert {"global_step", "rank", "monotonic_s", "rle_smoothed", "E_th", "util_pct"} <= set(
        frame.columns
    )
    assert frame["global_step"].between(0, 5).all()
    # warm-up is 60 s: no collapse, so no events file (its absence means no events)
    assert [a.path for a in client.list_artifacts(run_id, "telemetry")] == [
        "telemetry/samples",
        "telemetry/samples_preview.csv",
        "telemetry/samples_schema.json",
    ]
    assert [a.path for a in client.list_artifacts(run_id, "telemetry/samples/rank_0")] == [
        "telemetry/samples/rank_0/part-00000.parquet"
    ]


def test_estimated_cpu_power_is_the_only_way_to_cpu_rle() -> None:
    est = {"_target_": "rle.telemetry.cpu.EstimatedCpuPowerSource", "rated_w": 100.0}
    client, run_id = _fit({"cpu": CPU, "est": est}, steps=3, sample_hz=20, cpu_rated_w=100.0)
    run = client.get_run(run_id)
    assert run.data.tags["power_source.cpu"] == "estimated"
    assert "rle/cpu/rle_smoothed" in run.data.metrics
    # no temperature: the detector is disabled, so collapse is not logged as 0
    assert "rle/cpu/collapse" not in run.data.metrics
    assert run.data.tags["rle.cpu.collapse"].startswith("disabled")


def test_rle_overrides_reach_the_metric() -> None:
    client, run_id = _fit(
        {"gpu": FAKE_GPU},
        steps=3,
        sample_hz=20,
        rle={"profile": "default", "smooth": {"window_s": None}},
    )
    base = client.get_run(run_id).data.metrics["rle/gpu_0/e_th"]
    client2, run_id2 = _fit({"gpu": FAKE_GPU}, steps=3, sample_hz=20, rle={"profile": "legacy_v2"})
    assert client2.get_run(run_id2).data.metrics["rle/gpu_0/e_th"] != pytest.approx(base)


def test_bad_rle_profile_fails_at_construction() -> None:
    from rle.errors import MetricInputError

    with pytest.raises(MetricInputError):
        TelemetryCallback(sources={}, rle={"profile": "nope"})
    with pytest.raises(ValueError, match="sample_hz"):
        TelemetryCallback(sources={}, sample_hz=0)


def test_a_stalled_source_does_not_stall_training() -> None:
    import time

    stalled = {
        "_target_": "rle.telemetry.fake.ScriptedSource",
        "readings": [{"x_percentage": 1.0}],
        "name": "slow",
        "stall_s": 3.0,
        "cycle": True,
    }
    t0 = time.monotonic()
    client, run_id = _fit({"slow": stalled, "cpu": CPU}, steps=3, sample_hz=20)
    assert client.get_run(run_id).info.status == "RUNNING"  # created by the test; fit returned
    assert time.monotonic() - t0 < 20  # generous: 3 steps of 0.12 s, not 3 x 3 s stalls


@pytest.mark.parametrize(
    ("rle", "column", "expected"),
    [
        ({"thermal": {"limit_c": {"gpu": 55.0}}}, "limit_c", 55.0),
        ({"load": {"rated_w": {"gpu": 123.0}}}, "rated_w", 123.0),
    ],
)
def test_explicit_metric_inputs_beat_the_sensor(
    rle: dict[str, Any], column: str, expected: float
) -> None:
    client, run_id = _fit({"gpu": FAKE_GPU}, steps=3, sample_hz=20)
    sensor = read_samples(run_id, client.tracking_uri)
    assert (sensor[column] != expected).all()  # the fake sensor reports its own value
    client, run_id = _fit(
        {"gpu": FAKE_GPU}, steps=3, sample_hz=20, rle={"profile": "default", **rle}
    )
    frame = read_samples(run_id, client.tracking_uri)
    gpu = frame[frame["device"] == "gpu_0"]
    assert not gpu.empty
    assert (gpu[column] == expected).all()
