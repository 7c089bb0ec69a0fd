"""Importers of recordings made outside ``rle`` (pure parsing; MLflow I/O lives in :mod:`rle.ingest`).

:mod:`rle.importers.rle_lab` reads the original RLE lab's monitor CSVs (v0.3, 19 and 16
columns; v2, 42 columns) and joint-session bundles (``docs/rle-metric.md`` §6);
:mod:`rle.importers.recompute` recomputes their RLE columns with :mod:`rle.metric` and measures
the agreement.
"""

from __future__ import annotations

from rle.importers.rle_lab import (
    FORMAT_PROFILES,
    FORMAT_SOURCES,
    JOINT_SOURCE,
    DeviceStream,
    ParsedFile,
    ParsedSession,
    Segment,
    detect_format,
    find_sessions,
    is_session_folder,
    read_joint_session,
    read_monitor_csv,
    read_training_log,
)

__all__ = [
    "FORMAT_PROFILES",
    "FORMAT_SOURCES",
    "JOINT_SOURCE",
    "DeviceStream",
    "ParsedFile",
    "ParsedSession",
    "Segment",
    "detect_format",
    "find_sessions",
    "is_session_folder",
    "read_joint_session",
    "read_monitor_csv",
    "read_training_log",
]
