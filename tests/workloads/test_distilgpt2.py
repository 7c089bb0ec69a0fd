"""DistilGPT-2: offline fallback to the real architecture with random init and a local tokenizer."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from rle.errors import ConfigError
from rle.workloads.data import load_documents
from rle.workloads.distilgpt2 import build_model_and_tokenizer, hub_reachable

FULL = {
    "hub_id": "distilgpt2",
    "path": None,
    "pretrained": True,
    "allow_download": True,
    "n_layer": 6,
    "n_head": 12,
    "n_embd": 768,
    "vocab_size": 50257,
    "n_positions": 1024,
}


def test_hub_is_not_reachable_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub_reachable() is False


def test_offline_fallback_builds_distilgpt2_architecture(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    docs = load_documents(None)
    with caplog.at_level(logging.WARNING, logger="rle.workloads.distilgpt2"):
        bundle = build_model_and_tokenizer(FULL, docs, 2000, tmp_path)
    assert (bundle.model_init, bundle.tokenizer_kind, bundle.source) == (
        "random",
        "trained_local",
        "none",
    )
    cfg = bundle.model.config
    assert (cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.vocab_size, cfg.n_positions) == (
        6,
        12,
        768,
        50257,
        1024,
    )
    assert 81_000_000 < bundle.n_parameters < 83_000_000
    assert sum("random initialisation" in r.message for r in caplog.records) == 1
    ids = bundle.tokenizer.encode("### Instruction:\nExplain gradient descent.")
    assert ids
    assert max(ids) < 2000
    assert bundle.tokenizer.eos_token_id is not None
    # the trained tokenizer is cached and deterministic
    again = build_model_and_tokenizer(
        {**FULL, "pretrained": False, "n_layer": 1}, docs, 2000, tmp_path
    )
    assert again.tokenizer.encode("### Instruction:\nExplain gradient descent.") == ids
    assert len(list(tmp_path.glob("bpe-*.json"))) == 1


def test_bad_model_path_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not a directory"):
        build_model_and_tokenizer({**FULL, "path": str(tmp_path / "missing")}, ["x"], 300, tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="Could not load a model"):
        build_model_and_tokenizer({**FULL, "path": str(empty)}, ["x"], 300, tmp_path)


def test_inconsistent_architecture_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="divisible"):
        build_model_and_tokenizer(
            {**FULL, "pretrained": False, "n_embd": 10, "n_head": 3}, ["a b c"], 300, tmp_path
        )


@pytest.mark.network
def test_pretrained_from_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    bundle = build_model_and_tokenizer(FULL, ["x"], 300, tmp_path)
    assert bundle.model_init == "pretrained"
