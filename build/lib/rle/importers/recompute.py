"""Recompute the RLE columns of imported recordings and measure agreement (pure).

The lab's stored columns are recomputed with :func:`rle.metric.compute` and the matching legacy
profile (``legacy_v03`` for v0.3 files, ``legacy_v2`` for v2 files and joint sessions), and
compared column by column within the expected tolerances (``docs/rle-metric.md`` §6.5, §11):

* ``legacy_v03``: print rounding, about 2e-3 relative (0.05 s on τ, 5e-4 on ``a_load``);
* ``legacy_v2``: 1e-6 relative (plus half a unit in the 6th decimal, so 6-decimal copies pass).

Hourly v0.3 files rotate while the monitor keeps its state, so the first rows of a file depend
on the previous hour. :func:`link_segments` chains a segment to the segment of another file it
continues (same process: its first ``rle_smoothed`` is the mean of the predecessor's last four
``rle_raw`` and its own); the chain is recomputed from its start. Rows whose value depends on
state from before the chain's start are excluded from the comparison and counted.

Optionally the ``default`` profile (our fixed formula) is computed beside the legacy one, with
estimated or placeholder inputs removed (NaN) rather than used (§2.8, M2).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from rle.importers.rle_lab import DeviceStream, ParsedFile, Segment
from rle.metric import compute

__all__ = [
    "AGREEMENT_COLUMNS",
    "COMPARED_COLUMNS",
    "TOLERANCES",
    "StreamRecompute",
    "agreement_table",
    "link_segments",
    "metric_inputs",
    "recompute_files",
]

log = logging.getLogger(__name__)

COMPARED_COLUMNS: tuple[str, ...] = (
    "rle_raw",
    "rle_smoothed",
    "rle_norm",
    "E_th",
    "E_pw",
    "a_load",
    "t_sustain_s",
    "rolling_peak",
    "collapse",
    "cycles_per_joule",
)
"""Stored legacy columns that are recomputed and compared (those present in the format)."""

_V03_PRINT = (2e-3, 6e-7)
_V2_EXACT = (1e-6, 6e-7)
TOLERANCES: dict[str, dict[str, tuple[float, float]]] = {
    "legacy_v03": {
        "rle_raw": _V03_PRINT,
        "rle_smoothed": _V03_PRINT,
        "rle_norm": _V03_PRINT,
        "E_th": _V03_PRINT,
        "E_pw": _V03_PRINT,
        "rolling_peak": _V03_PRINT,
        "a_load": (2e-3, 6e-4),
        "t_sustain_s": (2e-3, 0.051),
        "collapse": (0.0, 0.0),
        "cycles_per_joule": (2e-3, 0.0),
    },
    "legacy_v2": {
        "rle_raw": _V2_EXACT,
        "rle_smoothed": _V2_EXACT,
        "E_th": _V2_EXACT,
        "E_pw": _V2_EXACT,
        "rolling_peak": _V2_EXACT,
        "a_load": _V2_EXACT,
        "t_sustain_s": _V2_EXACT,
        "collapse": (0.0, 0.0),
    },
}
"""Per profile and column: ``(rtol, atol)``; a row agrees when ``|r − s| ≤ atol + rtol·|s|``."""

AGREEMENT_COLUMNS: tuple[str, ...] = (
    "file",
    "segment",
    "device",
    "profile",
    "column",
    "rows",
    "rows_compared",
    "rows_within_tolerance",
    "rows_excluded",
    "max_abs_error",
    "max_rel_error",
    "rtol",
    "atol",
    "first_mismatch_line",
)
"""Columns of the agreement table (one row per stream and compared column)."""

# v0.3, first row (from the start of a chain whose state is unknown) from which each column is
# fully determined by the rows in hand: σ needs 10 utils, rle_smoothed 5 determined raws.
_V03_FIRST_DETERMINED = {
    "a_load": 0,
    "E_pw": 0,
    "cycles_per_joule": 0,
    "t_sustain_s": 1,
    "rle_raw": 9,
    "E_th": 9,
    "rle_smoothed": 13,
    "rle_norm": 13,
}
_V2_FIRST_DETERMINED = 6  # the mean of five recomputed values, each with τ over three temps
_COLLAPSE_HOLD_SAMPLES = 7
_CHAIN_MAX_GAP_S = 20.0


@dataclass
class StreamRecompute:
    """Recomputation of one device stream of one segment.

    Attributes:
        file: Name of the file.
        segment: Segment index in the file.
        device: Device label.
        profile: The legacy profile used.
        legacy: Recomputed columns (:data:`COMPARED_COLUMNS` present, plus ``stability`` and
            ``power_estimated``), same row order as the stream's frame.
        default: The ``default`` profile's output columns, or ``None``.
        agreement: One row per compared column (:data:`AGREEMENT_COLUMNS`).
        seeded_from: ``"<file name>#<segment>"`` of the preceding chain link, or ``None``.
        chain_fresh: The chain starts at a monitor start-up (all state known).
    """

    file: str
    segment: int
    device: str
    profile: str
    legacy: pd.DataFrame
    default: pd.DataFrame | None
    agreement: pd.DataFrame
    seeded_from: str | None
    chain_fresh: bool


# ------------------------------------------------------------------------------------ chaining


def _continues(prev: DeviceStream, nxt: DeviceStream, smooth_n: int) -> bool:
    """Whether ``nxt`` starts where ``prev`` ends in the same monitor process (its SMA goes on)."""
    pf, nf = prev.frame, nxt.frame
    k = smooth_n - 1
    if k < 1 or len(pf) < k or len(nf) < 1:
        return False
    raws = [*pf["rle_raw"].to_numpy(dtype=np.float64)[-k:], float(nf["rle_raw"].iloc[0])]
    sm = float(nf["rle_smoothed"].iloc[0])
    if any(math.isnan(r) for r in raws) or math.isnan(sm):
        return False
    expected = math.fsum(raws) / len(raws)
    if abs(sm - expected) > 2.5e-6 + 1e-6 * abs(expected):
        return False
    prev_peak = float(pf["rolling_peak"].iloc[-1])
    peak = float(nf["rolling_peak"].iloc[0])
    return not (prev_peak > 0.0 and peak < 0.998 * prev_peak - 2e-6)


def link_segments(files: Sequence[ParsedFile]) -> dict[tuple[int, int], tuple[int, int]]:
    """Find, for segments that do not start fresh, the segment of another file they continue.

    Only v0.3 files rotate hourly while the monitor runs; v2 writes one file per run.

    Args:
        files: Parsed monitor files (any order).

    Returns:
        ``(file index, segment index) → (file index, segment index)`` of the predecessor.
    """
    candidates: list[tuple[float, tuple[int, int], tuple[int, int]]] = []
    for fi, f in enumerate(files):
        if f.format == "v2":
            continue
        for seg in f.segments:
            if seg.starts_fresh:
                continue
            for fj, g in enumerate(files):
                if fj == fi or g.format != f.format or g.smooth_n != f.smooth_n:
                    continue
                for prev in g.segments:
                    gap_s = (seg.start - prev.end).total_seconds()
                    if not 0.0 < gap_s <= _CHAIN_MAX_GAP_S or set(prev.streams) != set(seg.streams):
                        continue
                    if all(
                        _continues(prev.streams[d], seg.streams[d], f.smooth_n) for d in seg.streams
                    ):
                        candidates.append((gap_s, (fi, seg.index), (fj, prev.index)))
    links: dict[tuple[int, int], tuple[int, int]] = {}
    used: set[tuple[int, int]] = set()
    for _, nxt, before in sorted(candidates):
        if nxt not in links and before not in used:
            links[nxt] = before
            used.add(before)
    return links


def _chains(
    files: Sequence[ParsedFile], links: Mapping[tuple[int, int], tuple[int, int]]
) -> list[list[tuple[int, int]]]:
    successors = {prev: nxt for nxt, prev in links.items()}
    chains = []
    for fi, f in enumerate(files):
        for seg in f.segments:
            key = (fi, seg.index)
            if key in links:
                continue  # not a head
            chain = [key]
            while chain[-1] in successors:
                chain.append(successors[chain[-1]])
            chains.append(chain)
    return chains


# ------------------------------------------------------------------------------------ inputs


def metric_inputs(
    stream: DeviceStream, fmt: str, profile: str
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Build the :func:`rle.metric.compute` input frame and arguments for one stream.

    ``legacy_*``: the inputs as the lab's monitor saw them (an estimated v0.3 CPU power becomes
    NaN so the profile's ``rated_times_util`` fallback recomputes it unrounded; older builds' α =
    0 uses the ``zero`` fallback). ``default``: estimated and placeholder inputs become NaN (no
    power ⇒ no RLE, §2.8); the GPU gets the lab's rated 200 W and 83 °C limit.

    Args:
        stream: The device stream.
        fmt: The file's format (``v03``, ``v03_old``, ``v2``).
        profile: ``legacy_v03``, ``legacy_v2`` or ``default``.

    Returns:
        ``(frame, kwargs)`` for ``compute(frame, device=..., profile=..., **kwargs)``.
    """
    f = stream.frame
    power = f["power_w"].to_numpy(dtype=np.float64).copy()
    temp = f["temp_c"].to_numpy(dtype=np.float64).copy()
    kwargs: dict[str, Any] = {}
    if profile == "default":
        if stream.power_source in ("estimated", "placeholder", "none"):
            power[:] = np.nan
        if stream.temp_source in ("placeholder", "none"):
            temp[:] = np.nan
        if stream.device.startswith("gpu"):
            kwargs["rated_w"] = stream.rated_w or 200.0
            kwargs["limit_c"] = 83.0
        else:
            kwargs["rated_w"] = stream.rated_w or 125.0
    elif profile == "legacy_v03":
        if stream.rated_w is not None:
            kwargs["rated_w"] = stream.rated_w
        if stream.device == "cpu" and stream.power_source == "estimated":
            power[:] = np.nan
        elif stream.device == "cpu" and stream.power_source == "none":
            kwargs["load.cpu_power_fallback"] = "zero"
    frame = pd.DataFrame(
        {
            "timestamp": f["timestamp"].to_numpy(),
            "util_pct": f["util_pct"].to_numpy(dtype=np.float64),
            "temp_c": temp,
            "power_w": power,
        }
    )
    if profile == "legacy_v03" and fmt == "v03" and stream.device == "cpu":
        frame["cpu_freq_ghz"] = f["cpu_freq_ghz"].to_numpy(dtype=np.float64)
    return frame, kwargs


def _v03_warmup_s(streams: Sequence[pd.DataFrame]) -> float | None:
    """The monitor's warm-up as seen in the data: between the last logged peak of 0 and the first > 0.

    Args:
        streams: The chain's stored frames of one device, in order.

    Returns:
        Seconds after the first sample, or ``None`` if no sample left the warm-up.
    """
    f = pd.concat([s[["timestamp", "rolling_peak"]] for s in streams], ignore_index=True)
    warm = np.flatnonzero(f["rolling_peak"].to_numpy(dtype=np.float64) > 0.0)
    if warm.size == 0 or warm[0] == 0:
        return None
    t = (f["timestamp"] - f["timestamp"].iloc[0]).dt.total_seconds().to_numpy()
    return float((t[warm[0] - 1] + t[warm[0]]) / 2.0)


def _warmup_until(stored: pd.DataFrame, row: int) -> float:
    """A warm-up (s after the first sample) that ends just before ``row``."""
    t = (stored["timestamp"] - stored["timestamp"].iloc[0]).dt.total_seconds().to_numpy()
    if row >= len(t):
        return float(t[-1]) + 1.0 if len(t) else 0.0
    return float((t[row - 1] + t[row]) / 2.0) if row > 0 else 0.0


# ------------------------------------------------------------------------------------ agreement


def agreement_table(
    stored: pd.DataFrame,
    recomputed: pd.DataFrame,
    *,
    profile: str,
    excluded: Mapping[str, np.ndarray],
    labels: Mapping[str, Any],
) -> pd.DataFrame:
    """Compare stored and recomputed columns row by row.

    Args:
        stored: The stream's stored frame (legacy column names, ``line_no``).
        recomputed: Recomputed columns, same row order.
        profile: ``legacy_v03`` or ``legacy_v2`` (selects :data:`TOLERANCES`).
        excluded: Per column, a boolean mask of rows whose stored value depends on state that
            is not in the data (before the chain's start, or after a lost sample); missing
            means none.
        labels: Values for the ``file``, ``segment``, ``device`` columns.

    Returns:
        One row per compared column (:data:`AGREEMENT_COLUMNS`). Both NaN counts as agreement;
        one NaN as a mismatch; errors are over compared rows where both values are finite.
    """
    n = len(stored)
    out = []
    for col in COMPARED_COLUMNS:
        if col not in stored.columns or col not in recomputed.columns:
            continue
        rtol, atol = TOLERANCES[profile][col]
        s = stored[col].to_numpy(dtype=np.float64)
        r = recomputed[col].to_numpy(dtype=np.float64)
        mask = excluded.get(col)
        sel = np.ones(n, dtype=bool) if mask is None else ~np.asarray(mask, dtype=bool)
        both_nan = np.isnan(s) & np.isnan(r)
        finite = np.isfinite(s) & np.isfinite(r)
        diff = np.abs(r - s)
        ok = both_nan | (finite & (diff <= atol + rtol * np.abs(s)))
        ok |= np.isinf(s) & (s == r)
        fin = sel & finite
        rel = np.divide(diff, np.abs(s), out=np.full(n, np.nan), where=fin & (s != 0.0))
        bad = np.flatnonzero(sel & ~ok)
        out.append(
            {
                **labels,
                "profile": profile,
                "column": col,
                "rows": n,
                "rows_compared": int(sel.sum()),
                "rows_within_tolerance": int((sel & ok).sum()),
                "rows_excluded": int((~sel).sum()),
                "max_abs_error": float(diff[fin].max()) if fin.any() else math.nan,
                "max_rel_error": float(np.nanmax(rel)) if np.isfinite(rel).any() else math.nan,
                "rtol": rtol,
                "atol": atol,
                "first_mismatch_line": int(stored["line_no"].iloc[bad[0]]) if bad.size else -1,
            }
        )
    return pd.DataFrame(out, columns=list(AGREEMENT_COLUMNS))


_LOST_REASONS = frozenset({"torn_line", "bad_timestamp", "unknown_device", "unparseable_value"})


def _lost_sample_rows(stream: DeviceStream, skipped_lines: Sequence[tuple[int, str]]) -> list[int]:
    """Rows that follow a sample the file lost: a skipped line before them and a > 1.5 s gap."""
    lines = np.asarray(
        sorted(ln for ln, reason in skipped_lines if reason in _LOST_REASONS), dtype=np.int64
    )
    if lines.size == 0 or stream.n_samples < 2:
        return []
    f = stream.frame
    line_no = f["line_no"].to_numpy(dtype=np.int64)
    gap_s = f["timestamp"].diff().dt.total_seconds().to_numpy()
    lost = []
    for i in range(1, len(line_no)):
        if gap_s[i] > 1.5:
            k = int(np.searchsorted(lines, line_no[i - 1], side="right"))
            if k < lines.size and lines[k] < line_no[i]:
                lost.append(i)
    return lost


def _first_determined(smooth_n: int) -> dict[str, int]:
    first = dict(_V03_FIRST_DETERMINED)
    first["rle_smoothed"] = first["rle_norm"] = first["rle_raw"] + smooth_n - 1
    return first


def _excluded_masks(
    profile: str,
    chain_stored: pd.DataFrame,
    chain_recomputed: pd.DataFrame,
    starts: Sequence[int],
    smooth_n: int = 5,
) -> dict[str, np.ndarray]:
    """Rows (over the whole chain) whose value depends on state not in the data.

    Args:
        profile: ``legacy_v03`` or ``legacy_v2``.
        chain_stored: The chain's stored frames concatenated.
        chain_recomputed: The recomputed columns, same rows.
        starts: Rows where the state becomes unknown: 0 when the chain does not start fresh,
            and each row after a lost sample.
        smooth_n: The monitor's smoothing window, samples.

    Returns:
        Column → boolean mask.
    """
    n = len(chain_stored)
    masks = {c: np.zeros(n, dtype=bool) for c in COMPARED_COLUMNS}
    if not starts:
        return masks
    if profile == "legacy_v2":
        for s0 in starts:
            for m in masks.values():
                m[s0 : s0 + _V2_FIRST_DETERMINED] = True
        return masks
    peak = chain_stored["rolling_peak"].to_numpy(dtype=np.float64)
    sm = chain_stored["rle_smoothed"].to_numpy(dtype=np.float64)
    rpeak = chain_recomputed["rolling_peak"].to_numpy(dtype=np.float64)
    rsm = chain_recomputed["rle_smoothed"].to_numpy(dtype=np.float64)
    resets = np.flatnonzero((peak == sm) & (peak > 0.0) & (np.abs(rpeak - rsm) <= 1e-12))
    first = _first_determined(smooth_n)
    for s0 in starts:
        for col, k in first.items():
            masks[col][s0 : s0 + k] = True
        # From a row where both peaks were just set by the smoothed value (peak = max(sm,
        # 0.998·prev)), neither depends on the unknown history any more; the collapse counter
        # needs seven more determined samples.
        after = resets[resets >= s0 + first["rle_smoothed"]]
        peak_from = int(after[0]) if after.size else n
        masks["rolling_peak"][s0:peak_from] = True
        masks["collapse"][s0 : min(n, peak_from + _COLLAPSE_HOLD_SAMPLES - 1)] = True
    return masks


# ------------------------------------------------------------------------------------ main


def _compute_chain(
    parts: Sequence[DeviceStream], fmt: str, profile: str, overrides: Mapping[str, Any]
) -> pd.DataFrame:
    frames: list[pd.DataFrame] = []
    kwargs: dict[str, Any] = {}
    for part in reversed(parts):  # the chain head's arguments win
        frame, kwargs = metric_inputs(part, fmt, profile)
        frames.insert(0, frame)
    inputs = pd.concat(frames, ignore_index=True)
    return compute(inputs, device=parts[0].device, profile=profile, **kwargs, **overrides)


def recompute_files(
    files: Sequence[ParsedFile], *, with_default: bool = False
) -> dict[tuple[int, int, str], StreamRecompute]:
    """Recompute every device stream of every segment of the given files.

    Args:
        files: Parsed monitor files; v0.3 files given together are chained across hourly
            rotation (:func:`link_segments`).
        with_default: Also compute the ``default`` profile.

    Returns:
        ``(file index, segment index, device) →`` :class:`StreamRecompute`.
    """
    links = link_segments(files)
    results: dict[tuple[int, int, str], StreamRecompute] = {}
    for chain in _chains(files, links):
        head_file = files[chain[0][0]]
        head: Segment = head_file.segments[chain[0][1]]
        fmt = head_file.format
        profile = head_file.profile
        for device in head.streams:
            parts = [files[fi].segments[si].streams[device] for fi, si in chain]
            stored = pd.concat([p.frame for p in parts], ignore_index=True)
            overrides: dict[str, Any] = {}
            if profile == "legacy_v03" and head_file.smooth_n != 5:
                overrides["smooth.window_s"] = head_file.smooth_n
            if profile == "legacy_v03":
                if head.starts_fresh:
                    warmup = _v03_warmup_s([p.frame for p in parts])
                else:
                    # Start the recomputed peak where rle_smoothed is determined by the data.
                    warmup = _warmup_until(
                        stored, _first_determined(head_file.smooth_n)["rle_smoothed"]
                    )
                if warmup is not None:
                    overrides["collapse.warmup_s"] = warmup
            legacy = _compute_chain(parts, fmt, profile, overrides)
            default = _compute_chain(parts, fmt, "default", {}) if with_default else None
            starts = [] if head.starts_fresh else [0]
            offset = 0
            for (fi, _), part in zip(chain, parts, strict=True):
                starts += [offset + i for i in _lost_sample_rows(part, files[fi].skipped_lines)]
                offset += part.n_samples
            excluded = _excluded_masks(
                profile, stored, legacy, sorted(set(starts)), head_file.smooth_n
            )
            offset = 0
            for k, (fi, si) in enumerate(chain):
                part = parts[k]
                n = part.n_samples
                rows = slice(offset, offset + n)
                legacy_part = legacy.iloc[rows].reset_index(drop=True)
                labels = {"file": files[fi].path.name, "segment": si, "device": device}
                results[(fi, si, device)] = StreamRecompute(
                    file=files[fi].path.name,
                    segment=si,
                    device=device,
                    profile=profile,
                    legacy=legacy_part,
                    default=None if default is None else default.iloc[rows].reset_index(drop=True),
                    agreement=agreement_table(
                        part.frame,
                        legacy_part,
                        profile=profile,
                        excluded={c: m[rows] for c, m in excluded.items()},
                        labels=labels,
                    ),
                    seeded_from=(
                        f"{files[chain[k - 1][0]].path.name}#{chain[k - 1][1]}" if k else None
                    ),
                    chain_fresh=head.starts_fresh,
                )
                offset += n
    return results
