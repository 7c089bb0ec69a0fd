"""Metric keys MLflow refuses are left out before they enter a batch, so the others all arrive.

MLflow validates every metric of a ``log_batch`` request and refuses the whole request for one
bad key: without the check, one ``acc@1`` beside 999 good points put the batch aside as
``*.rejected``. Checked against a local SQLite store and a real ``mlflow server``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient

from rle.paths import resolve_tracking
from rle.tracking.keys import TAG_TELEMETRY_REFUSED_KEYS
from rle.tracking.logger import MLflowRunLogger, create_run
from rle.tracking.spool import Spool, metric_key_problem, replay
from support.mlflow_server import MlflowServer

GOOD = ["train/loss", "system/gpu_0_power_usage_watts", "rle/gpu_0/e_th", "a b", "x:y", "lr-1.0"]
BAD = ["acc@1", "a//b", "/abs", "../up", "x/./y", "", "k" * 251, "esc\x1b[31m", "tab\tkey"]


@pytest.fixture(autouse=True)
def _fast_http(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")


def test_mlflows_rule_decides_which_keys_are_refused() -> None:
    assert [k for k in GOOD if metric_key_problem(k) is not None] == []
    assert [k for k in BAD if metric_key_problem(k) is None] == []
    assert "acc@1" in str(metric_key_problem("acc@1"))  # the reason names the key


def test_every_key_the_rule_accepts_is_accepted_by_the_store() -> None:
    client = MlflowClient(resolve_tracking(None).uri)
    _, run_id = create_run(resolve_tracking(None), "keys", "r", {})
    from mlflow.entities import Metric

    client.log_batch(run_id, metrics=[Metric(k, 1.0, 1, 0) for k in GOOD], synchronous=True)
    assert set(client.get_run(run_id).data.metrics) == set(GOOD)


@pytest.mark.parametrize("store", ["sqlite", "server"])
def test_a_bad_key_beside_good_ones_loses_no_good_point(
    store: str, request: pytest.FixtureRequest
) -> None:
    if store == "server":
        server: MlflowServer = request.getfixturevalue("mlflow_server")
        uri = server.uri
    else:
        uri = resolve_tracking(None).uri
    location = resolve_tracking(uri)
    exp_id, run_id = create_run(location, f"keys-{store}", "r", {})
    logger = MLflowRunLogger(uri, run_id, exp_id, synchronous=False, flush_interval_s=0.05)
    steps = range(600)  # 1200 good points: at least one full 1000-point batch holds a bad key
    for step in steps:
        logger.log_metrics(
            {"acc@1": 0.5, "train/loss": 1.0 / (step + 1), "a//b": 1.0, "m": float(step)},
            step=step,
        )
    logger.log_metrics({"not_a_number": "n/a", "m2": 2.0}, step=0)  # type: ignore[dict-item]
    assert logger.flush(60) is True
    assert list(logger.spool_dir.glob("*.rejected")) == []
    assert logger.finish("FINISHED") is True

    client = MlflowClient(uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert set(run.data.metrics) == {"train/loss", "m", "m2"}
    for key in ("train/loss", "m"):
        assert sorted(p.step for p in client.get_metric_history(run_id, key)) == list(steps)
    refused = json.loads(run.data.tags[TAG_TELEMETRY_REFUSED_KEYS])
    assert refused == ["a//b", "acc@1", "not_a_number"]


def test_replay_of_an_old_spool_with_a_bad_key_sends_the_good_points(tmp_path: Path) -> None:
    location = resolve_tracking(None)
    _, run_id = create_run(location, "keys-replay", "r", {})
    spool = Spool(tmp_path / "spool", run_id, location.uri)
    rows = [{"k": "m", "v": float(i), "t": 1_700_000_000_000 + i, "s": i} for i in range(999)]
    spool.write("metrics", [*rows, {"k": "acc@1", "v": 1.0, "t": 1_700_000_000_000, "s": 0}])
    report = replay(spool, MlflowClient(location.uri))
    assert (report.rejected, report.left, report.points) == (0, 0, 999)
    history = MlflowClient(location.uri).get_metric_history(run_id, "m")
    assert len(history) == 999
