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
    "rle_key",
    "system_key",
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
