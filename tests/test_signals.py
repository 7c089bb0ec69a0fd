"""A pre-empted job (``python -m rle.train``) ends KILLED with its data; a SIGKILLed one loses nothing flushed.

The three jobs start together (a module fixture) so their imports overlap; each test then waits
for its job's first metrics in its own SQLite store and sends the signal.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest
from mlflow import MlflowClient

from rle.sync import main as sync_main
from support.jobs import Job, loss_steps

# run twice in one session (tests/conftest.py: attempt); the jobs are started anew for each attempt
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("attempt")]

JOB = (
    "workload=synthetic_cpu",
    "workload.intensity=0.1",
    "workload.period_s=0.1",
    "workload.workers=1",
    "trainer.accelerator=cpu",
    "trainer.max_steps=1000",  # ~100 s: always still training when the signal comes
    "trainer.enable_progress_bar=false",
    "telemetry=fake",
    "telemetry.sample_hz=10",
    "tracking.flush_interval_s=0.5",
)


@pytest.fixture(scope="module")
def jobs(tmp_path_factory: pytest.TempPathFactory, attempt: int) -> Iterator[dict[str, Job]]:
    base = tmp_path_factory.mktemp(f"signals{attempt}")
    started = {name: Job(base / name, JOB) for name in ("sigterm", "sigint", "sigkill")}
    try:
        yield started
    finally:
        for job in started.values():
            job.stop()


@pytest.mark.parametrize(
    ("name", "signum"), [("sigterm", signal.SIGTERM), ("sigint", signal.SIGINT)]
)
def test_a_preempted_job_flushes_and_ends_killed(
    jobs: dict[str, Job], name: str, signum: signal.Signals
) -> None:
    job = jobs[name]
    run_id, seen = job.wait_for_steps(3)
    job.proc.send_signal(signum)
    assert job.proc.wait(90) == 128 + signum, job.log.read_text()[-3000:]
    client = MlflowClient(job.uri)
    run = client.get_run(run_id)
    assert run.info.status == "KILLED"
    assert run.data.tags["rle.end_reason"] == "signal"
    assert run.data.tags["rle.signal"] == signum.name
    steps = loss_steps(job.uri, run_id)
    assert steps == list(range(len(steps)))  # every step it trained, none missing
    assert len(steps) >= seen
    assert run.data.metrics["rle/gpu_0/rle_smoothed_mean"] > 0  # the callback's end-of-run work
    arts = {a.path for a in client.list_artifacts(run_id, "telemetry")}
    assert "telemetry/samples" in arts  # events.jsonl only when there were events
    assert not (job.root / "outputs" / "spool" / run_id).exists()  # all flushed


def test_after_sigkill_every_flushed_sample_is_in_the_store_or_the_spool(
    jobs: dict[str, Job],
) -> None:
    job = jobs["sigkill"]
    run_id, seen = job.wait_for_steps(5)
    time.sleep(1.0)  # > flush_interval_s: more steps flushed than we saw
    os.killpg(job.proc.pid, signal.SIGKILL)
    job.proc.wait(30)
    spool = job.root / "outputs" / "spool" / run_id
    assert (spool / "manifest.json").exists()
    assert sync_main([str(spool)]) == 0  # whatever was spooled but not sent
    assert MlflowClient(job.uri).get_run(run_id).info.status == "RUNNING"  # nobody ended it
    steps = loss_steps(job.uri, run_id)
    assert steps == list(range(len(steps)))
    assert len(steps) > seen  # the second after the last look was flushed too
