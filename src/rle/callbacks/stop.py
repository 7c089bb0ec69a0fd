"""Stop every rank after the same training step when the job gets SIGTERM or SIGINT.

What a pre-empted DDP job needs is that all ranks leave the training loop together, so the
end-of-training hooks (which hold collectives: the telemetry gather, checkpoints) run on every
rank and the logger flushes. Setting ``trainer.should_stop`` where the signal lands does not do
that: ranks see their signal at different points (torchrun's agent forwards it to each worker at
its own moment), and a rank that stops one step early leaves its peers blocked in the next
gradient all-reduce. Lightning 2.6's own SIGTERM handling only looks at rank 0's flag and calls
``torch.distributed.broadcast`` from inside the signal handler, which can pair with a different
collective on another rank (seen here under torchrun: rank 1 started another step after rank 0
had stopped and failed with "Connection closed by peer").

:class:`StopOnSignal` records the signal in a handler of its own while the loop runs and, at every
``on_train_batch_end``, all ranks agree on it with one all-reduce (max of the signal numbers, via
``trainer.strategy.reduce``); when any rank was signalled, every rank sets ``trainer.should_stop``
at that same batch. With one process the all-reduce is skipped. The cost is one 1-element
collective per training batch, the same kind Lightning already spends on its own SIGTERM check.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from typing_extensions import override

__all__ = ["StopOnSignal"]

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)

REPEAT_WINDOW_S = 2.0
"""Seconds after a first signal during which the same signal again is the same request."""


class StopOnSignal(L.Callback):
    """Stop all ranks after the same batch on SIGTERM/SIGINT; a later repeat interrupts at once.

    From ``on_train_start`` to ``teardown`` this callback's handler replaces the SIGTERM and SIGINT
    handlers of the process's main thread (Lightning's included; they are put back afterwards).
    The first signal is recorded; at the next ``on_train_batch_end`` every rank learns the largest
    signal number recorded on any rank (or set in ``shared_signum``) and sets
    ``trainer.should_stop``, so all ranks finish the same ``global_step`` and run
    ``on_train_end`` together. The same signal again within ``repeat_window_s`` seconds counts as
    the same request: launchers such as torchrun's agent and ``srun`` forward to each worker the
    signal its process group has already received. A signal after that window, while the loop
    still runs, raises :class:`KeyboardInterrupt` on that rank (interrupt at once). Signals that
    arrive after the loop has ended are logged and otherwise ignored: the end of the run is
    already under way, and interrupting one rank inside an end-of-run collective would leave the
    others waiting.

    Args:
        on_signal: Called with the signal number from the handler on the first signal, and from
            ``on_train_batch_end`` when the request came from another rank or ``shared_signum``
            (``rle.train`` uses it to end the run ``KILLED`` and exit ``128 + signal``). Not
            carried when the callback is pickled (``ddp_spawn``).
        shared_signum: An optional ``multiprocessing.Value("i")`` that another process sets to a
            signal number: the ``ddp_spawn`` launcher process, which is signalled while its
            workers train (it is pickled into the workers with the callback).
        repeat_window_s: Seconds after the first signal during which a repeat is the same request.

    Attributes:
        signum: The signal number every rank agreed to stop on, or ``None``.
        stop_step: ``trainer.global_step`` at the batch where the ranks agreed to stop, or ``None``.
    """

    def __init__(
        self,
        on_signal: Callable[[int], None] | None = None,
        shared_signum: Any = None,
        repeat_window_s: float = REPEAT_WINDOW_S,
    ) -> None:
        if repeat_window_s < 0:
            raise ValueError(f"repeat_window_s must be >= 0 seconds, got {repeat_window_s}")
        self.on_signal = on_signal
        self.shared_signum = shared_signum
        self.repeat_window_s = float(repeat_window_s)
        self.signum: int | None = None
        self.stop_step: int | None = None
        self._local: int | None = None
        self._local_at_s = 0.0
        self._loop_running = False
        self._previous: dict[int, Any] = {}
        self._rank = 0

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(on_signal=None, _previous={})
        return state

    # ----------------------------------------------------------------------------- handlers

    def _install(self) -> None:
        if threading.current_thread() is not threading.main_thread() or self._previous:
            return
        for s in SIGNALS:
            self._previous[s] = signal.signal(s, self._handle)

    def _restore(self) -> None:
        # Only where this handler is still the current one: on a normal end Lightning has
        # already put back the handlers it found before fit (its teardown runs before the
        # callbacks' teardown hook), and those must stay.
        for s, handler in self._previous.items():
            if signal.getsignal(s) == self._handle:
                signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if not self._loop_running:
            log.warning("[rank %d] Received %s: the run is already ending.", self._rank, name)
            return
        now = time.monotonic()
        if self._local is None:
            self._local, self._local_at_s = signum, now
            log.warning(
                "[rank %d] Received %s: every rank stops after the current step, then the "
                "metrics are flushed (send it again after %.0f s to interrupt at once).",
                self._rank,
                name,
                self.repeat_window_s,
            )
            if self.on_signal is not None:
                self.on_signal(signum)
            return
        if now - self._local_at_s < self.repeat_window_s:
            return  # the same request, forwarded by a launcher
        log.warning("[rank %d] Received %s again: interrupting.", self._rank, name)
        raise KeyboardInterrupt(name)

    # -------------------------------------------------------------------------------- hooks

    @override
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._rank = trainer.global_rank
        self._loop_running = True
        self._install()

    @override
    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if self.signum is not None:
            return
        mine = self._local or 0
        if self.shared_signum is not None:
            mine = max(mine, int(self.shared_signum.value))
        agreed = mine
        if trainer.world_size > 1:
            t = torch.tensor([mine], dtype=torch.int32, device=trainer.strategy.root_device)
            agreed = int(trainer.strategy.reduce(t, reduce_op="max").item())
        if agreed == 0:
            return
        self.signum = agreed
        self.stop_step = trainer.global_step
        trainer.should_stop = True
        if self._local is None:
            self._local, self._local_at_s = agreed, time.monotonic()
            if self.on_signal is not None:
                self.on_signal(agreed)
        if trainer.is_global_zero:
            log.warning(
                "All %d ranks stop at global_step %d (%s).",
                trainer.world_size,
                trainer.global_step,
                signal.Signals(agreed).name,
            )

    @override
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._loop_running = False

    @override
    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._loop_running = False
        self._restore()

    @override
    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._loop_running = False
        self._restore()
