"""DDP gathering of telemetry windows to rank 0, and the pure merge of what arrives.

Every rank calls :func:`gather_to_rank_zero` at the same logging steps (the cadence depends on
``trainer.global_step`` only), so the collective cannot deadlock. Rank 0 merges the payloads with
:func:`merge_windows`: host-wide keys come from the one rank that sampled them, per-process keys
are already prefixed ``rank_<r>/``, GPU keys carry the CUDA ordinal; a rank whose window is empty
is reported, never papered over.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = [
    "MergedWindow",
    "RankWindow",
    "gather_objects",
    "gather_to_rank_zero",
    "merge_windows",
    "rle_last",
]


@dataclass
class RankWindow:
    """One rank's telemetry window, as sent to rank 0.

    Attributes:
        rank: Global rank.
        values: ``system/`` quantity name (without the prefix) to window value.
        rle: Device to RLE term to value (last sample; ``collapse``: any sample).
        sample_count: Samples in the window.
        sampling_time_s: Time the sampler spent reading sources in the window, seconds.
        tags: Run tags this rank wants set (sources, power/temperature provenance; first
            window only).
        train_samples: Training samples this rank processed in the window.
        train_tokens: Training tokens this rank processed in the window (NaN: not counted).

    The window's size depends on the number of quantities and devices, never on the sampling
    rate: raw rows stay on the rank (:mod:`rle.telemetry.samples_file`).
    """

    rank: int
    values: dict[str, float] = field(default_factory=dict)
    rle: dict[str, dict[str, float]] = field(default_factory=dict)
    sample_count: int = 0
    sampling_time_s: float = 0.0
    tags: dict[str, str] = field(default_factory=dict)
    train_samples: float = 0.0
    train_tokens: float = math.nan


@dataclass
class MergedWindow:
    """All ranks' windows merged on rank 0.

    Attributes:
        values: Merged ``system/`` quantities (name without prefix to value).
        rle: Device to RLE term to value.
        missing_ranks: Ranks that sent an empty window.
        tags: Union of the ranks' tags (``telemetry.sources`` etc. joined per rank when they differ).
        train_samples: Training samples of all ranks in the window.
        train_tokens: Training tokens of all ranks in the window (NaN: not counted).
    """

    values: dict[str, float]
    rle: dict[str, dict[str, float]]
    missing_ranks: list[int]
    tags: dict[str, str]
    train_samples: float = 0.0
    train_tokens: float = math.nan


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
    missing: list[int] = []
    samples = 0.0
    tokens = math.nan
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
        samples += w.train_samples
        if math.isfinite(w.train_tokens):
            tokens = w.train_tokens + (tokens if math.isfinite(tokens) else 0.0)
        for tag, text in w.tags.items():
            if tag in tags and tags[tag] != text:
                if tag.startswith("telemetry."):
                    tags[tag] = ",".join(sorted(set(tags[tag].split(",")) | set(text.split(","))))
                # provenance tags of one device come from the one rank that samples it
            else:
                tags[tag] = text
    if clashes:
        tags["telemetry.key_clash"] = ",".join(sorted(set(clashes)))[:5000]
    return MergedWindow(values, rle, missing, tags, samples, tokens)


def gather_objects(obj: T, rank: int, world_size: int) -> list[T] | None:
    """Gather one picklable object per rank on rank 0 (``torch.distributed.gather_object``).

    Every rank must call it at the same point.

    Args:
        obj: This rank's object (keep it small: it crosses the process group).
        rank: This process's global rank.
        world_size: Number of processes; 1 (or no process group) means no collective.

    Returns:
        The objects in rank order on rank 0, ``None`` on other ranks.
    """
    if world_size <= 1:
        return [obj]
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: list[Any] | None = [None] * world_size if rank == 0 else None
    dist.gather_object(obj, out, dst=0)
    return out


def gather_to_rank_zero(window: RankWindow, rank: int, world_size: int) -> list[RankWindow] | None:
    """Gather every rank's window on rank 0 (see :func:`gather_objects`).

    Returns:
        All windows on rank 0, ``None`` on other ranks.
    """
    out = gather_objects(window, rank, world_size)
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
