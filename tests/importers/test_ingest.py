"""rle.ingest: RLE lab recordings → MLflow runs (tags, metrics, artifacts, idempotence, CLI)."""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path

import pandas as pd
import pytest
import rle_lab_writers as W
from mlflow import MlflowClient

from rle.analysis.legacy import legacy_joint_session
from rle.errors import ConfigError, ImportFormatError
from rle.ingest import main, run_ingest


@pytest.fixture(scope="module")
def store_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite store for the module (creating the schema costs about a second per store)."""
    return "sqlite:///" + (tmp_path_factory.mktemp("store") / "mlflow.db").as_posix()


@pytest.fixture
def experiment(request: pytest.FixtureRequest) -> str:
    return f"import-{request.node.name}"


_runs = W.experiment_runs


_lines = W.v03_lines


def _messy_v03(tmp_path: Path) -> Path:
    """Two interleaved writers, a restart of the first one, a torn line and duplicates."""
    a = _lines(65, seed=1)
    b = _lines(30, seed=2, start=W.T0 + dt.timedelta(seconds=20.4))
    a2 = _lines(10, seed=3, start=W.T0 + dt.timedelta(seconds=70))
    lines = W.duplicate(W.tear(W.interleave(a, b) + a2, 40, 25), 60)
    return W.write_lines(tmp_path / "rle_20251028_08.csv", [W.header("v03"), *lines])


def _bundle(tmp_path: Path) -> Path:
    g = W.simulate_inputs(40, device="gpu", seed=5, period_s=1.0)
    c = W.simulate_inputs(40, device="cpu", seed=6, period_s=1.0)
    lines = W.to_lines(W.v2_rows(c, g))
    t0 = g["timestamp"].iloc[0].timestamp()
    entries = W.training_entries(60, start_epoch_s=t0 + 9.0)
    rows = pd.read_csv(io.StringIO("\n".join([W.header("v2"), *lines])))
    analysis = legacy_joint_session(entries, rows)  # what the lab's runner wrote
    return W.write_joint_session(
        tmp_path / "joint" / "s1", "20251028_031500", lines, entries, analysis=analysis
    )


def test_monitor_file_runs_tags_metrics_artifacts(
    tmp_path: Path, store_uri: str, experiment: str
) -> None:
    path = _messy_v03(tmp_path)
    result = run_ingest([path], experiment_name=experiment, tracking_uri=store_uri)
    assert [(r.segment, r.created) for r in result.runs] == [(0, True), (1, True), (2, True)]
    assert result.runs[0].counts["skipped.torn_line"] == 1
    assert result.runs[0].counts["skipped.duplicate_row"] == 1
    client = MlflowClient(store_uri)
    runs = {r.data.tags["rle.segment"]: r for r in _runs(store_uri, experiment)}
    assert set(runs) == {"0", "1", "2"}
    first = runs["0"]
    tags = first.data.tags
    assert first.info.status == "FINISHED"
    assert tags["rle.source"] == "rle_lab_v03"
    assert tags["rle.profile"] == "legacy_v03"
    assert tags["rle.legacy_format"] == "v03"
    assert tags["rle.devices"] == "gpu_0,cpu"
    assert tags["rle.original_file"] == "rle_20251028_08.csv"
    assert tags["step.kind"] == "sample_index"
    assert tags["power_source.cpu"] == "estimated"
    assert tags["temp_source.cpu"] == "none"
    assert tags["import.skipped.torn_line"] == "1"
    assert tags["import.interleaved_writers"] == "2"
    assert tags["import.restarts"] == "1"
    assert runs["2"].data.tags["rle.segment_start_reason"] == "restart"
    assert tags["rle.recompute.gpu_0"] == "agrees"
    assert len(tags["rle.content_sha256"]) == 64
    assert first.data.params["legacy.rated_w.gpu_0"] == "200.0"

    util = client.get_metric_history(first.info.run_id, "system/gpu_0_utilization_percentage")
    n = result.runs[0].n_samples // 2
    assert [m.step for m in util] == list(range(n))
    t0_ms = int(pd.Timestamp("2025-10-28T08:00:00.408689Z").value // 1_000_000)
    assert util[0].timestamp == t0_ms
    assert util[1].timestamp == t0_ms + 1003
    metrics = first.data.metrics
    for key in ("rle/gpu_0/rle_smoothed", "rle/gpu_0/e_th", "rle/gpu_0/t_sustain_seconds",
                "rle/gpu_0/rle_norm", "system/gpu_0_power_usage_watts", "system/gpu_0_fan_speed_percentage",
                "system/cpu_utilization_percentage", "rle/cpu/e_pw", "import/gpu_0/rle_raw_max_abs_error"):  # fmt: skip
        assert key in metrics, key
    assert "system/cpu_package_power_watts" not in metrics  # an estimate, not a measurement
    assert "system/cpu_package_temperature_celsius" not in metrics

    art = {a.path for a in client.list_artifacts(first.info.run_id)}
    assert art == {"telemetry", "original", "import"}
    assert {a.path for a in client.list_artifacts(first.info.run_id, "import")} == {
        "import/report.json", "import/recompute_agreement.csv",
    }  # fmt: skip
    local = Path(
        client.download_artifacts(first.info.run_id, "telemetry/samples.parquet", str(tmp_path))
    )
    samples = pd.read_parquet(local)
    assert len(samples) == result.runs[0].n_samples
    assert {
        "timestamp",
        "device",
        "sample_index",
        "rle_smoothed",
        "recomputed_rle_smoothed",
    } <= set(samples.columns)
    report = json.loads(
        Path(
            client.download_artifacts(first.info.run_id, "import/report.json", str(tmp_path))
        ).read_text()
    )
    assert {"line": report["skipped_lines"][0]["line"], "reason": "torn_line"} in report[
        "skipped_lines"
    ]


def test_reimport_is_idempotent(tmp_path: Path, store_uri: str, experiment: str) -> None:
    path = _messy_v03(tmp_path)
    first = run_ingest([path], experiment_name=experiment, tracking_uri=store_uri)
    n = len(_runs(store_uri, experiment))
    second = run_ingest(
        [tmp_path], experiment_name=experiment, tracking_uri=store_uri
    )  # via the folder
    assert len(_runs(store_uri, experiment)) == n == 3
    assert not second.created
    assert [r.run_id for r in second.runs] == [r.run_id for r in first.runs]


def test_joint_session_run(tmp_path: Path, store_uri: str, experiment: str) -> None:
    folder = _bundle(tmp_path)
    result = run_ingest([tmp_path / "joint"], experiment_name=experiment, tracking_uri=store_uri)
    (imported,) = result.runs
    assert imported.source == "rle_lab_joint"
    assert imported.analysis_agreement is not None
    assert imported.analysis_agreement["agrees"]
    (run,) = _runs(store_uri, experiment)
    tags, params = run.data.tags, run.data.params
    assert tags["rle.source"] == "rle_lab_joint"
    assert tags["rle.profile"] == "legacy_v2"
    assert tags["rle.legacy_analysis"] == "agrees"
    assert tags["temp_source.cpu"] == tags["power_source.cpu"] == "placeholder"
    assert tags["import.repaired.training_summary_entry_not_logged"] == "1"
    assert "legacy.analysis.correlations.gpu_grad_rle" in params
    client = MlflowClient(store_uri)
    loss = client.get_metric_history(run.info.run_id, "train/loss")
    entries = json.loads((folder / "training_log_20251028_031500.json").read_text())
    assert len(loss) == 60  # the summary entry is not a step
    assert [m.step for m in loss] == [e["step"] for e in entries[:60]]
    assert loss[0].timestamp == int(entries[0]["timestamp_shared"] * 1000)
    assert {"train/grad_norm", "train/lr", "rle/gpu_0/rle_smoothed", "rle/cpu/rle_smoothed"} <= set(
        run.data.metrics
    )
    assert "system/cpu_package_temperature_celsius" not in run.data.metrics  # 50 °C placeholder
    arts = {a.path for a in client.list_artifacts(run.info.run_id, "original")}
    assert "original/training_log_20251028_031500.json" in arts
    reproduced = json.loads(
        Path(
            client.download_artifacts(
                run.info.run_id, "analysis/legacy_joint_session.json", str(tmp_path)
            )
        ).read_text()
    )
    assert reproduced["agreement"]["agrees"]


def test_profile_default_adds_the_corrected_metric(
    tmp_path: Path, store_uri: str, experiment: str
) -> None:
    path = W.write_lines(tmp_path / "rle_20251028_08.csv", [W.header("v03"), *_lines(20, seed=9)])
    with pytest.raises(ConfigError, match="--profile legacy_v2 does not reproduce .*legacy_v03"):
        run_ingest([path], profile="legacy_v2", experiment_name=experiment, tracking_uri=store_uri)
    run_ingest([path], profile="default", experiment_name=experiment, tracking_uri=store_uri)
    (run,) = _runs(store_uri, experiment)
    assert run.data.tags["rle.profile"] == "legacy_v03"
    assert run.data.tags["rle.profile.extra"] == "default"
    assert {"rle_default/gpu_0/rle_smoothed", "rle_default/gpu_0/stability"} <= set(
        run.data.metrics
    )
    assert (
        "rle_default/cpu/rle_raw" not in run.data.metrics
    )  # no measured CPU power: NaN, not logged


def test_a_bad_file_does_not_stop_the_good_ones(
    tmp_path: Path, store_uri: str, experiment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    W.write_lines(tmp_path / "rle_20251028_08.csv", [W.header("v03"), *_lines(10, seed=1)])
    (tmp_path / "rle_mobile_export.csv").write_text("ts,rle,temp\n1,0.5,40\n")
    result = run_ingest([tmp_path], experiment_name=experiment, tracking_uri=store_uri)
    assert [p.name for p, _ in result.failed] == ["rle_mobile_export.csv"]
    assert "not a recognised RLE lab monitor CSV" in result.failed[0][1]
    (run,) = _runs(store_uri, experiment)
    assert run.data.tags["rle.original_file"] == "rle_20251028_08.csv"
    assert run.info.status == "FINISHED"
    # the CLI reports the bad file and exits non-zero; the good one is already imported
    args = ["--experiment", experiment, "--tracking-uri", store_uri]
    assert main([str(tmp_path), *args]) == 1
    captured = capsys.readouterr()
    assert "rle_mobile_export.csv: not a recognised RLE lab monitor CSV" in captured.err
    assert len(_runs(store_uri, experiment)) == 1
    # only bad inputs: nothing to import, an error
    with pytest.raises(ImportFormatError, match=r"rle_mobile_export\.csv: not a recognised"):
        run_ingest(
            [tmp_path / "rle_mobile_export.csv"], experiment_name=experiment, tracking_uri=store_uri
        )
    with pytest.raises(ImportFormatError, match="nothing_here: no such file or folder"):
        run_ingest([tmp_path / "nothing_here"], experiment_name=experiment, tracking_uri=store_uri)


def test_folder_discovery_metadata_and_ignored_files(
    tmp_path: Path, store_uri: str, experiment: str
) -> None:
    g = W.simulate_inputs(8, device="gpu", seed=1, period_s=1.0)
    W.write_monitor_csv(tmp_path / "rle_enhanced_20251028_03.csv", "v2", W.v2_rows(None, g))
    (tmp_path / "rle_enhanced_20251028_03_metadata.json").write_text(
        json.dumps({"monitoring": {"sample_hz": 0.001}})
    )
    (tmp_path / "notes.txt").write_text("hello")
    result = run_ingest([tmp_path], experiment_name=experiment, tracking_uri=store_uri)
    assert [p.name for p in result.ignored] == ["notes.txt"]
    (run,) = _runs(store_uri, experiment)
    assert run.data.params["legacy.metadata.monitoring.sample_hz"] == "1.0"
    assert run.data.tags["rle.source"] == "rle_lab_v2"


def test_cli(
    tmp_path: Path, store_uri: str, experiment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = W.write_lines(tmp_path / "rle_20251028_08.csv", [W.header("v03"), *_lines(12, seed=4)])
    args = ["--experiment", experiment, "--tracking-uri", store_uri]
    assert main([str(path), *args]) == 0
    out = capsys.readouterr().out
    assert "1 run(s) created, 0 already imported" in out
    assert "repaired: short_gpu_row_padded 12" in out
    assert "recompute gpu_0 legacy_v03: " in out
    assert main([str(path), *args]) == 0
    assert "0 run(s) created, 1 already imported" in capsys.readouterr().out
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n")
    assert main([str(bad), *args]) == 2
    err = capsys.readouterr().err
    assert "bad.csv: not a recognised RLE lab monitor CSV" in err
