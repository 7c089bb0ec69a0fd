"""The one definition of the step axis and the logging cadence (conventions.md, decision 3).

Every ``train/*``, ``system/*`` and ``rle/*`` metric of a run is logged with
``step = trainer.global_step`` (optimizer steps taken so far), at the hooks that run after the
optimizer step, so the first logged step is 1. The cadence depends on ``trainer.global_step`` alone,
so that every DDP rank reaches the same logging steps and collectives never deadlock.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["current_step", "should_log"]


class _TrainerLike(Protocol):
    @property
    def global_step(self) -> int: ...


def current_step(trainer: _TrainerLike) -> int:
    """Return the step value under which metrics are logged now.

    Args:
        trainer: The Lightning trainer.

    Returns:
        ``trainer.global_step``: the number of optimizer steps taken so far.
    """
    return int(trainer.global_step)


def should_log(trainer: _TrainerLike) -> bool:
    """Tell whether the current optimizer step is a logging step.

    Args:
        trainer: The Lightning trainer (``log_every_n_steps`` is the cadence, default 1 in rle).

    Returns:
        ``True`` when ``global_step`` is a positive multiple of ``trainer.log_every_n_steps``.
    """
    step = current_step(trainer)
    every = max(1, int(getattr(trainer, "log_every_n_steps", 1)))
    return step > 0 and step % every == 0
