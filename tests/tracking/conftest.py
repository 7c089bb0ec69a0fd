"""Fixtures that start a real ``mlflow server`` (SQLite backend, 127.0.0.1, a free port) and stop it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support.mlflow_server import MlflowServer


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """One server shared by the tests of a session (each test uses its own experiment)."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow_server"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def own_mlflow_server(tmp_path: Path) -> Iterator[MlflowServer]:
    """A server of this test alone (it may stop and restart it)."""
    server = MlflowServer(tmp_path / "server")
    server.start()
    try:
        yield server
    finally:
        server.stop()
