"""Training text: the shipped dataset, user JSONL, folders, and clear errors naming file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rle.errors import DataError
from rle.workloads.data import DEFAULT_DATASET, format_example, load_documents, make_blocks


def test_shipped_dataset_has_100_examples_across_25_topics() -> None:
    rows = [json.loads(line) for line in DEFAULT_DATASET.read_text().splitlines() if line.strip()]
    assert len(rows) == 100
    assert len({r["topic"] for r in rows}) == 25
    docs = load_documents(None)
    assert docs[0] == format_example(rows[0]["prompt"], rows[0]["response"])


def test_jsonl_prompt_response_and_text(tmp_path: Path) -> None:
    f = tmp_path / "d.jsonl"
    f.write_text('{"prompt": "p", "response": "r"}\n\n{"text": "plain"}\n')
    assert load_documents(f) == [format_example("p", "r"), "plain"]


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ('{"prompt": "p", "response": "r"}\n{"prompt": "p"\n', r"d\.jsonl:2: not valid JSON"),
        (
            '{"prompt": "p", "response": "r"}\n{"question": "q"}\n',
            r"d\.jsonl:2: expected string fields",
        ),
        ("[1, 2]\n", r"d\.jsonl:1: expected a JSON object"),
        ("\n", "empty"),
    ],
)
def test_malformed_jsonl_names_file_and_line(tmp_path: Path, content: str, match: str) -> None:
    f = tmp_path / "d.jsonl"
    f.write_text(content)
    with pytest.raises(DataError, match=match):
        load_documents(f)


def test_missing_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_documents(tmp_path / "nope.jsonl")


def test_folder_of_text_files(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("alpha")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.py").write_text("beta = 1")
    (tmp_path / "c.bin").write_bytes(b"\x00\x01")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "d.txt").write_text("hidden")
    assert load_documents(tmp_path, [".txt", ".py"]) == ["alpha", "beta = 1"]
    with pytest.raises(DataError, match="no text files"):
        load_documents(tmp_path, [".md"])


def test_make_blocks_concatenates_with_eos() -> None:
    blocks = make_blocks([[1, 2, 3], [4, 5]], eos_id=0, block_size=3)
    assert torch.equal(blocks, torch.tensor([[1, 2, 3], [0, 4, 5]]))
    with pytest.raises(DataError, match="fewer than one block"):
        make_blocks([[1]], eos_id=0, block_size=8)
