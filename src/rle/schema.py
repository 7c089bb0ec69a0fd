"""Typed structured-config schemas of ``rle.train`` (Hydra ConfigStore).

``conf/train.yaml`` lists ``rle_train_schema`` first in its defaults, so every composed config is
checked against these dataclasses: ``trainer.max_steps=abc`` or ``telemetry.sample_hz=fast`` fail
at compose time with Hydra's own message, before anything runs. Ranges that a type cannot say
(``telemetry.sample_hz > 0``) are checked by the code that uses the value.

The ``trainer`` and ``workload`` nodes are *open*: they declare the keys rle's own configs use (and
type them) but accept any other key added with ``+``, because every Lightning ``Trainer`` argument
(``+trainer.limit_train_batches=5``, ``+trainer.profiler=simple``) and every user workload has keys
of its own. OmegaConf implements open structured configs as dataclasses that subclass ``Dict``
(omegaconf issue 663 marks the pattern deprecated but it is supported through OmegaConf 2.3, the
newest release); the deprecation warning is silenced for these two classes only.
"""

from __future__ import annotations

import enum
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional  # noqa: UP035 (OmegaConf needs typing generics)

__all__ = [
    "DataConf",
    "TelemetryConf",
    "TrackingConf",
    "TrainConf",
    "TrainerConf",
    "WorkloadConf",
    "register",
]

SCHEMA_NAME = "rle_train_schema"
"""Name of the primary schema in Hydra's ConfigStore (listed in ``conf/train.yaml``'s defaults)."""

warnings.filterwarnings(
    "ignore",
    message=r"Class `(TrainerConf|WorkloadConf)` subclasses `Dict`",
    category=UserWarning,
)


class CpuPower(enum.Enum):
    """``telemetry.cpu_power``: where CPU package power comes from."""

    measured = "measured"
    estimated = "estimated"


@dataclass
class TrainerConf(Dict[str, Any]):  # noqa: UP006
    """``trainer``: keyword arguments of ``lightning.pytorch.Trainer`` (open: any other one works).

    ``strategy: auto`` is resolved by rle from the launch environment (see
    ``rle.launch.resolve_strategy``); everything else is passed to Lightning as is.
    """

    _target_: str = "lightning.pytorch.Trainer"
    accelerator: str = "auto"
    devices: Any = 1
    strategy: Any = "auto"
    num_nodes: int = 1
    max_steps: int = 20
    max_epochs: Optional[int] = -1  # noqa: UP045
    log_every_n_steps: int = 1
    precision: Any = "32-true"
    gradient_clip_val: Optional[float] = 1.0  # noqa: UP045
    gradient_clip_algorithm: Optional[str] = "norm"  # noqa: UP045
    accumulate_grad_batches: int = 1
    enable_progress_bar: bool = True
    deterministic: Any = False


@dataclass
class WorkloadConf(Dict[str, Any]):  # noqa: UP006
    """``workload``: a builder ``_target_`` or ``module``/``datamodule`` nodes (open)."""

    name: Optional[str] = None  # noqa: UP045


@dataclass
class DataConf:
    """``data``: the training text of the token workloads."""

    path: Optional[str] = None  # noqa: UP045
    block_size: int = 128
    batch_size: int = 4
    num_workers: int = 0
    text_suffixes: List[str] = field(default_factory=list)  # noqa: UP006
    tokenizer_vocab_size: int = 8000


@dataclass
class TelemetryConf:
    """``telemetry``: background hardware sampling and the RLE metric."""

    enabled: bool = True
    sample_hz: float = 1.0
    cpu_power: CpuPower = CpuPower.measured
    cpu_rated_w: Optional[float] = 125.0  # noqa: UP045
    write_artifacts: bool = True
    upload_every_s: float = 300.0
    sources: Dict[str, Any] = field(default_factory=dict)  # noqa: UP006
    rle: Any = None


@dataclass
class TrackingConf:
    """``tracking``: where runs go and how the job talks to the store."""

    uri: Optional[str] = None  # noqa: UP045
    experiment_name: str = "rle"
    connect_timeout_s: float = 5.0
    tags: Dict[str, Any] = field(default_factory=dict)  # noqa: UP006
    flush_interval_s: float = 1.0
    drain_timeout_s: float = 60.0
    http_max_retries: int = 0
    http_timeout_s: float = 10.0
    secret_pattern: Optional[str] = None  # noqa: UP045


@dataclass
class TrainConf:
    """The primary ``train`` config."""

    seed: int = 42
    run_name: Optional[str] = None  # noqa: UP045
    workload: WorkloadConf = field(default_factory=WorkloadConf)
    data: DataConf = field(default_factory=DataConf)
    trainer: TrainerConf = field(default_factory=TrainerConf)
    telemetry: Any = None
    tracking: TrackingConf = field(default_factory=TrackingConf)
    launch: Any = None


def register() -> None:
    """Store the schemas in Hydra's ConfigStore (idempotent)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name=SCHEMA_NAME, node=TrainConf)
    cs.store(group="telemetry", name="schema", node=TelemetryConf)
