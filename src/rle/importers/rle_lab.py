"""Readers for the original RLE lab's recordings (``docs/rle-metric.md`` §6): pure parsing.

Three monitor CSV formats are recognised by their header, and joint-session folders by their
file names:

========== ============================== =========== ====================
format     file name                      columns     ``rle.source``
========== ============================== =========== ====================
``v03``    ``rle_YYYYMMDD_HH.csv``        19          ``rle_lab_v03``
``v03_old````rle_YYYYMMDD_HH.csv``        16          ``rle_lab_v03_old``
``v2``     ``rle_enhanced_YYYYMMDD_HH.csv`` 42        ``rle_lab_v2``
joint      ``rle_data_<id>.csv`` + ``training_log_<id>.json`` (+ analysis, version, report)
                                                      ``rle_lab_joint``
========== ============================== =========== ====================

Every line goes through a real CSV parser and every value is parsed by value (``1.0`` and ``1``
are the same collapse flag). Messy input is normal, so nothing is dropped silently: each skipped
or repaired row is counted by reason in :attr:`ParsedFile.counts` (``skipped.torn_line``,
``skipped.duplicate_row``, ``repaired.short_gpu_row_padded``, ...).

Two monitors appending to the same hourly file are told apart by their own state: a monitor's
``rle_smoothed`` is the mean of its last five ``rle_raw`` values and (v0.3) its ``E_th`` follows
from its last ten utilisations, so each writer's history predicts its next rows. Rows are
assigned one by one (rows with identical timestamps included) by a beam search over the
assignments that keep every writer consistent; timing only breaks ties, and a new writer is the
costliest explanation, so a single writer is never split. A monitor
restart (``rolling_peak`` back to 0, or a gap followed by the start-up signature) starts a new
:class:`Segment`. Each segment is one recording of one monitor process, with one
:class:`DeviceStream` per device (``gpu_0``, ``cpu``).

This module imports only the standard library, NumPy and pandas (conventions §3.9).
"""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import json
import logging
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rle.errors import ImportFormatError

__all__ = [
    "DEVICE_LABELS",
    "FORMAT_PROFILES",
    "FORMAT_SOURCES",
    "JOINT_SOURCE",
    "V03_COLUMNS",
    "V03_OLD_COLUMNS",
    "V2_COLUMNS",
    "DeviceStream",
    "ParsedFile",
    "ParsedSession",
    "Segment",
    "detect_format",
    "find_sessions",
    "is_session_folder",
    "read_joint_session",
    "read_monitor_csv",
    "printable",
    "read_training_log",
]

log = logging.getLogger(__name__)

V03_COLUMNS: tuple[str, ...] = (
    "timestamp", "device", "rle_smoothed", "rle_raw", "rle_norm", "E_th", "E_pw", "temp_c",
    "vram_temp_c", "power_w", "util_pct", "a_load", "t_sustain_s", "fan_pct", "rolling_peak",
    "collapse", "alerts", "cpu_freq_ghz", "cycles_per_joule",
)  # fmt: skip
"""Header of the current v0.3 monitor (19 columns, §6.1)."""

V03_OLD_COLUMNS: tuple[str, ...] = (
    "timestamp", "device", "rle_smoothed", "rle_raw", "E_th", "E_pw", "temp_c", "vram_temp_c",
    "power_w", "util_pct", "a_load", "t_sustain_s", "fan_pct", "rolling_peak", "collapse",
    "alerts",
)  # fmt: skip
"""Header of older v0.3 builds (16 columns: no ``rle_norm``, ``cpu_freq_ghz``, ``cycles_per_joule``)."""

V2_COLUMNS: tuple[str, ...] = (
    "timestamp", "device", "rle_smoothed", "rle_raw", "E_th", "E_pw", "temp_c", "power_w",
    "util_pct", "a_load", "t_sustain_s", "rolling_peak", "collapse", "alerts", "cpu_freq_mhz",
    "cpu_cores_active", "cpu_temp_max", "gpu_memory_used_gb", "gpu_memory_total_gb",
    "gpu_fan_pct", "gpu_clock_mhz", "memory_used_gb", "memory_total_gb", "memory_util_pct",
    "disk_used_gb", "disk_total_gb", "disk_util_pct", "network_sent_mb", "network_recv_mb",
    "cpu_temp_hwinfo", "cpu_fan_rpm", "cpu_voltage", "motherboard_temp", "psu_voltage_12v",
    "psu_voltage_5v", "psu_voltage_3v", "gpu_temp_hwinfo", "gpu_memory_temp", "gpu_fan_rpm",
    "gpu_voltage", "case_fan_rpm", "workload_state",
)  # fmt: skip
"""Header of the v2 monitor (42 columns, §6.2)."""

_FORMAT_COLUMNS: dict[str, tuple[str, ...]] = {
    "v03": V03_COLUMNS,
    "v03_old": V03_OLD_COLUMNS,
    "v2": V2_COLUMNS,
}
FORMAT_SOURCES: dict[str, str] = {
    "v03": "rle_lab_v03",
    "v03_old": "rle_lab_v03_old",
    "v2": "rle_lab_v2",
}
"""``rle.source`` tag value per monitor format (§6.5)."""
FORMAT_PROFILES: dict[str, str] = {"v03": "legacy_v03", "v03_old": "legacy_v03", "v2": "legacy_v2"}
"""The metric profile that reproduces each monitor format."""
JOINT_SOURCE = "rle_lab_joint"
"""``rle.source`` tag value of a joint-session bundle."""
DEVICE_LABELS: dict[str, str] = {"gpu": "gpu_0", "cpu": "cpu"}
"""Legacy ``device`` column value → our device label (the lab read NVML device 0 only)."""

_TEXT_COLUMNS = frozenset({"timestamp", "device", "alerts", "workload_state"})
_MIN_TICK_S = 0.5
"""A monitor writes at most one row per device every this many seconds (the lab ran at 1 Hz)."""
_NOMINAL_TICK_S = 1.0
_CONTINUITY_GAP_S = 1.6
"""A longer interval inside the last five samples makes the smoothing check inapplicable."""
_RESTART_GAP_S = 2.5
_SETTLED_TICKS = 3
_V03_SIGMA_WINDOW = 10
"""Samples in the v0.3 stability (σ) window."""
"""After this many ticks a writer's device set is known (a torn row can hide one at first)."""
_V03_START_E_TH = 600.0 / 601.0
"""``E_th`` of a v0.3 monitor's first sample (σ = 1 with < 5 samples, τ = 600 with < 2 temps)."""
_V03_NOMINAL_RATED_W = {"gpu_0": 200.0, "cpu": 125.0}
_V2_PLACEHOLDER_TEMP_C = 50.0
_V2_PLACEHOLDER_POWER_W = 125.0
_SESSION_RE = re.compile(r"^rle_data_(?P<id>.+)\.csv$")
_FILE_TIME_RES = (
    (re.compile(r"(\d{8}_\d{6})"), "%Y%m%d_%H%M%S"),
    (re.compile(r"(\d{8}_\d{2})(?!\d)"), "%Y%m%d_%H"),
)


# ------------------------------------------------------------------------------- data classes


@dataclass(frozen=True)
class DeviceStream:
    """One device's samples within one recording segment.

    Attributes:
        device: Our device label, ``"gpu_0"`` or ``"cpu"``.
        segment: Index of the :class:`Segment` in its file.
        frame: The samples in time order: ``timestamp`` (``datetime64[ns, UTC]``),
            ``sample_index`` (0.. within this stream), ``line_no`` (1-based line in the file),
            then the format's columns with their legacy names (numbers as float64, NaN where
            empty; ``alerts``/``workload_state`` as text). The legacy ``device`` column is
            dropped.
        power_source: Where ``power_w`` came from: ``nvml``, ``hwinfo``, ``estimated``
            (rated · util, v0.3 CPU), ``placeholder`` (v2 CPU constant 125 W) or ``none``.
        temp_source: Where ``temp_c`` came from: ``nvml``, ``hwinfo``, ``psutil``,
            ``placeholder`` (v2 CPU constant 50 °C) or ``none``.
        rated_w: Rated power the monitor divided by, W (from ``power_w / a_load``), or ``None``.
        rated_w_source: ``nominal`` (the monitor's default), ``inferred`` (a different value was
            used) or ``unknown``.
        exclude_from_aggregates: The legacy RLE values are not usable in aggregates (older v0.3
            builds' CPU rows with α = 0, §2.7).
    """

    device: str
    segment: int
    frame: pd.DataFrame
    power_source: str
    temp_source: str
    rated_w: float | None
    rated_w_source: str
    exclude_from_aggregates: bool

    @property
    def n_samples(self) -> int:
        """Number of samples."""
        return len(self.frame)


@dataclass(frozen=True)
class Segment:
    """One recording: the rows of one monitor process between restarts.

    Attributes:
        index: Position in the file's segment list (ordered by start time).
        writer: Index of the writer (monitor process appending to the file) it belongs to.
        starts_fresh: The segment begins at the monitor's start-up, so every value can be
            recomputed from its rows; otherwise the first rows depend on state from before the
            file (hourly rotation, §6.5).
        start_reason: ``file_start``, ``restart``, ``new_writer`` or ``header_repeated``.
        streams: Device label → :class:`DeviceStream`.
    """

    index: int
    writer: int
    starts_fresh: bool
    start_reason: str
    streams: dict[str, DeviceStream]

    @property
    def devices(self) -> tuple[str, ...]:
        """Device labels, GPU first."""
        return tuple(sorted(self.streams, key=lambda d: (d != "gpu_0", d)))

    @property
    def start(self) -> pd.Timestamp:
        """Time of the first sample (UTC)."""
        return min(s.frame["timestamp"].iloc[0] for s in self.streams.values())

    @property
    def end(self) -> pd.Timestamp:
        """Time of the last sample (UTC)."""
        return max(s.frame["timestamp"].iloc[-1] for s in self.streams.values())

    @property
    def n_samples(self) -> int:
        """Samples over all devices."""
        return sum(s.n_samples for s in self.streams.values())


@dataclass
class ParsedFile:
    """A parsed monitor CSV.

    Attributes:
        path: The file.
        format: ``v03``, ``v03_old`` or ``v2``.
        columns: The header's column names.
        content_sha256: SHA-256 of the file's bytes (hex).
        rows: Every accepted row in file order, with the legacy ``device`` values (``gpu``,
            ``cpu``), ``timestamp`` (UTC), ``line_no``, ``writer`` and ``segment``; what the
            legacy analyses read.
        segments: The recordings in the file, by start time.
        counts: Skipped and repaired rows by reason (``skipped.<reason>``,
            ``repaired.<reason>``); zero counts are omitted.
        skipped_lines: ``(line number, reason)`` of every skipped line, in file order.
        flags: File-level observations (``interleaved_writers``, ``restarts``,
            ``file_name_time``, ``file_name_utc_offset_hours``, ...) as strings.
        metadata: The v2 ``…_metadata.json`` sidecar, if present, with ``monitoring.sample_hz``
            corrected (×1000, §6.5) and the written value kept as ``sample_hz_as_written``.
        metadata_path: Path of that sidecar.
    """

    path: Path
    format: str
    columns: tuple[str, ...]
    content_sha256: str
    rows: pd.DataFrame
    segments: list[Segment]
    counts: dict[str, int]
    skipped_lines: list[tuple[int, str]] = field(default_factory=list)
    flags: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, Any] | None = None
    metadata_path: Path | None = None

    @property
    def source(self) -> str:
        """The ``rle.source`` tag value."""
        return FORMAT_SOURCES[self.format]

    @property
    def profile(self) -> str:
        """The legacy metric profile that reproduces this format."""
        return FORMAT_PROFILES[self.format]

    @property
    def streams(self) -> list[DeviceStream]:
        """Every device stream of every segment."""
        return [s for seg in self.segments for s in seg.streams.values()]

    @property
    def smooth_n(self) -> int:
        """The monitor's ``rle_smoothed`` window in samples (``--smooth-n``; 5 unless seen otherwise)."""
        return int(self.flags.get("smoothing_samples", "5"))


@dataclass
class ParsedSession:
    """A parsed joint-session bundle (§6.3).

    Attributes:
        folder: The bundle's folder.
        session_id: ``<id>`` of the file names (the lab's **local** time ``%Y%m%d_%H%M%S``).
        monitor: The parsed ``rle_data_<id>.csv``.
        training: One row per training-log entry in file order, including the summary entry:
            ``step``, ``step_counter``, ``timestamp_shared`` (epoch s), ``timestamp`` (UTC, from
            ``timestamp_shared``), ``timestamp_iso`` (local naive text, not used), ``loss``,
            ``grad_norm``, ``learning_rate``, ``epoch``, ``is_summary``.
        training_entries: The training log as read (list of JSON objects), for the legacy
            analyses.
        analysis: ``analysis_<id>.json`` as read, or ``None``.
        version: ``version_<id>.json`` as read, or ``None``.
        report_text: ``report_<id>.txt``, or ``None``.
        files: Every file of the bundle.
        content_sha256: SHA-256 over the bundle's files (names and contents).
        counts: Skipped and repaired entries by reason (training log and monitor CSV).
    """

    folder: Path
    session_id: str
    monitor: ParsedFile
    training: pd.DataFrame
    training_entries: list[dict[str, Any]]
    analysis: dict[str, Any] | None
    version: dict[str, Any] | None
    report_text: str | None
    files: list[Path]
    content_sha256: str
    counts: dict[str, int]

    @property
    def source(self) -> str:
        """The ``rle.source`` tag value."""
        return JOINT_SOURCE

    @property
    def profile(self) -> str:
        """The legacy metric profile of the bundle's monitor CSV."""
        return self.monitor.profile


# ------------------------------------------------------------------------------ format checks


def _expected_formats() -> str:
    return (
        "the v0.3 monitor header (19 columns: timestamp, device, rle_smoothed, rle_raw, "
        "rle_norm, E_th, ...), the older v0.3 header (16 columns: timestamp, device, "
        "rle_smoothed, rle_raw, E_th, ...) or the v2 header (42 columns: timestamp, device, "
        "rle_smoothed, rle_raw, E_th, E_pw, temp_c, power_w, ..., workload_state)"
    )


def detect_format(header: Sequence[str]) -> str | None:
    """Return the monitor format of a CSV header, or ``None``.

    Args:
        header: Column names as read (surrounding whitespace and a BOM are ignored).

    Returns:
        ``"v03"``, ``"v03_old"``, ``"v2"`` or ``None``.
    """
    names = tuple(h.strip().lstrip("\ufeff").strip() for h in header)
    for fmt, cols in _FORMAT_COLUMNS.items():
        if names == cols:
            return fmt
    return None


def _header_error(path: Path, header: Sequence[str]) -> ImportFormatError:
    shown = printable(", ".join(h.strip() for h in list(header)[:8]))
    more = ", ..." if len(header) > 8 else ""
    return ImportFormatError(
        f"{path}: not a recognised RLE lab monitor CSV. Its first line has {len(header)} "
        f"column(s) ({shown}{more}); expected {_expected_formats()}. Joint-session folders "
        "are given as the folder (rle_data_<id>.csv + training_log_<id>.json)."
    )


_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e]")


def printable(text: str) -> str:
    r"""``text`` with control characters shown as escapes (``\x1b``), safe to print to a terminal.

    File contents (a header, a file name) can hold terminal escape sequences; printed raw they
    would recolour or rewrite the user's terminal. Newlines and tabs are kept.
    """
    return _CONTROL_RE.sub(lambda m: ascii(m.group(0))[1:-1], text)


# ------------------------------------------------------------------------------ value parsing

_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
_ONE_US = _dt.timedelta(microseconds=1)


def _parse_timestamp(text: str) -> tuple[int, bool] | None:
    """Parse an ISO-8601 timestamp as UTC; return ``(epoch ns, had_zone)`` or ``None``."""
    s = text.strip()
    if not s:
        return None
    try:
        ts = _dt.datetime.fromisoformat(s)
    except ValueError:
        return None
    had_zone = ts.tzinfo is not None
    ts = ts.astimezone(_dt.UTC) if had_zone else ts.replace(tzinfo=_dt.UTC)
    return ((ts - _EPOCH) // _ONE_US) * 1000, had_zone


_BOOL_TEXT = {"true": 1.0, "false": 0.0}


def _numeric_column(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Parse text values as floats; return ``(values, bad)`` where ``bad`` marks unparseable."""
    text = values.astype(str).str.strip()
    low = text.str.lower()
    num = pd.to_numeric(
        text.where(~low.isin(list(_BOOL_TEXT)), low.map(_BOOL_TEXT)), errors="coerce"
    )
    arr = np.asarray(num, dtype=np.float64)
    empty = (text == "").to_numpy()
    literal_nan = low.isin(["nan", "-nan", "+nan"]).to_numpy()
    bad = np.isnan(arr) & ~empty & ~literal_nan
    return arr, bad


# ------------------------------------------------------------------------------ line reading


def _split_lines(text: str) -> tuple[list[str], bool]:
    """Split into lines (LF or CRLF); return them and whether the last one is unterminated."""
    parts = text.split("\n")
    unterminated = parts[-1] != ""
    if not unterminated:
        parts = parts[:-1]
    return [p[:-1] if p.endswith("\r") else p for p in parts], unterminated


def _parse_line(line: str) -> list[str] | None:
    if "\x00" in line:
        return None
    try:
        return next(csv.reader([line], strict=True))
    except (csv.Error, StopIteration):
        return None


def _file_name_time(path: Path) -> tuple[_dt.datetime, bool] | None:
    """Time in a file name (``%Y%m%d_%H%M%S`` or ``%Y%m%d_%H``) and whether it is hour-only."""
    for pattern, fmt in _FILE_TIME_RES:
        m = pattern.search(path.stem)
        if m:
            try:
                return _dt.datetime.strptime(m.group(1), fmt), fmt.endswith("%H")
            except ValueError:
                continue
    return None


# ------------------------------------------------------------------------------ writers
#
# Writer recovery from state continuity. Every monitor process (writer) carries state that
# predicts its own next row: per device, the last ``smooth_n − 1`` ``rle_raw`` values (its
# ``rle_smoothed`` is their mean with the new raw), its rolling peak, the time of its last tick,
# the devices it writes (``--mode``) and their order within a tick (v0.3: GPU then CPU, v2: CPU
# then GPU, same timestamp). Rows are taken one at a time in file order and offered to every
# writer of every hypothesis: as the next row of the writer's current tick (same timestamp, a
# device not yet written, in the writer's order), as the first row of its next tick, as a restart
# of it, or as the first row of a new writer. A row whose ``rle_smoothed`` contradicts a writer's
# history can never be that writer's; when several writers fit (rows with identical timestamps,
# short histories), every fitting assignment is kept and later rows decide (a beam search over
# assignments ranked by cost). A new writer is the most expensive explanation, so a single writer
# is never split while its own rows keep agreeing with its state.

_COST_UNTESTABLE = 0.05
"""A row the smoothing check could not test (short history, gap): slightly worse than a pass."""
_COST_TOO_SOON = 1.0
"""A new tick sooner than :data:`_MIN_TICK_S` after the writer's last one (allowed on a pass)."""
_COST_LOST_FIRST_ROW = 0.5
"""A tick that starts with the writer's second device (its first row was lost)."""
_COST_RESTART = 1.0
_COST_NEW_WRITER_AT_START = 2.0
"""A new writer whose first row is a monitor start-up row."""
_COST_NEW_WRITER = 4.0
_COST_PER_ROW_APART = 1e-3
"""Per row of the file between a writer's last row and this one (appends land close together)."""
_BEAM_WIDTH = 12
_BEAM_MARGIN = 6.0


@dataclass
class _Writer:
    """A recovered writer (monitor process): its epoch (header block) and why each part began."""

    index: int
    epoch: int
    part_reasons: list[str] = field(default_factory=list)


class _DevState:
    """One device's state within one writer part (immutable by convention)."""

    __slots__ = ("fresh", "last_peak", "n", "raws", "utils")

    def __init__(
        self,
        raws: tuple[tuple[int, float], ...],
        utils: tuple[tuple[int, float], ...],
        n: int,
        fresh: bool,
        last_peak: float,
    ) -> None:
        self.raws = raws  # (t_ns, rle_raw) of the last smooth_n − 1 samples
        self.utils = utils  # (t_ns, util_pct) of the last 9 samples (v0.3 σ window − 1)
        self.n = n  # samples of this device in this part
        self.fresh = fresh  # the part's first row of this device was a start-up row
        self.last_peak = last_peak


class _WriterState:
    """A writer within one hypothesis (immutable by convention: updates make a new object)."""

    __slots__ = (
        "devices", "dev", "epoch", "index", "last_row", "last_t", "n_ticks", "part", "reasons",
        "tick_devs",
    )  # fmt: skip
    devices: Any
    dev: Any
    epoch: int
    index: int
    last_row: Any
    last_t: Any
    n_ticks: int
    part: int
    reasons: Any
    tick_devs: Any

    def __init__(self, **kw: Any) -> None:
        for k in self.__slots__:
            setattr(self, k, kw[k])

    def replace(self, **kw: Any) -> _WriterState:
        values = {k: getattr(self, k) for k in self.__slots__}
        values.update(kw)
        return _WriterState(**values)


class _Hypothesis:
    __slots__ = ("cost", "restarts", "trail", "writers")

    def __init__(
        self, cost: float, writers: tuple[_WriterState, ...], trail: Any, restarts: int
    ) -> None:
        self.cost = cost
        self.writers = writers
        self.trail = trail  # (parent trail, row, writer index, part) or None
        self.restarts = restarts

    def signature(self) -> tuple[Any, ...]:
        """What decides the future: each writer's part, last row and per-device history."""
        return tuple(
            (
                w.index,
                w.part,
                w.last_row,
                tuple(sorted((d, v.n, v.raws, v.utils) for d, v in w.dev.items())),
            )
            for w in self.writers
        )


class _Assigner:
    """Assign rows to writers and split writers at monitor restarts (§6.5), by state continuity.

    Args:
        fmt: ``v03``, ``v03_old`` or ``v2``.
        cols: ``rle_raw``, ``rle_smoothed``, ``rolling_peak``, ``E_th``, ``t_sustain_s`` per row.
        device: Legacy device per row (``gpu``/``cpu``).
        gate: Use the smoothing check; ``False`` splits by timing and restarts only.
        smooth_n: The monitor's smoothing window, samples.
        check_stability: v0.3 only: also check ``E_th`` against σ from the writer's last ten
            ``util_pct`` values (§2.2), which tells apart writers whose RLE values coincide
            (e.g. CPU rows at start-up, where σ = 1).
    """

    def __init__(
        self,
        fmt: str,
        cols: Mapping[str, np.ndarray],
        device: np.ndarray,
        *,
        gate: bool = True,
        smooth_n: int = 5,
        check_stability: bool = True,
    ) -> None:
        self.fmt = fmt
        self.gate = gate
        self.smooth_n = smooth_n
        self.raw = cols["rle_raw"]
        self.sm = cols["rle_smoothed"]
        self.peak = cols["rolling_peak"]
        self.e_th = cols["E_th"]
        self.tau = cols["t_sustain_s"]
        self.util = cols["util_pct"]
        self.device = device
        self.check_stability = check_stability and gate and fmt != "v2"
        self.order = ("cpu", "gpu") if fmt == "v2" else ("gpu", "cpu")
        self.restarts = 0

    # ---------------------------------------------------------------------------- row tests

    def _is_start_row(self, row: int) -> bool:
        """Whether a row is a monitor's first sample (v0.3: E_th = 600/601, peak 0; v2: zeros)."""
        if self.fmt == "v2":
            return bool(
                self.raw[row] == 0.0
                and self.sm[row] == 0.0
                and self.e_th[row] == 0.0
                and self.tau[row] == 0.0
                and self.peak[row] == 0.0
            )
        return bool(self.peak[row] == 0.0 and abs(self.e_th[row] - _V03_START_E_TH) <= 1.5e-6)

    def _continuity(self, dv: _DevState | None, row: int, t_ns: int) -> str:
        """``pass``, ``fail`` or ``untestable``: is ``rle_smoothed`` the mean of the writer's raws."""
        if not self.gate or dv is None:
            return "untestable"
        k = self.smooth_n - 1
        if k < 1:
            return "untestable"
        if len(dv.raws) < k and not (dv.fresh and dv.n == len(dv.raws)):
            return "untestable"  # the window reaches before what we know of this writer
        if self.fmt == "v2" and dv.n < 4:
            if not dv.fresh:
                return "untestable"
            # v2 below five samples: rle_smoothed = rolling_peak = rle_raw (§3)
            raw, sm, peak = float(self.raw[row]), float(self.sm[row]), float(self.peak[row])
            if any(math.isnan(x) for x in (raw, sm, peak)):
                return "untestable"
            same = (
                abs(sm - raw) <= 1e-6 * abs(raw) + 6e-7
                and abs(peak - raw) <= 1e-6 * abs(raw) + 6e-7
            )
            return "pass" if same else "fail"
        window = [*dv.raws[-k:], (t_ns, float(self.raw[row]))]
        times = [x[0] for x in window]
        if any(b - a > _CONTINUITY_GAP_S * 1e9 for a, b in zip(times, times[1:], strict=False)):
            return "untestable"  # a sample may be missing from the window
        raws = [x[1] for x in window]
        sm = float(self.sm[row])
        if any(math.isnan(r) for r in raws) or math.isnan(sm):
            return "untestable"
        if self.fmt == "v2" and any(r == 0.0 for r in raws):
            return "untestable"  # τ = 0 at the limit: the logged raw differs from the averaged one
        expected = math.fsum(raws) / len(raws)
        return "pass" if abs(sm - expected) <= 2.5e-6 + 1e-6 * abs(expected) else "fail"

    def _stability(self, dv: _DevState | None, row: int, t_ns: int) -> str:
        """v0.3: ``pass``/``fail``/``untestable``: is ``E_th`` = σ/(1 + 1/τ) with the writer's σ.

        σ = 1/(1 + pstdev of the last ten ``util_pct`` values, current included), 1 below five
        samples (§2.2); τ is the row's own ``t_sustain_s`` (printed to 0.1 s, so the check
        allows τ ± 0.05 s), ``E_th`` printed to 1e-6.
        """
        if not self.check_stability or dv is None:
            return "untestable"
        w = _V03_SIGMA_WINDOW
        if len(dv.utils) < w - 1 and not (dv.fresh and dv.n == len(dv.utils)):
            return "untestable"
        window = [*dv.utils[-(w - 1) :], (t_ns, float(self.util[row]))]
        times = [x[0] for x in window]
        if any(b - a > _CONTINUITY_GAP_S * 1e9 for a, b in zip(times, times[1:], strict=False)):
            return "untestable"
        utils = [x[1] for x in window]
        tau, e_th = float(self.tau[row]), float(self.e_th[row])
        if any(math.isnan(u) for u in utils) or math.isnan(tau) or math.isnan(e_th):
            return "untestable"
        if len(utils) >= 5:
            mean = math.fsum(utils) / len(utils)
            sigma = 1.0 / (1.0 + math.sqrt(math.fsum((u - mean) ** 2 for u in utils) / len(utils)))
        else:
            sigma = 1.0
        lo_tau, hi_tau = max(1.0, tau - 0.051), min(600.0, tau + 0.051)
        lo, hi = sigma / (1.0 + 1.0 / lo_tau), sigma / (1.0 + 1.0 / hi_tau)
        return "pass" if lo - 1.5e-6 <= e_th <= hi + 1.5e-6 else "fail"

    def _check(self, dv: _DevState | None, row: int, t_ns: int) -> str:
        """Both continuity checks: ``fail`` if either fails, ``pass`` if one passes."""
        a = self._continuity(dv, row, t_ns)
        if a == "fail":
            return a
        b = self._stability(dv, row, t_ns)
        if b == "fail":
            return b
        return "pass" if "pass" in (a, b) else "untestable"

    def _restarts_here(self, w: _WriterState, row: int, dev: str, gap_s: float) -> bool:
        prev = w.dev[dev].last_peak if dev in w.dev else None
        if prev is None:
            return False
        if self.fmt == "v2":
            return prev > 0.0 and self._is_start_row(row)
        return bool(
            self.peak[row] == 0.0
            and (prev > 0.0 or (gap_s > _RESTART_GAP_S and self._is_start_row(row)))
        )

    # ---------------------------------------------------------------------------- state update

    def _advance(
        self, w: _WriterState, row: int, dev: str, t_ns: int, *, new_tick: bool, reset: bool
    ) -> _WriterState:
        k = max(1, self.smooth_n - 1)
        devs = {} if reset else dict(w.dev)
        old = devs.get(dev)
        entry = (t_ns, float(self.raw[row]))
        util = (t_ns, float(self.util[row]))
        if old is None:
            devs[dev] = _DevState(
                (entry,), (util,), 1, self._is_start_row(row), float(self.peak[row])
            )
        else:
            devs[dev] = _DevState(
                (*old.raws, entry)[-k:],
                (*old.utils, util)[-(_V03_SIGMA_WINDOW - 1) :],
                old.n + 1,
                old.fresh,
                float(self.peak[row]),
            )
        return w.replace(
            dev=devs,
            last_t=t_ns,
            last_row=row,
            tick_devs=frozenset({dev}) if new_tick else w.tick_devs | {dev},
            devices=w.devices | {dev},
            n_ticks=w.n_ticks + (1 if new_tick else 0),
            part=w.part + (1 if reset else 0),
            reasons=(*w.reasons, "restart") if reset else w.reasons,
        )

    def _options(
        self, h: _Hypothesis, row: int, t_ns: int, epoch: int
    ) -> list[tuple[float, int, _WriterState, bool]]:
        """``(cost, writer position or -1 for new, new writer state, restart)`` for one row."""
        dev = str(self.device[row])
        out: list[tuple[float, int, _WriterState, bool]] = []
        rank = self.order.index(dev) if dev in self.order else 0
        for pos, w in enumerate(h.writers):
            if w.epoch != epoch:
                continue
            dt_s = (t_ns - w.last_t) / 1e9
            apart = _COST_PER_ROW_APART * min(row - w.last_row, 1000)
            known_dev = dev in w.devices
            if dt_s == 0.0:
                # The next row of the writer's current tick: a device it has not written yet, in
                # the monitor's order.
                if dev in w.tick_devs or any(self.order.index(d) > rank for d in w.tick_devs):
                    continue
                if not known_dev and w.n_ticks >= _SETTLED_TICKS:
                    continue  # a writer in another --mode (gpu, cpu, both)
                verdict = self._check(w.dev.get(dev), row, t_ns)
                if verdict == "fail":
                    continue
                cost = apart + (0.0 if verdict == "pass" else _COST_UNTESTABLE)
                out.append(
                    (
                        cost,
                        pos,
                        self._advance(w, row, dev, t_ns, new_tick=False, reset=False),
                        False,
                    )
                )
                continue
            if dt_s < 0.0:
                continue  # a writer's own rows never go back in time
            # Distance from a whole number of ticks: a writer that lost a row (torn line) is
            # still in phase two ticks later, another writer is not.
            score = abs(dt_s - _NOMINAL_TICK_S * max(1, round(dt_s / _NOMINAL_TICK_S)))
            if not known_dev and (w.n_ticks >= _SETTLED_TICKS or score > 0.2):
                continue
            if dt_s >= _MIN_TICK_S and self._restarts_here(w, row, dev, dt_s):
                new = self._advance(w, row, dev, t_ns, new_tick=True, reset=True)
                if self.fmt != "v2":
                    out.append((_COST_RESTART + apart, pos, new, True))
                    continue  # v0.3 logs a zero peak only in its warm-up: a restart for sure
                # v2: an all-zero row is also what a running monitor writes when its last five
                # values are 0 (idle at the limit); the next rows tell (after a start-up they
                # have rle_smoothed = rolling_peak = rle_raw), so both stay open.
                out.append((apart, pos, new, True))
            verdict = self._check(w.dev.get(dev), row, t_ns)
            if verdict == "fail" or (dt_s < _MIN_TICK_S and verdict != "pass"):
                continue
            cost = apart + score + (0.0 if verdict == "pass" else _COST_UNTESTABLE)
            if dt_s < _MIN_TICK_S:
                cost += _COST_TOO_SOON
            if rank > 0 and any(d in w.devices for d in self.order[:rank]):
                cost += _COST_LOST_FIRST_ROW
            out.append(
                (cost, pos, self._advance(w, row, dev, t_ns, new_tick=True, reset=False), False)
            )
        same_epoch = any(w.epoch == epoch for w in h.writers)
        reason = "new_writer" if same_epoch else ("header_repeated" if epoch else "file_start")
        fresh = _WriterState(
            index=len(h.writers), epoch=epoch, part=0, last_t=t_ns, last_row=row,
            tick_devs=frozenset(), devices=frozenset(), n_ticks=0, dev={}, reasons=(reason,),
        )  # fmt: skip
        fresh = self._advance(fresh, row, dev, t_ns, new_tick=True, reset=False)
        cost = _COST_NEW_WRITER_AT_START if self._is_start_row(row) else _COST_NEW_WRITER
        out.append((cost if same_epoch else 0.0, -1, fresh, False))
        return out

    # ---------------------------------------------------------------------------- search

    def assign(
        self, t_ns: np.ndarray, epoch: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, list[_Writer]]:
        """Return per-row writer index, per-row part index and the writers (best hypothesis).

        Args:
            t_ns: Row times, epoch ns (file order).
            epoch: Header block of each row (a repeated header starts a new block).
        """
        beam = [_Hypothesis(0.0, (), None, 0)]
        for row in range(len(t_ns)):
            t, e = int(t_ns[row]), int(epoch[row])
            grown: list[_Hypothesis] = []
            for h in beam:
                for cost, pos, new, restart in self._options(h, row, t, e):
                    if pos < 0:
                        writers = (*h.writers, new)
                        pos = len(h.writers)
                    else:
                        writers = (*h.writers[:pos], new, *h.writers[pos + 1 :])
                    grown.append(
                        _Hypothesis(
                            h.cost + cost,
                            writers,
                            (h.trail, row, new.index, new.part),
                            h.restarts + (1 if restart else 0),
                        )
                    )
            grown.sort(key=lambda x: (x.cost, len(x.writers)))
            best = grown[0].cost
            beam, seen = [], set()
            for x in grown:
                if x.cost > best + _BEAM_MARGIN or len(beam) == _BEAM_WIDTH:
                    break
                sig = x.signature()
                if sig not in seen:  # same state reached another way: the cheaper one stays
                    seen.add(sig)
                    beam.append(x)
        best_h = beam[0]
        n = len(t_ns)
        row_writer = np.full(n, -1, dtype=np.int64)
        row_part = np.full(n, -1, dtype=np.int64)
        node = best_h.trail
        while node is not None:
            node, row, w_idx, part = node
            row_writer[row] = w_idx
            row_part[row] = part
        self.restarts = best_h.restarts
        recovered = [
            _Writer(w.index, w.epoch, list(w.reasons))
            for w in sorted(best_h.writers, key=lambda x: x.index)
        ]
        return row_writer, row_part, recovered


def _smoothing_window(
    fmt: str, cols: Mapping[str, np.ndarray], device: np.ndarray, t_ns: np.ndarray
) -> int:
    """The monitor's smoothing window (``--smooth-n``, default 5) as seen in the rows.

    For n = 1..10, the share of rows whose ``rle_smoothed`` is the mean of the last n
    ``rle_raw`` of the same device in file order (over gap-free windows). One writer fits one n
    almost everywhere; interleaved writers fit none, and 5 is assumed.
    """
    if fmt == "v2":
        return 5
    raw, sm = cols["rle_raw"], cols["rle_smoothed"]
    best_n, best_share = 5, 0.0
    for n in range(1, 11):
        hits = tested = 0
        for dev in np.unique(device):
            idx = np.flatnonzero(device == dev)
            if idx.size < n + 5:
                continue
            r, m, t = raw[idx], sm[idx], t_ns[idx]
            mean = np.convolve(r, np.ones(n) / n, mode="valid")  # mean of r[i-n+1..i]
            gaps = np.diff(t) > _CONTINUITY_GAP_S * 1e9
            bad_window = np.convolve(gaps.astype(float), np.ones(max(n - 1, 1)), mode="valid") > 0
            ok_rows = ~bad_window[: mean.size] if n > 1 else np.ones(mean.size, dtype=bool)
            diff = np.abs(m[n - 1 :] - mean)
            good = np.isfinite(diff) & ok_rows
            tested += int(good.sum())
            hits += int((good & (diff <= 2.5e-6 + 1e-6 * np.abs(mean))).sum())
        share = hits / tested if tested else 0.0
        if share > best_share + 1e-9:
            best_n, best_share = n, share
    return best_n if best_share >= 0.9 else 5


# ------------------------------------------------------------------------------ provenance


def _all_close(values: np.ndarray, target: float) -> bool:
    finite = values[~np.isnan(values)]
    return bool(finite.size == len(values) and finite.size > 0 and np.all(finite == target))


def _infer_rated_w(frame: pd.DataFrame, device: str) -> tuple[float | None, str]:
    power = frame["power_w"].to_numpy(dtype=np.float64)
    a_load = frame["a_load"].to_numpy(dtype=np.float64)
    ok = np.isfinite(power) & np.isfinite(a_load) & (a_load >= 0.05)
    nominal = _V03_NOMINAL_RATED_W[device]
    if not ok.any():
        return nominal, "nominal"
    ratio = float(np.median(power[ok] / a_load[ok]))
    if abs(ratio - nominal) <= 0.02 * nominal:
        return nominal, "nominal"
    return float(round(ratio)), "inferred"


def _provenance(
    fmt: str, device: str, frame: pd.DataFrame
) -> tuple[str, str, float | None, str, bool]:
    """Return ``(power_source, temp_source, rated_w, rated_w_source, exclude_from_aggregates)``."""
    power = frame["power_w"].to_numpy(dtype=np.float64)
    temp = frame["temp_c"].to_numpy(dtype=np.float64)
    if fmt == "v2":
        if device == "gpu_0":
            return "nvml", "nvml", None, "unknown", False
        power_source = "placeholder" if _all_close(power, _V2_PLACEHOLDER_POWER_W) else "psutil"
        temp_source = "placeholder" if _all_close(temp, _V2_PLACEHOLDER_TEMP_C) else "psutil"
        return power_source, temp_source, None, "unknown", False
    rated, rated_source = _infer_rated_w(frame, device)
    if device == "gpu_0":
        return "nvml", "nvml", rated, rated_source, False
    temp_source = "none" if np.isnan(temp).all() else "hwinfo"
    a_load = frame["a_load"].to_numpy(dtype=np.float64)
    util = frame["util_pct"].to_numpy(dtype=np.float64)
    if np.isnan(power).all():
        alpha_zero = bool(np.all(np.nan_to_num(a_load, nan=0.0) == 0.0))
        return "none", temp_source, rated, rated_source, alpha_zero
    known = np.isfinite(power) & np.isfinite(a_load) & np.isfinite(util)
    if known.all() and np.all(np.abs(a_load - util / 100.0) <= 6e-4):
        return "estimated", temp_source, rated, rated_source, False
    return "hwinfo", temp_source, rated, rated_source, False


# ------------------------------------------------------------------------------ main reader


def _read_text(path: Path) -> tuple[bytes, str]:
    try:
        data = path.read_bytes()
    except FileNotFoundError as e:
        raise ImportFormatError(f"{path}: file not found.") from e
    except IsADirectoryError as e:
        raise ImportFormatError(f"{path}: is a folder, expected a monitor CSV file.") from e
    except OSError as e:
        raise ImportFormatError(f"{path}: cannot be read ({e}).") from e
    return data, data.decode("utf-8", errors="replace").lstrip("\ufeff")


def read_monitor_csv(path: str | Path) -> ParsedFile:
    """Read a v0.3 (19 or 16 columns) or v2 (42 columns) monitor CSV.

    Lines with the wrong number of fields (torn by a crash or by two processes appending at
    once), unparseable values or timestamps and unknown devices are skipped; exact duplicate rows
    (by value) are dropped; 17-value GPU rows under the 19-column header are padded; v0.3
    timestamps without ``Z`` and every v2 timestamp are read as UTC. Each case is counted in
    :attr:`ParsedFile.counts`. Rows are then split into writers and restart segments.

    Args:
        path: The CSV file.

    Returns:
        The :class:`ParsedFile`.

    Raises:
        rle.errors.ImportFormatError: The file cannot be read or its header is not one of the
            three formats; the message names the file and the expected headers.
    """
    path = Path(path)
    data, text = _read_text(path)
    lines, unterminated = _split_lines(text)
    counts: Counter[str] = Counter()
    header_idx = next((i for i, ln in enumerate(lines) if ln.strip()), None)
    if header_idx is None:
        raise ImportFormatError(f"{path}: the file is empty; expected {_expected_formats()}.")
    header = _parse_line(lines[header_idx]) or [lines[header_idx]]
    fmt = detect_format(header)
    if fmt is None:
        raise _header_error(path, header)
    columns = _FORMAT_COLUMNS[fmt]
    ncols = len(columns)
    counts["skipped.blank_line"] += header_idx

    records: list[list[str]] = []
    line_nos: list[int] = []
    epochs: list[int] = []
    skipped: list[tuple[int, str]] = []

    def skip(line_no: int, reason: str) -> None:
        counts[f"skipped.{reason}"] += 1
        skipped.append((line_no, reason))

    epoch = 0
    last = len(lines) - 1
    for i in range(header_idx + 1, len(lines)):
        line = lines[i]
        if not line.strip():
            skip(i + 1, "blank_line")
            continue
        fields = _parse_line(line)
        if fields is None:
            skip(i + 1, "torn_line")
            continue
        if detect_format(fields) == fmt:
            skip(i + 1, "repeated_header")
            epoch += 1
            continue
        if len(fields) != ncols:
            if fmt == "v03" and len(fields) == ncols - 2 and fields[1].strip().lower() == "gpu":
                fields = [*fields, "", ""]
                counts["repaired.short_gpu_row_padded"] += 1
            else:
                skip(i + 1, "torn_line")
                continue
        if i == last and unterminated:
            counts["repaired.unterminated_last_line_kept"] += 1
        records.append(fields)
        line_nos.append(i + 1)
        epochs.append(epoch)

    raw = pd.DataFrame(records, columns=list(columns), dtype=object)
    frame, reasons = _convert(raw, fmt, counts)
    line_arr = np.asarray(line_nos, dtype=np.int64)
    keep = reasons == ""
    skipped.extend((int(ln), str(r)) for ln, r in zip(line_arr[~keep], reasons[~keep], strict=True))
    frame.insert(0, "line_no", line_arr[keep])
    frame["_epoch"] = np.asarray(epochs, dtype=np.int64)[keep]
    frame = frame.reset_index(drop=True)

    value_cols = [c for c in columns if c != "timestamp"] + ["timestamp_ns"]
    dup = frame.duplicated(subset=value_cols, keep="first").to_numpy()
    counts["skipped.duplicate_row"] += int(dup.sum())
    skipped.extend((int(ln), "duplicate_row") for ln in frame.loc[dup, "line_no"])
    frame = frame.loc[~dup].reset_index(drop=True)

    segments, rows, flags = _segment(path, fmt, frame)
    metadata, metadata_path = _read_v2_metadata(path) if fmt == "v2" else (None, None)
    if metadata_path is not None and metadata is None:
        counts["skipped.unreadable_metadata_json"] += 1
    parsed = ParsedFile(
        path=path,
        format=fmt,
        columns=columns,
        content_sha256=hashlib.sha256(data).hexdigest(),
        rows=rows,
        segments=segments,
        counts={k: v for k, v in sorted(counts.items()) if v},
        skipped_lines=sorted(skipped),
        flags=flags,
        metadata=metadata,
        metadata_path=metadata_path,
    )
    log.info(
        "%s: %s, %d rows in %d segment(s); %s",
        path.name,
        fmt,
        len(rows),
        len(segments),
        ", ".join(f"{k} {v}" for k, v in parsed.counts.items()) or "no damage",
    )
    return parsed


_TWO_TIMESTAMPS = re.compile(r"\d{4}-\d{2}-\d{2}T.*\d{4}-\d{2}-\d{2}T")


def _convert(raw: pd.DataFrame, fmt: str, counts: Counter[str]) -> tuple[pd.DataFrame, np.ndarray]:
    """Parse the text records by value.

    Returns:
        The typed frame of the kept rows and, per input record, the skip reason (``""`` when
        kept): ``torn_line`` (two timestamps glued together), ``bad_timestamp``,
        ``unknown_device`` or ``unparseable_value``.
    """
    n = len(raw)
    out: dict[str, Any] = {}
    nonfinite: dict[str, np.ndarray] = {}
    bad = np.zeros(n, dtype=bool)

    t_ns = np.zeros(n, dtype=np.int64)
    bad_ts = np.zeros(n, dtype=bool)
    naive = np.zeros(n, dtype=bool)
    for i, text in enumerate(raw["timestamp"].tolist() if n else []):
        parsed = _parse_timestamp(str(text))
        if parsed is None:
            bad_ts[i] = True
        else:
            t_ns[i], had_zone = parsed
            naive[i] = not had_zone
    device = (
        raw["device"].astype(str).str.strip().str.lower().to_numpy()
        if n
        else np.array([], dtype=object)
    )
    bad_dev = ~np.isin(device, list(DEVICE_LABELS))

    for col in raw.columns:
        if col in _TEXT_COLUMNS:
            continue
        values, bad_col = _numeric_column(raw[col]) if n else (np.zeros(0), np.zeros(0, dtype=bool))
        if col == "collapse":
            bad_col = bad_col | ~(np.isnan(values) | (values == 0.0) | (values == 1.0))
        # Written NaN / ±inf (not an empty field): kept as NaN and counted per column.
        text = raw[col].astype(str).str.strip() if n else pd.Series([], dtype=str)
        written_nan = np.isnan(values) & (text != "").to_numpy() & ~bad_col
        nonfinite[col] = (np.isinf(values) | written_nan) & ~bad_col
        values = np.where(np.isinf(values), np.nan, values)
        out[col] = values
        bad |= bad_col
    bad_val = bad & ~bad_ts & ~bad_dev

    glued = np.asarray(
        [bool(_TWO_TIMESTAMPS.search(str(t))) for t in (raw["timestamp"].tolist() if n else [])],
        dtype=bool,
    )
    reasons = np.full(n, "", dtype=object)
    reasons[bad_val] = "unparseable_value"
    kept = ~(bad | bad_ts | bad_dev)
    for col, mask in nonfinite.items():
        counts[f"repaired.non_finite_as_nan.{col}"] += int((mask & kept).sum())
    reasons[bad_dev & ~bad_ts] = "unknown_device"
    reasons[bad_ts] = "bad_timestamp"
    reasons[bad_ts & glued] = "torn_line"
    for reason in ("torn_line", "bad_timestamp", "unknown_device", "unparseable_value"):
        counts[f"skipped.{reason}"] += int((reasons == reason).sum())
    keep = reasons == ""
    if fmt != "v2":
        counts["repaired.naive_timestamp_read_as_utc"] += int((naive & keep).sum())

    frame = pd.DataFrame(
        {
            "timestamp": pd.to_datetime(t_ns[keep], unit="ns", utc=True).as_unit("ns"),
            "timestamp_ns": t_ns[keep],
            "device": device[keep].astype(str),
        }
    )
    for col in raw.columns:
        if col in ("timestamp", "device"):
            continue
        if col in _TEXT_COLUMNS:
            frame[col] = raw[col].astype(str).str.strip().to_numpy()[keep]
        else:
            frame[col] = out[col][keep]
    return frame, reasons


def _segment(
    path: Path, fmt: str, frame: pd.DataFrame
) -> tuple[list[Segment], pd.DataFrame, dict[str, str]]:
    """Split rows into writers and restart segments; build the device streams."""
    flags: dict[str, str] = {}
    named = _file_name_time(path)
    if named is not None:
        flags["file_name_time"] = named[0].isoformat()
    rows = frame.copy()
    rows["writer"] = np.zeros(len(rows), dtype=np.int64)
    rows["segment"] = np.zeros(len(rows), dtype=np.int64)
    if rows.empty:
        return [], rows.drop(columns=["_epoch", "timestamp_ns"]), flags

    t_ns = rows["timestamp_ns"].to_numpy(dtype=np.int64)
    device = rows["device"].to_numpy()
    cols = {
        c: rows[c].to_numpy(dtype=np.float64)
        for c in ("rle_raw", "rle_smoothed", "rolling_peak", "E_th", "t_sustain_s", "util_pct")
    }
    epoch = rows["_epoch"].to_numpy(dtype=np.int64)
    n_ticks = len(set(zip(epoch.tolist(), t_ns.tolist(), strict=True)))
    smooth_n = _smoothing_window(fmt, cols, device, t_ns)
    if smooth_n != 5:
        flags["smoothing_samples"] = str(smooth_n)
    assigner = _Assigner(fmt, cols, device, smooth_n=smooth_n, gate=smooth_n > 1)
    row_writer, row_part, writers = assigner.assign(t_ns, epoch)
    epochs = len(set(epoch.tolist()))
    if smooth_n == 1:
        flags["stream_split"] = "timing_only"
    elif len(writers) - epochs > max(3, 0.02 * n_ticks):
        # The smoothing check rejects most rows (e.g. a monitor run with --smooth-n other than
        # 5): it cannot tell writers apart here, so split by timing and restarts only.
        log.warning(
            "%s: rows do not follow the monitor's 5-sample smoothing (%d writers found in %d "
            "ticks); splitting streams by timing only",
            path.name,
            len(writers),
            n_ticks,
        )
        flags["stream_split"] = "timing_only"
        assigner = _Assigner(fmt, cols, device, gate=False)
        row_writer, row_part, writers = assigner.assign(t_ns, epoch)

    keys = sorted({(int(w), int(p)) for w, p in zip(row_writer, row_part, strict=True)})
    first_t = {k: int(t_ns[(row_writer == k[0]) & (row_part == k[1])].min()) for k in keys}
    ordered = sorted(keys, key=lambda k: (first_t[k], k))
    seg_of = {k: i for i, k in enumerate(ordered)}
    rows["writer"] = row_writer
    rows["segment"] = [seg_of[(int(w), int(p))] for w, p in zip(row_writer, row_part, strict=True)]

    segments: list[Segment] = []
    for k in ordered:
        w, p = k
        mask = (row_writer == w) & (row_part == p)
        seg_rows = rows.loc[mask]
        reason = writers[w].part_reasons[p]
        streams: dict[str, DeviceStream] = {}
        for legacy_dev, label in DEVICE_LABELS.items():
            dev_rows = seg_rows.loc[seg_rows["device"] == legacy_dev]
            if dev_rows.empty:
                continue
            sf = dev_rows.drop(columns=["device", "writer", "segment", "_epoch", "timestamp_ns"])
            sf = sf.reset_index(drop=True)
            sf.insert(1, "sample_index", np.arange(len(sf), dtype=np.int64))
            power_src, temp_src, rated, rated_src, exclude = _provenance(fmt, label, sf)
            streams[label] = DeviceStream(
                device=label,
                segment=seg_of[k],
                frame=sf,
                power_source=power_src,
                temp_source=temp_src,
                rated_w=rated,
                rated_w_source=rated_src,
                exclude_from_aggregates=exclude,
            )
        fresh = all(
            assigner._is_start_row(int(np.flatnonzero(mask & (device == legacy))[0]))
            for legacy in {str(d) for d in seg_rows["device"].unique()}
        )
        segments.append(Segment(seg_of[k], w, fresh, reason, streams))

    per_epoch = Counter(writers[w].epoch for w in {w for w, _ in keys})
    n_writers = max(per_epoch.values())
    if n_writers > 1:
        flags["interleaved_writers"] = str(n_writers)
    if assigner.restarts:
        flags["restarts"] = str(assigner.restarts)
    short = sum(1 for s in segments if max(st.n_samples for st in s.streams.values()) < 5)
    if short:
        flags["short_segments"] = str(short)
        flags.setdefault("stream_split", "uncertain")
    if named is not None:
        flags["file_name_utc_offset_hours"] = _name_offset_hours(named, int(t_ns.min()))
    return segments, rows.drop(columns=["_epoch", "timestamp_ns"]), flags


def _name_offset_hours(named: tuple[_dt.datetime, bool], first_ns: int) -> str:
    """Estimate the UTC offset of the clock that named the file, whole hours, from its first sample.

    An hour-only name is the floor of the local hour, so ``name − first`` lies in
    ``(offset − 1 h, offset]``; a second-resolution name was taken about when the recording
    started. Offsets beyond ±14 h mean the name is unrelated to the content: ``unknown``.
    """
    file_time, hour_only = named
    first = _dt.datetime(1970, 1, 1) + _dt.timedelta(microseconds=first_ns // 1000)
    offset_h = (file_time - first).total_seconds() / 3600.0
    est = math.ceil(offset_h - 1e-6) if hour_only else math.floor(offset_h + 0.5)
    return str(est) if abs(est) <= 14 else "unknown"


def _read_v2_metadata(path: Path) -> tuple[dict[str, Any] | None, Path | None]:
    sidecar = path.with_name(path.stem + "_metadata.json")
    if not sidecar.is_file():
        return None, None
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8", errors="replace"))
    except (OSError, json.JSONDecodeError) as e:
        log.warning(
            "%s: metadata sidecar %s is unreadable (%s); ignored", path.name, sidecar.name, e
        )
        return None, sidecar
    if not isinstance(meta, dict):
        return None, sidecar
    mon = meta.get("monitoring")
    if isinstance(mon, dict) and isinstance(mon.get("sample_hz"), int | float):
        mon = dict(mon)
        mon["sample_hz_as_written"] = mon["sample_hz"]
        mon["sample_hz"] = float(mon["sample_hz"]) * 1000.0
        meta = {**meta, "monitoring": mon}
    return meta, sidecar


# ------------------------------------------------------------------------------ joint sessions

_TRAINING_COLUMNS = (
    "step", "step_counter", "timestamp_shared", "timestamp_iso", "loss", "grad_norm",
    "learning_rate", "epoch",
)  # fmt: skip


def read_training_log(
    path: str | Path,
) -> tuple[list[dict[str, Any]], pd.DataFrame, dict[str, int]]:
    """Read a joint session's ``training_log_<id>.json``.

    Times come from ``timestamp_shared`` (epoch seconds), never from ``timestamp_iso`` (local
    naive, §6.5). The final summary entry (null ``loss`` and ``grad_norm``) is kept and marked
    ``is_summary``; entries without a usable ``timestamp_shared`` or ``step`` are skipped and
    counted.

    Args:
        path: The JSON file.

    Returns:
        ``(entries, frame, counts)``: the entries as read (every JSON object, for the legacy
        analyses), one frame row per usable entry (columns of :attr:`ParsedSession.training`)
        and skipped/repaired counts by reason.

    Raises:
        rle.errors.ImportFormatError: The file is not a JSON list of objects.
    """
    path = Path(path)
    try:
        entries = json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except (OSError, json.JSONDecodeError) as e:
        raise ImportFormatError(
            f"{path}: not a readable training log ({e}); expected a JSON list of "
            "{step, step_counter, timestamp_shared, timestamp_iso, loss, grad_norm, "
            "learning_rate, epoch} objects."
        ) from e
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ImportFormatError(
            f"{path}: expected a JSON list of training-step objects with timestamp_shared, "
            f"step, loss and grad_norm; got {type(entries).__name__}."
        )
    counts: Counter[str] = Counter()
    records: list[dict[str, Any]] = []
    for i, entry in enumerate(entries):
        rec = {c: entry.get(c) for c in _TRAINING_COLUMNS}
        ts = _float_or_nan(rec["timestamp_shared"])
        step = _float_or_nan(rec["step"])
        if not math.isfinite(ts) or not math.isfinite(step):
            counts["skipped.training_entry_without_time_or_step"] += 1
            continue
        rec["entry_index"] = i
        records.append(rec)
    frame = pd.DataFrame(records, columns=["entry_index", *_TRAINING_COLUMNS])
    for c in (
        "step",
        "step_counter",
        "timestamp_shared",
        "loss",
        "grad_norm",
        "learning_rate",
        "epoch",
    ):
        values = np.asarray([_float_or_nan(v) for v in frame[c]], dtype=np.float64)
        written = np.asarray(
            [entries[int(i)].get(c) is not None for i in frame["entry_index"]], dtype=bool
        )
        n_bad = int((written & ~np.isfinite(values)).sum())
        if n_bad:  # NaN / ±Infinity written in the JSON: kept as NaN, counted
            counts[f"repaired.non_finite_as_nan.{c}"] += n_bad
        frame[c] = np.where(np.isinf(values), np.nan, values)
    frame["timestamp"] = pd.to_datetime(frame["timestamp_shared"], unit="s", utc=True).dt.as_unit(
        "ns"
    )
    frame["is_summary"] = np.asarray(  # the summary entry has null (not NaN) loss and grad_norm
        [
            entries[int(i)].get("loss") is None and entries[int(i)].get("grad_norm") is None
            for i in frame["entry_index"]
        ],
        dtype=bool,
    )
    n_summary = int(frame["is_summary"].sum())
    if n_summary:
        counts["repaired.training_summary_entry_not_logged"] += n_summary
    return entries, frame, {k: v for k, v in sorted(counts.items()) if v}


def _float_or_nan(value: Any) -> float:
    if value is None or isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def find_sessions(folder: str | Path) -> list[str]:
    """Return the session ids of the joint-session bundles in a folder (sorted).

    A bundle is ``rle_data_<id>.csv`` with ``training_log_<id>.json`` beside it.
    """
    folder = Path(folder)
    ids = []
    for p in sorted(folder.glob("rle_data_*.csv")):
        m = _SESSION_RE.match(p.name)
        if m and (folder / f"training_log_{m.group('id')}.json").is_file():
            ids.append(m.group("id"))
    return ids


def is_session_folder(folder: str | Path) -> bool:
    """Whether a folder holds at least one joint-session bundle."""
    return Path(folder).is_dir() and bool(find_sessions(folder))


def _bundle_hash(files: Iterable[Path]) -> str:
    h = hashlib.sha256()
    for p in sorted(files, key=lambda q: q.name):
        h.update(p.name.encode())
        h.update(b"\0")
        h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def _read_json_opt(path: Path, counts: Counter[str], what: str) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except (OSError, json.JSONDecodeError) as e:
        log.warning("%s: unreadable (%s); kept as an artifact only", path.name, e)
        counts[f"skipped.unreadable_{what}"] += 1
        return None
    return value if isinstance(value, dict) else None


def read_joint_session(folder: str | Path, session_id: str | None = None) -> ParsedSession:
    """Read a joint-session bundle (§6.3).

    Args:
        folder: The bundle's folder.
        session_id: Which bundle when the folder holds several; ``None`` for the only one.

    Returns:
        The :class:`ParsedSession`.

    Raises:
        rle.errors.ImportFormatError: No bundle (or several and no ``session_id``), or one of
            its files is not in the expected format; the message names the folder or file.
    """
    folder = Path(folder)
    ids = find_sessions(folder) if folder.is_dir() else []
    if session_id is None:
        if len(ids) != 1:
            found = f"found {len(ids)}: {', '.join(ids)}" if ids else "found none"
            raise ImportFormatError(
                f"{folder}: expected exactly one joint-session bundle (rle_data_<id>.csv with "
                f"training_log_<id>.json beside it; optional analysis_<id>.json, "
                f"version_<id>.json, report_<id>.txt), {found}."
            )
        session_id = ids[0]
    elif session_id not in ids:
        raise ImportFormatError(
            f"{folder}: no joint-session bundle with id {session_id!r} "
            f"(rle_data_{session_id}.csv + training_log_{session_id}.json); found {ids or 'none'}."
        )
    csv_path = folder / f"rle_data_{session_id}.csv"
    log_path = folder / f"training_log_{session_id}.json"
    monitor = read_monitor_csv(csv_path)
    entries, training, train_counts = read_training_log(log_path)
    counts: Counter[str] = Counter(monitor.counts)
    counts.update(train_counts)
    analysis = _read_json_opt(folder / f"analysis_{session_id}.json", counts, "analysis_json")
    version = _read_json_opt(folder / f"version_{session_id}.json", counts, "version_json")
    report_path = folder / f"report_{session_id}.txt"
    report = (
        report_path.read_text(encoding="utf-8", errors="replace") if report_path.is_file() else None
    )
    files = [csv_path, log_path]
    for name in (
        f"analysis_{session_id}.json",
        f"version_{session_id}.json",
        f"report_{session_id}.txt",
    ):
        if (folder / name).is_file():
            files.append(folder / name)
    if monitor.metadata_path is not None:
        files.append(monitor.metadata_path)
    return ParsedSession(
        folder=folder,
        session_id=session_id,
        monitor=monitor,
        training=training,
        training_entries=entries,
        analysis=analysis,
        version=version,
        report_text=report,
        files=files,
        content_sha256=_bundle_hash(files),
        counts={k: v for k, v in sorted(counts.items()) if v},
    )
