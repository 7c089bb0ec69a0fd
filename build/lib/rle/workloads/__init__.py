"""Workloads: what ``rle.train`` fits, chosen by the ``workload`` config group.

A workload config takes one of two shapes (both are plain Hydra):

* ``module`` and ``datamodule`` nodes, each with a ``_target_``: instantiated with
  :func:`hydra.utils.instantiate`. This is how a user's own LightningModule runs under
  ``rle.train`` (``--config-dir my_conf workload=mine``; see ``examples/conf``).
* a ``_target_`` naming a builder ``f(cfg, intra_op_threads) -> Workload`` that receives the whole
  composed config (rle's DistilGPT-2 and synthetic workloads, whose model, tokenizer and data
  depend on each other).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Workload", "build_workload", "workload_name"]


@dataclass
class Workload:
    """What a workload builder hands to the trainer.

    Attributes:
        module: The LightningModule to fit.
        datamodule: Its datamodule, or ``None`` when the module brings its own dataloaders.
        tags: Run tags describing the workload (``model.init``, ...).
        params: Extra run params (e.g. ``model.n_parameters``).
        tokens_per_sample: Tokens per training sample, or ``None`` when not a token workload.
    """

    module: Any
    datamodule: Any = None
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    tokens_per_sample: int | None = None


def workload_name(cfg: Any) -> str:
    """Return the workload's name: ``workload.name``, else the chosen config of the group.

    Args:
        cfg: The composed ``train`` config.

    Returns:
        The name (``"workload"`` when neither is known).
    """
    name = cfg.workload.get("name")
    if name:
        return str(name)
    try:
        from hydra.core.hydra_config import HydraConfig

        return str(HydraConfig.get().runtime.choices.get("workload") or "workload")
    except ValueError:  # composed outside @hydra.main (tests, notebooks)
        return "workload"


def build_workload(cfg: Any, intra_op_threads: int | None) -> Workload:
    """Build the workload of a composed ``train`` config.

    Args:
        cfg: The composed config; ``cfg.workload`` has ``module`` (+ ``datamodule``) nodes or a
            builder ``_target_``.
        intra_op_threads: torch threads per process on a CPU trainer (``None`` on a GPU).

    Returns:
        The :class:`Workload`.

    Raises:
        rle.errors.ConfigError: If the node has neither shape, or the builder returns something
            that is not a :class:`Workload`.
        hydra.errors.InstantiationException: If a ``_target_`` cannot be imported or called
            (Hydra's message names the target).
    """
    from hydra.utils import get_method, instantiate

    from rle.errors import ConfigError

    w = cfg.workload
    if w.get("module") is not None:
        module = instantiate(w.module)
        datamodule = instantiate(w.datamodule) if w.get("datamodule") is not None else None
        tps = w.get("tokens_per_sample")
        return Workload(
            module=module,
            datamodule=datamodule,
            tokens_per_sample=None if tps is None else int(tps),
        )
    target = w.get("_target_")
    if not target:
        raise ConfigError(
            "The workload config has neither 'module' (a LightningModule with _target_, plus an "
            "optional 'datamodule') nor a builder '_target_'; see examples/conf/workload/."
        )
    built = get_method(str(target))(cfg, intra_op_threads)
    if not isinstance(built, Workload):
        raise ConfigError(
            f"workload._target_={target} returned {type(built).__name__}, not rle.workloads.Workload."
        )
    return built
