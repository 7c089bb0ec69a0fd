"""rle: every training run a measured hardware experiment, tracked in MLflow.

Telemetry sampled in the background during Lightning training, the RLE efficiency index and
collapse events per device, all on the ``trainer.global_step`` axis of the run's loss and
grad_norm.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
