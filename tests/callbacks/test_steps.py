from __future__ import annotations

from types import SimpleNamespace

import pytest

from rle.callbacks.steps import current_step, should_log


@pytest.mark.parametrize(
    ("step", "every", "expected"),
    [
        (0, 1, True),
        (1, 1, True),
        (1, 3, False),
        (2, 3, True),
        (5, 3, True),
        (6, 50, False),
        (49, 50, True),
    ],
)
def test_cadence_is_lightnings_and_depends_on_the_step_counter_only(
    step: int, every: int, expected: bool
) -> None:
    loop = SimpleNamespace(epoch_loop=SimpleNamespace(_batches_that_stepped=step))
    trainer = SimpleNamespace(global_step=step + 1, log_every_n_steps=every, fit_loop=loop)
    assert current_step(trainer) == step
    assert should_log(trainer) is expected
