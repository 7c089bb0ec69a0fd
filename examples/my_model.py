"""A user's own LightningModule and datamodule: a small regression, nothing rle-specific.

Used by ``own_training.py`` (plain Lightning + MLFlowLogger + TelemetryCallback) and by
``python -m rle.train --config-dir examples/conf workload=regression`` (the same model under
rle's Hydra entry point).
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import grad_norm
from torch.utils.data import DataLoader, TensorDataset


class Regression(L.LightningModule):
    """An MLP regressor; logs its own loss and Lightning's grad_norm, as users usually do."""

    def __init__(self, hidden: int = 64, lr: float = 1e-2) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(16, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1)
        )

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("train/loss", loss)
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.log("grad_norm_total", grad_norm(self, norm_type=2)["grad_2.0_norm_total"])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


class RegressionData(L.LightningDataModule):
    """Random inputs, targets a fixed linear function of them plus noise."""

    def __init__(self, n: int = 2048, batch_size: int = 32) -> None:
        super().__init__()
        self.n, self.batch_size = n, batch_size

    def train_dataloader(self) -> DataLoader[tuple[torch.Tensor, ...]]:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(self.n, 16, generator=g)
        y = x @ torch.linspace(-1, 1, 16).unsqueeze(1) + 0.1 * torch.randn(self.n, 1, generator=g)
        return DataLoader(TensorDataset(x, y), batch_size=self.batch_size, shuffle=True)
