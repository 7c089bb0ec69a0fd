"""``python -m support.counting_train OVERRIDES...``: ``rle.train`` that also records what it logged.

Every metric point the training loop hands to ``MLflowRunLogger.log_metrics`` is counted (key ->
the steps, in order) and written as JSON to ``$RLE_POINTS_FILE`` when the job ends, however it
ends, so that a test running the job as a separate process can check that the store holds each
point exactly once. Otherwise this is ``python -m rle.train`` (same arguments, same exit status).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def main() -> None:
    """Patch the logger, run ``rle.train``'s entry point, write the counts."""
    from rle.tracking import logger as logger_mod

    points: dict[str, list[int]] = {}
    original = logger_mod.MLflowRunLogger.log_metrics

    def counting(self: Any, metrics: Any, step: int | None = None) -> None:
        for k in metrics:
            points.setdefault(k, []).append(int(step or 0))
        original(self, metrics, step=step)

    logger_mod.MLflowRunLogger.log_metrics = counting  # type: ignore[method-assign]
    try:
        from rle.train import main as train_main

        train_main()
    finally:
        out = Path(os.environ["RLE_POINTS_FILE"])
        out.write_text(json.dumps(points))


if __name__ == "__main__":
    main()
