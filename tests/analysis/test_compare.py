"""rle.analysis.compare: one definition of "reproduced matches stored" for ingest and evaluate."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from rle.analysis.compare import (
    COMPARISON_COLUMNS,
    agreement,
    compare_fields,
    comparison_frame,
    flatten_fields,
)

REPRODUCED = {
    "aligned_samples": 61,
    "correlations": {"gpu_grad_rle": -0.41, "gpu_temp_grad": math.nan, "gpu_loss_rle": 0.2},
    "peak_lag": -1,
    "causal_order": True,
}


def test_fields_match_within_the_tolerance_and_say_how_far() -> None:
    stored = {
        "aligned_samples": 61,
        "correlations": {"gpu_grad_rle": -0.41 + 5e-7, "gpu_temp_grad": math.nan},
        "peak_lag": -1,
        "causal_order": 1,
    }
    rows = pd.DataFrame(compare_fields(REPRODUCED, stored)).set_index("field")
    assert bool(rows.loc["correlations.gpu_grad_rle", "match"])
    assert rows.loc["correlations.gpu_grad_rle", "abs_diff"] == pytest.approx(5e-7)
    assert bool(rows.loc["correlations.gpu_temp_grad", "match"])  # NaN vs a stored NaN
    assert not rows.loc["correlations.gpu_loss_rle", "match"]  # missing in the stored file
    assert math.isnan(rows.loc["correlations.gpu_loss_rle", "abs_diff"])
    assert not rows.loc["causal_order", "match"]  # a bool only matches a bool
    assert bool(rows.loc["peak_lag", "match"])
    tight = pd.DataFrame(compare_fields(REPRODUCED, stored, tolerance=1e-7)).set_index("field")
    assert not tight.loc["correlations.gpu_grad_rle", "match"]


def test_nothing_stored_matches_nothing() -> None:
    rows = compare_fields(REPRODUCED, None)
    assert len(rows) == 6
    assert not any(r["match"] for r in rows)
    assert list(comparison_frame(rows).columns) == list(COMPARISON_COLUMNS)


def test_agreement_in_the_import_report_shape() -> None:
    assert agreement(None, REPRODUCED) == {
        "compared": False,
        "reason": "no analysis_<id>.json in the bundle",
    }
    same = agreement(dict(REPRODUCED), REPRODUCED)
    assert same["compared"]
    assert same["agrees"]
    assert same["fields"]["correlations.gpu_grad_rle"] == {
        "stored": -0.41,
        "reproduced": -0.41,
        "agrees": True,
        "abs_error": 0.0,
    }
    assert flatten_fields({"a": {"b": {"c": 1}}, "d": 2}) == {"a.b.c": 1, "d": 2}
