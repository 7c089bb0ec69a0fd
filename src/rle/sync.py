"""``python -m rle.sync SPOOL_DIR`` / ``rle-sync``: send a run's spooled tracking batches, close dead runs.

When the tracking store was unreachable at the end of a training run, the run leaves its unsent
metric points, params, tags, artifacts and final status in a spool directory
(``<project root>/outputs/spool/<run_id>/``) and logs the command to replay it. This command sends
the pending batches in order into the run recorded in the spool's ``manifest.json`` and marks each
one ``*.sent``. Running it again sends nothing new; with ``--force`` every batch is sent again and
the store ignores the points it already holds, so no point is ever duplicated.

Examples::

    python -m rle.sync outputs/spool/3f2a...        # one run's spool
    python -m rle.sync outputs/spool                # every run spooled under it
    python -m rle.sync outputs/spool/3f2a... --tracking-uri http://mlflow.internal:5000
    python -m rle.sync --close-dead                 # end the runs of this host's dead jobs
    python -m rle.sync --close-dead --experiment rle --tracking-uri http://mlflow.internal:5000
    python -m rle.sync --close-dead --run-id 3f2a...  # end that run, whatever its host

A spool whose manifest holds the run's final status (the job ended while the store was away)
ends the run with that status when it is replayed.

**Closing runs whose process is gone** (``--close-dead``). A job killed with ``SIGKILL`` (or by
the OOM killer, or a node crash) cannot end its run, which stays ``RUNNING`` in the store. Every
run ``rle`` creates records its owner, the process that ends it: tags ``host``, ``rle.pid`` and
``rle.pid_start_time`` (the process start time, so that a new process reusing the pid is not
taken for the owner). ``--close-dead`` searches the ``RUNNING`` runs that carry these tags (in
every active experiment, or those named with ``--experiment``) and

* ends ``KILLED`` each run of **this host** whose owner process no longer exists (or is a zombie,
  or the pid now belongs to a later process), tagging ``rle.end_reason=process_gone`` and
  ``rle.closed_by=rle.sync on <host>``; a spool left for the run under this project's
  ``outputs/spool/<run_id>`` is replayed first (it may end the run with its own status);
* lists runs whose owner is alive, and runs of **other hosts**, without touching them (their
  processes cannot be checked from here): ``--run-id ID`` closes such a run explicitly (tag
  ``rle.end_reason=closed_by_user``); a run of this host whose owner is alive is refused even
  then;
* with ``--dry-run`` only lists what it would do.

Runs without owner tags (not created by ``rle``, or by an older version) are never touched.

Exit status: 0 when everything was sent (and every dead run closed), 1 when batches are left
(store unreachable, or refused some: see ``*.rejected.error``) or a run could not be closed or was
refused, 2 on bad arguments (not a spool directory, unknown experiment, unusable tracking URI).
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rle.errors import RLEError, TrackingError
from rle.tracking import keys
from rle.tracking.spool import MANIFEST, ReplayReport, Spool, replay, strip_userinfo

__all__ = [
    "OpenRun",
    "close_dead_runs",
    "main",
    "owner_status",
    "owner_tags",
    "spool_dirs",
    "sync_spool",
]

log = logging.getLogger(__name__)


def spool_dirs(path: str | Path) -> list[Path]:
    """The spool directories at ``path``: itself if it holds a manifest, else its children that do.

    Raises:
        rle.errors.RLEError: If ``path`` is not a directory or holds no spool.
    """
    p = Path(path).expanduser()
    if not p.is_dir():
        raise RLEError(f"{p} is not a directory; give a spool directory (outputs/spool/<run_id>).")
    if (p / MANIFEST).is_file():
        return [p]
    found = sorted(c for c in p.iterdir() if (c / MANIFEST).is_file())
    if not found:
        raise RLEError(
            f"{p} is not an rle spool directory (no {MANIFEST} in it or in its sub-folders)."
        )
    return found


def sync_spool(
    directory: str | Path,
    tracking_uri: str | None = None,
    *,
    timeout_s: float = 30.0,
    force: bool = False,
    retry_rejected: bool = False,
) -> ReplayReport:
    """Replay one spool directory into its run.

    Args:
        directory: The spool directory.
        tracking_uri: Where to send; default: the URI in the manifest.
        timeout_s: How long to keep retrying while the store is unreachable, s.
        force: Send batches already marked sent again (the store ignores duplicate points).
        retry_rejected: Retry batches the store refused before.

    Returns:
        The :class:`~rle.tracking.spool.ReplayReport`.

    Raises:
        rle.errors.RLEError: If the directory is not a spool.
        rle.errors.TrackingError: If no tracking URI is known.
    """
    from mlflow import MlflowClient

    try:
        spool = Spool.open(directory)
    except (OSError, ValueError) as e:
        raise RLEError(f"{directory}: not a readable rle spool ({e}).") from e
    uri = tracking_uri or spool.tracking_uri
    if not uri:
        raise TrackingError(f"{directory}: the manifest has no tracking URI; pass --tracking-uri.")
    client = MlflowClient(tracking_uri=uri)
    return replay(
        spool,
        client,
        timeout_s=timeout_s,
        keep_sent=True,
        include_sent=force,
        include_rejected=retry_rejected,
    )


# ------------------------------------------------------------------------------ dead runs

OWNER_ALIVE = "alive"
"""Owner status: the run's owner process exists on this host."""
OWNER_GONE = "gone"
"""Owner status: the run belongs to this host and its owner process no longer exists."""
OWNER_OTHER_HOST = "other_host"
"""Owner status: the run was created on another host (its process cannot be checked here)."""
OWNER_UNKNOWN = "unknown"
"""Owner status: the run records no owner (not created by ``rle``, or by an older version)."""

_START_TIME_TOLERANCE_S = 1.0
"""A process whose start time differs from the recorded one by more is another process (pid reuse)."""


def owner_tags() -> dict[str, str]:
    """Tags naming this process as a run's owner: ``host``, ``rle.pid``, ``rle.pid_start_time``.

    The process that creates a run, logs into it and ends it sets these at creation
    (``rle.train`` on global rank 0, a sweep's launcher for the parent run), so that
    ``rle.sync --close-dead`` can tell a run whose process is gone from one still training.
    """
    import psutil

    me = psutil.Process()
    return {
        keys.TAG_HOST: socket.gethostname(),
        keys.TAG_PID: str(me.pid),
        keys.TAG_PID_START_TIME: f"{me.create_time():.3f}",
    }


def owner_status(tags: Mapping[str, str], *, host: str | None = None) -> str:
    """Whether the process that owns a run (:func:`owner_tags`) is still there.

    Args:
        tags: The run's tags.
        host: This host's name (default ``socket.gethostname()``).

    Returns:
        :data:`OWNER_ALIVE`, :data:`OWNER_GONE` (no such process, a zombie, or the pid belongs
        to a process started at another time), :data:`OWNER_OTHER_HOST` or
        :data:`OWNER_UNKNOWN` (no or unreadable ``rle.pid`` tag).
    """
    import psutil

    try:
        pid = int(tags.get(keys.TAG_PID, ""))
    except ValueError:
        return OWNER_UNKNOWN
    if tags.get(keys.TAG_HOST) != (host or socket.gethostname()):
        return OWNER_OTHER_HOST
    try:
        started: float | None = float(tags.get(keys.TAG_PID_START_TIME, ""))
    except ValueError:
        started = None
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return OWNER_GONE
        if started is not None and abs(proc.create_time() - started) > _START_TIME_TOLERANCE_S:
            return OWNER_GONE  # the pid was reused by a later process
    except psutil.NoSuchProcess:
        return OWNER_GONE
    except psutil.AccessDenied:  # it exists, under another user
        return OWNER_ALIVE
    return OWNER_ALIVE


@dataclass
class OpenRun:
    """One run ``close_dead_runs`` looked at, and what it did.

    Attributes:
        run_id: The run.
        experiment_id: Its experiment.
        run_name: Its name.
        host: ``host`` tag (empty when absent).
        pid: ``rle.pid`` tag (empty when absent).
        owner: :func:`owner_status` of the run.
        action: ``closed`` (ended ``KILLED`` here), ``would_close`` (``dry_run``), ``left``
            (owner alive or on another host), ``refused`` (``--run-id`` of a run whose owner is
            alive), ``not_running`` (``--run-id`` of a run already ended, also by its spool),
            ``not_found`` or ``failed``.
        reason: The ``rle.end_reason`` set (``closed``/``would_close``), else why not.
    """

    run_id: str
    experiment_id: str
    run_name: str
    host: str
    pid: str
    owner: str
    action: str
    reason: str = ""


def _resolve_location(tracking_uri: str | None) -> Any:
    """The tracking location: ``tracking_uri`` if given (it wins over ``MLFLOW_TRACKING_URI``)."""
    from rle.paths import resolve_tracking
    from rle.tracking.logger import check_reachable

    if tracking_uri:
        saved = os.environ.pop("MLFLOW_TRACKING_URI", None)
        try:
            location = resolve_tracking(tracking_uri)
        finally:
            if saved is not None:
                os.environ["MLFLOW_TRACKING_URI"] = saved
    else:
        location = resolve_tracking(None)
    check_reachable(location)
    return location


def _experiment_ids(client: Any, names: Sequence[str]) -> list[str]:
    if names:
        ids = []
        for name in names:
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise RLEError(f"No experiment named {name!r} in the tracking store.")
            ids.append(str(exp.experiment_id))
        return ids
    ids, token = [], None
    while True:
        page = client.search_experiments(max_results=1000, page_token=token)
        ids += [str(e.experiment_id) for e in page]
        token = page.token
        if not token:
            return ids


def _running_owned_runs(client: Any, experiment_ids: Sequence[str]) -> Iterable[Any]:
    """``RUNNING`` runs that carry an ``rle.pid`` tag, in ``experiment_ids``."""
    for i in range(0, len(experiment_ids), 100):
        token = None
        while True:
            page = client.search_runs(
                list(experiment_ids[i : i + 100]),
                filter_string="attributes.status = 'RUNNING'",
                max_results=1000,
                page_token=token,
            )
            yield from (r for r in page if keys.TAG_PID in r.data.tags)
            token = page.token
            if not token:
                break


def _replay_local_spool(client: Any, run_id: str, spool_root: Path | None) -> None:
    """Replay ``<spool_root>/<run_id>`` if it is a spool (it may hold the run's own end)."""
    if spool_root is None:
        from rle.paths import project_root

        spool_root = project_root() / "outputs" / "spool"
    directory = spool_root / run_id
    if not (directory / MANIFEST).is_file():
        return
    try:
        spool = Spool.open(directory)
        report = replay(spool, client, timeout_s=10.0, keep_sent=True)
    except Exception as e:  # the close below matters more
        log.warning("Replaying the spool %s of run %s failed: %s", directory, run_id, e)
        return
    log.info(
        "Replayed the spool %s of run %s first: %d batches sent", directory, run_id, report.n_sent
    )


def _close(client: Any, run_id: str, reason: str) -> None:
    from mlflow.entities import RunTag

    closer = f"rle.sync on {socket.gethostname()}"
    client.log_batch(
        run_id,
        tags=[RunTag(keys.TAG_END_REASON, reason), RunTag(keys.TAG_CLOSED_BY, closer)],
        synchronous=True,
    )
    client.set_terminated(run_id, status="KILLED", end_time=int(time.time() * 1000))


def close_dead_runs(
    tracking_uri: str | None = None,
    *,
    experiments: Sequence[str] = (),
    run_ids: Sequence[str] = (),
    dry_run: bool = False,
    spool_root: str | Path | None = None,
) -> list[OpenRun]:
    """End ``KILLED`` the ``RUNNING`` runs whose owner process is gone (see the module docstring).

    Args:
        tracking_uri: The store (it wins over ``MLFLOW_TRACKING_URI``); default: as ``rle.train``
            resolves it (:func:`rle.paths.resolve_tracking`).
        experiments: Experiment names to search; default every active experiment.
        run_ids: Close exactly these runs (any host; a run of this host whose owner is alive is
            refused) instead of searching.
        dry_run: Only report what would be done.
        spool_root: Where runs' spools are looked for (default ``<project root>/outputs/spool``).

    Returns:
        One :class:`OpenRun` per run looked at.

    Raises:
        rle.errors.RLEError: Unknown experiment, or an unusable tracking URI
            (:class:`~rle.errors.ConfigError`, :class:`~rle.errors.TrackingError`).
    """
    from mlflow.exceptions import MlflowException

    from rle.tracking.logger import client_for

    client = client_for(_resolve_location(tracking_uri))
    root = Path(spool_root) if spool_root is not None else None
    host = socket.gethostname()
    explicit = bool(run_ids)
    runs: list[Any] = []
    report: list[OpenRun] = []
    if explicit:
        for rid in run_ids:
            try:
                runs.append(client.get_run(rid))
            except MlflowException:
                report.append(
                    OpenRun(rid, "", "", "", "", OWNER_UNKNOWN, "not_found", "no such run")
                )
    else:
        runs = list(_running_owned_runs(client, _experiment_ids(client, experiments)))
    for run in runs:
        tags = run.data.tags
        item = OpenRun(
            run_id=run.info.run_id,
            experiment_id=str(run.info.experiment_id),
            run_name=run.info.run_name or "",
            host=tags.get(keys.TAG_HOST, ""),
            pid=tags.get(keys.TAG_PID, ""),
            owner=owner_status(tags, host=host),
            action="left",
        )
        report.append(item)
        if run.info.status != "RUNNING":
            item.action, item.reason = "not_running", f"already {run.info.status}"
            continue
        if item.owner == OWNER_ALIVE:
            item.action = "refused" if explicit else "left"
            item.reason = f"process {item.pid} is alive on this host"
            continue
        if item.owner == OWNER_GONE:
            item.reason = keys.END_REASON_PROCESS_GONE
        elif explicit:
            item.reason = keys.END_REASON_CLOSED_BY_USER
        else:
            item.reason = (
                f"created on {item.host}: close it there, or here with --run-id"
                if item.owner == OWNER_OTHER_HOST
                else "no owner recorded"
            )
            continue
        if dry_run:
            item.action = "would_close"
            continue
        try:
            if item.owner == OWNER_GONE:
                _replay_local_spool(client, item.run_id, root)
                status = client.get_run(item.run_id).info.status
                if status != "RUNNING":  # its spool held the end
                    item.action, item.reason = "not_running", f"ended {status} by its spool"
                    continue
            _close(client, item.run_id, item.reason)
            item.action = "closed"
        except Exception as e:  # MLflow raises many types (MlflowException, requests, sqlalchemy)
            item.action, item.reason = "failed", str(e)
    return report


def _print_open_runs(report: Sequence[OpenRun], uri: str, dry_run: bool) -> int:
    """Print one line per run; return the exit status (1 when a run failed or was refused)."""
    if not report:
        print(f"{uri}: no RUNNING rle runs.")  # noqa: T201 (CLI summary)
        return 0
    status = 0
    for r in report:
        where = f"host {r.host or '?'} pid {r.pid or '?'}"
        what = {
            "closed": f"ended KILLED (rle.end_reason={r.reason})",
            "would_close": f"would end KILLED (rle.end_reason={r.reason}; --dry-run)",
            "left": f"left RUNNING ({r.reason})",
        }.get(r.action, f"{r.action.replace('_', ' ')} ({r.reason})")
        line = f"run {r.run_id} {r.run_name!r} [{where}, owner {r.owner}]: {what}"
        if r.action in ("failed", "refused", "not_found"):
            print(line, file=sys.stderr)  # noqa: T201 (CLI)
            status = 1
        else:
            print(line)  # noqa: T201 (CLI summary)
    n = sum(r.action == ("would_close" if dry_run else "closed") for r in report)
    print(f"{uri}: {n} of {len(report)} runs {'to close' if dry_run else 'closed'}.")  # noqa: T201
    return status


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rle-sync",
        description="Send the tracking batches a training run spooled while MLflow was unreachable.",
    )
    p.add_argument(
        "spool_dir",
        nargs="*",
        help="a run's spool directory, or a folder of them (optional with --close-dead)",
    )
    p.add_argument(
        "--tracking-uri",
        default=None,
        help="send here instead of the URI in the spool's manifest; with --close-dead the store "
        "to search (default: MLFLOW_TRACKING_URI, else the project's SQLite store)",
    )
    p.add_argument(
        "--timeout-s",
        type=float,
        default=30.0,
        help="keep retrying an unreachable store this long, seconds (default 30)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="send batches already marked sent again (no duplicates)",
    )
    p.add_argument(
        "--retry-rejected", action="store_true", help="retry batches the store refused before"
    )
    dead = p.add_argument_group("closing runs whose process is gone")
    dead.add_argument(
        "--close-dead",
        action="store_true",
        help="end KILLED the RUNNING runs of this host whose process is gone (tag "
        "rle.end_reason=process_gone); runs of other hosts are listed, not touched",
    )
    dead.add_argument(
        "--experiment",
        action="append",
        default=[],
        metavar="NAME",
        help="with --close-dead: search this experiment only (repeatable; default: all)",
    )
    dead.add_argument(
        "--run-id",
        action="append",
        default=[],
        metavar="ID",
        help="with --close-dead: close this run, whatever its host (repeatable); a run whose "
        "process is alive on this host is refused",
    )
    dead.add_argument(
        "--dry-run", action="store_true", help="with --close-dead: only list what would be done"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point (``rle-sync``).

    Returns:
        The exit status (0 all sent and every dead run closed, 1 batches left or a run not
        closed, 2 bad arguments).
    """
    args = _parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.timeout_s < 0:
        print("Error: --timeout-s must be >= 0.", file=sys.stderr)  # noqa: T201 (CLI)
        return 2
    if not args.close_dead and (args.experiment or args.run_id or args.dry_run):
        print(  # noqa: T201 (CLI)
            "Error: --experiment, --run-id and --dry-run go with --close-dead.", file=sys.stderr
        )
        return 2
    if not args.spool_dir and not args.close_dead:
        print(  # noqa: T201 (CLI)
            "Error: give a spool directory (outputs/spool/<run_id>), or --close-dead.",
            file=sys.stderr,
        )
        return 2
    status = _sync_spools(args) if args.spool_dir else 0
    if args.close_dead:
        try:
            uri = _resolve_location(args.tracking_uri).uri
            report = close_dead_runs(
                uri, experiments=args.experiment, run_ids=args.run_id, dry_run=args.dry_run
            )
        except RLEError as e:
            print(f"Error: {e}", file=sys.stderr)  # noqa: T201 (CLI)
            return 2
        status = max(status, _print_open_runs(report, strip_userinfo(uri), args.dry_run))
    return status


def _sync_spools(args: argparse.Namespace) -> int:
    """Replay the spool directories of ``args``; the exit status (0, 1 or 2)."""
    try:
        dirs = [d for path in args.spool_dir for d in spool_dirs(path)]
    except RLEError as e:
        print(f"Error: {e}", file=sys.stderr)  # noqa: T201 (CLI)
        return 2
    status = 0
    for d in dirs:
        try:
            report = sync_spool(
                d,
                args.tracking_uri,
                timeout_s=args.timeout_s,
                force=args.force,
                retry_rejected=args.retry_rejected,
            )
            spool = Spool.open(d)
        except RLEError as e:
            print(f"Error: {e}", file=sys.stderr)  # noqa: T201 (CLI)
            status = max(status, 2)
            continue
        uri = strip_userinfo(args.tracking_uri or spool.tracking_uri or "?")
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(report.sent.items())) or "nothing new"
        print(  # noqa: T201 (CLI summary)
            f"{d}: run {spool.run_id} at {uri}: sent {report.n_sent} batches ({kinds}; "
            f"{report.points} metric points); {report.rejected} refused; {report.left} left."
        )
        if report.left or report.rejected:
            if report.last_error:
                print(f"  last error: {report.last_error}", file=sys.stderr)  # noqa: T201
            status = max(status, 1)
    return status


if __name__ == "__main__":
    sys.exit(main())
