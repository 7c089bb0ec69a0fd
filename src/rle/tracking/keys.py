"""Metric, param and tag names shared by every writer and reader of ``rle`` runs.

The single source of the key names listed in ``rle-metric.md`` §5: telemetry under ``system/``
(MLflow's own names where the quantity is the same), the RLE index under ``rle/<device>/`` and the
training dynamics under ``train/``. Units are part of the names (MLflow's spelling: ``_percentage``,
``_megabytes`` = bytes / 1e6, ``_watts``, ``_celsius``, ``_joules``, ``_megahertz``, ``_seconds``).
"""

from __future__ import annotations

__all__ = [
    "TRAIN_GRAD_NORM",
    "TRAIN_LOSS",
    "TRAIN_LR",
    "TRAIN_SAMPLES_PER_SECOND",
    "TRAIN_TOKENS_PER_SECOND",
    "SYNTHETIC_DUTY_CYCLE_ACHIEVED",
    "SYNTHETIC_INTENSITY_TARGET",
    "rle_key",
    "system_key",
    # telemetry quantity names and tags (rle.telemetry)
    "TAG_TELEMETRY_SOURCES",
    "TAG_TELEMETRY_UNAVAILABLE",
    "gpu_quantity",
    "power_source_tag",
    "rank_quantity",
    "temp_source_tag",
    "unavailable_reason_tag",
]

TRAIN_LOSS = "train/loss"
"""Training loss at the step (dimensionless, mean cross-entropy in nats per token for LMs)."""
TRAIN_GRAD_NORM = "train/grad_norm"
"""Total L2 norm of all gradients, after unscaling and before clipping."""
TRAIN_LR = "train/lr"
"""Learning rate of the first parameter group after the scheduler step."""
TRAIN_SAMPLES_PER_SECOND = "train/samples_per_second"
"""Training samples per second over the logging window, all ranks together."""
TRAIN_TOKENS_PER_SECOND = "train/tokens_per_second"
"""Training tokens per second over the logging window, all ranks together."""
SYNTHETIC_INTENSITY_TARGET = "synthetic/intensity_target"
"""Commanded duty cycle of the synthetic load in the step's period (fraction 0..1)."""
SYNTHETIC_DUTY_CYCLE_ACHIEVED = "synthetic/duty_cycle_achieved"
"""Measured busy time / measured period of the synthetic load's training process (fraction 0..1)."""


def system_key(name: str) -> str:
    """Return the MLflow key of a telemetry quantity.

    Args:
        name: Quantity name with its unit suffix, e.g. ``"gpu_0_power_usage_watts"``.

    Returns:
        ``"system/" + name``.
    """
    return f"system/{name}"


def rle_key(device: str, name: str) -> str:
    """Return the MLflow key of an RLE term for one device.

    Args:
        device: Device label, ``"cpu"`` or ``"gpu_<i>"`` (CUDA ordinal as the job sees it).
        name: Term name, e.g. ``"rle_smoothed"``, ``"e_th"``, ``"collapse"``.

    Returns:
        ``"rle/<device>/<name>"``.
    """
    return f"rle/{device}/{name}"


# --- telemetry quantity names and tags (written by rle.telemetry) -----------------------------

TAG_TELEMETRY_SOURCES = "telemetry.sources"
"""Run tag: comma-separated names of the telemetry sources that ran."""
TAG_TELEMETRY_UNAVAILABLE = "telemetry.unavailable"
"""Run tag: comma-separated names of configured telemetry sources that were unavailable."""


def unavailable_reason_tag(source: str) -> str:
    """Return the run tag holding why a telemetry source was unavailable.

    Args:
        source: Source name as configured, e.g. ``"gpu"``.

    Returns:
        ``"telemetry.unavailable.<source>"``.
    """
    return f"telemetry.unavailable.{source}"


def power_source_tag(device: str) -> str:
    """Return the run tag naming where a device's power comes from.

    Args:
        device: ``"cpu"`` or ``"gpu_<i>"``.

    Returns:
        ``"power_source.<device>"``; values ``nvml|rapl|estimated|fake|none``.
    """
    return f"power_source.{device}"


def temp_source_tag(device: str) -> str:
    """Return the run tag naming where a device's temperature comes from.

    Args:
        device: ``"cpu"`` or ``"gpu_<i>"``.

    Returns:
        ``"temp_source.<device>"``; values ``nvml|hwmon|fake|none``.
    """
    return f"temp_source.{device}"


def gpu_quantity(index: int, quantity: str) -> str:
    """Return the name of a per-GPU telemetry quantity (without the ``system/`` prefix).

    Args:
        index: CUDA ordinal as the job sees it.
        quantity: Quantity with its unit, e.g. ``"power_usage_watts"``.

    Returns:
        ``"gpu_<index>_<quantity>"``; pass it to :func:`system_key` for the MLflow key.
    """
    return f"gpu_{index}_{quantity}"


def rank_quantity(rank: int, quantity: str) -> str:
    """Return the name of a per-rank telemetry quantity (without the ``system/`` prefix).

    Args:
        rank: Global DDP rank.
        quantity: Quantity with its unit, e.g. ``"process_cpu_percentage"``.

    Returns:
        ``"rank_<rank>/<quantity>"``.
    """
    return f"rank_{rank}/{quantity}"
