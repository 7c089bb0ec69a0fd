"""The one definition of the step axis and the logging cadence (docs/conventions.md, decision 3).

Every ``train/*``, ``system/*`` and ``rle/*`` metric of a run is logged on **Lightning's own
logging step**: the value under which Lightning's logger connector writes a module's
``self.log(...)`` values for the same batch (``fit_loop.epoch_loop._batches_that_stepped``, the
number of batches that finished with an optimizer step before this one). For one optimizer that is
``trainer.global_step - 1`` once the batch's optimizer step is done, so the first logged step is 0,
exactly as a module's own metrics; with several optimizers or manual optimization it still counts
batches, as Lightning's does. The cadence is Lightning's too (``(step + 1) % log_every_n_steps ==
0``) and depends on that counter alone, so every DDP rank reaches the same logging steps and
collectives never deadlock.
"""

from __future__ import annotations

from typing import Any

__all__ = ["current_step", "should_log", "step_counter"]


def step_counter(trainer: Any) -> int:
    """Return Lightning's count of batches that stepped (``_batches_that_stepped``).

    Args:
        trainer: The Lightning trainer (anything with ``global_step`` works as a fallback).

    Returns:
        The counter Lightning's logger connector uses as ``step`` during training.
    """
    loop = getattr(getattr(trainer, "fit_loop", None), "epoch_loop", None)
    value = getattr(loop, "_batches_that_stepped", None)
    if value is None:
        return int(trainer.global_step)
    return int(value)


def current_step(trainer: Any) -> int:
    """Return the step value under which metrics are logged now (see :func:`step_counter`)."""
    return step_counter(trainer)


def should_log(trainer: Any) -> bool:
    """Tell whether this batch is a logging batch, by Lightning's rule.

    Args:
        trainer: The Lightning trainer (``log_every_n_steps`` is the cadence, default 1 in rle).

    Returns:
        ``True`` when ``step_counter + 1`` is a multiple of ``trainer.log_every_n_steps``
        (Lightning's ``should_update_logs`` without its ``should_stop`` clause, which need not
        agree across ranks).
    """
    every = max(1, int(getattr(trainer, "log_every_n_steps", 1)))
    return (step_counter(trainer) + 1) % every == 0
