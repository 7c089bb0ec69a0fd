"""Duty-cycle load: intensity patterns, the period scheduler and CPU worker processes (rle-metric.md §7.2).

Intensity is a duty cycle: in each period of ``period_s`` seconds the load works for
``intensity * period_s`` seconds, measured on the monotonic clock, and sleeps for the rest. Periods
sit on a deadline grid (``anchor_s + k * period_s``), so sleeping never accumulates drift.

- :func:`intensity_at` is the pure pattern function (``constant``, ``ramp``, ``sine``, ``step``;
  the lab's shapes and defaults), evaluated once per period.
- :class:`DutyCycleScheduler` runs one period: work in short chunks, checking the clock between
  chunks, then sleep until the deadline. The clock and sleep are injectable (tests use a fake clock).
- :class:`CpuWorkerPool` spawns one process per extra target core (``spawn`` context, never threads)
  that follows the controller's grid and reads the intensity from a shared value every period.

This module imports neither torch nor NumPy at import time so that spawned workers start fast; the
workers import NumPy with one BLAS thread each (one process = one core).
"""

from __future__ import annotations

import contextlib
import logging
import math
import multiprocessing as mp
import os
import statistics
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rle.errors import ConfigError, RLEError

__all__ = [
    "PATTERNS",
    "CpuWorkerPool",
    "DutyCycleScheduler",
    "Pattern",
    "PeriodResult",
    "available_cores",
    "intensity_at",
    "pattern_from_config",
    "steps_for_duration",
]

log = logging.getLogger(__name__)

PATTERNS = ("constant", "ramp", "sine", "step")
"""Valid values of ``workload.pattern``."""

_CLOCK_TOLERANCE_S = 1e-9
"""Clock comparisons within this many seconds count as equal (float noise)."""

_BLAS_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")
"""Thread-count variables set to 1 for spawned workers (read by BLAS libraries when they load)."""


# ------------------------------------------------------------------------------------------ patterns


@dataclass(frozen=True)
class Pattern:
    """How the commanded intensity changes over a run. Every intensity is a duty cycle in [0, 1].

    Attributes:
        kind: ``constant``, ``ramp``, ``sine`` or ``step``.
        intensity: Level of the ``constant`` pattern.
        ramp_start: ``ramp`` intensity at t = 0 (lab default 0.1).
        ramp_end: ``ramp`` intensity at the end of the duration (lab default 0.9).
        sine_mean: ``sine`` centre (lab default 0.5).
        sine_amplitude: ``sine`` amplitude (lab default 0.3); the result is clipped to [0, 1].
        sine_frequency_hz: ``sine`` frequency in Hz (lab default 0.1, a 10 s cycle).
        step_levels: ``step`` levels, held for equal parts of the duration (lab default
            0.2, 0.4, 0.6, 0.8).
    """

    kind: str = "constant"
    intensity: float = 0.5
    ramp_start: float = 0.1
    ramp_end: float = 0.9
    sine_mean: float = 0.5
    sine_amplitude: float = 0.3
    sine_frequency_hz: float = 0.1
    step_levels: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8)

    def __post_init__(self) -> None:
        if self.kind not in PATTERNS:
            raise ConfigError(
                f"workload.pattern={self.kind!r} is not a known pattern; use one of {', '.join(PATTERNS)}."
            )
        levels = {
            "workload.intensity": self.intensity,
            "workload.ramp.start": self.ramp_start,
            "workload.ramp.end": self.ramp_end,
            "workload.sine.mean": self.sine_mean,
        }
        levels.update({f"workload.step.levels[{i}]": v for i, v in enumerate(self.step_levels)})
        for name, value in levels.items():
            if not (math.isfinite(value) and 0.0 <= value <= 1.0):
                raise ConfigError(
                    f"{name}={value} is outside [0, 1]: intensity is a duty cycle (fraction of each "
                    "period spent working). Give a value between 0 and 1."
                )
        if not (math.isfinite(self.sine_amplitude) and self.sine_amplitude >= 0.0):
            raise ConfigError(f"workload.sine.amplitude must be >= 0, got {self.sine_amplitude}.")
        if not (math.isfinite(self.sine_frequency_hz) and self.sine_frequency_hz > 0.0):
            raise ConfigError(
                f"workload.sine.frequency_hz must be > 0 Hz, got {self.sine_frequency_hz}."
            )
        if self.kind == "step" and not self.step_levels:
            raise ConfigError("workload.step.levels is empty; give at least one level in [0, 1].")

    @property
    def needs_duration(self) -> bool:
        """Whether the pattern is defined relative to the run duration (``ramp``, ``step``)."""
        return self.kind in ("ramp", "step")


def _get(node: Mapping[str, Any], key: str, default: Any) -> Any:
    value = node.get(key, default) if node is not None else default
    return default if value is None else value


def _number(name: str, value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{name} must be a number, got {value!r}.") from e


def pattern_from_config(cfg: Mapping[str, Any]) -> Pattern:
    """Build a :class:`Pattern` from a workload config node.

    Args:
        cfg: The ``workload`` node (or any mapping) with ``pattern``, ``intensity`` and the optional
            sub-nodes ``ramp: {start, end}``, ``sine: {mean, amplitude, frequency_hz}``,
            ``step: {levels}``. Missing entries take the lab's defaults.

    Returns:
        The validated pattern.

    Raises:
        rle.errors.ConfigError: On an unknown pattern or an intensity outside [0, 1].
    """
    d = Pattern()
    ramp = _get(cfg, "ramp", {})
    sine = _get(cfg, "sine", {})
    step = _get(cfg, "step", {})
    levels = _get(step, "levels", d.step_levels)
    if isinstance(levels, str | bytes) or not isinstance(levels, Sequence):
        raise ConfigError(f"workload.step.levels must be a list of intensities, got {levels!r}.")
    return Pattern(
        kind=str(_get(cfg, "pattern", d.kind)),
        intensity=_number("workload.intensity", _get(cfg, "intensity", d.intensity)),
        ramp_start=_number("workload.ramp.start", _get(ramp, "start", d.ramp_start)),
        ramp_end=_number("workload.ramp.end", _get(ramp, "end", d.ramp_end)),
        sine_mean=_number("workload.sine.mean", _get(sine, "mean", d.sine_mean)),
        sine_amplitude=_number(
            "workload.sine.amplitude", _get(sine, "amplitude", d.sine_amplitude)
        ),
        sine_frequency_hz=_number(
            "workload.sine.frequency_hz", _get(sine, "frequency_hz", d.sine_frequency_hz)
        ),
        step_levels=tuple(_number("workload.step.levels", v) for v in levels),
    )


def intensity_at(
    t_s: float, pattern_cfg: Pattern | Mapping[str, Any], duration_s: float | None
) -> float:
    """Return the commanded intensity at time ``t_s`` of the run.

    Args:
        t_s: Seconds since the start of the load (start of the first period).
        pattern_cfg: A :class:`Pattern`, or a workload config mapping (see :func:`pattern_from_config`).
        duration_s: Run duration in seconds; needed by ``ramp`` (linear from ``ramp_start`` to
            ``ramp_end`` over it) and ``step`` (levels held for equal parts of it). Past the end the
            last value holds.

    Returns:
        The intensity (duty cycle), clipped to [0, 1].

    Raises:
        rle.errors.ConfigError: If the pattern needs a duration and ``duration_s`` is missing or not
            positive.
    """
    p = pattern_cfg if isinstance(pattern_cfg, Pattern) else pattern_from_config(pattern_cfg)
    t_s = max(0.0, float(t_s))
    if p.needs_duration and (duration_s is None or not duration_s > 0):
        raise ConfigError(
            f"workload.pattern={p.kind} needs the run duration, got {duration_s!r}. Set "
            "workload.duration_s or a positive trainer.max_steps."
        )
    if p.kind == "constant":
        value = p.intensity
    elif p.kind == "ramp":
        assert duration_s is not None  # noqa: S101 (checked above; narrows the type)
        frac = min(1.0, t_s / duration_s)
        value = p.ramp_start + (p.ramp_end - p.ramp_start) * frac
    elif p.kind == "sine":
        value = p.sine_mean + p.sine_amplitude * math.sin(2.0 * math.pi * p.sine_frequency_hz * t_s)
    else:  # step
        assert duration_s is not None  # noqa: S101
        n = len(p.step_levels)
        value = p.step_levels[min(n - 1, int(t_s / duration_s * n))]
    return min(1.0, max(0.0, value))


def steps_for_duration(duration_s: float, period_s: float) -> int:
    """Return the number of periods (optimizer steps) that cover ``duration_s``.

    Args:
        duration_s: Run duration in seconds (> 0).
        period_s: Period length in seconds (> 0).

    Returns:
        ``ceil(duration_s / period_s)``, robust to float noise (1.1 s / 0.1 s gives 11).
    """
    return max(1, math.ceil(round(duration_s / period_s, 9)))


def available_cores() -> int:
    """Return the number of CPU cores this process may run on (affinity mask, else ``cpu_count``)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


# ----------------------------------------------------------------------------------------- scheduler


@dataclass(frozen=True)
class PeriodResult:
    """What one period measured.

    Attributes:
        start_s: Monotonic time the period started, in seconds.
        busy_s: Seconds from the start to the end of the work.
        period_s: Measured length of the period in seconds (start to wake-up after the idle part).
        chunks: Work chunks run by the scheduler itself in this period.
    """

    start_s: float
    busy_s: float
    period_s: float
    chunks: int

    @property
    def duty_cycle(self) -> float:
        """Measured busy fraction of the period, in [0, 1]."""
        if self.period_s <= 0.0:
            return 1.0
        return min(1.0, max(0.0, self.busy_s / self.period_s))


@dataclass
class DutyCycleScheduler:
    """Runs periods on a deadline grid: work until ``start + intensity * window``, sleep until the deadline.

    A period's window runs from its measured start (the previous period's end) to its grid deadline
    ``anchor_s + (index + 1) * period_s``; normally that is exactly ``period_s``. Work is done in
    chunks between which the clock is read; a chunk starts only while more than half an estimated
    chunk of busy time remains (so the overshoot averages out), except at intensity 1 where work
    continues up to the deadline. A period that ends so late that less than half of the next one
    is left re-anchors the grid at its end instead of catching up in a burst.

    Args:
        period_s: Period length in seconds (> 0).
        clock: Monotonic clock in seconds (``time.monotonic``; injectable for tests).
        sleep: Sleep function taking seconds (``time.sleep``; injectable for tests).
    """

    period_s: float
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    anchor_s: float | None = field(default=None, init=False)
    index: int = field(default=0, init=False)
    _recent_chunks_s: deque[float] = field(
        default_factory=lambda: deque(maxlen=5), init=False, repr=False
    )
    _start_s: float | None = field(default=None, init=False, repr=False)
    _chunks: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.period_s) and self.period_s > 0):
            raise ConfigError(
                f"workload.period_s must be a positive number of seconds, got {self.period_s}."
            )

    @property
    def started(self) -> bool:
        """Whether the grid has been anchored."""
        return self.anchor_s is not None

    @property
    def start_s(self) -> float:
        """Measured start of the current period, in monotonic seconds (anchors the grid if needed)."""
        if self._start_s is None:
            now = self.clock()
            self.anchor_s, self.index, self._start_s = now, 0, now
        return self._start_s

    @property
    def deadline_s(self) -> float:
        """Grid deadline of the current period, in monotonic seconds."""
        start = self.start_s
        assert self.anchor_s is not None  # noqa: S101 (set by start_s)
        return max(start, self.anchor_s + (self.index + 1) * self.period_s)

    def align(self, anchor_s: float) -> None:
        """Follow an externally published grid (worker processes follow the controller's).

        Does nothing while the scheduler is already on that grid; otherwise the current period
        becomes the grid period containing now, starting now.

        Args:
            anchor_s: Grid anchor in monotonic seconds.
        """
        if self.anchor_s == anchor_s and self._start_s is not None:
            return
        now = self.clock()
        self.anchor_s = anchor_s
        self.index = max(0, math.floor((now - anchor_s) / self.period_s))
        self._start_s = now

    @property
    def chunk_estimate_s(self) -> float:
        """Median duration of the last few work chunks in seconds (0 before the first)."""
        return statistics.median(self._recent_chunks_s) if self._recent_chunks_s else 0.0

    def work(self, intensity: float, chunk: Callable[[], None]) -> int:
        """Run work chunks until ``intensity`` of the current period's window has been busy.

        Time already spent since the period's start (e.g. a training step done before this call)
        counts as busy. A chunk starts while more than half a chunk (median of the last five,
        capped at a tenth of the period) of busy time remains; at intensity 1 until the deadline.

        Args:
            intensity: Target duty cycle in [0, 1].
            chunk: One short unit of work (called repeatedly; should be much shorter than a period).

        Returns:
            The number of chunks run.
        """
        start, deadline = self.start_s, self.deadline_s
        intensity = min(1.0, max(0.0, intensity))
        busy_until = start + intensity * (deadline - start)
        n = 0
        while True:
            t0 = self.clock()
            margin = (
                0.0 if intensity >= 1.0 else min(0.5 * self.chunk_estimate_s, 0.1 * self.period_s)
            )
            if busy_until - t0 <= margin + _CLOCK_TOLERANCE_S:
                break
            chunk()
            self._recent_chunks_s.append(self.clock() - t0)
            n += 1
        self._chunks += n
        return n

    def finish(self) -> PeriodResult:
        """End the busy part now, sleep until the deadline and move to the next period.

        Returns:
            The measured period.
        """
        start, deadline = self.start_s, self.deadline_s
        busy_end = self.clock()
        now = busy_end
        while now < deadline - _CLOCK_TOLERANCE_S:
            self.sleep(deadline - now)
            now = self.clock()
        result = PeriodResult(start, busy_end - start, now - start, self._chunks)
        self._chunks = 0
        self.index += 1
        self._start_s = now
        assert self.anchor_s is not None  # noqa: S101
        if self.anchor_s + (self.index + 1) * self.period_s - now < 0.5 * self.period_s:
            self.anchor_s, self.index = now, 0  # fell behind: re-anchor rather than burst
        return result

    def run_period(self, intensity: float, chunk: Callable[[], None]) -> PeriodResult:
        """Run one whole period: :meth:`work` then :meth:`finish`.

        Args:
            intensity: Target duty cycle in [0, 1].
            chunk: One short unit of work.

        Returns:
            The measured period.
        """
        self.work(intensity, chunk)
        return self.finish()


# -------------------------------------------------------------------------------------- CPU workers


class _Stopped(Exception):
    """Raised inside a worker when it is told to stop (or its controller is gone)."""


_STOP_POLL_S = 0.05
"""Longest a worker sleeps without re-checking the shared stop flag, in seconds (bounds how long a
stop takes when the pipe's EOF cannot arrive, e.g. a forked child of the controller keeps its end)."""

_READY = b"ready"
"""What a worker sends on its pipe once it is set up."""


def _worker_main(
    index: int,
    period_s: float,
    matrix_size: int,
    intensity: Any,
    anchor: Any,
    busy_s: Any,
    elapsed_s: Any,
    stop_flag: Any,
    conn: Any,
) -> None:
    """Entry point of one CPU worker process: duty-cycled float32 matmuls on one core.

    The worker shares no lock, condition or semaphore with its controller, so dying at any moment
    (e.g. killed by the same SIGTERM as its process group) can never block the controller. It stops
    when any of these happens, checked before every work chunk and at least every
    :data:`_STOP_POLL_S` seconds while idle:

    - its end of the pipe becomes readable: the controller closed its end (:meth:`CpuWorkerPool.close`)
      or died (the kernel closes it);
    - the shared stop flag is set (a plain shared byte: written without a lock);
    - its parent process changed (the controller died and the worker was re-parented).

    SIGINT is ignored (a Ctrl+C reaches the whole foreground group; the controller stops the
    workers); SIGTERM keeps its default action (the worker dies at once, holding nothing).

    Args:
        index: Worker number (slot in the shared arrays, RNG seed).
        period_s: Period length in seconds.
        matrix_size: Side of the square matrices multiplied in each chunk.
        intensity: Shared ``RawValue('d')``: the commanded duty cycle, read every period.
        anchor: Shared ``RawValue('d')``: the controller's grid anchor in monotonic seconds (NaN = not
            started; the worker idles).
        busy_s: Shared ``RawArray('d')``: cumulative busy seconds per worker.
        elapsed_s: Shared ``RawArray('d')``: cumulative period seconds per worker.
        stop_flag: Shared ``RawValue('b')``: non-zero tells the worker to stop.
        conn: This worker's end of its own pipe to the controller: :data:`_READY` is sent on it once
            set up; it becoming readable (EOF) means stop.
    """
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import numpy as np  # after the parent set the BLAS thread variables to 1

    parent = os.getppid()

    def should_stop(wait_s: float = 0.0) -> bool:
        try:
            readable = conn.poll(wait_s)
        except (OSError, EOFError, ValueError):
            return True
        return readable or bool(stop_flag.value) or os.getppid() != parent

    rng = np.random.default_rng(index)
    a = rng.standard_normal((matrix_size, matrix_size), dtype=np.float32)
    b = rng.standard_normal((matrix_size, matrix_size), dtype=np.float32)
    out = np.empty_like(a)

    def chunk() -> None:
        if should_stop():
            raise _Stopped
        np.matmul(a, b, out=out)

    def sleep(seconds: float) -> None:
        deadline = time.monotonic() + max(0.0, seconds)
        while True:
            left = deadline - time.monotonic()
            if should_stop(min(max(0.0, left), _STOP_POLL_S)):
                raise _Stopped
            if left <= _STOP_POLL_S:
                return

    sched = DutyCycleScheduler(period_s, sleep=sleep)
    try:
        chunk()  # warm-up
        conn.send_bytes(_READY)
        while True:
            origin = anchor.value
            if math.isnan(origin):  # not started yet
                sleep(min(0.005, period_s))
                continue
            sched.align(origin)
            res = sched.run_period(intensity.value, chunk)
            busy_s[index] += res.busy_s
            elapsed_s[index] += res.period_s
    except (_Stopped, OSError, EOFError):  # OSError/EOFError: the controller's end went away
        return
    finally:
        with contextlib.suppress(OSError):
            conn.close()


@contextlib.contextmanager
def _single_threaded_children() -> Iterator[None]:
    """Set the BLAS thread variables to 1 while children are spawned, then restore them."""
    saved = {k: os.environ.get(k) for k in _BLAS_ENV}
    os.environ.update(dict.fromkeys(_BLAS_ENV, "1"))
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _shutdown(processes: list[Any], conns: list[Any], stop_flag: Any, timeout_s: float) -> None:
    """Stop worker processes without ever blocking on them for longer than about ``timeout_s + 2`` s.

    Sets the shared stop flag and closes the controller's pipe ends (neither can block, whatever
    state a worker is in, dead or alive), joins each worker until a common deadline of
    ``timeout_s`` seconds, then terminates (SIGTERM, 1 s) and kills (SIGKILL, 1 s) any straggler.
    A worker that is already a zombie is reaped by the join. Never raises for a worker's state.

    Args:
        processes: The worker ``Process`` objects (closed afterwards where they have exited).
        conns: The controller's ends of the workers' pipes.
        stop_flag: The shared stop flag.
        timeout_s: Seconds to wait for the workers to stop on their own.
    """
    stop_flag.value = 1
    for c in conns:
        with contextlib.suppress(OSError):
            c.close()
    deadline = time.monotonic() + max(0.0, timeout_s)
    for p in processes:
        with contextlib.suppress(ValueError, OSError):
            p.join(max(0.0, deadline - time.monotonic()))
    for p in processes:
        with contextlib.suppress(ValueError, OSError):
            if p.is_alive():
                log.warning(
                    "Synthetic load worker pid %s did not stop in %.1f s; terminating it",
                    p.pid,
                    timeout_s,
                )
                p.terminate()
                p.join(1.0)
            if p.is_alive():
                p.kill()
                p.join(1.0)
    for p in processes:
        with contextlib.suppress(ValueError):
            p.close()


class CpuWorkerPool:
    """Extra CPU load processes that follow the controller's duty-cycle grid.

    Each worker is a ``spawn``-context process running float32 matmuls of ``matrix_size`` on one BLAS
    thread. Every period it reads the shared intensity and grid anchor (:meth:`publish`), works for
    ``intensity * period_s`` and sleeps until the deadline. :meth:`close` (also run by a finalizer
    and at interpreter exit; the workers are daemons and exit when their parent disappears) stops
    them and leaves no process behind.

    The controller and the workers share only lock-free shared memory and one pipe per worker, so
    no wait of the controller depends on a worker being alive: a worker killed at any moment (by
    the same signal as its process group, by the OOM killer) never blocks :meth:`start` or
    :meth:`close`, and every wait on a worker is bounded.

    Args:
        n_workers: Number of worker processes (0 = none).
        period_s: Period length in seconds.
        matrix_size: Side of the square matrices in each chunk.
        start_timeout_s: Seconds to wait for the workers to be ready.

    Raises:
        rle.errors.ConfigError: If ``n_workers`` is negative.
    """

    def __init__(
        self, n_workers: int, period_s: float, matrix_size: int, start_timeout_s: float = 120.0
    ) -> None:
        if n_workers < 0:
            raise ConfigError(f"CpuWorkerPool needs n_workers >= 0, got {n_workers}.")
        self.n_workers = n_workers
        self.period_s = period_s
        self.matrix_size = matrix_size
        self.start_timeout_s = start_timeout_s
        self._ctx = mp.get_context("spawn")
        self._intensity = self._ctx.RawValue("d", 0.0)
        self._anchor = self._ctx.RawValue("d", math.nan)
        self._busy_s = self._ctx.RawArray("d", max(1, n_workers))
        self._elapsed_s = self._ctx.RawArray("d", max(1, n_workers))
        self._stop_flag = self._ctx.RawValue("b", 0)
        self._processes: list[Any] = []
        self._conns: list[Any] = []
        self._finalizer: weakref.finalize[Any, Any] | None = None

    @property
    def pids(self) -> list[int]:
        """Process ids of the started workers."""
        return [int(p.pid) for p in self._processes if p.pid is not None]

    def start(self) -> None:
        """Spawn the workers and wait until each is ready (idle until the first :meth:`publish`).

        Waits at most ``start_timeout_s`` seconds in all, polling each worker's pipe and liveness
        every 0.1 s.

        Raises:
            rle.errors.RLEError: If a worker dies or is not ready within ``start_timeout_s`` (the
                other workers are stopped first).
        """
        if self._processes or self.n_workers == 0:
            return
        self._stop_flag.value = 0
        with _single_threaded_children():
            for i in range(self.n_workers):
                ours, theirs = self._ctx.Pipe(duplex=True)
                p = self._ctx.Process(
                    target=_worker_main,
                    args=(
                        i,
                        self.period_s,
                        self.matrix_size,
                        self._intensity,
                        self._anchor,
                        self._busy_s,
                        self._elapsed_s,
                        self._stop_flag,
                        theirs,
                    ),
                    name=f"rle-synthetic-load-{i}",
                    daemon=True,
                )
                try:
                    p.start()
                finally:
                    theirs.close()  # the child has its own copy; EOF must depend on ours only
                self._processes.append(p)
                self._conns.append(ours)
                if self._finalizer is None:
                    self._finalizer = weakref.finalize(
                        self, _shutdown, self._processes, self._conns, self._stop_flag, 5.0
                    )
        deadline = time.monotonic() + self.start_timeout_s
        pending = list(zip(self._processes, self._conns, strict=True))
        while pending:
            still = []
            for p, conn in pending:
                try:
                    if not conn.poll(0.1 / len(pending)):
                        if not p.is_alive():
                            self._fail(f"exited with code {p.exitcode}")
                        still.append((p, conn))
                    elif conn.recv_bytes() != _READY:
                        self._fail("sent an unexpected message")
                except (OSError, EOFError):  # the worker's end closed: it died during set-up
                    p.join(1.0)
                    self._fail(f"exited with code {p.exitcode}")
            pending = still
            if pending and time.monotonic() > deadline:
                self._fail(f"was not ready within {self.start_timeout_s:g} s")
        log.info("Started %d synthetic load worker process(es): pids %s", self.n_workers, self.pids)

    def _fail(self, why: str) -> None:
        n = len(self._processes)
        self.close(timeout_s=1.0)
        raise RLEError(
            f"A synthetic load worker {why} (of {n} spawned). "
            "Check the worker's stderr; lower workload.workers or workload.matrix_size."
        )

    def publish(self, intensity: float, anchor_s: float) -> None:
        """Command the intensity of the next period and the grid anchor.

        Args:
            intensity: Duty cycle in [0, 1].
            anchor_s: The controller's grid anchor in monotonic seconds.
        """
        self._intensity.value = min(1.0, max(0.0, float(intensity)))
        self._anchor.value = float(anchor_s)

    def duty_cycles(self) -> list[float]:
        """Return each worker's measured duty cycle since it started working (busy / elapsed)."""
        return [
            (self._busy_s[i] / self._elapsed_s[i]) if self._elapsed_s[i] > 0 else 0.0
            for i in range(self.n_workers)
        ]

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop and reap every worker (idempotent).

        Returns within about ``timeout_s + 2`` seconds per call whatever state the workers are in
        (running, stopped, killed, zombie): see :func:`_shutdown`.

        Args:
            timeout_s: Seconds the workers get to stop on their own before SIGTERM, then SIGKILL.
        """
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if self._processes:
            n = len(self._processes)
            _shutdown(self._processes, self._conns, self._stop_flag, timeout_s)
            log.info("Stopped %d synthetic load worker process(es)", n)
            self._processes = []
            self._conns = []

    def __enter__(self) -> CpuWorkerPool:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
