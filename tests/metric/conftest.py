"""Shared fixtures for the rle.metric tests (helpers are fixtures: test dirs are not packages)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pytest

FLOAT_OUTPUTS = (
    "rle_raw",
    "rle_smoothed",
    "rle_norm",
    "E_th",
    "E_pw",
    "stability",
    "a_load",
    "t_sustain_s",
    "rolling_peak",
)


def _make_frame(
    util_pct: Sequence[float],
    temp_c: Sequence[float] | float,
    power_w: Sequence[float] | float,
    *,
    t0: float = 0.0,
    dt_s: float | Sequence[float] = 1.0,
    **extra: Sequence[float] | float,
) -> pd.DataFrame:
    n = len(util_pct)
    if isinstance(dt_s, int | float):
        t = t0 + np.arange(n) * float(dt_s)
    else:
        steps = np.asarray(dt_s, dtype=float)[: max(n - 1, 0)]
        t = t0 + np.concatenate(([0.0], np.cumsum(steps)))[:n]
    data: dict[str, Any] = {
        "timestamp": t,
        "util_pct": np.asarray(util_pct, dtype=float),
        "temp_c": np.broadcast_to(np.asarray(temp_c, dtype=float), (n,)).copy(),
        "power_w": np.broadcast_to(np.asarray(power_w, dtype=float), (n,)).copy(),
    }
    for key, value in extra.items():
        data[key] = np.broadcast_to(np.asarray(value, dtype=float), (n,)).copy()
    return pd.DataFrame(data)


def _outputs_close(
    a: pd.DataFrame, b: pd.DataFrame, *, rtol: float = 1e-9, atol: float = 1e-12
) -> None:
    for col in FLOAT_OUTPUTS:
        x = a[col].to_numpy(dtype=float)
        y = b[col].to_numpy(dtype=float)
        np.testing.assert_array_equal(np.isnan(x), np.isnan(y), err_msg=f"NaN pattern of {col}")
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol, equal_nan=True, err_msg=col)
    np.testing.assert_array_equal(a["collapse"].to_numpy(), b["collapse"].to_numpy())
    np.testing.assert_array_equal(a["power_estimated"].to_numpy(), b["power_estimated"].to_numpy())


@pytest.fixture(scope="session")
def make_frame() -> Callable[..., pd.DataFrame]:
    """``make_frame(util_pct, temp_c, power_w, *, t0=0, dt_s=1, **extra_columns)``."""
    return _make_frame


@pytest.fixture(scope="session")
def outputs_close() -> Callable[..., None]:
    """Assert that two computed frames agree (floats to rtol/atol, flags exactly)."""
    return _outputs_close
