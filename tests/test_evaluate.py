"""run_evaluation end to end: tiny training runs into a temporary store, then their evaluation."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric
from omegaconf import DictConfig

from rle.analysis.correlation import CORRELATION_COLUMNS
from rle.errors import ConfigError
from rle.evaluate import EvalResult, run_evaluation, summary_text
from rle.paths import resolve_tracking
from rle.tracking.logger import client_for, create_run, end_run
from rle.train import run_training

FAST_EVAL = (
    # tiny runs last ~2 s: a 5 Hz grid, short blocks and lags, few permutations
    "evaluation.correlation.resample_hz=5",
    "evaluation.correlation.max_lag_s=1",
    "evaluation.correlation.block_s=0.4",
    "evaluation.correlation.min_points=5",
    "evaluation.correlation.n_permutations=99",
    "evaluation.plots.dpi=60",
)


def _client() -> MlflowClient:
    return MlflowClient(resolve_tracking(None).uri)


def _evaluate(compose_cfg: Callable[..., DictConfig], *overrides: str) -> EvalResult:
    return run_evaluation(compose_cfg(*FAST_EVAL, *overrides, config_name="evaluate"))


def test_two_workloads_trained_then_evaluated(compose_cfg: Callable[..., DictConfig]) -> None:
    # synthetic duty-cycle load: 40 steps of 0.05 s (2 s), fake GPU sampled at 10 Hz
    common = (
        "workload=synthetic",
        "workload.period_s=0.05",
        "workload.workers=1",
        "trainer.accelerator=cpu",
        "trainer.max_steps=40",
        "trainer.enable_progress_bar=false",
        "telemetry=fake",
        "telemetry.sample_hz=10",
    )
    a = run_training(
        compose_cfg(*common, "workload.intensity=0.3", "+tracking.tags.workload=light")
    )
    b = run_training(
        compose_cfg(*common, "workload.intensity=0.9", "+tracking.tags.workload=heavy", "seed=7")
    )
    result = _evaluate(compose_cfg)
    print(summary_text(result))  # noqa: T201 (visible with -s: the terminal table)

    assert result.status == "FINISHED", result.message
    assert sorted(result.runs["run_id"]) == sorted([a.run_id, b.run_id])
    assert set(result.runs["source"]) == {"samples"}
    groups = result.group_fingerprints.set_index(["group", "device"])
    assert {("light", "gpu_0"), ("heavy", "gpu_0"), ("light", "cpu")} <= set(groups.index)
    gpu = groups.loc[("light", "gpu_0")]
    assert gpu["n_samples"] > 5
    assert gpu["power_mean_watts"] > 0
    assert gpu["energy_per_step_joules"] > 0
    assert gpu["rle_mean"] > 0
    assert gpu["energy_source"] == "counter"
    assert math.isnan(groups.loc[("light", "cpu")]["power_mean_watts"])  # no RAPL here: absent
    assert not result.warnings  # the two workloads trained differently
    assert not result.classifier.available
    assert "at least 2 runs" in result.classifier.reason

    corr = result.correlations
    assert list(corr.columns) == list(CORRELATION_COLUMNS)
    gpu_rows = corr[
        (corr["device"] == "gpu_0")
        & (corr["x"] == "train/grad_norm")
        & (corr["y"] == "rle_smoothed")
    ]
    assert {
        "pearson",
        "spearman",
        "pearson_diff",
        "spearman_diff",
        "xcorr_diff",
        "xcorr_diff_peak",
    } <= set(gpu_rows["method"])
    lags = gpu_rows[gpu_rows["method"] == "xcorr_diff"]["lag_s"]
    assert lags.min() == -1.0
    assert lags.max() == 1.0
    assert gpu_rows[gpu_rows["method"] == "pearson"]["r"].notna().all()
    cpu_rows = corr[(corr["device"] == "cpu") & (corr["y"] == "rle_smoothed")]
    assert cpu_rows["note"].str.startswith("N/A").all()
    assert (corr["method"] == "spike_collapse").any()

    client = _client()
    ev = client.get_run(result.run_id)
    assert ev.info.status == "FINISHED"
    assert ev.data.tags["rle.role"] == "evaluation"
    assert ev.data.tags["rle.kind"] == "evaluation"
    assert set(ev.data.params["selection.run_ids"].split(",")) == {a.run_id, b.run_id}
    files = {Path(f.path).name for f in client.list_artifacts(result.run_id)}
    assert {
        "fingerprints.csv",
        "correlations.csv",
        "report.md",
        "lag_plot.png",
        "fingerprint_comparison.png",
        "scatter_grad_norm_vs_rle.png",
        "scatter_loss_vs_rle.png",
        "scatter_temperature_vs_grad_norm.png",
    } <= files
    fp = pd.read_csv(result.output_dir / "fingerprints.csv")
    assert set(fp["level"]) == {"run", "workload"}
    report = (result.output_dir / "report.md").read_text()
    assert "lag > 0 means the hardware series follows the training series" in report
    assert "Not run: needs at least 2 workloads" in report

    # a second evaluation does not evaluate the first one
    again = _evaluate(compose_cfg, "output.log_to_mlflow=false")
    assert sorted(again.runs["run_id"]) == sorted([a.run_id, b.run_id])
    assert result.run_id in set(again.skipped["run_id"])
    # a sweep-parent-style selection by explicit ids works too
    one = _evaluate(
        compose_cfg,
        f"selection.run_ids=[{a.run_id}]",
        "output.log_to_mlflow=false",
        "evaluation.plots.enabled=false",
    )
    assert one.runs["run_id"].tolist() == [a.run_id]


def _fake_run(
    workload: str, power_w: float, steps: int = 40, end: bool = True, telemetry: bool = True
) -> str:
    """A run with step-level metrics only (no samples artifact), as an older or foreign writer leaves."""
    loc = resolve_tracking(None)
    _, run_id = create_run(loc, "rle", f"{workload}", {"workload": workload})
    metrics = []
    for s in range(1, steps + 1):
        ts = 1_700_000_000_000 + 500 * s
        metrics += [
            Metric("train/loss", 5.0 / s + 0.01 * (s % 3), ts, s),
            Metric("train/grad_norm", 1.0 + (s % 5), ts, s),
            Metric("train/samples_per_second", 8.0, ts, s),
        ]
        if telemetry:
            metrics += [
                Metric("system/gpu_0_power_usage_watts", power_w + (s % 4), ts, s),
                Metric("system/gpu_0_temperature_celsius", 40.0 + power_w / 10 + 0.1 * s, ts, s),
                Metric("system/gpu_0_utilization_percentage", power_w / 3, ts, s),
                Metric("system/gpu_0_energy_joules", power_w * 0.5, ts, s),
                Metric("rle/gpu_0/rle_smoothed", 0.5 + 0.01 * (s % 7), ts, s),
            ]
    client_for(loc).log_batch(run_id, metrics=metrics, synchronous=True)
    if end:
        end_run(loc, run_id, "FINISHED")
    return run_id


def test_step_metric_runs_classifier_running_and_telemetry_free_runs(
    compose_cfg: Callable[..., DictConfig],
) -> None:
    light = [_fake_run("light", 100.0 + i) for i in range(2)]
    heavy = [_fake_run("heavy", 250.0 + 3 * i) for i in range(2)]
    live = _fake_run("light", 102.0, steps=10, end=False)
    bare = _fake_run("bare", 0.0, telemetry=False)
    result = _evaluate(compose_cfg, "evaluation.plots.enabled=false")
    assert result.status == "FINISHED"
    assert set(result.runs["run_id"]) == {*light, *heavy, live, bare}
    reasons = result.skipped.groupby("run_id")["reason"].apply(" | ".join)
    assert (
        "no raw samples (telemetry/samples/): used the logged step-level window means"
        in reasons[light[0]]
    )
    assert "still RUNNING" in reasons[live]
    assert "no telemetry" in reasons[bare]
    fp = result.fingerprints.set_index("run_id")
    assert fp.loc[heavy[0], "source"] == "step_metrics"
    assert fp.loc[heavy[0], "energy_source"] == "window_sum"
    assert fp.loc[heavy[0], "energy_per_step_joules"] == pytest.approx(125.0)
    clf = result.classifier
    assert clf.available
    assert clf.accuracy == 1.0
    assert bare not in set(clf.predictions["run_id"])  # no telemetry, no fingerprint
    assert (clf.confusion.to_numpy().sum()) == 5


def test_identical_curves_under_different_labels_are_warned(
    compose_cfg: Callable[..., DictConfig],
) -> None:
    _fake_run("cpu_inference", 100.0)
    _fake_run("gpu_inference", 100.0)
    result = _evaluate(compose_cfg, "output.log_to_mlflow=false", "evaluation.plots.enabled=false")
    assert len(result.warnings) == 1
    assert "identical train/loss and train/grad_norm" in result.warnings[0]


def test_empty_selection_is_a_message_not_a_crash(compose_cfg: Callable[..., DictConfig]) -> None:
    result = _evaluate(compose_cfg)
    assert result.status == "EMPTY"
    assert result.run_id is None
    assert "experiment 'rle' does not exist" in result.message
    _fake_run("w", 100.0)
    result = _evaluate(compose_cfg, "selection.filter=\"tags.workload = 'nothing'\"")
    assert result.status == "EMPTY"
    assert "selects no run" in result.message
    assert (
        len(_client().search_runs([e.experiment_id for e in _client().search_experiments()])) == 1
    )


def test_bad_settings_are_config_errors(compose_cfg: Callable[..., DictConfig]) -> None:
    with pytest.raises(ConfigError, match="valid choices: default"):
        _evaluate(compose_cfg, "evaluation.correlation.method=magic")
    with pytest.raises(ConfigError, match="must be a train/ metric"):
        _evaluate(compose_cfg, "evaluation.correlation.pairs=[{x: rle_smoothed, y: temp_c}]")
    with pytest.raises(ConfigError, match="align"):
        _evaluate(compose_cfg, "evaluation.correlation.align=nearest")


def test_cli_on_an_empty_store_exits_with_a_message(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from hydra.core.global_hydra import GlobalHydra

    from rle.evaluate import main

    GlobalHydra.instance().clear()
    monkeypatch.setattr(sys, "argv", ["rle-evaluate", "selection.experiment_names=[none_here]"])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 1
    assert "Nothing to evaluate" in capsys.readouterr().out


def test_cli_unknown_key_lists_valid_keys(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from rle.evaluate import main

    monkeypatch.setattr(sys, "argv", ["rle-evaluate", "selection.run_idz=[a]"])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "selection.run_idz" in err
    assert "run_ids" in err


def test_imported_v2_collapse_flags_are_not_events() -> None:
    import pandas as pd

    from rle.evaluate import _standard_samples

    v2 = pd.DataFrame(
        {
            "timestamp": pd.to_datetime(["2025-10-28T08:00:00Z", "2025-10-28T08:00:01Z"]),
            "collapse": [0.0, 1.0],
            "workload_state": ["idle", "training_step"],
        }
    )
    out = _standard_samples(v2)
    assert out is not None
    assert out["collapse"].isna().all()
    assert list(out["wall_time_s"]) == [1761638400.0, 1761638401.0]
    v03 = v2.drop(columns="workload_state")
    kept = _standard_samples(v03)
    assert kept is not None
    assert list(kept["collapse"]) == [0.0, 1.0]


def test_cpu_only_store_gets_notes_instead_of_empty_plots(
    compose_cfg: Callable[..., DictConfig],
) -> None:
    # no RAPL/hwmon/GPU read: no RLE, no temperature, no power; the plots of them are not written
    run_training(
        compose_cfg(
            "workload=synthetic",
            "workload.period_s=0.05",
            "workload.workers=1",
            "trainer.accelerator=cpu",
            "trainer.max_steps=20",
            "trainer.enable_progress_bar=false",
            "telemetry=cpu_only",
            "telemetry.sample_hz=10",
        )
    )
    result = _evaluate(compose_cfg)
    assert result.status == "FINISHED", result.message
    files = {Path(f.path).name for f in _client().list_artifacts(result.run_id)}
    pngs = {f for f in files if f.endswith(".png")}
    assert pngs == {"fingerprint_comparison.png"}  # utilisation and throughput have values
    report = (result.output_dir / "report.md").read_text()
    plots = report.split("## Plots", 1)[1].split("## Files", 1)[0]
    for name in (
        "scatter_grad_norm_vs_rle.png",
        "scatter_loss_vs_rle.png",
        "scatter_temperature_vs_grad_norm.png",
        "lag_plot.png",
    ):
        [line] = [ln for ln in plots.splitlines() if ln.startswith(f"- `{name}` not written: ")]
        assert len(line) > len(name) + 20  # says what is missing
    assert "`fingerprint_comparison.png` has no panel for power, mean (W)" in plots
