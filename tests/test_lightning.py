"""TeleportCallback: teleports inside Lightning's Trainer.fit exactly as the Teleporter does in a hand-written loop."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import symtele as st

lightning = pytest.importorskip("lightning", reason="the optional extra symtele[lightning] is not installed")
from lightning_ddp_fit import Classifier  # noqa: E402 (the script's module, beside this file)

from symtele.integrations.lightning import TeleportCallback  # noqa: E402 (after the skip)

ROOT = Path(__file__).resolve().parents[1]


def _loader():
    g = torch.Generator().manual_seed(2)
    data = TensorDataset(torch.randn(96, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (96,), generator=g))
    return DataLoader(data, batch_size=8)


def _trainer(callback, steps, **options):
    return lightning.Trainer(
        max_steps=steps,
        **options,
        accelerator="cpu",
        devices=1,
        callbacks=[callback],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


@pytest.mark.parametrize("after_backward", [True, False])
def test_the_callback_teleports_in_fit_as_the_teleporter_does_in_a_loop(after_backward):
    """From the gradient of Lightning's backward pass (default) or from its own: the hand-written loop's result."""
    module = Classifier()
    callback = TeleportCallback(F.cross_entropy, every=4, accept="always", after_backward=after_backward)
    _trainer(callback, steps=10).fit(module, _loader())
    assert [r.epoch for r in callback.records] == [4, 8]
    assert all(r.t == 1 and r.state.startswith("transported: momentum_buffer") for r in callback.records)
    assert all(r.grad_evals == (0 if after_backward else 1) for r in callback.records)

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


def test_after_backward_with_accumulation_teleports_on_all_the_micro_batches():
    """accumulate_grad_batches=2: the gradient in p.grad is of both micro-batches (Lightning divides each loss by
    2), and so is the teleport's loss: a hand-written loop passing both micro-batches gives the same training."""
    module = Classifier()
    callback = TeleportCallback(F.cross_entropy, every=2, accept="always")
    _trainer(callback, steps=5, accumulate_grad_batches=2).fit(module, _loader())
    assert [r.epoch for r in callback.records] == [2, 4] and all(r.t == 1 for r in callback.records)

    by_hand = Classifier()
    optimizer = by_hand.configure_optimizers()
    teleporter = st.Teleporter(by_hand, F.cross_entropy, optimizer, every=2, accept="always")
    batches = list(_loader())
    for step in range(5):
        pairs = batches[2 * step : 2 * step + 2]
        optimizer.zero_grad()
        for x, y in pairs:
            (by_hand.training_step((x, y), step) / 2).backward()
        teleporter.maybe_after_backward(step, [x for x, _ in pairs], [y for _, y in pairs])
        optimizer.step()
    for r, s in zip(callback.records, teleporter.records):
        assert r.loss_before == pytest.approx(s.loss_before, rel=1e-12)
        torch.testing.assert_close(torch.tensor(r.log_scales), torch.tensor(s.log_scales), rtol=1e-9, atol=1e-12)
    for p, q in zip(module.parameters(), by_hand.parameters()):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-9, atol=1e-12)


class _Decayed(Classifier):
    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)


@pytest.mark.parametrize("after_backward", [True, False])
def test_sgd_momentum_with_coupled_decay_is_refused_under_transport_and_kept_otherwise(after_backward):
    """Lightning's backward pass runs inside optimizer.step, after the step pre-hook that follows the decay part of
    SGD's momentum (it would see no gradient): refused when training starts; state='keep' trains."""
    callback = TeleportCallback(F.cross_entropy, every=2, accept="always", after_backward=after_backward)
    with pytest.raises(ValueError, match="Invalid state: 'transport' of SGD's momentum with a coupled weight decay"):
        _trainer(callback, steps=3).fit(_Decayed(), _loader())
    callback = TeleportCallback(F.cross_entropy, every=2, accept="always", state="keep", after_backward=after_backward)
    _trainer(callback, steps=3).fit(_Decayed(), _loader())
    assert [r.epoch for r in callback.records] == [2] and callback.records[0].t == 1
    with pytest.raises(TypeError, match="Invalid after_backward"):
        TeleportCallback(F.cross_entropy, every=2, after_backward="yes")


def test_a_batch_that_is_not_a_pair_needs_batch_to_pair():
    callback = TeleportCallback(F.cross_entropy, every=2, accept="always")
    with pytest.raises(TypeError, match="batch_to_pair"):
        callback.batch_to_pair({"x": torch.zeros(1)})
    with pytest.raises(TypeError, match="Invalid batch_to_pair"):
        TeleportCallback(F.cross_entropy, every=2, batch_to_pair="x")


def test_the_callback_under_lightnings_ddp_strategy_keeps_the_processes_equal(tmp_path):
    """Two CPU processes (gloo), each with its half of every batch: the teleports use the gradient DDP averaged
    (five numbers all-reduced per process, no gradient), and both processes end with the same parameters, bit for
    bit."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    script = ROOT / "tests" / "lightning_ddp_fit.py"
    run = subprocess.run([sys.executable, str(script), str(tmp_path)], cwd=tmp_path, env=env, capture_output=True)
    assert run.returncode == 0, run.stderr.decode()[-3000:]
    ranks = [torch.load(tmp_path / f"{rank}.pt") for rank in range(2)]
    for p, q in zip(ranks[0]["params"], ranks[1]["params"]):
        assert torch.equal(p, q)
    records = ranks[0]["records"]
    assert [r["epoch"] for r in records] == [2, 4] and all(r["t"] == 1 for r in records)
    n = sum(p.numel() for p in ranks[0]["params"])
    assert n > 100 and all(r["trace"]["all_reduce_bytes"] == 2 * 5 * 8 and r["grad_evals"] == 0 for r in records)
    untimed = [[{k: v for k, v in r.items() if k != "cost_s"} for r in rank["records"]] for rank in ranks]
    assert untimed[0] == untimed[1]


def test_the_readme_lightning_example_runs():
    import re

    text = (ROOT / "README.md").read_text()
    section = text[text.index("### Distributed, mixed precision, compiled, accumulated, Lightning") :].split("\n## ")[0]
    code = re.findall(r"```python\n(.*?)```", section, re.S)[-1]
    assert "TeleportCallback" in code
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    records = namespace["callback"].records
    assert [r.epoch for r in records] == [10, 20, 30] and all(r.grad_evals == 0 for r in records)
