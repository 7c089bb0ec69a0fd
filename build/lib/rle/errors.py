"""Typed errors of the ``rle`` package.

Every error the package raises on bad input or unavailable hardware derives from
:class:`RLEError`, so callers can catch the package's errors in one place. Messages say what
was wrong and how to fix it.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DataError",
    "ImportFormatError",
    "MetricInputError",
    "RLEError",
    "TelemetryUnavailable",
    "TrackingError",
]


class RLEError(Exception):
    """Base class of every error raised by ``rle``."""


class ConfigError(RLEError, ValueError):
    """A configuration value is invalid (unknown workload, intensity outside 0..1, ...)."""


class DataError(RLEError, ValueError):
    """A training data file is missing or malformed; the message names the file and line."""


class MetricInputError(RLEError, ValueError):
    """A sample frame or parameter given to :mod:`rle.metric` is invalid."""


class TelemetryUnavailable(RLEError):
    """A telemetry source cannot be used on this machine (no GPU, no NVML, no permission)."""


class TrackingError(RLEError):
    """The MLflow tracking store cannot be reached or refused a request."""


class ImportFormatError(RLEError, ValueError):
    """A file given to the importer is not in a recognised legacy format."""
