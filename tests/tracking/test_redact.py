"""Redaction of credential-shaped values, learnt secrets, and the files Hydra writes (``.hydra/``)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from rle.tracking.redact import REDACTED, Redactor, redact_hydra_output_dir

GHP = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
TOK = "tok_live_9f8e7d6c5b4a3210"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dBjftJeZ4CVPmB92K27uhbUJU1p1r_wW1gFWFOEjXk"
TOKENS = [
    GHP,
    "gho_" + "x" * 36,
    "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
    "hf_" + "AbCdEfGhIjKlMnOpQrStUvWxYz",
    "sk-proj-" + "a1B2c3D4e5F6g7H8i9J0",
    TOK,
    "xoxb-123456789012-abcdefghijkl",
    "xoxp-123456789012-abcdefghijkl",
    "AKIAIOSFODNN7EXAMPLE",
    JWT,
]


@pytest.mark.parametrize("token", TOKENS)
def test_token_shaped_values_are_redacted_whatever_the_key(token: str) -> None:
    r = Redactor(environ={})
    assert r.value("deploy_key", token) == REDACTED
    assert r.text(f"key={token} rest") == f"key={REDACTED} rest"
    assert r.mapping({"notes": f"use {token}"}) == {"notes": f"use {REDACTED}"}
    assert r.tree({"a": [token]}) == {"a": [REDACTED]}
    assert r.override(f"+deploy_key={token}") == f"+deploy_key={REDACTED}"


@pytest.mark.parametrize(
    "text",
    [
        "mask-rcnn-resnet50-fpn-coco",  # holds "sk-" inside a word
        "train/tokens_per_second",
        "sk-learn",  # too short
        "hf_hub",
        "tok_s",
        "ghp_short",
        "distilgpt2",
        "eyJ.not.a.jwt",
        "/home/user/outputs/2026-01-01/12-00-00",
    ],
)
def test_ordinary_text_is_not_taken_for_a_token(text: str) -> None:
    assert Redactor(environ={}).text(text) == text


def test_secret_env_values_are_replaced_in_any_text() -> None:
    r = Redactor(environ={"MLFLOW_TRACKING_PASSWORD": "pw-0123456789", "HOME": "/root"})
    assert r.text("run-pw-0123456789-a") == f"run-{REDACTED}-a"
    assert r.text("/root") == "/root"


def test_learnt_secret_values_are_redacted_elsewhere() -> None:
    r = Redactor(environ={})
    r.learn_tree({"db": {"password": "hunter2222", "host": "h"}, "l": ["+x.token=abcd1234"]})
    r.learn_overrides(["+workload.secret=s3cr3t-value", "trainer.devices=2", "~foo"])
    assert r.text("name hunter2222 abcd1234 s3cr3t-value h 2") == (
        f"name {REDACTED} {REDACTED} {REDACTED} h 2"
    )
    r.remember(["no", "true", None, True, "ab"])  # too short or plain words: not searched for
    assert r.text("no true ab") == "no true ab"


def _write_hydra_job(job: Path, secret: str, pw: str) -> None:
    """The three files Hydra writes for one job (``OmegaConf.to_yaml``, as ``_save_config`` does)."""
    overrides = [
        f"+workload.api_token={TOK}",
        f"+deploy_key={GHP}",
        f"+db.password={secret}",
        f"run_name=job-{pw}",
        "workload.intensity=0.2",
    ]
    task = {
        "run_name": f"job-{pw}",
        "copied": f"prefix {secret}",  # an interpolation that copied the secret
        "workload": {"intensity": 0.2, "api_token": TOK, "name": "synthetic"},
        "deploy_key": GHP,
        "db": {"password": secret},
        "tracking": {"secret_pattern": None, "uri": "sqlite:////tmp/x/mlflow.db"},
        "mlflow_uri": "http://bob:" + secret + "@host:5000",
    }
    hydra = {
        "hydra": {
            "run": {"dir": str(job)},
            "overrides": {"hydra": ["hydra.mode=RUN"], "task": overrides},
            "job": {"name": "train", "override_dirname": ",".join(overrides)},
            "runtime": {"output_dir": str(job)},
            "mode": "RUN",
        }
    }
    d = job / ".hydra"
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(task)))
    (d / "hydra.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(hydra)))
    (d / "overrides.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(overrides)))
    for f in d.iterdir():
        f.chmod(0o644)  # what Hydra leaves with the usual umask


def test_hydra_files_are_rewritten_redacted_valid_and_private(tmp_path: Path) -> None:
    secret, pw = "hunter2-not-a-token", "pw-a1b2c3d4e5"
    jobs = [tmp_path / "multirun" / "day" / "time" / str(i) for i in range(2)]
    for job in jobs:
        _write_hydra_job(job, secret, pw)
    sweep = tmp_path / "multirun" / "day" / "time"
    (sweep / "multirun.yaml").write_text(
        OmegaConf.to_yaml(
            OmegaConf.create({"hydra": {"overrides": {"task": [f"+db.password={secret}"]}}})
        )
    )
    redactor = Redactor(environ={"MLFLOW_TRACKING_PASSWORD": pw})
    changed = redact_hydra_output_dir(tmp_path / "multirun", redactor)
    assert len(changed) == 2 * 3 + 1
    assert redactor.values == (pw,)  # the caller's redactor learnt nothing
    for f in [
        *(j / ".hydra" / n for j in jobs for n in ("config.yaml", "hydra.yaml", "overrides.yaml")),
        sweep / "multirun.yaml",
    ]:
        raw = f.read_text()
        for planted in (secret, pw, TOK, GHP):
            assert planted not in raw, (f, planted)
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
        assert OmegaConf.create(yaml.safe_load(raw)) is not None  # still YAML OmegaConf reads
    cfg = yaml.safe_load((jobs[0] / ".hydra" / "config.yaml").read_text())
    assert cfg["workload"] == {"intensity": 0.2, "api_token": REDACTED, "name": "synthetic"}
    assert cfg["deploy_key"] == REDACTED
    assert cfg["db"] == {"password": REDACTED}
    assert cfg["copied"] == f"prefix {REDACTED}"
    assert cfg["run_name"] == f"job-{REDACTED}"
    assert cfg["tracking"]["uri"] == "sqlite:////tmp/x/mlflow.db"
    assert cfg["mlflow_uri"] == f"http://bob:{REDACTED}@host:5000"
    overrides = yaml.safe_load((jobs[0] / ".hydra" / "overrides.yaml").read_text())
    assert overrides == [
        f"+workload.api_token={REDACTED}",
        f"+deploy_key={REDACTED}",
        f"+db.password={REDACTED}",
        f"run_name=job-{REDACTED}",
        "workload.intensity=0.2",
    ]
    hydra = yaml.safe_load((jobs[0] / ".hydra" / "hydra.yaml").read_text())["hydra"]
    assert hydra["overrides"]["task"] == overrides
    assert hydra["job"]["override_dirname"] == ",".join(overrides)
    assert stat.S_IMODE((jobs[0] / ".hydra").stat().st_mode) == 0o700
    # idempotent: nothing left to change
    assert redact_hydra_output_dir(tmp_path / "multirun", redactor) == []


def test_files_without_secrets_are_left_as_written_but_made_private(tmp_path: Path) -> None:
    d = tmp_path / "job" / ".hydra"
    d.mkdir(parents=True)
    text = OmegaConf.to_yaml(OmegaConf.create({"a": 1, "b": "${oc.env:HOME}", "c": ["x=1"]}))
    (d / "config.yaml").write_text(text)
    (d / "config.yaml").chmod(0o644)
    assert redact_hydra_output_dir(tmp_path / "job", Redactor(environ={})) == []
    assert (d / "config.yaml").read_text() == text
    assert stat.S_IMODE((d / "config.yaml").stat().st_mode) == 0o600


def test_a_file_that_is_not_yaml_is_still_redacted(tmp_path: Path) -> None:
    d = tmp_path / ".hydra"
    d.mkdir()
    (d / "overrides.yaml").write_text(f"- [unclosed {GHP}\n")
    assert redact_hydra_output_dir(tmp_path, Redactor(environ={})) == [d / "overrides.yaml"]
    assert GHP not in (d / "overrides.yaml").read_text()


def test_a_missing_directory_is_ignored(tmp_path: Path) -> None:
    assert redact_hydra_output_dir(tmp_path / "nope") == []


def test_a_secret_value_holding_commas_is_redacted_whole(tmp_path: Path) -> None:
    d = tmp_path / ".hydra"
    d.mkdir()
    overrides = ["+db.password=ab12,cd34", "workload.intensity=0.2,0.4"]
    (d / "overrides.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(overrides)))
    (d / "hydra.yaml").write_text(
        OmegaConf.to_yaml(OmegaConf.create({"job": {"override_dirname": ",".join(overrides)}}))
    )
    redact_hydra_output_dir(tmp_path, Redactor(environ={}))
    assert yaml.safe_load((d / "overrides.yaml").read_text()) == [
        f"+db.password={REDACTED}",
        "workload.intensity=0.2,0.4",
    ]
    hydra = yaml.safe_load((d / "hydra.yaml").read_text())
    assert hydra["job"]["override_dirname"] == f"+db.password={REDACTED},workload.intensity=0.2,0.4"
