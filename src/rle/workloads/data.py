"""Training text for the language-model workloads: loading, tokenising, blocking.

Sources (``data.path``):

* ``None``: the instruction dataset shipped in the package (``rle/data/instructions.jsonl``,
  100 prompt/response examples across 25 topics, written for this project);
* a JSONL file whose lines are ``{"prompt": str, "response": str}`` or ``{"text": str}``;
* a folder of text or source files (read recursively, files ending in ``data.text_suffixes``).

The documents are tokenised, joined with the end-of-text token and cut into fixed-length blocks
of ``block_size`` tokens (the usual causal-LM "group texts" recipe); labels equal inputs and the
model shifts them. Nothing here downloads anything.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from rle.errors import DataError
from rle.paths import DATA_DIR

__all__ = [
    "DEFAULT_DATASET",
    "BlockDataset",
    "TextDataModule",
    "format_example",
    "load_documents",
    "make_blocks",
]

log = logging.getLogger(__name__)

DEFAULT_DATASET: Path = DATA_DIR / "instructions.jsonl"
"""The shipped instruction dataset (JSONL, ``topic``/``prompt``/``response``)."""


class _Encoder(Protocol):
    def encode(self, text: str) -> list[int]: ...


def format_example(prompt: str, response: str) -> str:
    r"""Format one prompt/response pair as training text (an Alpaca-style template).

    Args:
        prompt: The instruction.
        response: The answer.

    Returns:
        ``"### Instruction:\\n{prompt}\\n\\n### Response:\\n{response}"``.
    """
    return f"### Instruction:\n{prompt}\n\n### Response:\n{response}"


def _read_jsonl(path: Path) -> list[str]:
    try:
        return _parse_jsonl(path)
    except UnicodeDecodeError as e:
        raise DataError(
            f"{path}: not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}); give a "
            "UTF-8 JSONL file, or a folder of text files."
        ) from e


def _parse_jsonl(path: Path) -> list[str]:
    docs: list[str] = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(
                    f"{path}:{lineno}: not valid JSON ({e.msg} at column {e.colno}). Each line must "
                    'be one JSON object: {"prompt": ..., "response": ...} or {"text": ...}.'
                ) from e
            if not isinstance(row, dict):
                raise DataError(
                    f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}."
                )
            if isinstance(row.get("text"), str):
                docs.append(row["text"])
            elif isinstance(row.get("prompt"), str) and isinstance(row.get("response"), str):
                docs.append(format_example(row["prompt"], row["response"]))
            else:
                raise DataError(
                    f"{path}:{lineno}: expected string fields 'prompt' and 'response', or 'text'; "
                    f"got keys {sorted(row)}."
                )
    if not docs:
        raise DataError(f"{path}: no examples found (the file is empty).")
    return docs


def _read_folder(path: Path, suffixes: Sequence[str]) -> list[str]:
    wanted = {s.lower() for s in suffixes}
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in wanted)
    files = [
        p for p in files if not any(part.startswith(".") for part in p.relative_to(path).parts)
    ]
    if not files:
        raise DataError(
            f"{path}: no text files found (looked for names ending in {sorted(wanted)}). "
            "Point data.path at a folder holding such files, or set data.text_suffixes."
        )
    docs = []
    for f in files:
        try:
            docs.append(f.read_text(encoding="utf-8"))
        except UnicodeDecodeError as e:
            log.warning("Skipping %s: not UTF-8 text (%s)", f, e.reason)
    if not docs:
        raise DataError(f"{path}: none of the {len(files)} candidate files is UTF-8 text.")
    return docs


def load_documents(path: str | Path | None, text_suffixes: Sequence[str] = (".txt",)) -> list[str]:
    """Load training documents.

    Args:
        path: ``None`` for the shipped dataset, a ``.jsonl`` file, or a folder of text files.
        text_suffixes: File name endings read from a folder.

    Returns:
        The documents, one string each, in file order.

    Raises:
        rle.errors.DataError: If the path does not exist, a JSONL line is malformed (the message
            names the file and line), or nothing readable is found.
    """
    p = DEFAULT_DATASET if path is None else Path(path).expanduser()
    if not p.exists():
        raise DataError(
            f"data.path {str(p)!r} does not exist. Give a JSONL file, a folder of text files, "
            "or data.path=null for the shipped instruction dataset."
        )
    if p.is_dir():
        return _read_folder(p, text_suffixes)
    return _read_jsonl(p)


def make_blocks(token_ids: Iterable[list[int]], eos_id: int, block_size: int) -> torch.Tensor:
    """Concatenate tokenised documents (each followed by ``eos_id``) into fixed-length blocks.

    Args:
        token_ids: Token ids of each document.
        eos_id: End-of-text token id appended after every document.
        block_size: Tokens per block.

    Returns:
        Tensor of shape ``(n_blocks, block_size)``, dtype int64; the tail shorter than a block is
        dropped.

    Raises:
        rle.errors.DataError: If the text holds fewer than ``block_size`` tokens.
    """
    flat: list[int] = []
    for ids in token_ids:
        flat.extend(ids)
        flat.append(eos_id)
    n_blocks = len(flat) // block_size
    if n_blocks == 0:
        raise DataError(
            f"The training text has {len(flat)} tokens, fewer than one block of {block_size}; "
            "give more text or a smaller data.block_size."
        )
    return torch.tensor(flat[: n_blocks * block_size], dtype=torch.long).view(n_blocks, block_size)


def _check_enough_blocks(n_blocks: int, block_size: int, batch_size: int, world_size: int) -> None:
    """Refuse data that makes no full batch on each process (it would train 0 steps).

    Raises:
        rle.errors.DataError: If ``n_blocks // world_size < batch_size``.
    """
    per_process = n_blocks // max(1, world_size)
    if per_process >= batch_size:
        return
    where = "" if world_size == 1 else f" ({per_process} per process on {world_size} processes)"
    raise DataError(
        f"The training text makes {n_blocks} blocks of data.block_size={block_size} tokens"
        f"{where}, fewer than data.batch_size={batch_size}: no full batch, so no training step. "
        f"Give more text, or set data.batch_size to at most {max(1, per_process)} or a smaller "
        "data.block_size."
    )


class BlockDataset(Dataset[dict[str, torch.Tensor]]):
    """Fixed-length token blocks for causal-LM training.

    Args:
        blocks: Tensor of shape ``(n_blocks, block_size)``, int64 token ids.
    """

    def __init__(self, blocks: torch.Tensor) -> None:
        self.blocks = blocks

    def __len__(self) -> int:
        return int(self.blocks.shape[0])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        ids = self.blocks[i]
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}


class TextDataModule(L.LightningDataModule):
    """Tokenised text blocks as a Lightning datamodule (train split only).

    Args:
        documents: Training documents (see :func:`load_documents`).
        tokenizer: Any object with ``encode(str) -> list[int]`` and an ``eos_token_id``.
        block_size: Tokens per sequence.
        batch_size: Sequences per batch on each process.
        num_workers: DataLoader worker processes.

    Raises:
        rle.errors.DataError: If the text is shorter than one block, or makes fewer blocks than
            ``batch_size`` (batches are full, ``drop_last``: there would be no training step).
    """

    def __init__(
        self,
        documents: Sequence[str],
        tokenizer: Any,
        block_size: int,
        batch_size: int,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if block_size < 2:
            raise DataError(f"data.block_size must be at least 2 tokens, got {block_size}.")
        if batch_size < 1:
            raise DataError(f"data.batch_size must be at least 1, got {batch_size}.")
        enc: _Encoder = tokenizer
        self.blocks = make_blocks(
            (enc.encode(d) for d in documents), int(tokenizer.eos_token_id), block_size
        )
        _check_enough_blocks(len(self.blocks), block_size, batch_size, world_size=1)
        self.block_size = block_size
        self.batch_size = batch_size
        self.num_workers = num_workers

    @property
    def tokens_per_batch(self) -> int:
        """Tokens in one batch on one process (``batch_size * block_size``)."""
        return self.batch_size * self.block_size

    def train_dataloader(self) -> DataLoader[dict[str, torch.Tensor]]:
        """Shuffled batches of blocks (Lightning adds a DistributedSampler under DDP).

        Raises:
            rle.errors.DataError: If each of the job's processes gets fewer blocks than
                ``batch_size``.
        """
        trainer = getattr(self, "trainer", None)
        world = int(getattr(trainer, "world_size", 1) or 1)
        _check_enough_blocks(len(self.blocks), self.block_size, self.batch_size, world)
        return DataLoader(
            BlockDataset(self.blocks),
            batch_size=self.batch_size,
            shuffle=True,
            num_workers=self.num_workers,
            drop_last=True,
            persistent_workers=self.num_workers > 0,
        )
