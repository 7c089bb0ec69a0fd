"""Reproduced vs stored numbers, field by field (one comparison for ingest and evaluate).

The lab's analyses are reproduced from an imported bundle's original files and compared with what
the lab stored (``analysis_<id>.json``, rle-metric.md §6.5: "legacy correlation outputs to
1e-6"). Both :mod:`rle.ingest` (at import) and the evaluation's ``legacy_joint_session`` method
compare with :func:`compare_fields`, so they agree on what "matches" means:

* nested mappings are flattened to dotted field names (``correlations.gpu_grad_rle``); the
  fields compared are those of the **reproduction**;
* booleans match only an equal boolean; numbers match when ``|reproduced − stored| <=
  tolerance``; NaN matches a stored NaN (JSON ``NaN``);
* a field the stored mapping lacks (or holds ``null`` for a number) never matches.

Pure Python/pandas; no MLflow.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

__all__ = [
    "COMPARISON_COLUMNS",
    "REPRODUCTION_TOLERANCE",
    "agreement",
    "compare_fields",
    "comparison_frame",
    "flatten_fields",
]

REPRODUCTION_TOLERANCE = 1e-6
"""Largest absolute difference of a reproduced number that still matches the stored one."""

COMPARISON_COLUMNS: tuple[str, ...] = ("field", "reproduced", "stored", "abs_diff", "match")
"""Columns of :func:`compare_fields`' rows."""


def flatten_fields(node: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level with dotted keys.

    Args:
        node: A mapping (e.g. a parsed ``analysis_<id>.json``).
        prefix: Prefix of the keys.

    Returns:
        ``{"a.b": value, ...}`` in the mapping's order.
    """
    out: dict[str, Any] = {}
    for k, v in node.items():
        name = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.update(flatten_fields(v, name))
        else:
            out[name] = v
    return out


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def compare_fields(
    reproduced: Mapping[str, Any],
    stored: Mapping[str, Any] | None,
    tolerance: float = REPRODUCTION_TOLERANCE,
) -> list[dict[str, Any]]:
    """Compare every field of a reproduction with the stored value.

    Args:
        reproduced: What rle computed (nested mappings allowed).
        stored: What the lab stored, or ``None`` (nothing to compare with: no field matches).
        tolerance: Largest absolute difference that matches.

    Returns:
        One row per reproduced field (:data:`COMPARISON_COLUMNS`): ``abs_diff`` is 0 for equal
        booleans and for NaN vs NaN, NaN when the values cannot be compared.
    """
    mine = flatten_fields(reproduced)
    theirs = flatten_fields(stored) if stored is not None else {}
    rows = []
    for name, value in mine.items():
        other = theirs.get(name)
        if isinstance(value, bool) or isinstance(other, bool):
            ok = isinstance(value, bool) and isinstance(other, bool) and value == other
            rows.append(
                {
                    "field": name,
                    "reproduced": value,
                    "stored": other,
                    "abs_diff": 0.0 if ok else math.nan,
                    "match": ok,
                }
            )
            continue
        a, b = _number(value), _number(other)
        if a is None or b is None:
            diff, ok = math.nan, False
        elif math.isnan(a) and math.isnan(b):
            diff, ok = 0.0, True
        else:
            diff = abs(a - b)
            ok = diff <= tolerance  # False when either is NaN
        rows.append(
            {"field": name, "reproduced": value, "stored": other, "abs_diff": diff, "match": ok}
        )
    return rows


def agreement(
    stored: Mapping[str, Any] | None,
    reproduced: Mapping[str, Any],
    tolerance: float = REPRODUCTION_TOLERANCE,
) -> dict[str, Any]:
    """:func:`compare_fields` in the shape of the import report (``import/report.json``).

    Args:
        stored: The stored analysis, or ``None``.
        reproduced: The reproduction.
        tolerance: Largest absolute difference that matches.

    Returns:
        ``{"compared": False, "reason": ...}`` without a stored analysis, else ``{"compared":
        True, "agrees": bool, "tolerance": float, "fields": {field: {"stored", "reproduced",
        "agrees", "abs_error"}}}``.
    """
    if stored is None:
        return {"compared": False, "reason": "no analysis_<id>.json in the bundle"}
    rows = compare_fields(reproduced, stored, tolerance)
    fields = {
        r["field"]: {
            "stored": r["stored"],
            "reproduced": r["reproduced"],
            "agrees": bool(r["match"]),
            "abs_error": r["abs_diff"],
        }
        for r in rows
    }
    return {
        "compared": True,
        "agrees": all(r["match"] for r in rows),
        "tolerance": tolerance,
        "fields": fields,
    }


def comparison_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows of :func:`compare_fields` as a frame with :data:`COMPARISON_COLUMNS`."""
    return pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS))
