"""The spool, the background sender, replay (``rle.sync``), retries and secret redaction.

No server here: a local SQLite store stands in for a reachable one, a closed port for an
unreachable one, and scripted fake clients for flaky ones.
"""

from __future__ import annotations

import itertools
import json
import logging
import pickle
import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, RESOURCE_DOES_NOT_EXIST

from rle.paths import resolve_tracking
from rle.sync import main as sync_main
from rle.tracking.logger import MLflowRunLogger, create_run
from rle.tracking.redact import REDACTED, Redactor
from rle.tracking.spool import (
    BackgroundSender,
    RetryPolicy,
    Spool,
    is_transient,
    replay,
    retry_call,
    strip_userinfo,
)
from support.mlflow_server import free_port


@pytest.fixture(autouse=True)
def _fast_http(monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow's REST client gives up at once on a closed port (rle retries by itself)."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")


def _local_run() -> tuple[str, str, str]:
    loc = resolve_tracking(None)
    exp_id, run_id = create_run(loc, "spool", "r", {})
    return loc.uri, exp_id, run_id


def _points(n: int, step0: int = 1, key: str = "m") -> list[dict[str, Any]]:
    return [{"k": key, "v": float(i), "t": 1_700_000_000_000 + i, "s": step0 + i} for i in range(n)]


def _history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in MlflowClient(uri).get_metric_history(run_id, key))


# ------------------------------------------------------------------------------------- spool files


def test_spool_batches_are_ordered_atomic_and_marked(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s", "run1", "http://user:pw@host:5000", "7")
    a = spool.write("metrics", _points(3))
    b = spool.write("tags", [{"k": "x", "v": "y"}])
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["run_id"] == "run1"
    assert manifest["tracking_uri"] == "http://host:5000"  # no credentials on disk
    assert spool.pending() == [a.path, b.path]
    assert not list((tmp_path / "s").glob(".tmp-*"))
    assert Spool.read(a.path).payload == _points(3)
    spool.mark_sent(a)
    assert spool.pending() == [b.path]
    assert spool.pending(include_sent=True) == [a.path.with_name(a.path.name + ".sent"), b.path]
    spool.mark_rejected(b, ValueError("bad"))
    assert spool.pending() == []
    assert (tmp_path / "s" / (b.path.name + ".rejected.error")).read_text().strip() == "bad"
    reopened = Spool.open(tmp_path / "s")
    assert (reopened.run_id, reopened.experiment_id) == ("run1", "7")
    with pytest.raises(ValueError, match="unknown spool batch kind"):
        spool.write("nope", [])


def test_metric_batches_round_trip_nan_inf_and_odd_keys(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s", "run1", "x")
    points = [("a", float("nan"), 1, 1), ('b "quoted"/é', float("-inf"), 2, 2), ("c", 1e-05, 3, 3)]
    entry = spool.write_metrics(points)
    rows = Spool.read(entry.path).payload
    assert [(r["k"], r["t"], r["s"]) for r in rows] == [(k, t, s) for k, _, t, s in points]
    assert rows[0]["v"] != rows[0]["v"]  # NaN
    assert rows[1]["v"] == float("-inf")
    assert rows[2]["v"] == 1e-05


def test_strip_userinfo() -> None:
    assert (
        strip_userinfo("https://bob:s3cret@mlflow.example:443/x") == "https://mlflow.example:443/x"
    )
    assert strip_userinfo("sqlite:////tmp/a.db") == "sqlite:////tmp/a.db"


# ------------------------------------------------------------------------------------- replay


def test_replay_sends_in_order_and_twice_adds_nothing(tmp_path: Path) -> None:
    uri, _, run_id = _local_run()
    spool = Spool(tmp_path / "s", run_id, uri)
    spool.write("params", [{"k": "p", "v": "1"}])
    spool.write("metrics", _points(1500))  # more than one log_batch
    spool.write("metrics", _points(10, step0=2000))
    spool.write("tags", [{"k": "t", "v": "v"}])
    art = tmp_path / "notes.txt"
    art.write_text("hello")
    spool.write_artifact(art, "extra")
    art.unlink()  # the spool holds its own copy
    spool.write("terminate", [{"status": "KILLED", "end_time": 1_700_000_009_999}])

    report = replay(spool, MlflowClient(uri))
    assert (report.n_sent, report.points, report.left, report.rejected) == (6, 1510, 0, 0)
    client = MlflowClient(uri)
    run = client.get_run(run_id)
    assert run.info.status == "KILLED"
    assert run.data.params["p"] == "1"
    assert run.data.tags["t"] == "v"
    assert [a.path for a in client.list_artifacts(run_id, "extra")] == ["extra/notes.txt"]
    assert len(_history(uri, run_id, "m")) == 1510

    assert replay(spool, MlflowClient(uri)).n_sent == 0  # marked sent: skipped
    forced = replay(spool, MlflowClient(uri), include_sent=True)  # sent again on purpose
    assert forced.n_sent == 6
    assert len(_history(uri, run_id, "m")) == 1510  # the store ignores identical points


def test_sync_cli_replays_a_folder_of_spools_and_is_idempotent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri, _, run_id = _local_run()
    spool = Spool(tmp_path / "spool" / run_id, run_id, f"http://127.0.0.1:{free_port()}")
    spool.write("metrics", _points(5))
    assert sync_main([str(tmp_path / "spool"), "--tracking-uri", uri]) == 0
    assert (
        "sent 1 batches (1 metrics; 5 metric points); 0 refused; 0 left" in capsys.readouterr().out
    )
    assert sync_main([str(tmp_path / "spool" / run_id), "--tracking-uri", uri]) == 0
    assert "sent 0 batches (nothing new" in capsys.readouterr().out
    assert sync_main([str(tmp_path / "spool"), "--tracking-uri", uri, "--force"]) == 0
    assert len(_history(uri, run_id, "m")) == 5


def test_sync_cli_unreachable_store_exits_1_and_keeps_the_spool(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spool = Spool(tmp_path / "s", "0" * 32, f"http://127.0.0.1:{free_port()}")
    spool.write("metrics", _points(2))
    assert sync_main([str(tmp_path / "s"), "--timeout-s", "0.5"]) == 1
    out = capsys.readouterr()
    assert "0 refused; 1 left" in out.out
    assert "last error" in out.err
    assert len(spool.pending()) == 1


def test_sync_cli_rejects_a_folder_without_a_spool(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert sync_main([str(tmp_path)]) == 2
    assert "is not an rle spool directory" in capsys.readouterr().err
    assert sync_main([str(tmp_path / "missing")]) == 2


def test_replay_marks_refused_batches_and_goes_on(tmp_path: Path) -> None:
    uri, _, run_id = _local_run()
    spool = Spool(tmp_path / "s", run_id, uri)
    bad = spool.write("params", [{"k": "p", "v": "1"}])
    spool.write("params", [{"k": "p", "v": "2"}])  # params are immutable: refused for good
    spool.write("metrics", _points(3))
    report = replay(spool, MlflowClient(uri))
    assert (report.n_sent, report.rejected, report.left) == (2, 1, 0)
    assert bad.path.with_name(bad.path.name + ".sent").exists()
    assert len(list((tmp_path / "s").glob("*.rejected"))) == 1
    assert len(_history(uri, run_id, "m")) == 3


# ------------------------------------------------------------------------------------- retries


def test_transient_and_permanent_errors() -> None:
    assert is_transient(MlflowException("API request failed: connection refused"))
    assert is_transient(OSError("database is locked"))
    assert not is_transient(MlflowException("bad", error_code=INVALID_PARAMETER_VALUE))
    assert not is_transient(MlflowException("gone", error_code=RESOURCE_DOES_NOT_EXIST))


def test_retry_call_retries_transient_errors_with_backoff() -> None:
    calls: list[int] = []
    sleeps: list[float] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 4:
            raise OSError("database is locked")
        return "ok"

    assert retry_call(flaky, what="x", timeout_s=60, sleep=sleeps.append) == "ok"
    assert len(calls) == 4
    assert sleeps[0] < sleeps[1] < sleeps[2]  # exponential (jitter ±25 %)

    def refused() -> None:
        calls.append(1)
        raise MlflowException("no", error_code=INVALID_PARAMETER_VALUE)

    calls.clear()
    with pytest.raises(MlflowException, match="no"):
        retry_call(refused, what="x", timeout_s=60, sleep=sleeps.append)
    assert len(calls) == 1

    def down() -> None:
        raise OSError("down")

    t0 = time.monotonic()
    with pytest.raises(OSError, match="down"):
        retry_call(down, what="x", timeout_s=0.3, policy=RetryPolicy(initial_s=0.05))
    assert time.monotonic() - t0 < 2.0


def test_retry_policy_doubles_to_its_cap_with_bounded_jitter() -> None:
    exact = RetryPolicy(initial_s=0.5, max_backoff_s=3.0, jitter=0.0)
    assert list(itertools.islice(exact.delays(), 5)) == [0.5, 1.0, 2.0, 3.0, 3.0]
    jittered = RetryPolicy(initial_s=1.0, max_backoff_s=8.0, jitter=0.25)
    waits = list(itertools.islice(jittered.delays(random.Random(0)), 200))
    assert all(
        0.75 * exact_s <= w <= 1.25 * exact_s
        for w, exact_s in zip(waits, [min(2.0**n, 8.0) for n in range(200)], strict=True)
    )
    backoff = exact.backoff()
    assert [backoff.next_delay(), backoff.next_delay()] == [0.5, 1.0]
    backoff.reset()
    assert backoff.next_delay() == 0.5
    assert backoff.next_delay(deadline=time.monotonic() - 1) is None  # time is up
    assert backoff.next_delay(deadline=time.monotonic() + 0.1) <= 0.1  # cut to the deadline
    for bad in ({"initial_s": 0}, {"initial_s": 2, "max_backoff_s": 1}, {"jitter": 1.0}):
        with pytest.raises(ValueError, match="RetryPolicy"):
            RetryPolicy(**bad)


# ------------------------------------------------------------------------------------- the sender


class FlakyClient:
    """Scripted MlflowClient: fails ``fail_first`` calls (transient), then records batches."""

    def __init__(self, fail_first: int = 0, delay_s: float = 0.0) -> None:
        self.fail_first = fail_first
        self.delay_s = delay_s
        self.calls = 0
        self.metrics: list[tuple[str, int, float]] = []
        self.tags: dict[str, str] = {}
        self.lock = threading.Lock()

    def log_batch(
        self,
        run_id: str,
        metrics: Any = (),
        params: Any = (),
        tags: Any = (),
        synchronous: Any = None,
    ) -> None:
        time.sleep(self.delay_s)
        with self.lock:
            self.calls += 1
            if self.calls <= self.fail_first:
                raise MlflowException(
                    "API request to http://x failed with exception ConnectionRefused"
                )
            if any(m.key == "poison" for m in metrics):
                raise MlflowException("invalid", error_code=INVALID_PARAMETER_VALUE)
            self.metrics += [(m.key, m.step, m.value) for m in metrics]
            self.tags.update({t.key: t.value for t in tags})


def test_sender_spools_during_an_outage_and_sends_in_order_when_back(tmp_path: Path) -> None:
    fake = FlakyClient(fail_first=3)
    sender = BackgroundSender(
        Spool(tmp_path / "s", "r", "x"),
        lambda: fake,
        flush_interval_s=0.05,
        policy=RetryPolicy(initial_s=0.05, max_backoff_s=0.1),
    )
    for step in range(1, 51):
        sender.submit_metrics([("m", float(step), step, step)])
        time.sleep(0.005)
    sender.close(timeout_s=10)
    assert sender.rejected == 0
    # whatever the last pass left, if anything
    report = replay(Spool(tmp_path / "s", "r"), fake, timeout_s=5, policy=RetryPolicy(0.05))
    assert report.left == 0
    steps = [s for _, s, _ in fake.metrics]
    assert steps == list(range(1, 51))  # every point, in order, once


def test_sender_puts_a_refused_batch_aside_and_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FlakyClient()
    spool = Spool(tmp_path / "s", "r", "x")
    sender = BackgroundSender(spool, lambda: fake, flush_interval_s=10)
    sender.submit_metrics([("poison", 1.0, 1, 1)])
    assert sender.flush(5) is True
    sender.submit_metrics([("ok", 1.0, 2, 2)])
    with caplog.at_level(logging.ERROR, logger="rle.tracking.spool"):
        assert sender.close(5) is True
    assert fake.metrics == [("ok", 2, 1.0)]
    assert sender.rejected == 1
    assert len(list((tmp_path / "s").glob("*.metrics.jsonl.rejected"))) == 1


def test_log_metrics_never_waits_for_the_network(tmp_path: Path) -> None:
    fake = FlakyClient(delay_s=0.5)  # a slow server
    logger = MLflowRunLogger(
        "http://unused",
        "r",
        "0",
        synchronous=False,
        spool_dir=tmp_path / "s",
        flush_interval_s=0.01,
    )
    logger._ensure_sender()._client = fake
    t0 = time.perf_counter()
    for step in range(200):
        logger.log_metrics({"a": 1.0, "b": 2.0}, step=step)
    per_call_s = (time.perf_counter() - t0) / 200
    assert per_call_s < 0.002, per_call_s
    assert logger.flush(10)
    assert len(fake.metrics) == 400
    logger.finalize("success")


# ------------------------------------------------------------------------------------- the logger


def test_logger_unreachable_store_spools_everything_then_sync_replays(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    uri, exp_id, run_id = _local_run()
    dead = f"http://127.0.0.1:{free_port()}"
    logger = MLflowRunLogger(
        dead, run_id, exp_id, synchronous=False, drain_timeout_s=0.5, flush_interval_s=0.05
    )
    for step in range(1, 21):
        logger.log_metrics({"train/loss": 1.0 / step, "x": float(step)}, step=step)
    logger.submit("tags", {"note": "hi"})
    art = tmp_path / "a.txt"
    art.write_text("payload")
    logger.submit_artifact(art, artifact_path="telemetry")
    art.unlink()
    with caplog.at_level(logging.WARNING):
        assert logger.finish("KILLED") is False
    spool_dir = logger.spool_dir
    assert f"python -m rle.sync {spool_dir}" in caplog.text
    assert "40 metric points, and the run status" in caplog.text
    assert (
        spool_dir
        == Path(resolve_tracking(None).uri.removeprefix("sqlite:///")).parents[1]
        / "outputs"
        / "spool"
        / run_id
    )
    kinds = sorted(p.name.split(".")[-2] for p in Spool(spool_dir).pending())
    assert set(kinds) == {"metrics", "tags", "artifact", "terminate"}

    assert sync_main([str(spool_dir), "--tracking-uri", uri]) == 0
    client = MlflowClient(uri)
    run = client.get_run(run_id)
    assert run.info.status == "KILLED"
    assert run.data.tags["note"] == "hi"
    assert [s for s, _ in _history(uri, run_id, "train/loss")] == list(range(1, 21))
    assert [a.path for a in client.list_artifacts(run_id, "telemetry")] == ["telemetry/a.txt"]
    assert sync_main([str(spool_dir), "--tracking-uri", uri, "--force"]) == 0
    assert len(_history(uri, run_id, "x")) == 20


def test_logger_reachable_store_drains_and_removes_the_spool() -> None:
    uri, exp_id, run_id = _local_run()
    logger = MLflowRunLogger(uri, run_id, exp_id, synchronous=False, flush_interval_s=0.05)
    logger.log_metrics({"m": 1.0}, step=1)
    logger.log_hyperparams({"lr": 0.1})
    assert logger.finish("FINISHED") is True
    assert not logger.spool_dir.exists()
    run = MlflowClient(uri).get_run(run_id)
    assert (run.info.status, run.data.params["lr"], run.data.metrics["m"]) == (
        "FINISHED",
        "0.1",
        1.0,
    )


def test_logger_pickles_while_its_sender_runs() -> None:
    uri, exp_id, run_id = _local_run()
    logger = MLflowRunLogger(uri, run_id, exp_id, synchronous=False)
    logger.log_metrics({"m": 1.0}, step=1)
    clone = pickle.loads(pickle.dumps(logger))
    assert (clone._sender, clone._client) == (None, None)
    assert clone.spool_dir == logger.spool_dir
    clone.log_metrics({"m": 2.0}, step=2)
    clone.finalize("success")
    assert logger.finish("FINISHED") is True
    assert [s for s, _ in _history(uri, run_id, "m")] == [1, 2]


def test_logger_redacts_params_and_tags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "hunter2-hunter2")
    uri, exp_id, run_id = _local_run()
    logger = MLflowRunLogger(uri, run_id, exp_id)
    logger.log_hyperparams({"db.password": "x", "note": "pw is hunter2-hunter2"})
    logger.submit("tags", {"api_key": "abc"})
    data = MlflowClient(uri).get_run(run_id).data
    assert data.params == {"db.password": REDACTED, "note": f"pw is {REDACTED}"}
    assert data.tags["api_key"] == REDACTED
    logger.finalize("success")


# ------------------------------------------------------------------------------------- redaction


def test_redactor_names_values_uris_and_trees() -> None:
    env = {
        "MLFLOW_TRACKING_TOKEN": "tok-123456",
        "HF_TOKEN": "hf_abcdef",
        "AWS_SECRET_ACCESS_KEY": "AKIA/secret+value",
        "TOKENIZERS_PARALLELISM": "false",  # not a secret name ("tokenizers" is not "token")
        "MY_PASSWORD": "no",  # too short to search for inside text
        "PATH": "/usr/bin",
    }
    r = Redactor(environ=env)
    assert r.is_secret_key("db.password")
    assert r.is_secret_key("HF_TOKEN")
    assert not r.is_secret_key("data.tokenizer_vocab_size")
    assert not r.is_secret_key("train/tokens_per_second")
    assert not r.is_secret_key("tracking.secret_pattern")
    assert r.text("token tok-123456 and hf_abcdef") == f"token {REDACTED} and {REDACTED}"
    assert r.text("false /usr/bin no") == "false /usr/bin no"
    assert r.text("http://bob:pw@host:5000") == f"http://bob:{REDACTED}@host:5000"
    tree = r.tree({"a": {"api_key": "x", "list": ["AKIA/secret+value", 3]}, "n": 1})
    assert tree == {"a": {"api_key": REDACTED, "list": [REDACTED, 3]}, "n": 1}
    assert r.override("+model.api_key=abc") == f"+model.api_key={REDACTED}"
    assert r.override("trainer.devices=2") == "trainer.devices=2"
    custom = Redactor(r"(?i)internal", environ={"INTERNAL_HOST_ID": "box-42"})
    assert custom.text("on box-42") == f"on {REDACTED}"
    assert custom.is_secret_key("MLFLOW_TRACKING_PASSWORD")  # always, whatever the pattern
