"""Project locations and the tracking URI: the only place they are built.

The tracking home is ``$RLE_PROJECT_ROOT/mlruns`` when that variable is set, else the checkout's
``mlruns/`` when running from the repository, else ``mlruns/`` in the directory the program was
launched from (captured once, when this module is imported: Hydra's ``hydra.job.chdir=true`` and
Lightning's DDP launchers never move it). URIs are absolute, so per-run working directories never
scatter runs (docs/conventions.md, decision 1).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CONF_DIR",
    "DATA_DIR",
    "TrackingLocation",
    "pin_project_root",
    "project_root",
    "source_root",
    "resolve_tracking",
]

log = logging.getLogger(__name__)

_PACKAGE_DIR = Path(__file__).resolve().parent
_CHECKOUT_ROOT = _PACKAGE_DIR.parents[1]
_IN_CHECKOUT = _PACKAGE_DIR.parent.name == "src" and (_CHECKOUT_ROOT / "pyproject.toml").is_file()
_LAUNCH_DIR = Path.cwd().resolve()
"""The working directory when ``rle`` was first imported: the launch directory of a CLI."""

CONF_DIR: Path = _PACKAGE_DIR / "conf"
"""Absolute path of the Hydra config directory shipped inside the package (``rle/conf``)."""

DATA_DIR: Path = _PACKAGE_DIR / "data"
"""Absolute path of the data files shipped inside the package."""


def project_root() -> Path:
    """Return the project root that holds ``mlruns/`` and ``outputs/``.

    Returns:
        ``$RLE_PROJECT_ROOT`` if set, else the checkout root when ``rle`` runs from the
        repository (an editable install), else the launch directory (the working directory
        when ``rle`` was imported, never Hydra's run directory, never site-packages); always
        absolute.
    """
    env = os.environ.get("RLE_PROJECT_ROOT")
    if env:
        return Path(env).expanduser().resolve()
    if _IN_CHECKOUT:
        return _CHECKOUT_ROOT
    return _LAUNCH_DIR


def pin_project_root() -> Path:
    """Export the project root as ``RLE_PROJECT_ROOT`` so that child processes inherit it.

    Entry points call this first: DDP workers started by Lightning's launchers, Hydra jobs with
    ``hydra.job.chdir=true`` and subprocesses then resolve the same store as the launcher.

    Returns:
        The root (see :func:`project_root`).
    """
    root = project_root()
    os.environ["RLE_PROJECT_ROOT"] = root.as_posix()
    return root


def source_root() -> Path | None:
    """Return the checkout ``rle`` runs from (for the git commit tag), or ``None`` if installed."""
    return _CHECKOUT_ROOT if _IN_CHECKOUT else None


@dataclass(frozen=True)
class TrackingLocation:
    """Where runs are tracked.

    Attributes:
        uri: MLflow tracking URI (``sqlite:////abs/path/mlflow.db`` or ``http(s)://host:port``).
        artifact_location: Artifact root for experiments created by ``rle`` (a ``file://`` URI)
            on a local store; ``None`` for a server, which chooses its own.
        reason: Why this URI was chosen: ``"env"`` (``MLFLOW_TRACKING_URI``), ``"config"`` or
            ``"default"``.
    """

    uri: str
    artifact_location: str | None
    reason: str

    @property
    def is_local(self) -> bool:
        """Whether the store is a local SQLite database (as opposed to a server)."""
        return self.uri.startswith("sqlite:")


def _local_location(root: Path, reason: str) -> TrackingLocation:
    home = root / "mlruns"
    home.mkdir(parents=True, exist_ok=True)
    db = (home / "mlflow.db").resolve()
    return TrackingLocation(
        uri="sqlite:///" + db.as_posix(),
        artifact_location=(home / "artifacts").resolve().as_uri(),
        reason=reason,
    )


def resolve_tracking(config_uri: str | None = None, root: Path | None = None) -> TrackingLocation:
    """Choose the tracking URI: ``MLFLOW_TRACKING_URI`` wins, then the config, then the default.

    The default is a SQLite store at ``<root>/mlruns/mlflow.db`` with artifacts under
    ``<root>/mlruns/artifacts``; a relative ``sqlite:///`` path in the config is made absolute
    against ``root``. A plain ``./mlruns`` file store is refused by MLflow >= 3.13, so ``file:``
    URIs and bare paths are rejected here with a hint. An ``http(s)://user:password@host`` URI is
    refused too: MLflow sends a server's credentials from ``MLFLOW_TRACKING_USERNAME`` /
    ``MLFLOW_TRACKING_PASSWORD`` (or ``MLFLOW_TRACKING_TOKEN``), and a password inside the URI
    would travel into logs and spool manifests. Database URIs (``postgresql://user:pw@host/db``)
    keep their credentials, as SQLAlchemy expects.

    Args:
        config_uri: ``tracking.uri`` from the config, or ``None``.
        root: Project root; defaults to :func:`project_root`.

    Returns:
        The chosen :class:`TrackingLocation`.

    Raises:
        rle.errors.ConfigError: If the URI is a file store, has an unsupported scheme, or is a
            server URI with credentials in it (the message never holds them).
    """
    from rle.errors import ConfigError
    from rle.tracking.spool import strip_userinfo

    root = root if root is not None else project_root()
    env_uri = os.environ.get("MLFLOW_TRACKING_URI")
    if env_uri:
        uri, reason = env_uri, "env"
    elif config_uri:
        uri, reason = str(config_uri), "config"
    else:
        return _local_location(root, "default")

    source = "MLFLOW_TRACKING_URI" if reason == "env" else "tracking.uri"
    if uri.startswith(("http://", "https://", "databricks")):
        bare = strip_userinfo(uri)
        if bare != uri:
            raise ConfigError(
                f"The tracking URI from {source} carries credentials ({bare.split('://')[0]}://"
                f"<user>:<password>@{bare.split('://', 1)[1]}); rle refuses it so that the "
                "password never reaches logs or spool files. Put them in the environment, where "
                "MLflow reads them: export MLFLOW_TRACKING_USERNAME=<user> "
                f"MLFLOW_TRACKING_PASSWORD=<password>, and set {source}={bare}."
            )
        return TrackingLocation(uri=uri, artifact_location=None, reason=reason)
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        if not uri.startswith("sqlite:////"):
            db = (root / db).resolve()
        db.parent.mkdir(parents=True, exist_ok=True)
        artifacts = (db.parent / "artifacts").resolve().as_uri()
        return TrackingLocation(
            uri="sqlite:///" + db.as_posix(), artifact_location=artifacts, reason=reason
        )
    if uri.startswith(("postgresql", "mysql", "mssql")):
        return TrackingLocation(uri=uri, artifact_location=None, reason=reason)
    raise ConfigError(
        f"Unsupported tracking URI {strip_userinfo(uri)!r} (from {source}). "
        "Use a SQLite store ('sqlite:////abs/path/mlflow.db'), a database URI, or an MLflow server "
        "('http://host:port'); plain file stores such as './mlruns' are refused by MLflow >= 3.13."
    )


def _register_schemas() -> None:
    """Register the typed config schemas wherever :data:`CONF_DIR` can be composed."""
    from rle import schema

    schema.register()


_register_schemas()
