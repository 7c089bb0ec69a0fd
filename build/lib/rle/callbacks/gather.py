"""DDP gathering of telemetry windows to rank 0, and the pure merge of what arrives.

Every rank calls :func:`gather_to_rank_zero` at the same logging steps (the cadence depends on
``trainer.global_step`` only), so the collective cannot deadlock. Rank 0 merges the payloads with
:func:`merge_windows`: host-wide keys come from the one rank that sampled them, per-process keys
are already prefixed ``rank_<r>/``, GPU keys carry the CUDA ordinal; a rank whose window is empty
is reported, never papered over.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["MergedWindow", "RankWindow", "gather_to_rank_zero", "merge_windows", "rle_last"]


@dataclass
class RankWindow:
    """One rank's telemetry window, as sent to rank 0.

    Attributes:
        rank: Global rank.
        values: ``system/`` quantity name (without the prefix) to window value.
        rle: Device to RLE term to value (last sample; ``collapse``: any sample).
        rows: Raw samples, one dict per sample and device (for ``telemetry/samples.parquet``).
        sample_count: Samples in the window.
        sampling_time_s: Time the sampler spent reading sources in the window, seconds.
        tags: Run tags this rank wants set (sources, power/temperature provenance).
    """

    rank: int
    values: dict[str, float] = field(default_factory=dict)
    rle: dict[str, dict[str, float]] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    sample_count: int = 0
    sampling_time_s: float = 0.0
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class MergedWindow:
    """All ranks' windows merged on rank 0.

    Attributes:
        values: Merged ``system/`` quantities (name without prefix to value).
        rle: Device to RLE term to value.
        rows: All raw rows.
        missing_ranks: Ranks that sent an empty window.
        tags: Union of the ranks' tags (``telemetry.sources`` etc. joined per rank when they differ).
    """

    values: dict[str, float]
    rle: dict[str, dict[str, float]]
    rows: list[dict[str, Any]]
    missing_ranks: list[int]
    tags: dict[str, str]


def merge_windows(windows: Sequence[RankWindow]) -> MergedWindow:
    """Merge per-rank windows (pure).

    A key sent by two ranks is a bug in the key scheme, not something to average silently: the
    value of the lower rank is kept and the clash is recorded in ``tags`` as
    ``telemetry.key_clash``.

    Args:
        windows: One window per rank, any order.

    Returns:
        The :class:`MergedWindow`.
    """
    values: dict[str, float] = {}
    rle: dict[str, dict[str, float]] = {}
    rows: list[dict[str, Any]] = []
    missing: list[int] = []
    tags: dict[str, str] = {}
    clashes: list[str] = []
    for w in sorted(windows, key=lambda w: w.rank):
        if w.sample_count == 0:
            missing.append(w.rank)
        for k, v in w.values.items():
            if k in values:
                clashes.append(k)
                continue
            values[k] = v
        for device, terms in w.rle.items():
            rle.setdefault(device, {}).update(terms)
        rows.extend(w.rows)
        for tag, text in w.tags.items():
            if tag in tags and tags[tag] != text:
                if tag.startswith("telemetry."):
                    tags[tag] = ",".join(sorted(set(tags[tag].split(",")) | set(text.split(","))))
                # provenance tags of one device come from the one rank that samples it
            else:
                tags[tag] = text
    if clashes:
        tags["telemetry.key_clash"] = ",".join(sorted(set(clashes)))[:5000]
    return MergedWindow(values, rle, rows, missing, tags)


def gather_to_rank_zero(window: RankWindow, rank: int, world_size: int) -> list[RankWindow] | None:
    """Gather every rank's window on rank 0 (``torch.distributed.gather_object``).

    Args:
        window: This rank's window.
        rank: This process's global rank.
        world_size: Number of processes; 1 means no collective.

    Returns:
        All windows on rank 0, ``None`` on other ranks.
    """
    if world_size <= 1:
        return [window]
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return [window]
    out: list[Any] | None = [None] * world_size if rank == 0 else None
    dist.gather_object(window, out, dst=0)
    if out is None:
        return None
    return [w for w in out if isinstance(w, RankWindow)]


def rle_last(points: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Reduce one device's RLE points of a window: last finite value, ``collapse`` = any.

    Args:
        points: The window's RLE points in time order.

    Returns:
        Term to value; terms that are NaN in every point are absent.
    """
    out: dict[str, float] = {}
    for p in points:
        for k, v in p.items():
            if k == "collapse":
                if v == v:  # not NaN
                    out[k] = max(out.get(k, 0.0), float(v))
            elif v == v:
                out[k] = float(v)
    return out
