"""Run by tests/test_lightning.py: ``Trainer.fit`` with Lightning's DDP strategy on two CPU processes (gloo) and a
TeleportCallback; each process saves its parameters and records to ``<folder>/<rank>.pt``.

    python tests/lightning_ddp_fit.py <folder>
"""

import sys

import lightning
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from symtele.integrations.lightning import TeleportCallback


class Classifier(lightning.LightningModule):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3)).double()

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)


if __name__ == "__main__":
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(2)
    data = TensorDataset(torch.randn(96, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (96,), generator=g))
    module = Classifier()
    callback = TeleportCallback(F.cross_entropy, every=2, accept="always")
    trainer = lightning.Trainer(
        max_steps=5,
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        callbacks=[callback],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, DataLoader(data, batch_size=8))
    result = {"params": [p.detach() for p in module.parameters()], "records": [r.to_dict() for r in callback.records]}
    torch.save(result, f"{sys.argv[1]}/{trainer.global_rank}.pt")
