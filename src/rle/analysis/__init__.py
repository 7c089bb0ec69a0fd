"""Analyses of tracked runs (pure pandas/NumPy/SciPy; no MLflow, Hydra, Lightning or torch)."""

from __future__ import annotations
