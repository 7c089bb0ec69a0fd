"""Duty-cycle load: patterns, the period scheduler (fake clock) and CPU worker processes."""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from omegaconf import OmegaConf

from rle.errors import ConfigError
from rle.workloads.load import (
    CpuWorkerPool,
    DutyCycleScheduler,
    Pattern,
    intensity_at,
    pattern_from_config,
    steps_for_duration,
)

# ------------------------------------------------------------------------------------------ patterns


def test_constant_pattern_is_the_intensity() -> None:
    p = Pattern("constant", intensity=0.3)
    assert [intensity_at(t, p, None) for t in (0.0, 5.0, 1e6)] == [0.3, 0.3, 0.3]


def test_ramp_is_linear_over_the_duration_then_holds() -> None:
    p = Pattern("ramp")  # lab default 0.1 -> 0.9
    assert intensity_at(0.0, p, 100.0) == pytest.approx(0.1)
    assert intensity_at(50.0, p, 100.0) == pytest.approx(0.5)
    assert intensity_at(100.0, p, 100.0) == pytest.approx(0.9)
    assert intensity_at(500.0, p, 100.0) == pytest.approx(0.9)


def test_sine_follows_the_lab_shape_and_is_clipped() -> None:
    p = Pattern("sine")  # 0.5 + 0.3 sin(2 pi 0.1 Hz t)
    assert intensity_at(0.0, p, None) == pytest.approx(0.5)
    assert intensity_at(2.5, p, None) == pytest.approx(0.8)
    assert intensity_at(7.5, p, None) == pytest.approx(0.2)
    loud = Pattern("sine", sine_mean=0.9, sine_amplitude=0.5, sine_frequency_hz=1.0)
    assert intensity_at(0.25, loud, None) == 1.0
    assert intensity_at(0.75, loud, None) == pytest.approx(0.4)


def test_step_holds_each_level_for_an_equal_part() -> None:
    p = Pattern("step")  # 0.2, 0.4, 0.6, 0.8
    got = [intensity_at(t, p, 40.0) for t in (0.0, 9.99, 10.0, 25.0, 39.9, 40.0, 99.0)]
    assert got == [0.2, 0.2, 0.4, 0.6, 0.8, 0.8, 0.8]


def test_pattern_is_evaluated_at_each_time_not_frozen() -> None:
    p = Pattern("ramp", ramp_start=0.0, ramp_end=1.0)
    values = [intensity_at(k * 0.1, p, 1.0) for k in range(11)]
    assert values == sorted(values)
    assert len(set(values)) == 11


@pytest.mark.parametrize("kind", ["ramp", "step"])
def test_duration_patterns_need_a_duration(kind: str) -> None:
    with pytest.raises(ConfigError, match=r"needs the run duration.*duration_s"):
        intensity_at(1.0, Pattern(kind), None)


def test_config_mapping_defaults_and_overrides() -> None:
    cfg = OmegaConf.create({"pattern": "sine", "intensity": 0.5, "sine": {"amplitude": 0.1}})
    p = pattern_from_config(cfg)
    assert (p.kind, p.sine_mean, p.sine_amplitude, p.sine_frequency_hz) == ("sine", 0.5, 0.1, 0.1)
    assert intensity_at(2.5, cfg, None) == pytest.approx(0.6)
    assert pattern_from_config({}) == Pattern()


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        (
            {"pattern": "zigzag"},
            r"workload.pattern='zigzag' is not a known pattern.*constant, ramp, sine, step",
        ),
        ({"intensity": 1.5}, r"workload.intensity=1.5 is outside \[0, 1\]"),
        ({"intensity": -0.1}, r"workload.intensity=-0.1 is outside \[0, 1\]"),
        ({"ramp": {"end": 2}}, r"workload.ramp.end=2.0 is outside \[0, 1\]"),
        ({"step": {"levels": [0.5, 1.2]}}, r"workload.step.levels\[1\]=1.2 is outside"),
        ({"step": {"levels": "0.5"}}, r"workload.step.levels must be a list"),
        ({"pattern": "step", "step": {"levels": []}}, r"workload.step.levels is empty"),
        ({"sine": {"frequency_hz": 0}}, r"workload.sine.frequency_hz must be > 0"),
        ({"intensity": "high"}, r"workload.intensity must be a number"),
    ],
)
def test_bad_pattern_config_is_a_config_error(cfg: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        pattern_from_config(cfg)


@pytest.mark.parametrize(
    ("duration_s", "period_s", "steps"),
    [(1.1, 0.1, 11), (10.0, 0.25, 40), (0.05, 0.1, 1), (1.0, 0.3, 4)],
)
def test_steps_for_duration_is_ceil(duration_s: float, period_s: float, steps: int) -> None:
    assert steps_for_duration(duration_s, period_s) == steps


# ----------------------------------------------------------------------------------------- scheduler


class FakeClock:
    """A monotonic clock that only moves when work or sleep advances it."""

    def __init__(self, start_s: float = 1000.0) -> None:
        self.now_s = start_s
        self.slept_s: list[float] = []

    def __call__(self) -> float:
        return self.now_s

    def sleep(self, seconds: float) -> None:
        self.slept_s.append(seconds)
        self.now_s += seconds

    def chunk(self, seconds: float):  # noqa: ANN201 (test helper)
        def _work() -> None:
            self.now_s += seconds

        return _work


def _sched(clock: FakeClock, period_s: float = 0.1) -> DutyCycleScheduler:
    return DutyCycleScheduler(period_s, clock=clock, sleep=clock.sleep)


@pytest.mark.parametrize("intensity", [0.0, 0.1, 0.25, 0.5, 0.75, 1.0])
def test_duty_cycle_matches_intensity_on_a_fake_clock(intensity: float) -> None:
    clock = FakeClock()
    sched = _sched(clock)
    results = [sched.run_period(intensity, clock.chunk(0.0017)) for _ in range(50)]
    for r in results:
        # At intensity 1 the work runs up to the deadline and may overshoot it by one chunk.
        assert r.period_s == pytest.approx(0.1, abs=0.0017 if intensity == 1.0 else 1e-9)
        assert r.duty_cycle == pytest.approx(intensity, abs=0.0086)  # within half a chunk


def test_deadlines_do_not_drift() -> None:
    clock = FakeClock(start_s=0.0)
    sched = _sched(clock)
    starts = [sched.run_period(0.37, clock.chunk(0.0013)).start_s for _ in range(1000)]
    assert starts[-1] == pytest.approx(999 * 0.1, abs=1e-9)
    assert clock.now_s == pytest.approx(100.0, abs=1e-9)


def test_time_already_spent_in_the_period_counts_as_busy() -> None:
    clock = FakeClock()
    sched = _sched(clock)
    _ = sched.start_s  # period starts
    clock.now_s += 0.03  # e.g. the training step itself
    n = sched.work(0.5, clock.chunk(0.001))
    r = sched.finish()
    assert n == 20
    assert r.busy_s == pytest.approx(0.05)
    assert r.chunks == 20


def test_work_past_the_target_is_not_extended_and_idle_part_is_slept() -> None:
    clock = FakeClock()
    sched = _sched(clock)
    _ = sched.start_s
    clock.now_s += 0.08
    assert sched.work(0.5, clock.chunk(0.001)) == 0
    r = sched.finish()
    assert r.duty_cycle == pytest.approx(0.8)
    assert clock.slept_s == [pytest.approx(0.02)]


def test_an_overrun_reanchors_instead_of_bursting() -> None:
    clock = FakeClock(start_s=0.0)
    sched = _sched(clock)
    _ = sched.start_s
    clock.now_s += 0.25  # e.g. a stalled training step, longer than two periods
    r = sched.run_period(1.0, clock.chunk(0.001))
    assert r.busy_s == pytest.approx(0.25)
    assert r.chunks == 0
    assert r.duty_cycle == 1.0
    assert sched.anchor_s == pytest.approx(0.25)
    nxt = sched.run_period(0.5, clock.chunk(0.001))
    assert nxt.start_s == pytest.approx(0.25)
    assert nxt.period_s == pytest.approx(0.1)
    assert nxt.duty_cycle == pytest.approx(0.5, abs=0.01)


def test_align_follows_an_external_grid() -> None:
    clock = FakeClock(start_s=10.0)
    sched = _sched(clock)
    clock.now_s = 10.43
    sched.align(10.0)
    assert sched.deadline_s == pytest.approx(10.5)
    r = sched.run_period(1.0, clock.chunk(0.001))
    assert r.period_s == pytest.approx(0.07)
    sched.align(10.0)  # already on it: nothing changes
    assert sched.start_s == pytest.approx(10.5)
    assert sched.deadline_s == pytest.approx(10.6)


def test_a_slow_outlier_chunk_does_not_starve_later_periods() -> None:
    clock = FakeClock()
    sched = _sched(clock)
    durations = iter([0.05] + [0.001] * 1000)  # one preempted chunk, then normal ones

    def chunk() -> None:
        clock.now_s += next(durations)

    sched.run_period(0.6, chunk)
    later = [sched.run_period(0.3, chunk) for _ in range(3)]
    assert [r.duty_cycle for r in later] == [pytest.approx(0.3, abs=0.005)] * 3


@pytest.mark.parametrize("period_s", [0.0, -1.0, math.inf, math.nan])
def test_non_positive_period_is_a_config_error(period_s: float) -> None:
    with pytest.raises(ConfigError, match="workload.period_s must be a positive number of seconds"):
        DutyCycleScheduler(period_s)


# --------------------------------------------------------------------------------------- CPU workers


def test_worker_pool_follows_the_duty_cycle_and_leaves_no_process() -> None:
    pool = CpuWorkerPool(1, period_s=0.05, matrix_size=32)
    pool.start()
    try:
        pids = pool.pids
        assert len(pids) == 1
        assert psutil.Process(pids[0]).name()  # alive
        assert pool.duty_cycles() == [0.0]  # idle until the first publish
        pool.publish(0.5, time.monotonic())
        time.sleep(0.6)
        (duty,) = pool.duty_cycles()
        assert duty == pytest.approx(0.5, abs=0.15)
    finally:
        pool.close()
    assert pool.pids == []
    assert not any(
        psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids
    )
    pool.close()  # idempotent


def test_empty_pool_spawns_nothing() -> None:
    with CpuWorkerPool(0, period_s=0.05, matrix_size=8) as pool:
        assert pool.pids == []
        pool.publish(1.0, time.monotonic())
    assert pool.duty_cycles() == []


# ------------------------------------------------------------------------- shutdown that cannot hang

EXIT_LIMIT_S = 30.0
"""Generous bound on how long a stopped controller may take to exit (it needs about a second)."""


def _gone(pid: int) -> bool:
    """Whether ``pid`` no longer runs (absent, or a zombie not yet reaped by its new parent)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout_s} s")
        time.sleep(0.05)


def _close_in_thread(pool: CpuWorkerPool) -> threading.Thread:
    """Run ``pool.close()`` in a daemon thread (a hang then fails the test instead of blocking it)."""
    t = threading.Thread(target=pool.close, daemon=True)
    t.start()
    t.join(EXIT_LIMIT_S)
    return t


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_close_returns_when_a_worker_was_killed_while_idle(sig: signal.Signals) -> None:
    # Intensity 0.05: the workers spend 95 % of each period waiting; killing them there used to
    # leave a multiprocessing Condition's semaphore held, and close() blocked forever.
    pool = CpuWorkerPool(2, period_s=0.05, matrix_size=16)
    pool.start()
    pids = pool.pids
    pool.publish(0.05, time.monotonic())
    time.sleep(0.3)
    for pid in pids:
        os.kill(pid, sig)
    _wait_until(lambda: all(_gone(p) for p in pids), EXIT_LIMIT_S, "workers died")
    closer = _close_in_thread(pool)
    assert not closer.is_alive(), "close() hung on dead workers"
    assert pool.pids == []
    assert all(not psutil.pid_exists(p) for p in pids)  # reaped, not left as zombies


def test_a_worker_that_ignores_the_stop_is_killed_within_the_timeout() -> None:
    pool = CpuWorkerPool(1, period_s=0.05, matrix_size=16)
    pool.start()
    (pid,) = pool.pids
    os.kill(pid, signal.SIGSTOP)  # cannot read its pipe or flag any more
    try:
        t = threading.Thread(target=pool.close, args=(0.5,), daemon=True)
        t.start()
        t.join(EXIT_LIMIT_S)
        assert not t.is_alive(), "close() waited on a stopped worker without bound"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert not psutil.pid_exists(pid)


_CONTROLLER = textwrap.dedent(
    """
    import signal, sys, time
    from pathlib import Path
    from rle.workloads.load import CpuWorkerPool

    stop = []
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.append(signum))
    pool = CpuWorkerPool(2, period_s=0.05, matrix_size=16)
    pool.start()
    pool.publish(0.05, time.monotonic())
    out = Path(sys.argv[1])
    tmp = out.with_suffix(".tmp")
    tmp.write_text(" ".join(map(str, pool.pids)))
    tmp.rename(out)
    deadline = time.monotonic() + 120
    while not stop and time.monotonic() < deadline:
        time.sleep(0.01)
    pool.close()
    sys.exit(128 + (stop[0] if stop else 0))
    """
)


class _Controller:
    """A controller process (the pool's parent) in its own session, like a job under a scheduler."""

    def __init__(self, tmp: Path) -> None:
        self.pids_file = tmp / "pids"
        with (tmp / "stderr").open("w") as err:  # the child keeps its own copy
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _CONTROLLER, str(self.pids_file)],
                start_new_session=True,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        _wait_until(self.pids_file.exists, 120.0, "controller did not start its workers")
        self.workers = [int(p) for p in self.pids_file.read_text().split()]
        assert len(self.workers) == 2

    def kill_all(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(EXIT_LIMIT_S)


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[Callable[[], _Controller]]:
    started: list[_Controller] = []

    def _start() -> _Controller:
        d = tmp_path / f"c{len(started)}"
        d.mkdir()
        started.append(_Controller(d))
        return started[-1]

    yield _start
    for c in started:
        c.kill_all()


@pytest.mark.slow
@pytest.mark.parametrize("target", ["group", "main"])
def test_sigterm_to_the_group_or_the_controller_ends_everything(
    controller: Callable[[], _Controller], target: str
) -> None:
    for _ in range(4):  # the hang depended on where the worker was when the signal came: repeat
        c = controller()
        time.sleep(0.2)  # a few periods, mostly spent idle
        if target == "group":
            os.killpg(c.proc.pid, signal.SIGTERM)  # what timeout, scancel and systemd send
        else:
            os.kill(c.proc.pid, signal.SIGTERM)
        assert c.proc.wait(EXIT_LIMIT_S) == 128 + signal.SIGTERM
        _wait_until(lambda c=c: all(_gone(p) for p in c.workers), EXIT_LIMIT_S, "workers gone")


def test_workers_stop_when_their_controller_is_killed(
    controller: Callable[[], _Controller],
) -> None:
    c = controller()
    os.kill(c.proc.pid, signal.SIGKILL)  # no chance to close the pool
    c.proc.wait(EXIT_LIMIT_S)
    _wait_until(lambda: all(_gone(p) for p in c.workers), EXIT_LIMIT_S, "orphaned workers exited")


# ------------------------------------------------------------------ the same through python -m rle.train

_TRAIN = (
    "workload=synthetic",
    "workload.workers=2",  # one spawned worker whatever the machine
    "workload.intensity=0.1",  # the worker mostly waits: where the old shutdown hung
    "trainer.max_steps=-1",
    "trainer.enable_progress_bar=false",
    "telemetry=none",
    "tracking.flush_interval_s=0.2",
)


def _descendants(pid: int) -> list[int]:
    with contextlib.suppress(psutil.NoSuchProcess):
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    return []


@pytest.mark.slow
def test_sigterm_ends_a_synthetic_training_job_every_time(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "store" / "mlflow.db"
    env = {**os.environ, "RLE_PROJECT_ROOT": str(tmp_path / "project")}
    env.pop("MLFLOW_TRACKING_URI", None)

    def steps(run_count: int) -> int:
        """train/loss points of the newest run, 0 until there are ``run_count`` runs."""
        if not db.exists():
            return 0
        try:
            with contextlib.closing(sqlite3.connect(db, timeout=1.0)) as con:
                runs = con.execute("SELECT run_uuid FROM runs ORDER BY start_time").fetchall()
                if len(runs) < run_count:
                    return 0
                (n,) = con.execute(
                    "SELECT COUNT(*) FROM metrics WHERE run_uuid = ? AND key = 'train/loss'",
                    runs[-1],
                ).fetchone()
                return int(n)
        except sqlite3.Error:  # being created by the job right now
            return 0

    targets = ["group", "main", "group", "main"]
    for i, target in enumerate(targets, start=1):
        log = (tmp_path / f"job{i}.log").open("w")
        proc = subprocess.Popen(
            [sys.executable, "-m", "rle.train", *_TRAIN, f"tracking.uri=sqlite:///{db}"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            _wait_until(
                lambda i=i, proc=proc: steps(i) >= 3 or proc.poll() is not None,
                180.0,
                "job trained 3 steps",
            )
            assert proc.poll() is None, (tmp_path / f"job{i}.log").read_text()[-3000:]
            children = _descendants(proc.pid)
            assert children, "the job spawned no load worker"
            if target == "group":
                os.killpg(proc.pid, signal.SIGTERM)
            else:
                os.kill(proc.pid, signal.SIGTERM)
            try:
                rc = proc.wait(EXIT_LIMIT_S)
            except subprocess.TimeoutExpired:
                raise AssertionError(
                    f"job {i} ({target} SIGTERM) still running after {EXIT_LIMIT_S} s"
                ) from None
            assert rc == 128 + signal.SIGTERM, (tmp_path / f"job{i}.log").read_text()[-3000:]
            _wait_until(
                lambda children=children: all(_gone(p) for p in children),
                EXIT_LIMIT_S,
                "no process of the job left",
            )
        finally:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(EXIT_LIMIT_S)
            log.close()
    with contextlib.closing(sqlite3.connect(db)) as con:
        statuses = [s for (s,) in con.execute("SELECT status FROM runs ORDER BY start_time")]
    assert statuses == ["KILLED"] * len(targets)
