"""Analyses of tracked runs.

The analysis modules (``align``, ``correlation``, ``fingerprint``, ``legacy``, ``provenance``,
``compare``, ``report``, ``plots``) are pure pandas/NumPy/SciPy (no MLflow, Hydra, Lightning or
torch). ``pipeline`` is the one that does I/O: it reads runs through :mod:`rle.tracking`, runs the
pure functions and writes the evaluation run (:func:`rle.analysis.pipeline.run_evaluation`,
behind ``python -m rle.evaluate``).
"""

from __future__ import annotations
