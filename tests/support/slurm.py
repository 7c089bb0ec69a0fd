"""A real single-host Slurm cluster for tests: ``slurmctld`` and ``slurmd`` on localhost.

:func:`ensure_slurm` finds the daemons and ``srun`` on ``PATH`` (``/usr/sbin`` included) or, as
root on Debian/Ubuntu, installs Debian's ``slurm-wlm`` with ``apt-get`` within a bounded time.
:class:`SlurmCluster` writes a minimal ``slurm.conf`` into a fresh temporary directory (one node
``localhost`` at 127.0.0.1 with this machine's CPUs, one default partition, daemons bound to
127.0.0.1 only, ``auth/none`` so no ``munged`` is needed, no cgroups: ``proctrack/linuxproc``,
``task/none``, no accounting), picks free ports for both daemons, starts them in the foreground
(``-D``) in their own process groups with their logs in that directory, and waits, bounded,
until the node is ``idle``. Clients (``srun``, ``sinfo``, ``scancel``) reach it through
:attr:`SlurmCluster.env` (``SLURM_CONF``).
:meth:`SlurmCluster.stop` cancels what is still queued or running, then ends both process groups.

Anything that keeps Slurm from running here raises :class:`SlurmUnavailable` with the reason, for
the caller to skip on.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from support.mlflow_server import free_port

__all__ = ["SlurmCluster", "SlurmUnavailable", "ensure_slurm"]

NODE = "localhost"
PARTITION = "rle"
_TOOLS = ("slurmctld", "slurmd", "srun", "sinfo", "squeue", "scancel")
_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])


class SlurmUnavailable(RuntimeError):
    """Slurm cannot be installed or started on this machine; the message says why."""


def _which(tool: str) -> str | None:
    return shutil.which(tool, path=_SEARCH_PATH)


def ensure_slurm(install_timeout_s: float = 300.0) -> dict[str, str]:
    """Paths of the Slurm daemons and clients; installs ``slurm-wlm`` with apt if they are missing.

    Installation is tried only as root on a machine with ``apt-get`` (a clean Debian CI machine):
    ``apt-get update`` and ``apt-get install -y slurm-wlm``, together bounded by
    ``install_timeout_s``.

    Returns:
        ``{tool: absolute path}`` for slurmctld, slurmd, srun, sinfo, squeue and scancel.

    Raises:
        SlurmUnavailable: A tool is missing and cannot be installed (not root, no apt-get, apt
            failed or ran out of time).
    """
    missing = [t for t in _TOOLS if _which(t) is None]
    if missing:
        apt = shutil.which("apt-get")
        if apt is None or os.geteuid() != 0:
            raise SlurmUnavailable(
                f"{', '.join(missing)} not installed and cannot be installed here "
                f"({'not root' if apt else 'no apt-get'}); install Debian's slurm-wlm"
            )
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        deadline = time.monotonic() + install_timeout_s
        for args in (["update", "-q"], ["install", "-y", "-q", "slurm-wlm"]):
            left = max(1.0, deadline - time.monotonic())
            # waits for another apt/dpkg to let go of its lock, within the same bound
            cmd = [apt, "-o", f"DPkg::Lock::Timeout={int(left)}", *args]
            try:
                out = subprocess.run(
                    cmd,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=left,
                )
            except subprocess.TimeoutExpired:
                raise SlurmUnavailable(
                    f"`{' '.join(cmd)}` did not finish within {install_timeout_s:.0f} s"
                ) from None
            if out.returncode != 0 and args[0] == "install":  # a failed update may not matter
                raise SlurmUnavailable(
                    f"`{' '.join(cmd)}` exited {out.returncode}: {out.stderr.strip()[-1500:]}"
                )
        missing = [t for t in _TOOLS if _which(t) is None]
        if missing:
            raise SlurmUnavailable(f"slurm-wlm installed but {', '.join(missing)} not found")
    return {t: str(_which(t)) for t in _TOOLS}


def _config(root: Path, ctld_port: int, slurmd_port: int, user: str) -> str:
    cpus = len(os.sched_getaffinity(0))
    return "\n".join(
        [
            "ClusterName=rletest",
            f"SlurmctldHost={NODE}(127.0.0.1)",
            f"SlurmctldPort={ctld_port}",
            f"SlurmdPort={slurmd_port}",
            f"SlurmUser={user}",
            f"SlurmdUser={user}",
            # no munged: a single host that trusts itself, as only local clients can reach it
            "AuthType=auth/none",
            "CredType=cred/none",
            # bind to the node's own address (127.0.0.1 here), not to every address on the machine
            "CommunicationParameters=NoCtldInAddrAny,NoInAddrAny",
            "MpiDefault=none",
            "MailProg=/bin/true",
            # no cgroups (a container has none to delegate): processes are tracked by /proc
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU",
            "ReturnToService=2",
            "SlurmdTimeout=30",
            "InactiveLimit=0",
            "KillWait=5",
            f"StateSaveLocation={root / 'state'}",
            f"SlurmdSpoolDir={root / 'spool'}",
            f"SlurmctldPidFile={root / 'slurmctld.pid'}",
            f"SlurmdPidFile={root / 'slurmd.pid'}",
            f"SlurmctldLogFile={root / 'slurmctld.log'}",
            f"SlurmdLogFile={root / 'slurmd.log'}",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            f"NodeName={NODE} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN",
            f"PartitionName={PARTITION} Nodes={NODE} Default=YES MaxTime=INFINITE State=UP",
            "",
        ]
    )


class SlurmCluster:
    """``slurmctld`` + ``slurmd`` for one node, ``localhost``, under a temporary directory.

    Use as a context manager, or call :meth:`start` and :meth:`stop`.

    Args:
        tools: What :func:`ensure_slurm` returned.
        ready_timeout_s: How long :meth:`start` waits for the node to be ``idle``.
    """

    def __init__(self, tools: dict[str, str], ready_timeout_s: float = 60.0) -> None:
        self.tools = tools
        self.ready_timeout_s = ready_timeout_s
        # short and outside pytest's tmp_path: slurmd puts Unix sockets (108-byte paths) here
        self.root = Path(tempfile.mkdtemp(prefix="rle-slurm-"))
        self.conf = self.root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    def logs(self, chars: int = 3000) -> str:
        """The end of both daemons' log files (and their stderr), for failure messages."""
        parts = []
        for name in ("slurmctld.log", "slurmd.log", "slurmctld.out", "slurmd.out"):
            path = self.root / name
            if path.exists():
                parts.append(f"--- {name}\n{path.read_text(errors='replace')[-chars:]}")
        return "\n".join(parts)

    def _client(self, tool: str, *args: str, timeout_s: float = 10.0) -> str | None:
        """Run a Slurm client against this cluster: its stdout, or ``None`` if it failed."""
        try:
            out = subprocess.run(
                [self.tools[tool], *args],
                env=self.env,
                capture_output=True,
                text=True,
                timeout=timeout_s,
            )
        except subprocess.TimeoutExpired:
            return None
        return out.stdout if out.returncode == 0 else None

    def node_state(self) -> str | None:
        """The node's state in ``sinfo`` (``idle``, ``down*``, ...); ``None`` if unknown."""
        out = self._client("sinfo", "-h", "-N", "-n", NODE, "-o", "%T")
        if out is None or not out.strip():
            return None
        return out.strip()

    def start(self) -> SlurmCluster:
        """Write the configuration, start both daemons and wait until the node is idle.

        Raises:
            SlurmUnavailable: A daemon exited, or the node was not idle within
                ``ready_timeout_s``; the message carries the daemons' logs.
        """
        for sub in ("state", "spool"):
            (self.root / sub).mkdir()
        self.conf.write_text(_config(self.root, free_port(), free_port(), getpass.getuser()))
        for daemon, extra in (("slurmctld", []), ("slurmd", ["-N", NODE])):
            with (self.root / f"{daemon}.out").open("wb") as out:
                self._procs[daemon] = subprocess.Popen(
                    [self.tools[daemon], "-D", "-f", str(self.conf), *extra],
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group, ended by stop()
                )
        deadline = time.monotonic() + self.ready_timeout_s
        state = None
        while time.monotonic() < deadline:
            dead = [d for d, p in self._procs.items() if p.poll() is not None]
            if dead:
                logs = self.logs()
                self.stop()
                raise SlurmUnavailable(f"{' and '.join(dead)} exited while starting:\n{logs}")
            state = self.node_state()
            if state == "idle":
                return self
            time.sleep(0.5)
        logs = self.logs()
        self.stop()
        raise SlurmUnavailable(
            f"node {NODE} not idle within {self.ready_timeout_s:.0f} s (state {state}):\n{logs}"
        )

    def stop(self, timeout_s: float = 30.0) -> None:
        """Cancel every job still queued or running, then end both daemons' process groups.

        Each step is bounded: jobs get ``timeout_s`` to leave the queue, daemons ``timeout_s`` to
        exit after SIGTERM before SIGKILL. The temporary directory is removed.
        """
        alive = [p for p in self._procs.values() if p.poll() is None]
        if len(alive) == len(self._procs) and alive:  # both up: let Slurm end its own jobs
            self._client("scancel", "--full", "--user", getpass.getuser())
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                queue = self._client("squeue", "-h", "-o", "%i")
                if queue is None or not queue.strip():
                    break
                time.sleep(0.5)
        for p in alive:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        for p in self._procs.values():
            try:
                p.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=timeout_s)
        self._procs.clear()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> SlurmCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
