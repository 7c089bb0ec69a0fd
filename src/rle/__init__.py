"""rle: every training run a measured hardware experiment, tracked in MLflow.

Telemetry sampled in the background during Lightning training, the RLE efficiency index and
collapse events per device, all on the step axis of the run's loss and grad_norm.

The public API is imported lazily, so ``import rle`` stays cheap (no torch, Lightning or MLflow
until a name is used)::

    from rle import TelemetryCallback          # the Lightning callback
    from rle import StopOnSignal               # SIGTERM/SIGINT: every rank stops at one step
    from rle import compute, RLEStream          # the metric (batch and one sample at a time)
    from rle import RunReader, Selection        # read runs back from MLflow
    from rle import run_evaluation              # fingerprints and correlations
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "TelemetryCallback": "rle.callbacks.telemetry",
    "StopOnSignal": "rle.callbacks.stop",
    "compute": "rle.metric",
    "RLEStream": "rle.metric",
    "RunReader": "rle.tracking.reader",
    "Selection": "rle.tracking.reader",
    "run_evaluation": "rle.evaluate",
    "run_training": "rle.train",
}
"""Public name -> module that defines it."""

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:
    from rle.callbacks.stop import StopOnSignal as StopOnSignal
    from rle.callbacks.telemetry import TelemetryCallback as TelemetryCallback
    from rle.evaluate import run_evaluation as run_evaluation
    from rle.metric import RLEStream as RLEStream
    from rle.metric import compute as compute
    from rle.tracking.reader import RunReader as RunReader
    from rle.tracking.reader import Selection as Selection
    from rle.train import run_training as run_training


def __getattr__(name: str) -> Any:
    """Import a public name on first use (PEP 562)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'rle' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
