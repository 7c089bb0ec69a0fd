"""Tracking URI precedence, absolute local stores, fail-fast on an unreachable server."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from rle.errors import ConfigError, TrackingError
from rle.paths import resolve_tracking
from rle.tracking.logger import MLflowRunLogger, check_reachable, create_run


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_default_is_absolute_sqlite_under_root(tmp_path: Path) -> None:
    loc = resolve_tracking(None, root=tmp_path)
    assert loc.reason == "default"
    assert loc.uri == "sqlite:///" + (tmp_path / "mlruns" / "mlflow.db").as_posix()
    assert loc.uri.startswith("sqlite:////")
    assert loc.artifact_location == (tmp_path / "mlruns" / "artifacts").as_uri()


def test_env_wins_over_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    loc = resolve_tracking("sqlite:///other.db", root=tmp_path)
    assert (loc.uri, loc.reason, loc.artifact_location) == ("http://127.0.0.1:5999", "env", None)


def test_relative_sqlite_in_config_is_made_absolute(tmp_path: Path) -> None:
    loc = resolve_tracking("sqlite:///stores/x.db", root=tmp_path)
    assert loc.reason == "config"
    assert loc.uri == "sqlite:///" + (tmp_path / "stores" / "x.db").as_posix()


@pytest.mark.parametrize("uri", ["./mlruns", "file:///tmp/mlruns", "ftp://x"])
def test_file_stores_are_refused(tmp_path: Path, uri: str) -> None:
    with pytest.raises(ConfigError, match="file stores"):
        resolve_tracking(uri, root=tmp_path)


def test_unreachable_server_fails_fast_with_uri(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = f"http://127.0.0.1:{_free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with pytest.raises(TrackingError, match=uri.replace(".", r"\.")):
        check_reachable(resolve_tracking(None, root=tmp_path), timeout_s=1.0)


def test_logger_writes_batches_on_explicit_steps(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    loc = resolve_tracking(None, root=tmp_path)
    exp_id, run_id = create_run(loc, "exp", "r", {"a": "b"})
    logger = MLflowRunLogger(loc.uri, run_id, exp_id)
    logger.log_metrics({f"m/{i}": float(i) for i in range(1500)}, step=7)
    with pytest.raises(ValueError, match="explicit step"):
        logger.log_metrics({"x": 1.0}, step=None)
    client = MlflowClient(loc.uri)
    run = client.get_run(run_id)
    assert len(run.data.metrics) == 1500
    assert [m.step for m in client.get_metric_history(run_id, "m/1499")] == [7]
    assert run.info.artifact_uri.startswith((tmp_path / "mlruns" / "artifacts").as_uri())
    # ddp_spawn pickles the logger: the client must not travel
    import pickle

    clone = pickle.loads(pickle.dumps(logger))
    assert clone._client is None
    assert clone.run_id == run_id
