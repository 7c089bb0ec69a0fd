"""How a job was launched: its global rank before DDP starts, the strategy, multi-node checks.

One MLflow run per job, whatever launches it (``python -m rle.train``, Lightning's subprocess
launcher for ``strategy=ddp``, ``torchrun`` single- or multi-node, SLURM ``srun``): only the
process that will be **global rank 0** creates, logs into and ends the run. Every other process
learns its rank from the launcher's environment, the same variables Lightning's cluster
environments read (:class:`~lightning.fabric.plugins.environments.TorchElasticEnvironment`,
:class:`~lightning.fabric.plugins.environments.SLURMEnvironment`, and ``NODE_RANK`` /
``LOCAL_RANK`` of :class:`~lightning.fabric.plugins.environments.LightningEnvironment`), so it can
decide before the process group exists.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from rle.errors import ConfigError

__all__ = ["LaunchInfo", "detect_launch", "external_world", "resolve_strategy"]


@dataclass(frozen=True)
class LaunchInfo:
    """What the launch environment says about this process.

    Attributes:
        launcher: ``"torchelastic"`` (torchrun), ``"slurm"`` (srun), ``"lightning"`` (a child of
            Lightning's subprocess launcher, or a node started with ``NODE_RANK`` set by hand) or
            ``"local"`` (a plain ``python`` process).
        global_rank: This process's global rank (0 for the process that owns the run).
        node_rank: The node's rank.
        external: Whether an external launcher (torchrun, SLURM) started every process itself.
    """

    launcher: str
    global_rank: int
    node_rank: int
    external: bool

    @property
    def is_rank_zero(self) -> bool:
        """Whether this process is global rank 0 (creates and ends the MLflow run)."""
        return self.global_rank == 0


def _int_env(name: str, default: int = 0) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def detect_launch(devices_per_node: int = 1) -> LaunchInfo:
    """Read the launcher's environment.

    Args:
        devices_per_node: ``trainer.devices`` (processes per node), used to compute the global rank
            of a Lightning-launched process (``node_rank * devices + local_rank``).

    Returns:
        The :class:`LaunchInfo`.
    """
    from lightning.fabric.plugins.environments.slurm import SLURMEnvironment
    from lightning.fabric.plugins.environments.torchelastic import TorchElasticEnvironment

    if TorchElasticEnvironment.detect():
        return LaunchInfo(
            "torchelastic", _int_env("RANK"), _int_env("GROUP_RANK", _int_env("NODE_RANK")), True
        )
    if SLURMEnvironment.detect():
        return LaunchInfo("slurm", _int_env("SLURM_PROCID"), _int_env("SLURM_NODEID"), True)
    if "LOCAL_RANK" in os.environ or "NODE_RANK" in os.environ:
        node = _int_env("NODE_RANK", _int_env("GROUP_RANK"))
        local = _int_env("LOCAL_RANK")
        return LaunchInfo("lightning", node * max(1, devices_per_node) + local, node, False)
    return LaunchInfo("local", 0, 0, False)


def external_world(launch: LaunchInfo) -> tuple[int, int] | None:
    """``(devices per node, nodes)`` that torchrun or SLURM announced, else ``None``.

    ``rle.train`` uses them where ``trainer.devices``/``trainer.num_nodes`` were left at 1, so
    ``torchrun --nproc_per_node=2 -m rle.train`` needs no matching Trainer arguments (Lightning
    refuses a mismatch).
    """
    if launch.launcher == "slurm":
        nodes = max(1, _int_env("SLURM_NNODES", 1))
        per_node = _int_env("SLURM_NTASKS_PER_NODE", 0) or _int_env("SLURM_NTASKS", 1) // nodes
        return max(1, per_node), nodes
    if launch.launcher != "torchelastic":
        return None
    local = max(1, _int_env("LOCAL_WORLD_SIZE", 1))
    world = max(local, _int_env("WORLD_SIZE", local))
    return local, max(1, world // local)


def resolve_strategy(
    strategy: Any, devices: Any, num_nodes: int, launch: LaunchInfo, rendezvous_timeout_s: float
) -> Any:
    """Choose the Lightning strategy for this launch.

    * ``strategy=auto`` with more than one process: ``ddp`` (Lightning's subprocess launcher).
      That is Lightning's own default for scripts, it is the only DDP launcher that works under
      an external launcher (torchrun/SLURM start every process themselves; ``ddp_spawn`` would
      spawn a second generation of processes), and it supports Hydra jobs: each child is started
      from the job's saved config (``.hydra/config.yaml``), multirun included.
    * ``ddp_spawn`` under torchrun/SLURM is refused with the fix.
    * DDP-family strategies get ``timeout=rendezvous_timeout_s`` (torch.distributed's
      process-group timeout, which also bounds the rendezvous), so a node whose peers never come
      fails with an error instead of hanging.

    Args:
        strategy: ``trainer.strategy`` (a name or a Strategy object).
        devices: ``trainer.devices``.
        num_nodes: ``trainer.num_nodes``.
        launch: From :func:`detect_launch`.
        rendezvous_timeout_s: ``launch.rendezvous_timeout_s``, seconds (> 0).

    Returns:
        A strategy name or instance for ``Trainer(strategy=...)``.

    Raises:
        rle.errors.ConfigError: On ``ddp_spawn`` under an external launcher, ``num_nodes > 1``
            without a multi-node launch environment, or a non-positive timeout.
    """
    from lightning.pytorch.strategies import DDPStrategy, StrategyRegistry

    if not rendezvous_timeout_s > 0:
        raise ConfigError(
            f"launch.rendezvous_timeout_s={rendezvous_timeout_s!r} must be a number of seconds > 0."
        )
    if num_nodes > 1 and launch.launcher == "local":
        raise ConfigError(
            f"trainer.num_nodes={num_nodes} but this process was not started by a multi-node "
            "launcher, so its peers would never be found. Start one process group per node with "
            f"`torchrun --nnodes={num_nodes} --node_rank=<r> --master_addr=<host> --master_port=<p> "
            "-m rle.train ...`, or `srun` under SLURM, or set NODE_RANK, MASTER_ADDR and MASTER_PORT "
            "on every node (see README, Scaling out)."
        )
    if not isinstance(strategy, str):
        return strategy
    n_devices = len(devices) if isinstance(devices, list | tuple) else devices
    many = num_nodes > 1 or (isinstance(n_devices, int) and n_devices > 1) or launch.external
    name = strategy
    if name == "auto":
        if not many:
            return "auto"
        name = "ddp"
    if launch.external and name.startswith("ddp_spawn"):
        raise ConfigError(
            f"trainer.strategy={strategy} cannot run under {launch.launcher}: the launcher already "
            "started one process per device. Use trainer.strategy=ddp (or auto)."
        )
    if name not in StrategyRegistry:
        return name  # Lightning names the valid choices itself
    entry = StrategyRegistry[name]
    cls = entry["strategy"]
    if not (isinstance(cls, type) and issubclass(cls, DDPStrategy)):
        return name
    params = dict(entry["init_params"])
    params["timeout"] = timedelta(seconds=float(rendezvous_timeout_s))
    return cls(**params)
