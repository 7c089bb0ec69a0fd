"""``python -m rle.evaluate`` / ``rle-evaluate``: fingerprints and correlations from tracked runs.

A thin ``@hydra.main`` over :func:`run_evaluation` (:mod:`rle.analysis.pipeline`), which tests
call with a composed ``conf/evaluate.yaml`` (config directory :data:`rle.paths.CONF_DIR`). It
selects runs (experiment, filter string, run ids or a sweep parent's children), reads their
``train/*`` histories and the raw samples (``telemetry/samples/``) through :mod:`rle.tracking.reader`,
computes per-run/per-device fingerprints and correlations with the pure functions of
:mod:`rle.analysis`, and writes one **evaluation run** (tags ``rle.role`` and ``rle.kind`` =
``evaluation``) holding ``fingerprints.csv``, ``correlations.csv``, ``alignment.csv``,
``provenance.csv``, ``spike_collapse.csv``, plots and ``report.md``. Examples::

    python -m rle.evaluate                                        # every run of experiment "rle"
    python -m rle.evaluate selection.filter="tags.workload = 'synthetic'"
    python -m rle.evaluate selection.parent_run_id=<sweep parent run id>
    python -m rle.evaluate 'selection.run_ids=[<id1>,<id2>]' evaluation.correlation.max_lag_s=5

The legacy methods (``docs/rle-metric.md`` §8.3) reproduce the original lab's analyses on joint
sessions imported by :mod:`rle.ingest` (tag ``rle.source=rle_lab_joint``) from their original
files (artifacts ``original/``), beside the corrected ``default`` analysis of the same runs::

    python -m rle.evaluate evaluation=legacy_joint_session 'selection.experiment_names=[rle-lab-import]'
    python -m rle.evaluate evaluation=legacy_lag_report 'selection.experiment_names=[rle-lab-import]'

``legacy_joint_session`` compares every computed field of ``analysis_<id>.json`` with the
reproduction (``legacy_joint_session.csv``, tolerance :data:`LEGACY_TOLERANCE`);
``legacy_lag_report`` writes the lab's comprehensive lag report over the selected sessions
(``legacy_lag_report.json``/``.csv``). Selected runs that are not imported joint sessions are
listed as skipped.
"""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from rle import paths
from rle.analysis.pipeline import (
    LEGACY_COLUMNS,
    LEGACY_METHODS,
    LEGACY_TOLERANCE,
    EvalResult,
    _standard_samples,
    run_evaluation,
    selection_from_config,
    settings_from_config,
    summary_text,
)
from rle.errors import RLEError

__all__ = [
    "LEGACY_COLUMNS",
    "LEGACY_METHODS",
    "LEGACY_TOLERANCE",
    "EvalResult",
    "main",
    "run_evaluation",
    "selection_from_config",
    "settings_from_config",
    "summary_text",
]

log = logging.getLogger(__name__)
_ = _standard_samples  # re-exported for older callers (rle.analysis.provenance.standard_samples)


@hydra.main(version_base="1.3", config_path=str(paths.CONF_DIR), config_name="evaluate")
def _hydra_main(cfg: DictConfig) -> None:
    try:
        result = run_evaluation(cfg)
    except RLEError as e:
        log.error("%s", e)
        sys.exit(2)
    print(summary_text(result))  # noqa: T201 (the CLI's terminal table)
    if result.status != "FINISHED":
        sys.exit(1)


def main() -> None:
    """Console entry point (``rle-evaluate``)."""
    from rle.cli import exit_on_override_error

    exit_on_override_error("evaluate")
    _hydra_main()


if __name__ == "__main__":
    main()
