"""A throw-away PostgreSQL cluster on 127.0.0.1 for tests: Debian's ``postgresql``, own data dir.

:func:`postgres_bin_dir` finds ``initdb``/``pg_ctl`` (``/usr/lib/postgresql/<version>/bin``, else
``PATH``) and, running as root on a machine without them, installs Debian's ``postgresql`` with
``apt-get``. :class:`PostgresCluster` creates a cluster in a fresh temporary folder (as the
``postgres`` user when running as root: ``initdb`` refuses root), starts it on a free port of
127.0.0.1 with its socket in that folder, creates a database, and stops and removes it again.
Every step is bounded; a failure raises :class:`PostgresUnavailable` with the reason and the
server's log, which tests turn into a visible skip.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from support.mlflow_server import free_port

__all__ = ["PostgresCluster", "PostgresUnavailable", "postgres_bin_dir"]

_TOOLS = ("initdb", "pg_ctl", "createdb")


class PostgresUnavailable(RuntimeError):
    """PostgreSQL cannot be installed or started here (the message says why)."""


def _find_bin_dir() -> Path | None:
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    for d in versions:
        if all((d / t).is_file() for t in _TOOLS):
            return d
    found = [shutil.which(t) for t in _TOOLS]
    if all(found):
        return Path(str(found[0])).resolve().parent
    return None


def _run(cmd: list[str], timeout_s: float, **kw: object) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(  # type: ignore[call-overload, no-any-return]
            cmd, capture_output=True, text=True, timeout=timeout_s, check=False, **kw
        )
    except subprocess.TimeoutExpired as e:
        raise PostgresUnavailable(f"{' '.join(cmd)} did not finish within {timeout_s:.0f} s") from e
    except OSError as e:
        raise PostgresUnavailable(f"{' '.join(cmd)} could not run: {e}") from e


def postgres_bin_dir(install_timeout_s: float = 300.0) -> Path:
    """The folder with ``initdb``, ``pg_ctl`` and ``createdb``; installs ``postgresql`` if absent.

    Raises:
        PostgresUnavailable: Not installed, and it cannot be installed (not root, no
            ``apt-get``, or the install failed: its output is in the message).
    """
    found = _find_bin_dir()
    if found is not None:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise PostgresUnavailable(
            "PostgreSQL (initdb, pg_ctl) is not installed and cannot be installed here "
            "(needs root and apt-get): `apt-get install -y postgresql`"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    deadline = time.monotonic() + install_timeout_s
    install = ["apt-get", "install", "-y", "--no-install-recommends", "postgresql"]
    result = _run(install, install_timeout_s, env=env)
    if result.returncode != 0:  # no package lists yet on a fresh machine: update once, retry
        _run(["apt-get", "update"], max(10.0, deadline - time.monotonic()), env=env)
        result = _run(install, max(10.0, deadline - time.monotonic()), env=env)
    found = _find_bin_dir()
    if result.returncode != 0 or found is None:
        raise PostgresUnavailable(
            f"`apt-get install -y postgresql` failed (exit {result.returncode}):\n"
            f"{(result.stdout + result.stderr)[-2000:]}"
        )
    return found


class PostgresCluster:
    """A PostgreSQL cluster in a temporary folder, listening on 127.0.0.1 only.

    Args:
        database: Database created once the server runs.
        port: Port to listen on (a free one by default).
        start_timeout_s: Bound of ``initdb`` and of ``pg_ctl start -w`` each, s.
    """

    def __init__(
        self, database: str = "mlflow", port: int | None = None, start_timeout_s: float = 60.0
    ) -> None:
        self.database = database
        self.port = port or free_port()
        self.start_timeout_s = start_timeout_s
        self.bin_dir: Path | None = None
        self.root: Path | None = None
        self._running = False
        self._as_postgres = os.geteuid() == 0  # initdb and postgres refuse to run as root

    @property
    def uri(self) -> str:
        """SQLAlchemy URI of the database (``postgresql+psycopg2://postgres@127.0.0.1:<port>/<db>``).

        The driver is named: SQLAlchemy 2.1 made ``psycopg`` (3) the default for ``postgresql://``,
        and the test extra installs ``psycopg2-binary``.
        """
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{self.database}"

    @property
    def data_dir(self) -> Path:
        """The cluster's data directory."""
        assert self.root is not None, "not started"
        return self.root / "data"

    def _cmd(self, tool: str, *args: str) -> list[str]:
        assert self.bin_dir is not None
        cmd = [str(self.bin_dir / tool), *args]
        if self._as_postgres:
            runuser = shutil.which("runuser")
            if runuser:
                return [runuser, "-u", "postgres", "--", *cmd]
            return ["su", "postgres", "-s", "/bin/sh", "-c", shlex.join(cmd)]
        return cmd

    def _log_tail(self) -> str:
        if self.root is None:
            return ""
        log = self.root / "server.log"
        return log.read_text(errors="replace")[-3000:] if log.is_file() else ""

    def start(self) -> PostgresCluster:
        """Install if needed, ``initdb``, start on 127.0.0.1:<port> and create the database.

        Raises:
            PostgresUnavailable: Any step failed or ran out of time (the reason and the log are
                in the message); what was started is stopped again.
        """
        self.bin_dir = postgres_bin_dir()
        # not under pytest's tmp_path: the postgres user must be able to reach the folder
        self.root = Path(tempfile.mkdtemp(prefix="rle-pg-"))
        try:
            if self._as_postgres:
                try:
                    shutil.chown(self.root, user="postgres", group="postgres")
                except (LookupError, OSError) as e:
                    raise PostgresUnavailable(
                        f"cannot hand {self.root} to user postgres: {e}"
                    ) from e
            init = _run(
                self._cmd(
                    "initdb",
                    "-D",
                    str(self.data_dir),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-instructions",
                ),
                self.start_timeout_s,
                cwd=self.root,
            )
            if init.returncode != 0:
                raise PostgresUnavailable(f"initdb failed:\n{(init.stdout + init.stderr)[-2000:]}")
            opts = f"-h 127.0.0.1 -p {self.port} -k {self.root} -c fsync=off -c max_connections=200"
            start = _run(
                self._cmd(
                    "pg_ctl",
                    "-D",
                    str(self.data_dir),
                    "-l",
                    str(self.root / "server.log"),
                    "-o",
                    opts,
                    "-t",
                    str(int(self.start_timeout_s)),
                    "-w",
                    "start",
                ),
                self.start_timeout_s + 10,
                cwd=self.root,
            )
            self._running = True  # stop() even if -w gave up: the postmaster may be up
            if start.returncode != 0:
                raise PostgresUnavailable(
                    f"pg_ctl start failed:\n{(start.stdout + start.stderr)[-1500:]}\n"
                    f"{self._log_tail()}"
                )
            created = _run(
                self._cmd(
                    "createdb",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-U",
                    "postgres",
                    self.database,
                ),
                30.0,
                cwd=self.root,
            )
            if created.returncode != 0:
                raise PostgresUnavailable(
                    f"createdb failed:\n{(created.stdout + created.stderr)[-1500:]}"
                )
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the server (fast shutdown, then immediate) and remove the folder."""
        if self.root is None:
            return
        if self._running:
            self._running = False
            stopped = _run_quiet(
                self._cmd(
                    "pg_ctl",
                    "-D",
                    str(self.data_dir),
                    "-m",
                    "fast",
                    "-t",
                    str(int(timeout_s)),
                    "-w",
                    "stop",
                ),
                timeout_s + 10,
            )
            if not stopped:
                _run_quiet(
                    self._cmd("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "stop"), 30
                )
                _kill_postmaster(self.data_dir)
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None

    def __enter__(self) -> PostgresCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _run_quiet(cmd: list[str], timeout_s: float) -> bool:
    """Run ``cmd``; whether it succeeded in time (never raises)."""
    try:
        return (
            subprocess.run(cmd, capture_output=True, timeout=timeout_s, check=False).returncode == 0
        )
    except (subprocess.TimeoutExpired, OSError):
        return False


def _kill_postmaster(data_dir: Path) -> None:
    """SIGKILL the postmaster named in ``postmaster.pid`` (the last resort of :meth:`stop`)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        pid = int((data_dir / "postmaster.pid").read_text().splitlines()[0])
        os.kill(pid, 9)
