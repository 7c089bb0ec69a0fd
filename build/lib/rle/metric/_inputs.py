"""Validation and conversion of sample frames and single samples (shared by batch and stream).

Time is handled as an exact "time key": integer nanoseconds since the epoch (UTC) for datetime
inputs, float seconds for numeric inputs. Relative times ``t − t_first`` are computed from the
keys the same way in both paths, so window membership is decided identically sample by sample.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from rle.errors import MetricInputError

__all__ = [
    "OPTIONAL_COLUMNS",
    "REQUIRED_COLUMNS",
    "FrameInputs",
    "resolve_per_row",
    "sample_float",
    "time_key",
    "read_frame",
    "read_times",
    "resolve_scalar",
    "relative_seconds",
]

REQUIRED_COLUMNS = ("timestamp", "util_pct", "temp_c", "power_w")
OPTIONAL_COLUMNS = ("rated_w", "limit_c", "cpu_freq_ghz")

FloatArray = npt.NDArray[np.float64]

TimeKey = int | float


@dataclass(frozen=True)
class FrameInputs:
    """Validated columns of one device's sample frame.

    Attributes:
        t_rel_s: Seconds since the first row, shape ``(n,)``, strictly increasing.
        util_pct: Utilisation, percent (NaN where missing).
        temp_c: Temperature, °C (NaN where missing).
        power_w: Power, W (NaN where missing).
        rated_w: Per-row rated power column, W, or ``None`` if absent.
        limit_c: Per-row thermal limit column, °C, or ``None`` if absent.
        cpu_freq_ghz: CPU clock, GHz, or ``None`` if absent.
    """

    t_rel_s: FloatArray
    util_pct: FloatArray
    temp_c: FloatArray
    power_w: FloatArray
    rated_w: FloatArray | None
    limit_c: FloatArray | None
    cpu_freq_ghz: FloatArray | None


def time_key(value: Any) -> TimeKey:
    """Exact time key of one timestamp: int ns (datetime-like) or float seconds (numbers).

    Args:
        value: ``datetime``, ``pandas.Timestamp``, ``numpy.datetime64``, ISO string, or epoch /
            monotonic seconds as a number. Naive datetimes are taken as UTC.

    Returns:
        ``int`` nanoseconds since the epoch or ``float`` seconds.

    Raises:
        MetricInputError: If the value is missing or not a timestamp.
    """
    if isinstance(value, bool) or value is None:
        raise MetricInputError(f"sample timestamp must be a datetime or seconds, got {value!r}")
    if isinstance(value, int | float | np.integer | np.floating):
        x = float(value)
        if not math.isfinite(x):
            raise MetricInputError(f"sample timestamp must be finite, got {value!r}")
        return x
    if isinstance(value, str | _dt.datetime | _dt.date | np.datetime64 | pd.Timestamp):
        try:
            ts = pd.Timestamp(value)
        except (ValueError, TypeError) as exc:
            raise MetricInputError(f"cannot parse sample timestamp {value!r}: {exc}") from exc
        if ts is pd.NaT:
            raise MetricInputError("sample timestamp is NaT")
        return int(ts.value)
    raise MetricInputError(f"sample timestamp must be a datetime or seconds, got {value!r}")


def relative_seconds(key: TimeKey, first: TimeKey) -> float:
    """Seconds from ``first`` to ``key`` (exact integer difference for ns keys)."""
    if isinstance(key, int) and isinstance(first, int):
        return (key - first) / 1e9
    k = key / 1e9 if isinstance(key, int) else key
    f = first / 1e9 if isinstance(first, int) else first
    return float(k - f)


def sample_float(sample: Mapping[str, Any], key: str) -> float:
    """Read one numeric field of a sample; missing or ``None`` gives NaN."""
    value = sample.get(key)
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        if value is pd.NA:
            return math.nan
        raise MetricInputError(f"sample field {key!r} must be a number, got {value!r}") from exc


def _time_keys(col: pd.Series) -> npt.NDArray[np.int64] | FloatArray:
    if pd.api.types.is_bool_dtype(col.dtype):
        raise MetricInputError(
            "column 'timestamp' must hold datetimes or epoch seconds, not booleans"
        )
    if pd.api.types.is_numeric_dtype(col.dtype):
        keys = np.asarray(col.to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64)
    else:
        try:
            dt = pd.to_datetime(col, utc=True)
        except (ValueError, TypeError) as exc:
            raise MetricInputError(
                f"column 'timestamp' cannot be read as UTC times: {exc}"
            ) from exc
        bad = dt.isna().to_numpy()
        if bad.any():
            rows = list(col.index[bad][:5])
            raise MetricInputError(f"column 'timestamp' has missing values at rows {rows}")
        return np.asarray(pd.DatetimeIndex(dt).as_unit("ns").asi8, dtype=np.int64)
    bad = ~np.isfinite(keys)
    if bad.any():
        rows = list(col.index[bad][:5])
        raise MetricInputError(f"column 'timestamp' has missing or infinite values at rows {rows}")
    return keys


def _float_column(frame: pd.DataFrame, name: str) -> FloatArray:
    col = frame[name]
    if pd.api.types.is_bool_dtype(col.dtype):
        return np.asarray(col.to_numpy(dtype=np.float64), dtype=np.float64)
    try:
        num = pd.to_numeric(col, errors="raise")
    except (ValueError, TypeError) as exc:
        raise MetricInputError(
            f"column {name!r} must be numeric (NaN where missing): {exc}"
        ) from exc
    return np.asarray(pd.Series(num).to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64)


def read_times(col: pd.Series) -> FloatArray:
    """Seconds since the first row of a ``timestamp`` column, validated.

    Args:
        col: UTC datetimes (naive ones are taken as UTC) or epoch/monotonic seconds.

    Returns:
        Relative seconds, shape ``(n,)``, strictly increasing.

    Raises:
        MetricInputError: Missing values, duplicate or decreasing timestamps (the message names
            the rows by index label).
    """
    keys = _time_keys(col)
    if keys.shape[0] > 1:
        step = np.diff(keys)
        for mask, what in ((step == 0, "duplicate"), (step < 0, "unsorted (decreasing)")):
            if mask.any():
                where = np.flatnonzero(mask)[:5]
                pairs = [(col.index[i], col.index[i + 1]) for i in where]
                raise MetricInputError(
                    f"{what} timestamps at rows {pairs}; one device's samples must be in strictly "
                    "increasing time order"
                )
    if keys.size == 0:
        return np.zeros(0, dtype=np.float64)
    if keys.dtype == np.int64:
        return np.asarray((keys - keys[0]).astype(np.float64) / 1e9, dtype=np.float64)
    return np.asarray(keys - keys[0], dtype=np.float64)


def read_frame(frame: pd.DataFrame) -> FrameInputs:
    """Validate a sample frame and return its columns as float arrays.

    Args:
        frame: One device's samples with columns ``timestamp`` (UTC datetimes or epoch seconds),
            ``util_pct``, ``temp_c``, ``power_w``; optional ``rated_w``, ``limit_c``,
            ``cpu_freq_ghz``.

    Returns:
        The validated inputs.

    Raises:
        MetricInputError: Not a DataFrame, missing columns, non-numeric values, missing
            timestamps, or timestamps that are not strictly increasing (the message names the
            rows).
    """
    if not isinstance(frame, pd.DataFrame):
        raise MetricInputError(f"expected a pandas DataFrame, got {type(frame).__name__}")
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise MetricInputError(
            f"sample frame lacks required columns {missing} (has {list(map(str, frame.columns))})"
        )
    t_rel = read_times(frame["timestamp"])
    return FrameInputs(
        t_rel_s=t_rel,
        util_pct=_float_column(frame, "util_pct"),
        temp_c=_float_column(frame, "temp_c"),
        power_w=_float_column(frame, "power_w"),
        rated_w=_float_column(frame, "rated_w") if "rated_w" in frame.columns else None,
        limit_c=_float_column(frame, "limit_c") if "limit_c" in frame.columns else None,
        cpu_freq_ghz=_float_column(frame, "cpu_freq_ghz")
        if "cpu_freq_ghz" in frame.columns
        else None,
    )


def resolve_per_row(column: FloatArray | None, fallback: float | None, n: int) -> FloatArray:
    """Per-row value: the column where finite and > 0, else the profile value, else NaN."""
    base = np.full(n, np.nan if fallback is None else float(fallback))
    if column is None:
        return base
    ok = np.isfinite(column) & (column > 0)
    return np.where(ok, column, base)


def resolve_scalar(value: float, fallback: float | None) -> float:
    """Scalar form of :func:`resolve_per_row`."""
    if math.isfinite(value) and value > 0:
        return value
    return math.nan if fallback is None else float(fallback)
