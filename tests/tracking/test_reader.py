"""rle.tracking.reader against a temporary SQLite store: selection, bulk histories, artifacts."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.entities import Metric

from rle.errors import TrackingError
from rle.paths import resolve_tracking
from rle.tracking import keys
from rle.tracking.logger import client_for, create_run, end_run
from rle.tracking.reader import HISTORY_COLUMNS, RUN_COLUMNS, RunReader, Selection


def _run(
    name: str,
    tags: dict[str, str] | None = None,
    steps: int = 5,
    status: str | None = "FINISHED",
    experiment: str = "rle",
) -> str:
    loc = resolve_tracking(None)
    _, run_id = create_run(loc, experiment, name, {"workload": "w", **(tags or {})})
    client = client_for(loc)
    metrics = []
    for s in range(1, steps + 1):
        ts = 1_700_000_000_000 + 500 * s
        metrics.append(Metric("train/loss", 10.0 / s, ts, s))
        metrics.append(Metric("train/grad_norm", float(s), ts, s))
        metrics.append(Metric("system/gpu_0_power_usage_watts", 100.0 + s, ts, s))
    metrics.append(Metric("train/loss", math.nan, 1_700_000_009_000, steps + 1))  # a NaN point
    metrics.append(Metric("train/grad_norm", 99.0, 1_700_000_000_501, 1))  # step 1 logged twice
    client.log_batch(run_id, metrics=metrics, synchronous=True)
    if status:
        end_run(loc, run_id, status)
    return run_id


def _reader() -> RunReader:
    return RunReader(resolve_tracking(None))


def test_select_by_experiment_skips_evaluations_and_sweep_parents() -> None:
    a = _run("a")
    b = _run("b", {"workload": "other"})
    ev = _run("ev", {keys.TAG_ROLE: keys.ROLE_EVALUATION})
    parent = _run("parent", {keys.TAG_ROLE: keys.ROLE_SWEEP_PARENT})
    sel = _reader().select_runs(Selection(experiment_names=("rle",)))
    assert list(sel.runs.columns) == list(RUN_COLUMNS)
    assert sel.runs["run_id"].tolist() == [a, b]  # ordered by start time
    assert sel.runs["workload"].tolist() == ["w", "other"]
    assert set(sel.skipped["run_id"]) == {ev, parent}
    assert sel.skipped.set_index("run_id").loc[ev, "reason"].startswith("evaluation run")
    assert isinstance(sel.runs["tags"].iloc[0], dict)
    assert "train/loss" in sel.runs["metrics"].iloc[0]
    both = _reader().select_runs(
        Selection(("rle",), include_evaluations=True, include_sweep_parents=True)
    )
    assert len(both.runs) == 4


def test_select_with_filter_ids_parent_and_unknown_experiment() -> None:
    a = _run("a")
    b = _run("b", {"workload": "other"})
    r = _reader()
    assert r.select_runs(Selection(("rle",), filter_string="tags.workload = 'other'")).runs[
        "run_id"
    ].tolist() == [b]
    by_id = r.select_runs(Selection(run_ids=(a, "0" * 32)))
    assert by_id.runs["run_id"].tolist() == [a]
    assert by_id.skipped.to_dict("records") == [
        {"run_id": "0" * 32, "run_name": "", "reason": "not found"}
    ]
    parent = _run("parent", {keys.TAG_ROLE: keys.ROLE_SWEEP_PARENT})
    child = _run("child", {keys.TAG_PARENT_RUN_ID: parent, keys.TAG_ROLE: keys.ROLE_SWEEP_CHILD})
    assert r.select_runs(Selection(parent_run_id=parent)).runs["run_id"].tolist() == [child]
    missing = r.select_runs(Selection(("nope",)))
    assert missing.runs.empty
    assert missing.notes == [f"experiment 'nope' does not exist in {r.shown_uri}"]
    with pytest.raises(TrackingError, match="Run search failed"):
        r.select_runs(Selection(("rle",), filter_string="tags.workload ==== 1"))


def test_running_runs_are_kept_with_a_note_or_skipped() -> None:
    running = _run("live", status=None)
    sel = _reader().select_runs(Selection(("rle",)))
    assert sel.runs["status"].tolist() == ["RUNNING"]
    assert "still RUNNING" in sel.notes[0]
    skipped = _reader().select_runs(Selection(("rle",), include_running=False))
    assert skipped.runs.empty
    assert skipped.skipped["run_id"].tolist() == [running]


def test_bulk_histories_equal_the_per_call_baseline() -> None:
    ids = [_run("a", steps=7), _run("b", steps=3)]
    r = _reader()
    wanted = ["train/loss", "train/grad_norm", "system/gpu_0_power_usage_watts", "absent/key"]
    bulk = r.metric_histories(ids, wanted)
    assert r._sql_engine() is not None  # the SQL fast path was used
    base = r.metric_histories_per_call(ids, wanted)
    threaded = r.metric_histories_per_call(ids, wanted, threads=4)
    assert list(bulk.columns) == list(HISTORY_COLUMNS)
    pd.testing.assert_frame_equal(bulk, base)
    pd.testing.assert_frame_equal(bulk, threaded)
    a = bulk[(bulk["run_id"] == ids[0]) & (bulk["key"] == "train/loss")]
    assert a["step"].tolist() == list(range(1, 9))
    assert math.isnan(a["value"].iloc[-1])  # NaN stays NaN (MLflow stores it as 0 + is_nan)
    g = bulk[(bulk["run_id"] == ids[0]) & (bulk["key"] == "train/grad_norm") & (bulk["step"] == 1)]
    assert sorted(g["value"]) == [1.0, 99.0]  # every logged point is kept
    assert a["timestamp_s"].iloc[0] == pytest.approx(1_700_000_000.5)
    assert r.metric_histories([], wanted).empty
    assert r.metric_histories(ids, []).empty


def test_histories_without_the_sql_fast_path() -> None:
    ids = [_run("a", steps=4)]
    r = _reader()
    fast = r.metric_histories(ids, ["train/loss"])
    r._engine_checked, r._engine = True, None  # as on a tracking server
    pd.testing.assert_frame_equal(r.metric_histories(ids, ["train/loss"]), fast)


def test_samples_and_events_artifacts() -> None:
    with_art = _run("a")
    without = _run("b")
    client = client_for(resolve_tracking(None))
    frame = pd.DataFrame(
        {"wall_time_s": [1.0, 2.0], "device": ["gpu_0", "gpu_0"], "power_w": [100.0, np.nan]}
    )
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "samples.parquet"
        frame.to_parquet(p, index=False)
        e = Path(tmp) / "events.jsonl"
        e.write_text('{"device": "gpu_0", "start_wall_time_s": 1.5}\nnot json\n')
        client.log_artifact(with_art, str(p), artifact_path="telemetry")
        client.log_artifact(with_art, str(e), artifact_path="telemetry")
    r = _reader()
    runs = r.select_runs(Selection(("rle",))).runs.set_index("run_id")
    uri = runs.loc[with_art, "artifact_uri"]
    assert r.has_samples(with_art, uri)
    assert not r.has_samples(without)
    pd.testing.assert_frame_equal(r.samples(with_art, uri), frame)
    assert r.samples(without) is None
    events = r.events(with_art)
    assert events.to_dict("records") == [{"device": "gpu_0", "start_wall_time_s": 1.5}]
    assert r.events(without) is None
