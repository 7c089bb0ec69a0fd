"""Background sampler: reads every source at ``sample_hz`` on a deadline schedule.

The sampler thread wakes at ``t0 + k / sample_hz`` on the monotonic clock (no drift from the
time spent sampling; ticks that a slow sample overran are skipped and counted, not bunched),
reads every source, stamps the reading with UTC wall-clock time, monotonic time and the training
step current at that moment, and appends a :class:`~rle.telemetry.base.Sample` to a bounded
buffer. The training thread only calls :meth:`Sampler.set_step` (one attribute store) and
:meth:`Sampler.drain` (a short lock around a buffer swap), so a slow or hung source never stalls
training. A source that raises is reported once (warning) and skipped for that sample; the
sampler thread never dies of a source error.

Clocks and waiting are injectable: tests drive :meth:`Sampler.run` on a fake clock without real
sleeping.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Final

from rle.errors import ConfigError
from rle.telemetry.base import Sample, TelemetrySource

__all__ = ["Sampler"]

logger = logging.getLogger(__name__)

MAX_SAMPLE_HZ: Final[float] = 100.0


class Sampler:
    """Sample telemetry sources in a background thread and buffer the stamped samples.

    Args:
        sources: The sources to read, in order (their readings are merged; a later source wins
            on a duplicate key).
        sample_hz: Samples per second, 0 < ``sample_hz`` <= 100 (default 1 Hz).
        monotonic: Monotonic clock in seconds (``time.monotonic``).
        wall: UTC wall clock in seconds since the epoch (``time.time``).
        wait: ``wait(timeout_s) -> stop_requested``: blocks up to ``timeout_s`` seconds and
            returns True when the sampler should stop. Default: waits on the internal stop event.
            Tests pass a fake clock's wait that advances the clock.
        max_buffered: Most samples kept between drains; older ones are dropped, counted in
            :attr:`dropped_samples` and reported once.
        initial_step: Step stamped on samples before the first :meth:`set_step`.
        join_timeout_s: How long :meth:`stop` waits for the thread, seconds.

    Raises:
        ConfigError: ``sample_hz`` or ``max_buffered`` out of range.
    """

    def __init__(
        self,
        sources: Iterable[TelemetrySource],
        *,
        sample_hz: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        wait: Callable[[float], bool] | None = None,
        max_buffered: int = 10_000,
        initial_step: int = 0,
        join_timeout_s: float = 5.0,
    ) -> None:
        sample_hz = float(sample_hz)
        if not 0 < sample_hz <= MAX_SAMPLE_HZ:
            raise ConfigError(f"sample_hz must be in (0, {MAX_SAMPLE_HZ}], got {sample_hz}")
        if max_buffered < 1:
            raise ConfigError(f"max_buffered must be >= 1, got {max_buffered}")
        self._sources = list(sources)
        self._interval_s = 1.0 / sample_hz
        self._monotonic = monotonic
        self._wall = wall
        self._stop_event = threading.Event()
        self._wait = wait if wait is not None else self._stop_event.wait
        self._join_timeout_s = float(join_timeout_s)
        self._step = int(initial_step)
        self._buffer: deque[Sample] = deque(maxlen=int(max_buffered))
        self._buffer_lock = threading.Lock()
        self._sample_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._latest: Sample | None = None
        self._reported: set[tuple[str, str]] = set()
        self._failures: dict[str, int] = {}
        self._dropped = 0
        self._missed_ticks = 0
        self._sample_count = 0

    # ---------------------------------------------------------------- training-thread API

    def set_step(self, step: int) -> None:
        """Set the training step stamped on the following samples (O(1), never blocks).

        Args:
            step: ``trainer.global_step``.
        """
        self._step = int(step)  # a single reference store: atomic

    @property
    def step(self) -> int:
        """The step that the next sample will carry."""
        return self._step

    def drain(self) -> list[Sample]:
        """Return every sample taken since the previous drain (the window), oldest first.

        Holds the buffer lock only for a swap; never waits for a sample in progress.

        Returns:
            The samples, possibly empty.
        """
        with self._buffer_lock:
            out = list(self._buffer)
            self._buffer.clear()
        return out

    def latest(self) -> Sample | None:
        """The most recent sample, drained or not (None before the first)."""
        return self._latest

    @property
    def sample_hz(self) -> float:
        """Samples per second."""
        return 1.0 / self._interval_s

    @property
    def failures(self) -> dict[str, int]:
        """Number of failed ``sample()`` calls per source name."""
        return dict(self._failures)

    @property
    def dropped_samples(self) -> int:
        """Samples dropped because the buffer was full (nobody drained)."""
        return self._dropped

    @property
    def missed_ticks(self) -> int:
        """Scheduled ticks skipped because a sample overran its deadline."""
        return self._missed_ticks

    @property
    def sample_count(self) -> int:
        """Samples taken since construction."""
        return self._sample_count

    @property
    def is_running(self) -> bool:
        """Whether the background thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Start the background thread (the first sample is taken immediately).

        Does nothing if it is already running.
        """
        if self.is_running:
            return
        self._stop_event.clear()
        self._thread = threading.Thread(target=self.run, name="rle-telemetry-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and join it (up to ``join_timeout_s``). Idempotent.

        A thread stuck in a hung source is left behind (it is a daemon) with a warning.
        """
        self._stop_event.set()
        thread = self._thread
        if thread is None:
            return
        thread.join(self._join_timeout_s)
        if thread.is_alive():
            logger.warning(
                "telemetry sampler did not stop within %s s (a source is hung); leaving it behind",
                self._join_timeout_s,
            )
        else:
            self._thread = None

    def __enter__(self) -> Sampler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---------------------------------------------------------------- sampling

    def run(self, max_samples: int | None = None) -> None:
        """Run the sampling schedule in the calling thread until stopped.

        The background thread runs this; tests call it directly with a fake clock.

        Args:
            max_samples: Return after this many samples (None: until :meth:`stop`).
        """
        start_s = self._monotonic()
        tick = 0
        taken = 0
        while not self._stop_event.is_set():
            self.sample_now()
            taken += 1
            if max_samples is not None and taken >= max_samples:
                return
            tick += 1
            now_s = self._monotonic()
            deadline_s = start_s + tick * self._interval_s
            if now_s > deadline_s:
                next_tick = math.floor((now_s - start_s) / self._interval_s) + 1
                self._missed_ticks += next_tick - tick
                tick = next_tick
                deadline_s = start_s + tick * self._interval_s
            while (remaining_s := deadline_s - self._monotonic()) > 0:
                if self._wait(remaining_s):
                    return
            if self._stop_event.is_set():
                return

    def sample_now(self) -> Sample:
        """Read every source once, synchronously, and buffer the sample.

        Serialised with the background thread (sources are not shared between threads), so it
        blocks while a sample is in progress; use it for tests and for a final sample after
        :meth:`stop`.

        Returns:
            The sample (also appended to the buffer).
        """
        with self._sample_lock:
            sample = self._read_sources()
        with self._buffer_lock:
            if len(self._buffer) == self._buffer.maxlen:
                self._dropped += 1
                if self._dropped == 1:
                    logger.warning(
                        "telemetry buffer full (%s samples, nobody drained); dropping the oldest",
                        self._buffer.maxlen,
                    )
            self._buffer.append(sample)
            self._latest = sample
            self._sample_count += 1
        return sample

    def _read_sources(self) -> Sample:
        step = self._step
        wall_s = self._wall()
        start_s = self._monotonic()
        values: dict[str, float] = {}
        failed: list[str] = []
        for source in self._sources:
            try:
                values.update(source.sample())
            except Exception as e:  # noqa: BLE001 - a source must never kill the sampler
                failed.append(source.name)
                self._report(source.name, e)
        return Sample(
            wall_time_s=wall_s,
            monotonic_s=start_s,
            global_step=step,
            values=values,
            sample_duration_s=self._monotonic() - start_s,
            failed_sources=tuple(failed),
        )

    def _report(self, name: str, error: Exception) -> None:
        self._failures[name] = self._failures.get(name, 0) + 1
        key = (name, type(error).__name__)
        if key in self._reported:
            logger.debug("telemetry source %s failed again: %r", name, error)
            return
        self._reported.add(key)
        logger.warning(
            "telemetry source %s failed: %r; its reading is skipped for this sample "
            "(further %s errors at DEBUG)",
            name,
            error,
            type(error).__name__,
        )
