from __future__ import annotations

from types import SimpleNamespace

import pytest

from rle.callbacks.steps import current_step, should_log


@pytest.mark.parametrize(
    ("step", "every", "expected"),
    [
        (0, 1, False),
        (1, 1, True),
        (2, 3, False),
        (3, 3, True),
        (6, 3, True),
        (7, 50, False),
        (50, 50, True),
    ],
)
def test_cadence_depends_on_global_step_only(step: int, every: int, expected: bool) -> None:
    trainer = SimpleNamespace(global_step=step, log_every_n_steps=every)
    assert current_step(trainer) == step
    assert should_log(trainer) is expected
