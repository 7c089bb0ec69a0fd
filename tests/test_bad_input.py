"""The bad-input catalogue: every entry point, every kind of bad input, the exact error it gives.

One row per bad input: config values, training data files, tracking URIs, legacy recordings
(``rle.ingest``) and spool directories (``rle.sync``), with the error type and the message it
must carry. Training inputs are checked before the MLflow run is created, so a bad job leaves no
run behind. A few rows go through the command line (exit status and message).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from mlflow import MlflowClient
from omegaconf import DictConfig

from rle.errors import (
    ConfigError,
    DataError,
    ImportFormatError,
    MetricInputError,
    RLEError,
    TrackingError,
)
from rle.paths import resolve_tracking
from rle.train import run_training
from support.mlflow_server import free_port


@dataclass(frozen=True)
class Bad:
    """A bad input to ``run_training``: overrides (``{d}`` is a folder of bad files) and env."""

    overrides: tuple[str, ...]
    error: type[BaseException]
    match: str
    env: dict[str, str] = field(default_factory=dict)


CLOSED_PORT = "127.0.0.1:CLOSED"
"""Replaced by 127.0.0.1 and a port nothing listens on."""

TRAINING: dict[str, Bad] = {
    # ------------------------------------------------------------------ config values
    # (types and unknown choices fail earlier, at compose time: COMPOSE below)
    "trainer.max_steps 0": Bad(
        ("trainer.max_steps=0",),
        ConfigError,
        r"trainer\.max_steps=0(\.0)? is out of range: it must be an\ integer\ >=\ 1,\ or\ \-1\ \(no\ limit\)",
    ),
    "trainer.max_epochs 0": Bad(
        ("trainer.max_epochs=0",),
        ConfigError,
        r"trainer\.max_epochs=0(\.0)? is out of range: it must be an\ integer\ >=\ 1,\ \-1\ \(no\ limit\)\ or\ null",
    ),
    "trainer.log_every_n_steps 0": Bad(
        ("trainer.log_every_n_steps=0",),
        ConfigError,
        r"trainer\.log_every_n_steps=0(\.0)? is out of range: it must be an\ integer\ >=\ 1",
    ),
    "trainer.accumulate_grad_batches 0": Bad(
        ("trainer.accumulate_grad_batches=0",),
        ConfigError,
        r"trainer\.accumulate_grad_batches=0(\.0)? is out of range: it must be an\ integer\ >=\ 1",
    ),
    "trainer.gradient_clip_val -1": Bad(
        ("trainer.gradient_clip_val=-1",),
        ConfigError,
        r"trainer\.gradient_clip_val=\-1(\.0)? is out of range: it must be null\ or\ a\ number\ >=\ 0",
    ),
    "seed -1": Bad(
        ("seed=-1",),
        ConfigError,
        r"seed=\-1(\.0)? is out of range: it must be an\ integer\ >=\ 0",
    ),
    "data.num_workers -1": Bad(
        ("data.num_workers=-1",),
        ConfigError,
        r"data\.num_workers=\-1(\.0)? is out of range: it must be an\ integer\ >=\ 0",
    ),
    "telemetry.sample_hz 0": Bad(
        ("telemetry.sample_hz=0",),
        ConfigError,
        r"telemetry\.sample_hz=0(\.0)? is out of range: it must be a\ rate\ in\ Hz,\ 0\ <\ sample_hz\ <=\ 1000",
    ),
    "telemetry.sample_hz 1e6": Bad(
        ("telemetry.sample_hz=1e6",),
        ConfigError,
        r"telemetry\.sample_hz=1000000(\.0)? is out of range: it must be a\ rate\ in\ Hz,\ 0\ <\ sample_hz\ <=\ 1000",
    ),
    "telemetry.sample_hz 1000000": Bad(
        ("telemetry.sample_hz=1000000",),
        ConfigError,
        r"telemetry\.sample_hz=1000000(\.0)? is out of range: it must be a\ rate\ in\ Hz,\ 0\ <\ sample_hz\ <=\ 1000",
    ),
    # Lightning's own checks, passed on before the run exists
    "precision": Bad(("trainer.precision=99",), ConfigError, r"Precision 99 is invalid"),
    "strategy": Bad(("trainer.strategy=bogus",), ConfigError, r"invalid strategy name"),
    "clip algorithm": Bad(
        ("trainer.gradient_clip_algorithm=l3",),
        ConfigError,
        r"`gradient_clip_algorithm` l3 is invalid",
    ),
    "devices 0": Bad(("trainer.devices=0",), ConfigError, r"Trainer\(devices=0\)"),
    "devices too many": Bad(
        ("trainer.devices=4096",),
        ConfigError,
        r"trainer\.devices=4096 but this machine offers \d+ CPU cores",
    ),
    "batch_size 0": Bad(
        ("data.batch_size=0",), DataError, r"data\.batch_size must be at least 1, got 0"
    ),
    "block_size 1": Bad(
        ("data.block_size=1",), DataError, r"data\.block_size must be at least 2 tokens, got 1"
    ),
    "num_nodes without a launcher": Bad(
        ("trainer.num_nodes=2",),
        ConfigError,
        r"trainer\.num_nodes=2 but this process was not started by a multi-node launcher",
    ),
    "block longer than context": Bad(
        ("data.block_size=256",),
        ConfigError,
        r"data\.block_size=256 is longer than the model's context \(workload\.model\.n_positions=128\)",
    ),
    "rle profile": Bad(("telemetry.rle.profile=v9",), MetricInputError, r"v9"),
    "synthetic intensity": Bad(
        ("workload=synthetic_cpu", "workload.intensity=1.5"),
        ConfigError,
        r"workload\.intensity=1\.5 is outside \[0, 1\]: intensity is a duty cycle",
    ),
    "synthetic period": Bad(
        ("workload=synthetic_cpu", "workload.period_s=0"),
        ConfigError,
        r"workload\.period_s must be a positive number of seconds, got 0",
    ),
    "tracking.drain_timeout_s -1": Bad(
        ("tracking.drain_timeout_s=-1",),
        ConfigError,
        r"tracking\.drain_timeout_s=\-1(\.0)? is out of range: it must be a\ number\ of\ seconds\ >=\ 0",
    ),
    "tracking.flush_interval_s 0": Bad(
        ("tracking.flush_interval_s=0",),
        ConfigError,
        r"tracking\.flush_interval_s=0(\.0)? is out of range: it must be a\ number\ of\ seconds\ >\ 0",
    ),
    "tracking.connect_timeout_s 0": Bad(
        ("tracking.connect_timeout_s=0",),
        ConfigError,
        r"tracking\.connect_timeout_s=0(\.0)? is out of range: it must be a\ number\ of\ seconds\ >\ 0",
    ),
    "tracking.http_max_retries -2": Bad(
        ("tracking.http_max_retries=-2",),
        ConfigError,
        r"tracking\.http_max_retries=\-2(\.0)? is out of range: it must be an\ integer\ >=\ 0",
    ),
    "secret pattern": Bad(
        ("tracking.secret_pattern='(unclosed'",),
        ConfigError,
        r"tracking\.secret_pattern='\(unclosed' is not a valid regular expression",
    ),
    # ------------------------------------------------------------------ data files
    "data missing": Bad(
        ("data.path={d}/missing.jsonl",), DataError, r"data\.path '.*missing\.jsonl' does not exist"
    ),
    "data empty": Bad(
        ("data.path={d}/empty.jsonl",),
        DataError,
        r"empty\.jsonl: no examples found \(the file is empty\)",
    ),
    "data torn json": Bad(
        ("data.path={d}/torn.jsonl",), DataError, r"torn\.jsonl:2: not valid JSON"
    ),
    "data not an object": Bad(
        ("data.path={d}/list.jsonl",), DataError, r"list\.jsonl:1: expected a JSON object, got list"
    ),
    "data wrong fields": Bad(
        ("data.path={d}/fields.jsonl",),
        DataError,
        r"fields\.jsonl:1: expected string fields 'prompt' and 'response', or 'text'; got keys \['question'\]",
    ),
    "data not utf-8": Bad(
        ("data.path={d}/binary.jsonl",),
        DataError,
        r"binary\.jsonl: not UTF-8 text \(byte 0xff at offset 0\)",
    ),
    "data folder without text": Bad(
        ("data.path={d}/no_text",), DataError, r"no_text: no text files found"
    ),
    "data folder not utf-8": Bad(
        ("data.path={d}/latin1",), DataError, r"latin1: none of the 1 candidate files is UTF-8 text"
    ),
    "data shorter than a block": Bad(
        ("data.path={d}/short.jsonl",), DataError, r"fewer than one block of 32"
    ),
    "fewer blocks than batch_size": Bad(
        ("data.path={d}/few_blocks.jsonl", "data.batch_size=64"),
        DataError,
        r"The training text makes \d+ blocks of data\.block_size=32 tokens, fewer than "
        r"data\.batch_size=64: no full batch, so no training step\. Give more text, or set "
        r"data\.batch_size to at most \d+",
    ),
    # ------------------------------------------------------------------ tracking URIs
    "file store in config": Bad(
        ("tracking.uri=./mlruns",),
        ConfigError,
        r"Unsupported tracking URI './mlruns' \(from tracking\.uri\).*file stores",
    ),
    "file store in env": Bad(
        (),
        ConfigError,
        r"Unsupported tracking URI 'file:///tmp/mlruns' \(from MLFLOW_TRACKING_URI\)",
        {"MLFLOW_TRACKING_URI": "file:///tmp/mlruns"},
    ),
    "unknown scheme": Bad(
        (),
        ConfigError,
        r"Unsupported tracking URI 'ftp://host/x'",
        {"MLFLOW_TRACKING_URI": "ftp://host/x"},
    ),
    "server not listening": Bad(
        (),
        TrackingError,
        r"Cannot reach the MLflow tracking server at http://127\.0\.0\.1:\d+",
        {"MLFLOW_TRACKING_URI": f"http://{CLOSED_PORT}"},
    ),
    "server port not a number": Bad(
        (),
        TrackingError,
        r"Cannot reach the MLflow tracking server at http://127\.0\.0\.1:notaport",
        {"MLFLOW_TRACKING_URI": "http://127.0.0.1:notaport"},
    ),
    # credentials go in MLFLOW_TRACKING_USERNAME/PASSWORD, where MLflow reads them; never echoed
    "credentials in a server URI (env)": Bad(
        (),
        ConfigError,
        r"The tracking URI from MLFLOW_TRACKING_URI carries credentials "
        r"\(http://<user>:<password>@127\.0\.0\.1:\d+\).*export MLFLOW_TRACKING_USERNAME=<user> "
        r"MLFLOW_TRACKING_PASSWORD=<password>, and set MLFLOW_TRACKING_URI=http://127\.0\.0\.1:\d+",
        {"MLFLOW_TRACKING_URI": f"http://bob:s3cret@{CLOSED_PORT}"},
    ),
    "credentials in a server URI (config)": Bad(
        ("tracking.uri=https://bob:s3cret@mlflow.example:8443",),
        ConfigError,
        r"The tracking URI from tracking\.uri carries credentials "
        r"\(https://<user>:<password>@mlflow\.example:8443\)",
    ),
    "sqlite under a file": Bad(
        ("tracking.uri=sqlite:///{d}/empty.jsonl/x.db",),
        TrackingError,
        r"Cannot create the local tracking store",
    ),
    "deleted experiment": Bad(
        (),
        TrackingError,
        r"Experiment 'gone' is deleted in the tracking store",
        {"MLFLOW_EXPERIMENT_NAME": "gone"},
    ),
}

TINY = (
    "workload=distilgpt2_tiny",
    "trainer.accelerator=cpu",
    "trainer.max_steps=2",
    "trainer.enable_progress_bar=false",
    "data.block_size=32",
    "data.batch_size=2",
    "data.tokenizer_vocab_size=300",
    "telemetry=none",
)


@pytest.fixture
def bad_files(tmp_path: Path) -> Path:
    d = tmp_path / "bad"
    d.mkdir()
    (d / "empty.jsonl").write_text("")
    (d / "torn.jsonl").write_text('{"text": "a complete line"}\n{"text": "torn li\n')
    (d / "list.jsonl").write_text("[1, 2]\n")
    (d / "fields.jsonl").write_text('{"question": "q"}\n')
    (d / "binary.jsonl").write_bytes(b"\xff\xfe\x00\x01garbage\n")
    (d / "short.jsonl").write_text('{"text": "hi"}\n')
    (d / "few_blocks.jsonl").write_text(
        "".join(
            f'{{"text": "sample {i}: the quick brown fox jumps over the lazy dog"}}\n'
            for i in range(8)
        )
    )
    (d / "no_text").mkdir()
    (d / "no_text" / "image.png").write_bytes(b"\x89PNG")
    (d / "latin1").mkdir()
    (d / "latin1" / "notes.txt").write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    return d


@pytest.mark.parametrize("case", list(TRAINING.values()), ids=list(TRAINING))
def test_bad_training_input_gives_its_error_and_no_run(
    case: Bad,
    compose_cfg: Callable[..., DictConfig],
    bad_files: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for k, v in case.env.items():
        monkeypatch.setenv(k, v.replace(CLOSED_PORT, f"127.0.0.1:{free_port()}"))
    if case.env.get("MLFLOW_EXPERIMENT_NAME") == "gone":
        client = MlflowClient(resolve_tracking(None).uri)
        client.delete_experiment(client.create_experiment("gone"))
    overrides = [o.replace("{d}", bad_files.as_posix()) for o in case.overrides]
    with pytest.raises(case.error, match=case.match) as raised:
        run_training(compose_cfg(*TINY, *overrides))
    assert "s3cret" not in str(raised.value)
    db = Path(os.environ["RLE_PROJECT_ROOT"]) / "mlruns" / "mlflow.db"
    if db.exists():  # the store was opened: still no run in it
        client = MlflowClient(resolve_tracking(None).uri)
        assert not client.search_runs([e.experiment_id for e in client.search_experiments()])


COMPOSE: dict[str, tuple[tuple[str, ...], str]] = {
    "unknown workload": (("workload=gpt9",), r"Could not find 'workload/gpt9'"),
    "max_steps text": (
        ("trainer.max_steps=many",),
        r"Value 'many' of type 'str' could not be converted to Integer",
    ),
    "cpu_power mode": (
        ("telemetry.cpu_power=guess",),
        r"Invalid value 'guess', expected one of \[measured, estimated\]",
    ),
    "sample_hz text": (
        ("telemetry.sample_hz=fast",),
        r"Value 'fast' of type 'str' could not be converted to Float",
    ),
    "unknown key": (("trainer.nope=1",), r"Could not override 'trainer\.nope'"),
}
"""Bad inputs the typed schema refuses when the config is composed (Hydra's own messages)."""


@pytest.mark.parametrize("case", list(COMPOSE.values()), ids=list(COMPOSE))
def test_bad_types_fail_at_compose_time(
    case: tuple[tuple[str, ...], str], compose_cfg: Callable[..., DictConfig]
) -> None:
    from hydra.errors import ConfigCompositionException, MissingConfigException

    overrides, match = case
    with pytest.raises((ConfigCompositionException, MissingConfigException)) as raised:
        compose_cfg(*TINY, *overrides)
    text = str(raised.value) + str(raised.value.__cause__ or "")
    assert re.search(match, text), text


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_gpu_requested_without_cuda(compose_cfg: Callable[..., DictConfig]) -> None:
    with pytest.raises(ConfigError, match=r"No supported gpu backend found"):
        run_training(compose_cfg(*TINY, "trainer.accelerator=gpu"))


# ---------------------------------------------------------------------- legacy recordings (ingest)


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda d: d / "missing.csv", ImportFormatError, r"missing\.csv: no such file or folder"),
        (
            lambda d: _write(d / "rle_x.csv", "a,b\n1,2\n"),
            ImportFormatError,
            r"rle_x\.csv: not a recognised RLE lab monitor CSV\. Its first line has 2 column\(s\) \(a, b\)",
        ),
        (
            lambda d: _write(d / "rle_empty.csv", ""),
            ImportFormatError,
            r"rle_empty\.csv: the file is empty",
        ),
        (lambda d: _mkdir(d / "nothing"), ImportFormatError, r"no recordings found in .*nothing"),
    ],
    ids=["missing path", "wrong header", "empty file", "folder without recordings"],
)
def test_bad_legacy_recording_gives_its_error(
    tmp_path: Path, make: Callable[[Path], Path], error: type[Exception], match: str
) -> None:
    from rle.ingest import run_ingest

    with pytest.raises(error, match=match):
        run_ingest([make(tmp_path)])


def _write(p: Path, text: str) -> Path:
    p.write_text(text)
    return p


def _mkdir(p: Path) -> Path:
    p.mkdir()
    return p


# ---------------------------------------------------------------------- spool directories (sync)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda d: d / "missing", r"missing is not a directory"),
        (lambda d: _mkdir(d / "plain"), r"plain is not an rle spool directory \(no manifest\.json"),
        (
            lambda d: _write(_mkdir(d / "torn") / "manifest.json", "{not json").parent,
            r"torn: not a readable rle spool",
        ),
        (
            lambda d: _write(_mkdir(d / "other") / "manifest.json", '{"format": "x"}').parent,
            r"other: not a readable rle spool .*not an rle spool manifest",
        ),
    ],
    ids=["missing", "no manifest", "torn manifest", "foreign manifest"],
)
def test_bad_spool_directory_exits_2(
    tmp_path: Path, make: Callable[[Path], Path], match: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from rle.sync import main

    assert main([str(make(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Error: ")
    assert re.search(match, err), err


def test_sync_errors_are_rle_errors() -> None:
    from rle.sync import spool_dirs

    with pytest.raises(RLEError, match="is not a directory"):
        spool_dirs("/nonexistent/spool")


# ---------------------------------------------------------------------- command lines


def _run(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *argv],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        check=False,
    )


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (
            ("-m", "rle.train", *TINY, "trainer.max_steps=0"),
            2,
            "trainer.max_steps=0 is out of range: it must be an integer >= 1, or -1 (no limit)",
        ),
        (
            ("-m", "rle.sync", "/nonexistent/spool"),
            2,
            "Error: /nonexistent/spool is not a directory",
        ),
        (("-m", "rle.sync", "/tmp", "--timeout-s", "-1"), 2, "Error: --timeout-s must be >= 0."),
        (
            ("-m", "rle.ingest", "/nonexistent/rle_x.csv"),
            2,
            "rle-ingest: error: /nonexistent/rle_x.csv: no such file or folder",
        ),
    ],
    ids=["train config value", "sync missing dir", "sync negative timeout", "ingest missing file"],
)
def test_cli_bad_input_exit_status_and_message(
    argv: tuple[str, ...], code: int, message: str
) -> None:
    out = _run(*argv)
    assert out.returncode == code, out.stdout + out.stderr
    assert message in out.stdout + out.stderr
    assert "Traceback" not in out.stderr


# ---------------------------------------------------------------------- command lines with files


def _tracked_runs(*workloads: str) -> dict[str, str]:
    """Finished runs tagged ``workload=<w>`` in the test's store: workload -> run id."""
    from rle.tracking.logger import create_run

    location = resolve_tracking(None)
    client = MlflowClient(location.uri)
    ids = {}
    for w in workloads:
        _, run_id = create_run(location, "rle", w, {"workload": w})
        client.log_metric(run_id, "train/loss", 1.0, step=0)
        client.set_terminated(run_id)
        ids[w] = run_id
    return ids


def _with_one_run(argv: list[str]) -> list[str]:
    _tracked_runs("synthetic")
    return argv


def _monitor_csv(d: Path) -> Path:
    import support.rle_lab_writers as W

    return W.write_lines(d / "rle_20251028_08.csv", [W.header("v03"), *W.v03_lines(5, seed=1)])


def _evil_csv(d: Path) -> Path:
    return _write(d / "evil.csv", "\x1b]0;pwned\x07\x1b[2J\x1b[31mtimestamp,device\n1,2\n")


CLI_FILES: dict[str, tuple[Callable[[Path], tuple[list[str], dict[str, str]]], int, list[str]]] = {
    "ingest closed port": (
        lambda d: (
            ["-m", "rle.ingest", str(_monitor_csv(d))],
            {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"},
        ),
        2,
        ["rle-ingest: error: Cannot reach the MLflow tracking server at http://127.0.0.1:"],
    ),
    "ingest credentials in the URI": (
        lambda d: (
            [
                "-m",
                "rle.ingest",
                str(_monitor_csv(d)),
                "--tracking-uri",
                f"http://bob:s3cret@127.0.0.1:{free_port()}",
            ],
            {},
        ),
        2,
        ["carries credentials", "MLFLOW_TRACKING_USERNAME=<user> MLFLOW_TRACKING_PASSWORD"],
    ),
    "ingest escape sequences in a header": (
        lambda d: (["-m", "rle.ingest", str(_evil_csv(d))], {}),
        2,
        ["not a recognised RLE lab monitor CSV", "\\x1b[31m"],  # shown escaped
    ),
    "multirun job refused by validation": (
        lambda d: (["-m", "rle.train", "-m", *TINY, "trainer.log_every_n_steps=0"], {}),
        1,  # the job is counted as failed (rle.jobs.refused on the parent, tests/tracking)
        ["trainer.log_every_n_steps=0 is out of range: it must be an integer >= 1"],
    ),
    "evaluate group_by no run has": (
        lambda d: (_with_one_run(["-m", "rle.evaluate", "evaluation.group_by=params.nope"]), {}),
        2,
        [
            "evaluation.group_by='params.nope' matches no tag or param of the 1 selected run(s)",
            "tags: tags.workload;",
        ],
    ),
    "evaluate output.dir unusable": (
        lambda d: (["-m", "rle.evaluate", f"output.dir={_write(d / 'f', 'x')}/out"], {}),
        2,
        ["/f/out cannot be used: Not a directory", "Choose a folder that can be created"],
    ),
}


@pytest.mark.parametrize("case", list(CLI_FILES.values()), ids=list(CLI_FILES))
def test_cli_bad_input_with_files_exit_status_and_message(
    case: tuple[Callable[[Path], tuple[list[str], dict[str, str]]], int, list[str]],
    tmp_path: Path,
) -> None:
    make, code, messages = case
    argv, env = make(tmp_path)
    out = _run(*argv, env=env)
    text = out.stdout + out.stderr
    assert out.returncode == code, text[-3000:]
    for message in messages:
        assert message in text, text[-3000:]
    assert "Traceback" not in out.stderr
    assert "s3cret" not in text
    assert not [c for c in text if (ord(c) < 32 and c not in "\n\t") or 0x7F <= ord(c) <= 0x9F]


def test_readme_evaluate_filter_example_selects_the_synthetic_runs() -> None:
    """The README's ``selection.filter`` line, split as a shell splits it, passes Hydra's grammar
    and MLflow's filter syntax and selects exactly the runs it names."""
    import shlex

    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    (line,) = [
        ln
        for ln in readme.splitlines()
        if ln.startswith("python -m rle.evaluate") and "filter" in ln
    ]
    argv = shlex.split(line, comments=True)
    assert argv[:3] == ["python", "-m", "rle.evaluate"]
    ids = _tracked_runs("synthetic", "distilgpt2")
    out = _run(*argv[1:])
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    client = MlflowClient(resolve_tracking(None).uri)
    (evaluation,) = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        filter_string="tags.`rle.role` = 'evaluation'",
    )
    assert evaluation.data.params["selection.run_ids"] == ids["synthetic"]
