"""rle.ingest under damage, hostile input and concurrency: counted NaN/inf, reasons for no run,
workload labels, escaped control characters, a closed port, and concurrent imports (processes)."""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import rle_lab_writers as W
from mlflow import MlflowClient

from rle.errors import TrackingError
from rle.ingest import _Store, main, run_ingest
from rle.tracking import keys


@pytest.fixture(scope="module")
def store_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    return "sqlite:///" + (tmp_path_factory.mktemp("store") / "mlflow.db").as_posix()


@pytest.fixture
def experiment(request: pytest.FixtureRequest) -> str:
    return f"robust-{request.node.name}"[:200]


_runs = W.experiment_runs


_lines = W.v03_lines


def _set_field(line: str, index: int, value: str) -> str:
    f = line.split(",")
    f[index] = value
    return ",".join(f)


# ------------------------------------------------------------------------------ damage counts


def test_non_finite_values_are_counted_per_column_and_stored_as_nan(
    tmp_path: Path, store_uri: str, experiment: str
) -> None:
    lines = _lines(20, seed=1)
    util, power = 10, 9  # v0.3 column positions of util_pct and power_w
    lines[4] = _set_field(lines[4], util, "inf")
    lines[6] = _set_field(lines[6], util, "-inf")
    lines[8] = _set_field(lines[8], power, "nan")
    lines[10] = _set_field(lines[10], power, "NaN")
    path = W.write_lines(tmp_path / "rle_20251028_08.csv", [W.header("v03"), *lines])
    result = run_ingest([path], experiment_name=experiment, tracking_uri=store_uri)
    (imported,) = result.runs
    assert imported.counts["repaired.non_finite_as_nan.util_pct"] == 2
    assert imported.counts["repaired.non_finite_as_nan.power_w"] == 2
    (run,) = _runs(store_uri, experiment)
    assert run.data.tags["import.repaired.non_finite_as_nan.util_pct"] == "2"
    client = MlflowClient(store_uri)
    local = client.download_artifacts(run.info.run_id, "telemetry/samples.parquet", str(tmp_path))
    samples = pd.read_parquet(local)
    numeric = samples.select_dtypes("number")
    assert not numeric.isin([float("inf"), float("-inf")]).any().any()
    assert samples["util_pct"].isna().sum() == 2  # kept as NaN, not dropped, not inf


def test_a_file_whose_rows_are_all_dropped_says_why(
    tmp_path: Path, store_uri: str, experiment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    c = W.simulate_inputs(10, device="cpu", seed=2)
    lines = [ln.replace(",cpu,", ",xpu,") for ln in W.to_lines(W.v03_rows(None, c))]
    bad = W.write_lines(tmp_path / "rle_20251028_08.csv", [W.header("v03"), *lines])
    W.write_lines(tmp_path / "rle_20251028_09.csv", [W.header("v03"), *_lines(8, seed=3)])
    result = run_ingest([tmp_path], experiment_name=experiment, tracking_uri=store_uri)
    assert result.no_run == [(bad, "all 10 rows dropped: unknown_device 10")]
    assert [r.path.name for r in result.runs] == ["rle_20251028_09.csv"]
    assert main([str(bad), "--experiment", experiment, "--tracking-uri", store_uri]) == 0
    assert "NO RUN: all 10 rows dropped: unknown_device 10" in capsys.readouterr().out


# ------------------------------------------------------------------------------ workload labels


def _bundle(folder: Path, sid: str, metadata: dict[str, Any] | None) -> Path:
    g = W.simulate_inputs(20, device="gpu", seed=5, period_s=1.0)
    c = W.simulate_inputs(20, device="cpu", seed=6, period_s=1.0)
    entries = W.training_entries(15, start_epoch_s=g["timestamp"].iloc[0].timestamp() + 3.0)
    W.write_joint_session(folder, sid, W.to_lines(W.v2_rows(c, g)), entries)
    if metadata is not None:
        (folder / f"rle_data_{sid}_metadata.json").write_text(json.dumps(metadata))
    return folder


def test_imported_sessions_are_labelled_by_session_type(
    tmp_path: Path, store_uri: str, experiment: str
) -> None:
    _bundle(tmp_path / "a", "20251028_031500", {"training_mode": "CPU inference"})
    _bundle(tmp_path / "b", "20251028_041500", {"training_mode": "GPU inference"})
    _bundle(tmp_path / "c", "20251028_051500", None)
    W.write_lines(tmp_path / "rle_20251028_08.csv", [W.header("v03"), *_lines(8, seed=3)])
    run_ingest([tmp_path], experiment_name=experiment, tracking_uri=store_uri)
    by_file = {
        r.data.tags.get("rle.session_id", r.data.tags["rle.original_file"]): r.data.tags
        for r in _runs(store_uri, experiment)
    }
    assert {k: v[keys.TAG_WORKLOAD] for k, v in by_file.items()} == {
        "20251028_031500": "cpu_inference",
        "20251028_041500": "gpu_inference",
        "20251028_051500": "joint_training",
        "rle_20251028_08.csv": "monitor_only",
    }
    assert by_file["20251028_031500"]["rle.workload_source"] == "metadata.training_mode"

    # The bit-identical training logs under different labels are what the evaluation flags.
    from rle.analysis.correlation import identical_training_curves

    client = MlflowClient(store_uri)
    curves = {}
    for run in _runs(store_uri, experiment):
        if "rle.session_id" not in run.data.tags:
            continue
        frame = pd.DataFrame(
            {
                k: {m.step: m.value for m in client.get_metric_history(run.info.run_id, k)}
                for k in ("train/loss", "train/grad_norm")
            }
        ).sort_index()
        curves[run.info.run_id] = (run.data.tags[keys.TAG_WORKLOAD], frame)
    pairs = identical_training_curves(curves)
    assert {frozenset((wa, wb)) for _, wa, _, wb in pairs} == {
        frozenset(p)
        for p in (
            ("cpu_inference", "gpu_inference"),
            ("cpu_inference", "joint_training"),
            ("gpu_inference", "joint_training"),
        )
    }


# ------------------------------------------------------------------------------ hostile input


def test_terminal_escape_sequences_in_a_header_are_not_echoed(
    tmp_path: Path, store_uri: str, experiment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    evil = tmp_path / "evil.csv"
    evil.write_bytes(b"\x1b]0;pwned\x07\x1b[2J\x1b[31mtimestamp,device\x9b1m\n1,2\n")
    assert main([str(evil), "--experiment", experiment, "--tracking-uri", store_uri]) == 2
    err = capsys.readouterr().err
    assert "not a recognised RLE lab monitor CSV" in err
    assert not any(ord(ch) < 32 and ch not in "\n\t" or 0x7F <= ord(ch) <= 0x9F for ch in err)
    assert "\\x1b[31m" in err  # shown, escaped


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_closed_port_fails_fast_with_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(
        TrackingError, match=r"Cannot reach the MLflow tracking server at http://127"
    ):
        _Store(uri, "x")
    path = W.write_lines(tmp_path / "rle_20251028_08.csv", [W.header("v03"), *_lines(5, seed=1)])
    assert main([str(path), "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err
    assert "Cannot reach the MLflow tracking server" in err
    assert "MlflowException" not in err


# ------------------------------------------------------------------------------ concurrency


def test_a_later_duplicate_run_is_deleted_in_favour_of_the_first(
    tmp_path: Path, store_uri: str, experiment: str
) -> None:
    """The post-create check servers rely on (no file lock there): the later run gives way."""
    tags = {keys.TAG_CONTENT_SHA256: "f" * 64, keys.TAG_SEGMENT: "0"}
    a, b = _Store(store_uri, experiment), _Store(store_uri, experiment)
    first, created_first = a.create("one", tags)
    second, created_second = b.create("two", tags)
    assert (created_first, created_second) == (True, False)
    assert second == first
    live = _runs(store_uri, experiment)
    assert [r.info.run_id for r in live] == [first]


def test_a_rival_missed_at_creation_is_caught_before_the_run_ends(
    store_uri: str, experiment: str
) -> None:
    """Two runs created within moments can both pass the create check; the end check keeps one."""
    tags = {keys.TAG_CONTENT_SHA256: "e" * 64, keys.TAG_SEGMENT: "0"}
    a = _Store(store_uri, experiment)
    mine, created = a.create("mine", tags)
    assert created
    client = MlflowClient(store_uri)
    start = client.get_run(mine).info.start_time
    # a rival whose client stamped an earlier start time, made after our create check looked
    rival = client.create_run(a.experiment_id, start_time=start - 5, tags=tags).info.run_id
    assert a.end(mine, "FINISHED", tags) == rival  # ours gives way...
    assert [r.info.run_id for r in _runs(store_uri, experiment)] == [rival]
    assert a.end(rival, "FINISHED", tags) == rival  # ...and the rival's own end keeps it
    assert client.get_run(rival).info.status == "FINISHED"


def _ingest_cmd(path: Path, uri: str) -> list[str]:
    return [sys.executable, "-m", "rle.ingest", str(path), "--experiment", "race",
            "--tracking-uri", uri]  # fmt: skip


@pytest.mark.parametrize("fresh_store", [True, False], ids=["fresh-store", "existing-store"])
def test_two_concurrent_imports_of_one_file_make_one_run(tmp_path: Path, fresh_store: bool) -> None:
    a = _lines(40, seed=1)
    b = _lines(20, seed=2, start=W.T0 + dt.timedelta(seconds=10.45))
    path = W.write_lines(tmp_path / "rle_20251028_08.csv", [W.header("v03"), *W.interleave(a, b)])
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    for attempt in range(3):  # repeated: a race shows up only sometimes
        db = tmp_path / f"store{attempt if fresh_store else 0}" / "mlflow.db"
        db.parent.mkdir(exist_ok=True)
        uri = "sqlite:///" + db.as_posix()
        procs = [
            subprocess.Popen(
                _ingest_cmd(path, uri), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env
            )
            for _ in range(2)
        ]
        outputs = []
        for p in procs:
            try:
                outputs.append(p.communicate(timeout=240)[0].decode(errors="replace"))
            except subprocess.TimeoutExpired:
                for q in procs:
                    q.kill()
                pytest.fail(f"attempt {attempt}: an import did not finish within 240 s")
        for p, out in zip(procs, outputs, strict=True):
            assert p.returncode == 0, f"attempt {attempt}:\n{out}"
        runs = _runs(uri, "race")
        segments = sorted(r.data.tags[keys.TAG_SEGMENT] for r in runs)
        assert segments == ["0", "1"], f"attempt {attempt}: {segments}"
        assert {r.info.status for r in runs} == {"FINISHED"}
