"""DistilGPT-2 causal-LM fine-tuning as a LightningModule (docs/conventions.md, decision 5).

Weights and tokenizer are pretrained when they can be had, in this order: ``model.path`` (a local
``save_pretrained`` directory), the Hugging Face cache (``local_files_only=True``), the hub (only
when online and allowed). Otherwise the DistilGPT-2 architecture (6 layers, 12 heads, 768 hidden,
vocabulary 50257, 1024 positions; about 82M parameters) is built with random initialisation, and a
byte-level BPE tokenizer is trained on the training corpus with the ``tokenizers`` library
(deterministic, cached under ``<project root>/outputs/.cache/tokenizers``). The model keeps
DistilGPT-2's vocabulary size so its compute cost is the real one. Both fallbacks warn once and are
recorded in :class:`ModelBundle` so the run is tagged ``model.init`` and ``tokenizer``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import lightning as L
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    get_linear_schedule_with_warmup,
)

from rle.errors import ConfigError

if TYPE_CHECKING:
    from rle.workloads import Workload

__all__ = [
    "DistilGPT2Module",
    "build_workload",
    "ModelBundle",
    "build_model_and_tokenizer",
    "hub_reachable",
]

log = logging.getLogger(__name__)

EOS_TOKEN = "<|endoftext|>"  # GPT-2's end-of-text token


@dataclass
class ModelBundle:
    """A model and tokenizer with their provenance.

    Attributes:
        model: The causal LM.
        tokenizer: Its tokenizer (``encode``, ``eos_token_id``).
        model_init: ``"pretrained"`` or ``"random"`` (run tag ``model.init``).
        tokenizer_kind: ``"pretrained"`` or ``"trained_local"`` (run tag ``tokenizer``).
        source: Where the pretrained files came from (``path``, ``cache``, ``hub``) or ``"none"``.
    """

    model: PreTrainedModel
    tokenizer: Any
    model_init: str
    tokenizer_kind: str
    source: str

    @property
    def n_parameters(self) -> int:
        """Number of distinct model parameters (tied embeddings counted once)."""
        return sum(p.numel() for p in self.model.parameters())


def hub_reachable(timeout_s: float = 3.0) -> bool:
    """Tell whether the Hugging Face hub can be reached, without waiting for its retries.

    Honours ``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE`` and ``HF_ENDPOINT``.

    Args:
        timeout_s: TCP connect timeout in seconds.

    Returns:
        ``True`` if a TCP connection to the hub's host on port 443 succeeds.
    """
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0") or os.environ.get(
        "TRANSFORMERS_OFFLINE", "0"
    ) not in ("", "0"):
        return False
    host = (
        urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
        or "huggingface.co"
    )
    try:
        with socket.create_connection((host, 443), timeout=timeout_s):
            return True
    except OSError:
        return False


def _try_pretrained(model_cfg: Mapping[str, Any]) -> tuple[PreTrainedModel, Any, str] | None:
    attempts: list[tuple[str, str, bool]] = []
    if model_cfg.get("path"):
        path = Path(str(model_cfg["path"])).expanduser()
        if not path.is_dir():
            raise ConfigError(
                f"workload.model.path {str(path)!r} is not a directory. Give a folder written by "
                "save_pretrained(), or workload.model.path=null."
            )
        attempts.append(("path", str(path), True))
    hub_id = str(model_cfg.get("hub_id", "distilgpt2"))
    attempts.append(("cache", hub_id, True))
    if model_cfg.get("allow_download", True) and hub_reachable():
        attempts.append(("hub", hub_id, False))
    for source, name, local_only in attempts:
        try:
            tok = AutoTokenizer.from_pretrained(name, local_files_only=local_only)
            model = AutoModelForCausalLM.from_pretrained(name, local_files_only=local_only)
        except (OSError, ValueError) as e:
            if source == "path":
                raise ConfigError(
                    f"Could not load a model from workload.model.path={name!r}: {e}"
                ) from e
            log.debug("No pretrained %s from %s: %s", name, source, e)
            continue
        return model, tok, source
    return None


def _train_tokenizer(
    corpus: Sequence[str], vocab_size: int, cache_dir: Path
) -> PreTrainedTokenizerFast:
    from tokenizers import ByteLevelBPETokenizer, Tokenizer

    digest = hashlib.sha256()
    digest.update(str(vocab_size).encode())
    for doc in corpus:
        digest.update(doc.encode("utf-8"))
        digest.update(b"\0")
    cache = cache_dir / f"bpe-{digest.hexdigest()[:16]}.json"
    if cache.is_file():
        tok = Tokenizer.from_file(str(cache))
    else:
        bpe = ByteLevelBPETokenizer()
        bpe.train_from_iterator(
            corpus,
            vocab_size=vocab_size,
            min_frequency=2,
            special_tokens=[EOS_TOKEN],
            show_progress=False,
        )
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        bpe.save(str(tmp))
        tmp.replace(cache)
        tok = Tokenizer.from_file(str(cache))
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok,
        eos_token=EOS_TOKEN,
        bos_token=EOS_TOKEN,
        unk_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
    )


def build_model_and_tokenizer(
    model_cfg: Mapping[str, Any],
    corpus: Sequence[str],
    tokenizer_vocab_size: int,
    cache_dir: Path,
) -> ModelBundle:
    """Load pretrained DistilGPT-2 or build it with random initialisation (module docstring).

    Args:
        model_cfg: ``workload.model`` (``path``, ``hub_id``, ``pretrained``, ``allow_download``,
            ``n_layer``, ``n_head``, ``n_embd``, ``vocab_size``, ``n_positions``).
        corpus: Training documents, used to train the fallback tokenizer.
        tokenizer_vocab_size: Vocabulary size of the fallback tokenizer (capped by
            ``model_cfg["vocab_size"]``).
        cache_dir: Folder for the trained tokenizer's cache file.

    Returns:
        The :class:`ModelBundle`.

    Raises:
        rle.errors.ConfigError: If ``model.path`` is given but holds no loadable model, or the
            architecture numbers are inconsistent (``n_embd`` not divisible by ``n_head``).
    """
    if model_cfg.get("pretrained", True):
        found = _try_pretrained(model_cfg)
        if found is not None:
            model, tok, source = found
            if tok.eos_token_id is None:
                tok.eos_token = EOS_TOKEN
            return ModelBundle(model, tok, "pretrained", "pretrained", source)
        log.warning(
            "Pretrained %s is not available (no workload.model.path, not in the Hugging Face cache, "
            "hub unreachable or download disabled): training the DistilGPT-2 architecture from "
            "random initialisation with a locally trained tokenizer (run tagged model.init=random).",
            model_cfg.get("hub_id", "distilgpt2"),
        )
    n_embd, n_head = int(model_cfg["n_embd"]), int(model_cfg["n_head"])
    if n_embd % n_head:
        raise ConfigError(
            f"workload.model.n_embd ({n_embd}) must be divisible by n_head ({n_head})."
        )
    vocab_size = int(model_cfg["vocab_size"])
    tok = _train_tokenizer(corpus, min(tokenizer_vocab_size, vocab_size), cache_dir)
    config = GPT2Config(
        n_layer=int(model_cfg["n_layer"]),
        n_head=n_head,
        n_embd=n_embd,
        vocab_size=vocab_size,
        n_positions=int(model_cfg["n_positions"]),
        bos_token_id=tok.eos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    model = GPT2LMHeadModel(config)
    return ModelBundle(model, tok, "random", "trained_local", "none")


class DistilGPT2Module(L.LightningModule):
    """Causal-LM fine-tuning with AdamW and a linear warm-up/decay schedule.

    Args:
        model: The causal LM (``forward(input_ids, attention_mask, labels) -> .loss``).
        lr: Peak learning rate.
        weight_decay: AdamW weight decay, not applied to biases and LayerNorm weights.
        betas: AdamW betas.
        eps: AdamW epsilon.
        warmup_ratio: Fraction of the total optimizer steps spent warming up linearly from 0;
            the rest decays linearly to 0 (``transformers.get_linear_schedule_with_warmup``).
        intra_op_threads: torch intra-op threads per process (``None`` leaves torch's default).

    Batches are dicts with ``input_ids``, ``attention_mask`` and ``labels``, each of shape
    ``(batch, block_size)``. ``training_step`` returns the mean token cross-entropy (nats).
    """

    def __init__(
        self,
        model: PreTrainedModel,
        lr: float = 5e-5,
        weight_decay: float = 0.01,
        betas: Sequence[float] = (0.9, 0.999),
        eps: float = 1e-8,
        warmup_ratio: float = 0.1,
        intra_op_threads: int | None = None,
    ) -> None:
        super().__init__()
        if lr <= 0:
            raise ConfigError(f"workload.optim.lr must be positive, got {lr}.")
        if not 0.0 <= warmup_ratio < 1.0:
            raise ConfigError(f"workload.optim.warmup_ratio must be in [0, 1), got {warmup_ratio}.")
        self.model = model
        self.lr = lr
        self.weight_decay = weight_decay
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps = eps
        self.warmup_ratio = warmup_ratio
        self.intra_op_threads = intra_op_threads

    def setup(self, stage: str) -> None:
        """Limit torch threads per process so DDP ranks do not oversubscribe the cores."""
        if self.intra_op_threads is not None:
            torch.set_num_threads(self.intra_op_threads)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """Forward one batch and return its loss (a 0-d tensor)."""
        out = self.model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            labels=batch["labels"],
        )
        loss: torch.Tensor = out.loss
        return loss

    def configure_optimizers(self) -> Any:
        """AdamW (no decay on biases/LayerNorm) with a per-step linear warm-up/decay schedule."""
        decay: list[torch.nn.Parameter] = []
        no_decay: list[torch.nn.Parameter] = []
        for name, p in self.model.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.ndim < 2 or "ln_" in name or name.endswith(".bias") else decay).append(p)
        optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": self.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=self.lr,
            betas=self.betas,
            eps=self.eps,
        )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = int(self.warmup_ratio * total)
        scheduler = get_linear_schedule_with_warmup(optimizer, warmup, total)  # type: ignore[no-untyped-call]
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }


def build_workload(cfg: Any, intra_op_threads: int | None) -> Workload:
    """Build the DistilGPT-2 workload (``workload._target_``) from the composed ``train`` config.

    Args:
        cfg: The composed config (``workload.model``, ``workload.optim`` and ``data`` are read).
        intra_op_threads: torch threads per process on a CPU trainer (``None`` on a GPU).

    Returns:
        The :class:`rle.workloads.Workload` (module, text datamodule, ``model.init``/``tokenizer``
        tags, parameter count).

    Raises:
        rle.errors.DataError: If the training data is missing or malformed.
        rle.errors.ConfigError: On a bad optimiser setting or a block longer than the context.
    """
    from omegaconf import OmegaConf

    from rle import paths
    from rle.workloads import Workload
    from rle.workloads.data import TextDataModule, load_documents

    block, limit = int(cfg.data.block_size), cfg.workload.model.get("n_positions")
    if isinstance(limit, int) and block > limit:
        raise ConfigError(
            f"data.block_size={block} is longer than the model's context "
            f"(workload.model.n_positions={limit}); use data.block_size<={limit}."
        )
    docs = load_documents(cfg.data.path, list(cfg.data.text_suffixes))
    cache_dir = paths.project_root() / "outputs" / ".cache" / "tokenizers"
    bundle = build_model_and_tokenizer(
        OmegaConf.to_container(cfg.workload.model, resolve=True),  # type: ignore[arg-type]
        docs,
        int(cfg.data.tokenizer_vocab_size),
        cache_dir,
    )
    dm = TextDataModule(
        docs,
        bundle.tokenizer,
        int(cfg.data.block_size),
        int(cfg.data.batch_size),
        int(cfg.data.num_workers),
    )
    optim = cfg.workload.optim
    module = DistilGPT2Module(
        bundle.model,
        lr=float(optim.lr),
        weight_decay=float(optim.weight_decay),
        betas=list(optim.betas),
        eps=float(optim.eps),
        warmup_ratio=float(optim.warmup_ratio),
        intra_op_threads=intra_op_threads,
    )
    return Workload(
        module=module,
        datamodule=dm,
        tags={
            "model.init": bundle.model_init,
            "tokenizer": bundle.tokenizer_kind,
            "model.source": bundle.source,
        },
        params={
            "model.n_parameters": bundle.n_parameters,
            "data.n_documents": len(docs),
            "data.n_blocks": len(dm.blocks),
        },
        tokens_per_sample=int(cfg.data.block_size),
    )
