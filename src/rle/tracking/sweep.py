"""Hydra multirun as MLflow parent/child runs, with a response curve on the parent.

:class:`MLflowSweepCallback` (a Hydra callback, registered in ``conf/hydra/default.yaml``) creates
one **parent run** when a multirun starts (tag ``rle.sweep_id``, the sweep's overrides as params)
and writes its id into the sweep directory; each job's run becomes a **child** (tag
``mlflow.parentRunId``, ``rle.sweep_id``; its overrides as params and tag ``rle.overrides``), so the
MLflow UI groups and compares them. When the sweep ends, the parent gets a response curve
(``response_curve/response_curve.csv`` and ``.png``): each swept parameter against mean
utilisation, achieved duty cycle, mean/p95 power, peak temperature, energy and mean RLE across its
children, per device and all devices together (NaN where a sensor is missing), drawn a panel per
quantity with a note in the panel for each quantity this hardware did not measure
(:mod:`rle.analysis.response`), plus the counts of children that finished and failed.

A job that fails before its run exists (a config value refused by validation) has no child run;
the job notes its failure in the sweep directory (:func:`record_failed_job`, ``.rle_failed_jobs/
<job number>``) and the parent counts it (tag ``rle.jobs.refused``, included in
``rle.jobs.failed``). When any job failed, ``python -m rle.train -m ...`` exits 1
(:data:`LAST_SWEEP`).

The parent's params (``sweep.<key>``) and name pass through :class:`rle.tracking.redact.Redactor`
like a job's: a secret override (``+workload.api_token=...``), a credential-shaped value or the
value of a secret environment variable is stored as ``***REDACTED***``.

:class:`RedactHydraOutputs` (another Hydra callback) rewrites the files Hydra itself writes under
``outputs/`` and ``multirun/`` (``.hydra/*.yaml``, ``multirun.yaml``) with the same redaction.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import tempfile
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from rle import paths
from rle.tracking.redact import MULTIRUN_FILE, Redactor, redact_hydra_files, redact_hydra_output_dir

__all__ = [
    "FAILED_JOBS_DIR",
    "LAST_SWEEP",
    "PARENT_FILE",
    "TAG_SWEEP_JOB",
    "MLflowSweepCallback",
    "RedactHydraOutputs",
    "SweepOutcome",
    "job_number",
    "parent_run_for_job",
    "record_failed_job",
    "response_curve",
]

log = logging.getLogger(__name__)

PARENT_FILE = ".rle_parent_run"
SWEPT_FILE = "rle_swept_keys.txt"
"""File in the sweep directory listing the swept override keys, one per line."""
"""File in the Hydra sweep directory holding ``<parent run id> <sweep id>``."""
FAILED_JOBS_DIR = ".rle_failed_jobs"
"""Folder in the sweep directory: one empty file per failed job, named by its job number."""
TAG_SWEEP_JOB = "rle.sweep_job"
"""Child run tag: the Hydra job number (``hydra.job.num``) that made the run."""


@dataclass
class SweepOutcome:
    """How the last multirun of this process ended (set by :class:`MLflowSweepCallback`).

    Attributes:
        parent_run_id: The parent run.
        jobs: Jobs counted: child runs plus jobs refused before their run existed.
        failed: Jobs that failed: FAILED or KILLED child runs plus refused jobs.
        refused: Jobs that failed before their run existed.
    """

    parent_run_id: str
    jobs: int
    failed: int
    refused: int


LAST_SWEEP: list[SweepOutcome] = []
"""The outcome of the multirun that ended last in this process (empty before any)."""


def _redactor(config: Any) -> Redactor:
    """The redactor for a (multirun) config: its ``tracking.secret_pattern``, else the default."""
    pattern = None
    with contextlib.suppress(Exception):  # a config without tracking (or not a DictConfig)
        pattern = config.tracking.get("secret_pattern")
    return Redactor(pattern or None)


def _sweep_params(config: DictConfig, redactor: Redactor | None = None) -> dict[str, str]:
    """The sweep's overrides (``sweep.<key>`` -> ``v1,v2``) from the multirun config, redacted.

    Args:
        config: The multirun config (``hydra.overrides.task``).
        redactor: The redactor (``None``: the config's, see :func:`_redactor`). A secret key's
            value becomes ``***REDACTED***``; secret text inside other values is replaced.
    """
    r = redactor or _redactor(config)
    out: dict[str, str] = {}
    for o in config.hydra.overrides.task:
        key, _, value = str(o).partition("=")
        out[f"sweep.{key.lstrip('+~')}"] = value
    r.learn_overrides(str(o) for o in config.hydra.overrides.task)
    return {k: str(v) for k, v in r.mapping(out).items()}


def _ensure_location(config: DictConfig) -> paths.TrackingLocation:
    uri = config.get("tracking", {}).get("uri") if "tracking" in config else None
    return paths.resolve_tracking(uri)


class MLflowSweepCallback(Callback):
    """Hydra callback: one MLflow parent run per multirun, children attached by the jobs."""

    def __init__(self) -> None:
        self.parent_run_id: str | None = None
        self.location: paths.TrackingLocation | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Create the parent run and publish its id in the sweep directory."""
        import os

        from rle.sync import owner_tags
        from rle.tracking.logger import client_for, create_run, log_params

        self.location = _ensure_location(config)
        experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME") or str(
            config.tracking.experiment_name
        )
        sweep_id = uuid.uuid4().hex[:12]
        redactor = _redactor(config)
        params = _sweep_params(config, redactor)
        name = _parent_name(config, params)
        _, self.parent_run_id = create_run(
            self.location,
            experiment,
            redactor.text(name)[:250],
            {"rle.sweep_id": sweep_id, "rle.role": "sweep_parent", **owner_tags()},
        )
        log_params(client_for(self.location), self.parent_run_id, params)
        sweep_dir = Path(str(config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / PARENT_FILE).write_text(f"{self.parent_run_id} {sweep_id}\n")
        swept = [k.removeprefix("sweep.") for k, v in params.items() if _is_sweep_value(v)]
        (sweep_dir / SWEPT_FILE).write_text("".join(k.lstrip("+~") + "\n" for k in swept))
        log.info("Sweep %s: MLflow parent run %s", sweep_id, self.parent_run_id)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Count the children, attach the response curve and end the parent run."""
        if self.parent_run_id is None or self.location is None:
            return
        from rle.tracking.logger import client_for, end_run, log_tags

        client = client_for(self.location)
        parent = client.get_run(self.parent_run_id)
        children = client.search_runs(
            [parent.info.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{self.parent_run_id}'",
        )
        statuses = [c.info.status for c in children]
        with_run = {c.data.tags.get(TAG_SWEEP_JOB) for c in children}
        failed_dir = Path(str(config.hydra.sweep.dir)) / FAILED_JOBS_DIR
        noted = sorted(p.name for p in failed_dir.iterdir()) if failed_dir.is_dir() else []
        refused = [n for n in noted if n not in with_run]
        failed = statuses.count("FAILED") + statuses.count("KILLED") + len(refused)
        jobs = len(children) + len(refused)
        log_tags(
            client,
            self.parent_run_id,
            {
                "rle.children.total": len(children),
                "rle.children.finished": statuses.count("FINISHED"),
                "rle.children.failed": statuses.count("FAILED"),
                "rle.children.killed": statuses.count("KILLED"),
                "rle.jobs.total": jobs,
                "rle.jobs.failed": failed,
                "rle.jobs.refused": len(refused),
            },
        )
        swept = [
            k.removeprefix("sweep.")
            for k, v in parent.data.params.items()
            if k.startswith("sweep.") and _is_sweep_value(v)
        ]
        rows = []
        for c in children:
            row: dict[str, Any] = {
                "run_id": c.info.run_id,
                "run_name": c.info.run_name,
                "status": c.info.status,
            }
            for key in swept:
                row[key] = _param_value(c.data.params.get(key))
            row.update(_child_responses(client, c))
            rows.append(row)
        if rows:
            _log_response_curve(client, self.parent_run_id, rows, swept, children)
        end_run(
            self.location,
            self.parent_run_id,
            "FAILED" if jobs and failed == jobs else "FINISHED",
        )
        LAST_SWEEP[:] = [SweepOutcome(self.parent_run_id, jobs, failed, len(refused))]
        (log.error if failed else log.info)(
            "Sweep parent %s: %d jobs, %d failed (%d before their run existed: job(s) %s)",
            self.parent_run_id,
            jobs,
            failed,
            len(refused),
            ", ".join(refused) or "none",
        )


def _parent_name(config: Any, params: Mapping[str, str]) -> str:
    """The sweep parent's run name: the workload and the swept values only.

    ``sweep synthetic intensity=0.3,0.8`` (keys shortened to their last part, like the
    children's names, unless two swept keys share it); the fixed overrides are in the params.
    """
    swept = {k.removeprefix("sweep."): v for k, v in params.items() if _is_sweep_value(v)}
    workload = params.get("sweep.workload")
    if workload is None or _is_sweep_value(workload):
        with contextlib.suppress(Exception):  # a config without a workload node
            workload = str(config.workload.name) if config.workload.get("name") else None
    leaves = [k.rsplit(".", 1)[-1] for k in swept]
    shown = [
        (leaf if leaves.count(leaf) == 1 else key) for key, leaf in zip(swept, leaves, strict=True)
    ]
    parts = ["sweep", *([workload] if workload and "workload" not in swept else [])]
    parts += [f"{k}={v}" for k, v in zip(shown, swept.values(), strict=True)]
    return " ".join(parts)


class RedactHydraOutputs(Callback):
    """Hydra callback: keep secrets out of the files Hydra writes under ``outputs/`` and ``multirun/``.

    Hydra saves ``<job dir>/.hydra/{config,hydra,overrides}.yaml`` just before ``on_job_start``
    and the basic sweeper saves ``<sweep dir>/multirun.yaml`` before the first job. This callback
    rewrites them redacted (:func:`rle.tracking.redact.redact_hydra_output_dir`: valid YAML, mode
    600) in ``on_job_start`` (before the task runs, so a job killed later leaves no secret
    behind), ``on_job_end``, ``on_run_end`` and ``on_multirun_end``. Secret names come from the
    config's ``tracking.secret_pattern`` (else the default), secret values from the environment
    and from the files themselves (values of secret keys and overrides).

    Never raises for a file: one that cannot be rewritten (``OSError``) is reported with
    ``log.error`` naming it, and the job goes on. Hydra's job log (``<job>.log``) is not rewritten;
    it holds only what the job logs, which goes through the redactor.
    """

    def _redact(self, config: Any, *keys: str) -> None:
        from omegaconf import OmegaConf

        subdir = str(OmegaConf.select(config, "hydra.output_subdir", default=".hydra") or ".hydra")
        redactor = _redactor(config)
        for key in keys:
            try:
                where = OmegaConf.select(config, key, default=None)
            except Exception:  # noqa: BLE001 (unresolvable: nothing Hydra wrote there)
                where = None
            if where is None:
                continue
            try:
                redact_hydra_output_dir(str(where), redactor, subdir)
            except OSError as e:
                log.error("Could not redact Hydra's files under %s: %s", where, e)

    def _redact_sweep_file(self, config: Any) -> None:
        from omegaconf import OmegaConf

        try:
            mode = str(OmegaConf.select(config, "hydra.mode", default=""))
            sweep_dir = OmegaConf.select(config, "hydra.sweep.dir", default=None)
        except Exception:  # noqa: BLE001
            return
        if not mode.endswith("MULTIRUN") or sweep_dir is None:
            return
        f = Path(str(sweep_dir)) / MULTIRUN_FILE
        if f.is_file():
            try:  # only this file: the other jobs' folders are redacted by their own jobs
                redact_hydra_files([f], _redactor(config))
            except OSError as e:
                log.error("Could not redact %s: %s", f, e)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Redact this job's ``.hydra`` files and, in a multirun, the sweep's ``multirun.yaml``."""
        self._redact(config, "hydra.runtime.output_dir")
        self._redact_sweep_file(config)

    def on_job_end(self, config: DictConfig, job_return: Any = None, **kwargs: Any) -> None:
        """Redact this job's ``.hydra`` files again (the task may have added to them)."""
        self._redact(config, "hydra.runtime.output_dir")

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Redact the single run's output directory."""
        self._redact(config, "hydra.runtime.output_dir", "hydra.run.dir")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Redact the whole sweep directory (every job's files and ``multirun.yaml``)."""
        self._redact(config, "hydra.sweep.dir")


def parent_run_for_job() -> tuple[str, str] | None:
    """Return ``(parent_run_id, sweep_id)`` when called inside a Hydra multirun job, else ``None``."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
    except ValueError:  # not under Hydra (tests call run_training directly)
        return None
    if hc.mode != RunMode.MULTIRUN:
        return None
    marker = Path(str(hc.sweep.dir)) / PARENT_FILE
    if not marker.is_file():
        return None
    parent, sweep_id = marker.read_text().split()
    return parent, sweep_id


def job_number() -> str | None:
    """This multirun job's number (``hydra.job.num``), else ``None``."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
    except ValueError:
        return None
    return str(hc.job.num) if hc.mode == RunMode.MULTIRUN else None


def record_failed_job() -> None:
    """In a multirun job, note in the sweep directory that this job failed.

    The parent counts the jobs noted here that have no child run (refused before the run
    existed). Only the job number is written (no message: it could hold a secret). Never raises.
    """
    num = job_number()
    if num is None:
        return
    try:
        from hydra.core.hydra_config import HydraConfig

        folder = Path(str(HydraConfig.get().sweep.dir)) / FAILED_JOBS_DIR
        folder.mkdir(parents=True, exist_ok=True)
        (folder / num).touch()
    except (OSError, ValueError) as e:
        log.error("Could not note the failed job %s in the sweep directory: %s", num, e)


def swept_values() -> dict[str, str]:
    """This multirun job's values of the swept keys (``{"workload.intensity": "0.3"}``), else ``{}``.

    The parent run lists the swept keys in the sweep directory; the job's own overrides give
    their values (used to name child runs so that the UI tells them apart).
    """
    try:
        from hydra.core.hydra_config import HydraConfig

        hc = HydraConfig.get()
    except ValueError:
        return {}
    marker = Path(str(hc.sweep.dir)) / SWEPT_FILE
    if not marker.is_file():
        return {}
    keys_swept = [k for k in marker.read_text().split() if k]
    values = {}
    for o in job_overrides():
        key, _, value = o.partition("=")
        key = key.lstrip("+~")
        if key in keys_swept:
            values[key] = value
    return values


def job_overrides() -> list[str]:
    """This Hydra job's command-line overrides (empty outside Hydra)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return [str(o) for o in HydraConfig.get().overrides.task]
    except ValueError:
        return []


def _is_sweep_value(value: str) -> bool:
    """Whether an override value sweeps (``a,b``, ``range(...)``, ``choice(...)``, ``interval(...)``)."""
    return "," in value or bool(re.match(r"^(range|choice|interval|glob)\(", value))


def _param_value(value: str | None) -> Any:
    if value is None:
        return math.nan
    try:
        return float(value)
    except ValueError:
        return value


def _responses(
    metrics: Mapping[str, float],
    tags: Mapping[str, str] | None = None,
    history: Callable[[str], Sequence[float]] | None = None,
) -> dict[str, float]:
    """A child's response-curve columns (:func:`rle.analysis.response.child_responses`)."""
    from rle.analysis.response import child_responses

    return child_responses(metrics, tags, history)


def _child_responses(client: Any, run: Any) -> dict[str, float]:
    """A child's responses: its summary metrics, else its metric histories via ``client``."""

    def history(key: str) -> list[float]:
        return [float(m.value) for m in client.get_metric_history(run.info.run_id, key)]

    return _responses(run.data.metrics, run.data.tags, history)


def response_curve(rows: Sequence[Mapping[str, Any]], swept: Sequence[str]) -> Any:
    """Tidy response-curve table (:func:`rle.analysis.response.response_curve`)."""
    from rle.analysis.response import response_curve as _curve

    return _curve(rows, swept)


def _log_response_curve(
    client: Any,
    parent_id: str,
    rows: Sequence[Mapping[str, Any]],
    swept: Sequence[str],
    children: Sequence[Any],
) -> None:
    """Log ``response_curve/response_curve.csv`` and, with a swept value, the ``.png``."""
    from rle.analysis.response import absence_notes, devices_of, plot_response_curve

    frame = response_curve(rows, swept)
    finished = [c for c in children if c.info.status == "FINISHED"]
    devices: list[str] = []
    for c in finished:
        devices += [d for d in devices_of(c.data.metrics, c.data.tags) if d not in devices]
    ok = frame[frame["status"] == "FINISHED"]
    notes = absence_notes(ok, [c.data.tags for c in finished], devices)
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "response_curve.csv"
        frame.to_csv(csv, index=False)
        client.log_artifact(parent_id, str(csv), artifact_path="response_curve")
        if any(k in frame for k in swept) and len(ok):
            png = Path(tmp) / "response_curve.png"
            plot_response_curve(frame, swept, notes, devices, png)
            client.log_artifact(parent_id, str(png), artifact_path="response_curve")
