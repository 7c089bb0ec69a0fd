"""``python -m rle.sync SPOOL_DIR`` / ``rle-sync``: send a run's spooled tracking batches.

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

Exit status: 0 when everything was sent, 1 when batches are left (store unreachable, or refused
some: see ``*.rejected.error``), 2 on bad arguments (not a spool directory).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from rle.errors import RLEError, TrackingError
from rle.tracking.spool import MANIFEST, ReplayReport, Spool, replay, strip_userinfo

__all__ = ["main", "spool_dirs", "sync_spool"]

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


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rle-sync",
        description="Send the tracking batches a training run spooled while MLflow was unreachable.",
    )
    p.add_argument("spool_dir", nargs="+", help="a run's spool directory, or a folder of them")
    p.add_argument(
        "--tracking-uri", default=None, help="send here instead of the URI in the spool's manifest"
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
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point (``rle-sync``).

    Returns:
        The exit status (0 all sent, 1 batches left, 2 bad arguments).
    """
    args = _parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.timeout_s < 0:
        print("Error: --timeout-s must be >= 0.", file=sys.stderr)  # noqa: T201 (CLI)
        return 2
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
