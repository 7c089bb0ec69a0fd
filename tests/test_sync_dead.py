"""``rle.sync --close-dead``: runs whose process is gone end KILLED (reason tagged); live ones stay.

The fast tests build runs with owner tags directly in a SQLite store (a dead pid, a live one, a
reused pid, another host, no owner); the slow test closes dead runs while a real
``python -m rle.train`` job trains (its run is left alone), then SIGKILLs it and closes again.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from mlflow import MlflowClient

from rle.sync import (
    OWNER_ALIVE,
    OWNER_GONE,
    OWNER_OTHER_HOST,
    OWNER_UNKNOWN,
    close_dead_runs,
    main,
    owner_status,
    owner_tags,
)
from rle.tracking import keys
from rle.tracking.logger import default_spool_dir, ensure_store
from rle.tracking.spool import Spool

EXPERIMENT = "dead-runs"


def _dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(30)
    return proc.pid


def _tags_of_dead_process() -> dict[str, str]:
    return {**owner_tags(), keys.TAG_PID: str(_dead_pid())}


@pytest.fixture
def store(tmp_path: Path) -> str:
    uri = "sqlite:///" + (tmp_path / "store" / "mlflow.db").as_posix()
    ensure_store(uri)
    return uri


def _new_run(uri: str, name: str, tags: dict[str, str]) -> str:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    exp_id = exp.experiment_id if exp else client.create_experiment(EXPERIMENT)
    return str(client.create_run(exp_id, run_name=name, tags=tags).info.run_id)


def _state(uri: str, run_id: str) -> tuple[str, str | None]:
    run = MlflowClient(uri).get_run(run_id)
    return run.info.status, run.data.tags.get(keys.TAG_END_REASON)


# ------------------------------------------------------------------------------ owner status


def test_owner_status_tells_live_dead_reused_and_foreign_owners_apart() -> None:
    me = owner_tags()
    assert me[keys.TAG_HOST] == socket.gethostname()
    assert me[keys.TAG_PID] == str(os.getpid())
    assert owner_status(me) == OWNER_ALIVE
    assert owner_status(_tags_of_dead_process()) == OWNER_GONE
    # this pid exists, but was started long after the recorded start time: a reused pid
    assert owner_status({**me, keys.TAG_PID_START_TIME: "1000.0"}) == OWNER_GONE
    assert owner_status({**me, keys.TAG_HOST: "elsewhere"}) == OWNER_OTHER_HOST
    assert owner_status({keys.TAG_HOST: socket.gethostname()}) == OWNER_UNKNOWN
    assert owner_status({**me, keys.TAG_PID: "not-a-pid"}) == OWNER_UNKNOWN


def test_a_zombie_owner_counts_as_gone() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 30
        while psutil.Process(proc.pid).status() != psutil.STATUS_ZOMBIE:  # exited, not reaped
            assert time.monotonic() < deadline, "the child did not exit within 30 s"
            time.sleep(0.05)
        tags = {
            **owner_tags(),
            keys.TAG_PID: str(proc.pid),
            keys.TAG_PID_START_TIME: f"{psutil.Process(proc.pid).create_time():.3f}",
        }
        assert owner_status(tags) == OWNER_GONE
    finally:
        proc.wait(30)


# ------------------------------------------------------------------------------ closing


def test_close_dead_ends_only_the_runs_of_gone_processes_on_this_host(
    store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    dead = _new_run(store, "dead", _tags_of_dead_process())
    alive = _new_run(store, "alive", owner_tags())
    foreign = _new_run(store, "foreign", {**_tags_of_dead_process(), keys.TAG_HOST: "elsewhere"})
    unowned = _new_run(store, "unowned", {"workload": "synthetic"})
    ended = _new_run(store, "ended", _tags_of_dead_process())
    MlflowClient(store).set_terminated(ended, "FINISHED")

    args = ["--close-dead", "--tracking-uri", store, "--experiment", EXPERIMENT]
    assert main([*args, "--dry-run"]) == 0
    assert {_state(store, r)[0] for r in (dead, alive, foreign, unowned)} == {"RUNNING"}

    assert main(args) == 0
    assert _state(store, dead) == ("KILLED", keys.END_REASON_PROCESS_GONE)
    assert MlflowClient(store).get_run(dead).data.tags[keys.TAG_CLOSED_BY].startswith("rle.sync")
    assert _state(store, alive) == ("RUNNING", None)
    assert _state(store, foreign) == ("RUNNING", None)  # listed, not touched
    assert _state(store, unowned) == ("RUNNING", None)  # not an rle run with an owner
    assert _state(store, ended) == ("FINISHED", None)
    listed = capsys.readouterr().out
    assert foreign in listed
    assert unowned not in listed

    # closing again finds nothing more to do
    assert main(args) == 0
    assert _state(store, alive) == ("RUNNING", None)

    # a run of another host is closed when named explicitly...
    assert main([*args, "--run-id", foreign]) == 0
    assert _state(store, foreign) == ("KILLED", keys.END_REASON_CLOSED_BY_USER)
    # ...but a run whose owner is alive on this host is refused even then
    assert main([*args, "--run-id", alive]) == 1
    assert _state(store, alive) == ("RUNNING", None)
    assert main([*args, "--run-id", "0" * 32]) == 1  # no such run


def test_a_dead_run_with_a_spool_is_ended_by_its_spool_first(store: str) -> None:
    """The spool of a job that ended while the store was away holds its own final status."""
    client = MlflowClient(store)
    run_id = _new_run(store, "spooled", _tags_of_dead_process())
    exp_id = client.get_run(run_id).info.experiment_id
    spool = Spool(default_spool_dir(run_id), run_id, store, exp_id)
    spool.write("tags", [{"k": "late", "v": "yes"}])
    spool.write("terminate", [{"status": "FINISHED", "end_time": int(time.time() * 1000)}])

    report = close_dead_runs(store, experiments=[EXPERIMENT])
    assert [(r.run_id, r.action) for r in report] == [(run_id, "not_running")]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"  # the job's own outcome, not KILLED
    assert run.data.tags["late"] == "yes"
    assert keys.TAG_END_REASON not in run.data.tags


def test_close_dead_arguments_are_checked(store: str) -> None:
    assert main([]) == 2  # neither a spool nor --close-dead
    assert main(["--run-id", "abc"]) == 2  # --run-id without --close-dead
    assert main(["--close-dead", "--tracking-uri", store, "--experiment", "no-such"]) == 2
    assert main(["--close-dead", "--tracking-uri", "file:///tmp/mlruns"]) == 2  # refused URI


# ------------------------------------------------------------------------------ a real job

JOB = (
    "workload=synthetic_cpu",
    "workload.intensity=0.1",
    "workload.period_s=0.1",
    "workload.workers=1",
    "trainer.accelerator=cpu",
    "trainer.max_steps=-1",  # trains until it is killed
    "trainer.enable_progress_bar=false",
    "telemetry=fake",
    "telemetry.sample_hz=10",
    "tracking.flush_interval_s=0.5",
)


class Job:
    """``python -m rle.train`` in its own process group, writing into the shared SQLite store."""

    def __init__(self, root: Path, store: str, name: str) -> None:
        self.log = root / f"{name}.log"
        self.name = name
        env = {
            **os.environ,
            "RLE_PROJECT_ROOT": str(root),
            "MLFLOW_TRACKING_URI": store,
            "MLFLOW_EXPERIMENT_NAME": EXPERIMENT,
        }
        with self.log.open("w") as fh:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "rle.train", *JOB, f"run_name={name}"],
                stdout=fh,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)


def _wait_for_points(
    store: str, names: set[str], timeout_s: float, jobs: list[Job]
) -> dict[str, str]:
    """Wait until every named run exists and has 3 steps of train/loss; run name -> run id."""
    client = MlflowClient(store)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for j in jobs:
            assert j.proc.poll() is None, f"{j.name} exited:\n{j.log.read_text()[-3000:]}"
        exp = client.get_experiment_by_name(EXPERIMENT)
        runs = client.search_runs([exp.experiment_id]) if exp else []
        ids = {r.info.run_name: r.info.run_id for r in runs if r.info.run_name in names}
        if set(ids) == names and all(
            len(client.get_metric_history(rid, "train/loss")) >= 3 for rid in ids.values()
        ):
            return ids
        time.sleep(0.5)
    logs = "\n".join(f"--- {j.name}\n{j.log.read_text()[-2000:]}" for j in jobs)
    raise AssertionError(f"runs {sorted(names)} had no 3 steps within {timeout_s} s:\n{logs}")


@pytest.fixture
def job(tmp_path: Path, store: str) -> Iterator[Job]:
    started = Job(tmp_path, store, "victim")
    try:
        yield started
    finally:
        started.kill()


def _close_dead(store: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rle.sync", "--close-dead", "--tracking-uri", store],
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"},
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_a_training_job_is_left_alone_while_alive_and_closed_once_sigkilled(
    store: str, job: Job
) -> None:
    run_id = _wait_for_points(store, {"victim"}, 180.0, [job])["victim"]
    tags = MlflowClient(store).get_run(run_id).data.tags
    assert tags[keys.TAG_PID] == str(job.proc.pid)  # the job records its owner
    assert tags[keys.TAG_HOST] == socket.gethostname()

    _close_dead(store)  # while it trains: not touched
    assert job.proc.poll() is None
    assert _state(store, run_id) == ("RUNNING", None)

    job.kill()
    assert _state(store, run_id) == ("RUNNING", None)  # nobody ended it
    _close_dead(store)
    assert _state(store, run_id) == ("KILLED", keys.END_REASON_PROCESS_GONE)
