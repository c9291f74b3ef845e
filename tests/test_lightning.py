"""TeleportCallback: teleports inside Lightning's Trainer.fit exactly as the Teleporter does in a hand-written loop."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import symtele as st

lightning = pytest.importorskip("lightning", reason="the optional extra symtele[lightning] is not installed")
from symtele.integrations.lightning import TeleportCallback  # noqa: E402 (after the skip)


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


def _loader():
    g = torch.Generator().manual_seed(2)
    data = TensorDataset(torch.randn(96, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (96,), generator=g))
    return DataLoader(data, batch_size=8)


def _trainer(callback, steps):
    return lightning.Trainer(
        max_steps=steps,
        accelerator="cpu",
        devices=1,
        callbacks=[callback],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


def test_the_callback_teleports_in_fit_as_the_teleporter_does_in_a_loop():
    module = Classifier()
    callback = TeleportCallback(F.cross_entropy, every=4, accept="always")
    _trainer(callback, steps=10).fit(module, _loader())
    assert [r.epoch for r in callback.records] == [4, 8]
    assert all(r.t == 1 and r.state.startswith("transported: momentum_buffer") for r in callback.records)

    by_hand = Classifier()
    optimizer = by_hand.configure_optimizers()
    teleporter = st.Teleporter(by_hand, F.cross_entropy, optimizer, every=4, accept="always")
    for step, (x, y) in zip(range(10), _loader()):
        teleporter.maybe(step, x, y)
        optimizer.zero_grad()
        by_hand.training_step((x, y), step).backward()
        optimizer.step()
    for r, s in zip(callback.records, teleporter.records):
        torch.testing.assert_close(torch.tensor(r.log_scales), torch.tensor(s.log_scales), rtol=1e-9, atol=1e-12)
    for p, q in zip(module.parameters(), by_hand.parameters()):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-9, atol=1e-12)


def test_a_batch_that_is_not_a_pair_needs_batch_to_pair():
    callback = TeleportCallback(F.cross_entropy, every=2, accept="always")
    with pytest.raises(TypeError, match="batch_to_pair"):
        callback.batch_to_pair({"x": torch.zeros(1)})
    with pytest.raises(TypeError, match="Invalid batch_to_pair"):
        TeleportCallback(F.cross_entropy, every=2, batch_to_pair="x")
