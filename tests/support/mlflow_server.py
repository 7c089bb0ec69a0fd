"""A real ``mlflow server`` for tests and benchmarks, and a TCP proxy that adds latency or goes down.

:class:`MlflowServer` runs ``<venv>/bin/mlflow server`` (SQLite backend unless another is given,
artifacts proxied by the server, one worker by default, job execution off) on 127.0.0.1 in its own process group, waits for
``/health``, and can be stopped and started again on the same port. :class:`TcpProxy` forwards a
local port to the server, optionally sleeping before each forwarded chunk (a slow network) and
able to refuse connections (an outage) without touching the server.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from types import TracebackType

__all__ = ["MlflowServer", "TcpProxy", "free_port", "train_job"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _healthy(url: str, timeout_s: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=timeout_s) as r:  # noqa: S310
            return bool(r.status == 200)
    except OSError:
        return False


def train_job(overrides: list[str], env: dict[str, str]) -> None:
    """One ``rle.train`` job in this process: set ``env``, compose ``conf/train.yaml``, train.

    The target of the concurrent-writer tests' worker processes (``multiprocessing`` with a
    forkserver that has the heavy modules imported already, so four jobs start in seconds).
    """
    os.environ.update(env)
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from rle.paths import CONF_DIR
    from rle.train import run_training

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    run_training(cfg)


class MlflowServer:
    """``mlflow server`` on 127.0.0.1 with a SQLite store under ``root`` (or another backend).

    Args:
        root: Folder for ``s.db``, ``art/`` (artifacts) and ``server.log``.
        port: Port to listen on (a free one by default); kept across restarts.
        backend_store_uri: The server's backend store instead of ``<root>/s.db`` (e.g. a
            ``postgresql://`` database, see :mod:`support.postgres`).
        workers: Server worker processes.
    """

    def __init__(
        self,
        root: Path,
        port: int | None = None,
        *,
        backend_store_uri: str | None = None,
        workers: int = 1,
    ) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.backend_store_uri = backend_store_uri
        self.workers = workers
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def uri(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def store_uri(self) -> str:
        """The server's backend store, to read it directly (e.g. while the server is down)."""
        if self.backend_store_uri is not None:
            return self.backend_store_uri
        return "sqlite:///" + (self.root / "s.db").as_posix()

    def start(self, timeout_s: float = 90.0) -> MlflowServer:
        """Start the server and wait for ``/health``.

        Raises:
            RuntimeError: If it does not answer within ``timeout_s`` (its log is in the message).
        """
        mlflow_bin = Path(sys.executable).with_name("mlflow")
        env = {
            **os.environ,
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "PYTHONWARNINGS": "ignore",
        }
        env.pop("MLFLOW_TRACKING_URI", None)
        log = (self.root / "server.log").open("ab")
        self.proc = subprocess.Popen(
            [
                str(mlflow_bin),
                "server",
                "--backend-store-uri",
                self.store_uri,
                "--artifacts-destination",
                (self.root / "art").as_posix(),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                str(self.workers),
            ],
            cwd=self.root,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() ends uvicorn too
        )
        log.close()
        self.starts += 1
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if _healthy(self.uri):
                return self
            time.sleep(0.2)
        tail = (self.root / "server.log").read_text(errors="replace")[-3000:]
        self.stop()
        raise RuntimeError(f"mlflow server on port {self.port} did not start:\n{tail}")

    def stop(self, timeout_s: float = 15.0) -> None:
        """Stop the server and every process it started (SIGTERM, then SIGKILL)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout_s)
        # uvicorn's worker may outlive the CLI by a moment: wait until the port is free
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) != 0:
                    break
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # leftovers of the group, if any

    def __enter__(self) -> MlflowServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class TcpProxy:
    """Forward ``127.0.0.1:<port>`` to ``target_port``, with optional latency or an outage.

    Args:
        target_port: The port to forward to (on 127.0.0.1).
        delay_s: Sleep before forwarding each chunk from the client (added request latency).
        port: Listening port (a free one by default).
    """

    def __init__(self, target_port: int, delay_s: float = 0.0, port: int | None = None) -> None:
        self.target_port = target_port
        self.delay_s = delay_s
        self.port = port or free_port()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stopping = False

    @property
    def uri(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> TcpProxy:
        """Listen and forward (in daemon threads)."""
        self._stopping = False
        lst = socket.socket()
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lst.bind(("127.0.0.1", self.port))
        lst.listen(64)
        self._listener = lst
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and cut every open connection (the server seems gone)."""
        self._stopping = True
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            for c in self._conns:
                with contextlib.suppress(OSError):
                    c.close()
            self._conns.clear()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def _accept(self) -> None:
        assert self._listener is not None
        lst = self._listener
        while not self._stopping:
            try:
                client, _ = lst.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        socks = [client, upstream]
        try:
            while not self._stopping:
                readable, _, _ = select.select(socks, [], [], 0.5)
                for s in readable:
                    data = s.recv(65536)
                    if not data:
                        return
                    if s is client:
                        if self.delay_s:
                            time.sleep(self.delay_s)
                        upstream.sendall(data)
                    else:
                        client.sendall(data)
        except OSError:
            return
        finally:
            for s in socks:
                with contextlib.suppress(OSError):
                    s.close()
            with self._lock:
                for s in socks:
                    if s in self._conns:
                        self._conns.remove(s)

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
