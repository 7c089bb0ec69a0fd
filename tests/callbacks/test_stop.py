"""StopOnSignal in a real one-process Lightning trainer: the signal is a real signal to this process.

The 2-process cases (ddp, ddp_spawn, torchrun; signal to the group or the main PID) are in
``tests/test_signals_ddp.py``.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from typing import Any

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from rle.callbacks.stop import StopOnSignal


class _Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        (x,) = batch
        return self.layer(x).pow(2).mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


class _SignalAt(L.Callback):
    """Sends ``signums`` to this process during training batch ``batch_idx`` (one after another)."""

    def __init__(self, batch_idx: int, *signums: int) -> None:
        self.batch_idx = batch_idx
        self.signums = signums
        self.batches_started = 0

    def on_train_batch_start(
        self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int
    ) -> None:
        self.batches_started += 1
        if batch_idx == self.batch_idx:
            for s in self.signums:
                os.kill(os.getpid(), s)


def _fit(*callbacks: L.Callback, max_steps: int = 50) -> L.Trainer:
    data = DataLoader(TensorDataset(torch.randn(256, 4)), batch_size=2)
    trainer = L.Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=list(callbacks),
    )
    trainer.fit(_Tiny(), data)
    return trainer


@pytest.fixture(autouse=True)
def _handlers_back() -> Any:
    """Whatever a test does, this process keeps its own SIGTERM/SIGINT handlers."""
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    yield before
    for s, h in before.items():
        signal.signal(s, h)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_after_the_batch_it_arrived_in(signum: signal.Signals) -> None:
    seen: list[int] = []
    stop = StopOnSignal(on_signal=seen.append)
    sender = _SignalAt(5, signum)
    trainer = _fit(stop, sender)
    assert stop.signum == signum
    assert seen == [signum]
    assert stop.stop_step == 6  # batch 5 is the 6th optimizer step
    assert trainer.global_step == 6
    assert sender.batches_started == 6  # no batch started after it


def test_without_a_signal_training_runs_to_max_steps() -> None:
    stop = StopOnSignal()
    trainer = _fit(stop, max_steps=7)
    assert trainer.global_step == 7
    assert stop.signum is None
    assert stop.stop_step is None


def test_the_handlers_found_before_fit_are_back_afterwards() -> None:
    marker_calls: list[int] = []

    def marker(signum: int, frame: Any) -> None:
        marker_calls.append(signum)

    signal.signal(signal.SIGTERM, marker)
    _fit(StopOnSignal(), _SignalAt(2, signal.SIGTERM))
    assert signal.getsignal(signal.SIGTERM) is marker
    assert marker_calls == []  # the in-loop signal was StopOnSignal's, not passed on
    os.kill(os.getpid(), signal.SIGTERM)
    assert marker_calls == [signal.SIGTERM]


def test_a_repeat_within_the_window_is_the_same_request() -> None:
    stop = StopOnSignal(repeat_window_s=60.0)
    trainer = _fit(stop, _SignalAt(3, signal.SIGTERM, signal.SIGTERM, signal.SIGTERM))
    assert stop.signum == signal.SIGTERM
    assert trainer.global_step == 4


def test_a_repeat_after_the_window_interrupts_at_once() -> None:
    stop = StopOnSignal(repeat_window_s=0.0)
    sender = _SignalAt(3, signal.SIGTERM, signal.SIGTERM)
    # Lightning turns the KeyboardInterrupt into its graceful shutdown and SystemExit(1)
    with pytest.raises((KeyboardInterrupt, SystemExit)):
        _fit(stop, sender)
    assert stop.signum is None  # it never reached the end of the batch
    assert sender.batches_started == 4


def test_a_signal_set_by_another_process_stops_the_loop() -> None:
    shared = multiprocessing.get_context("spawn").Value("i", 0)

    class _SetShared(L.Callback):
        def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, i: int) -> None:
            if i == 2:
                shared.value = int(signal.SIGTERM)

    seen: list[int] = []
    stop = StopOnSignal(on_signal=seen.append, shared_signum=shared)
    trainer = _fit(stop, _SetShared())
    assert trainer.global_step == 3
    assert stop.signum == signal.SIGTERM
    assert seen == [signal.SIGTERM]  # the owner learns it from the batch end


def test_a_signal_after_the_loop_is_ignored() -> None:
    class _AfterLoop(L.Callback):
        def on_train_end(self, trainer: Any, pl_module: Any) -> None:
            os.kill(os.getpid(), signal.SIGTERM)

    seen: list[int] = []
    # on_train_end hooks run in order: StopOnSignal's first marks the loop as ended
    trainer = _fit(StopOnSignal(on_signal=seen.append), _AfterLoop(), max_steps=3)
    assert trainer.global_step == 3
    assert seen == []


def test_the_callback_pickles_without_its_owner_hook() -> None:
    import pickle

    shared = multiprocessing.get_context("spawn").Value("i", 0)
    stop = StopOnSignal(on_signal=lambda s: None, shared_signum=shared, repeat_window_s=3.0)
    with pytest.raises(RuntimeError):  # a Value only travels to processes spawned with it
        pickle.dumps(stop)
    plain = pickle.loads(pickle.dumps(StopOnSignal(on_signal=lambda s: None)))
    assert plain.on_signal is None
    assert plain.repeat_window_s == 2.0


def test_a_negative_window_is_refused() -> None:
    with pytest.raises(ValueError, match="repeat_window_s"):
        StopOnSignal(repeat_window_s=-1)


def test_rle_train_uses_the_same_repeat_window() -> None:
    from rle.callbacks.stop import REPEAT_WINDOW_S
    from rle.train import _Preemption

    assert _Preemption.REPEAT_WINDOW_S == REPEAT_WINDOW_S
    assert StopOnSignal().repeat_window_s == REPEAT_WINDOW_S
