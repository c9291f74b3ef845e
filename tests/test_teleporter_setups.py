"""The Teleporter in the setups people train with: gradient accumulation (micro-batches), mixed precision
(autocast), and torch.compile."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import symtele as st
from symtele.models import digits_cnn


def _mlp(dtype=torch.float64):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4)).to(dtype)


def _batch(n, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 10, generator=g, dtype=dtype), torch.randint(0, 4, (n,), generator=g)


# ---- gradient accumulation -------------------------------------------------------------------------------


def test_micro_batches_teleport_as_their_concatenation_does(monkeypatch):
    """Equal micro-batches: the mean of their mean losses is the mean loss of the whole batch, and so are
    the gradient, the closed form, the look-ahead's chunks and choice, and the transported state."""
    monkeypatch.setattr("symtele.teleporter.Z", 0.0)  # any consistently lower point applied: some teleports are
    runs = []
    for split in (False, True):
        model = _mlp()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        teleporter = st.Teleporter(model, F.cross_entropy, optimizer, every=2, horizon=1.0)
        for step in range(5):
            x, y = _batch(24, seed=step)
            if split:
                teleporter.maybe(step, list(x.split(8)), list(y.split(8)))
            else:
                teleporter.maybe(step, x, y)
            optimizer.zero_grad()
            for xs, ys in zip(x.split(8), y.split(8)):  # the accumulated step: the mean of the micro-batches'
                (F.cross_entropy(model(xs), ys) / 3).backward()
            optimizer.step()
        runs.append((model, teleporter.records))
    (whole, one), (micro, many) = runs
    assert [r.t for r in many] == [r.t for r in one] and any(r.t for r in many)
    for r, s in zip(one, many):
        assert s.grad_evals == 1
        assert s.loss_before == pytest.approx(r.loss_before, rel=1e-12)
        assert s.trace["lookahead"]["loss"] == pytest.approx(r.trace["lookahead"]["loss"], rel=1e-12)
        assert s.trace["lookahead"]["z"] == pytest.approx(r.trace["lookahead"]["z"], rel=1e-9)
        torch.testing.assert_close(torch.tensor(s.log_scales), torch.tensor(r.log_scales), rtol=1e-9, atol=1e-12)
    for p, q in zip(whole.parameters(), micro.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-12)


def test_micro_batches_of_inputs_need_as_many_of_targets():
    model = _mlp()
    teleporter = st.Teleporter(model, F.cross_entropy, every=1, accept="always", state="keep")
    x, y = _batch(8, seed=0)
    before = [p.clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=r"Invalid inputs: 2 micro-batches of inputs but 1 targets"):
        teleporter.maybe(1, [x[:4], x[4:]], [y])
    with pytest.raises(ValueError, match=r"Invalid inputs: 2 micro-batches of inputs but Tensor"):
        teleporter.maybe(1, [x[:4], x[4:]], y)
    with pytest.raises(TypeError, match=r"Invalid inputs\[1\]"):
        teleporter.maybe(1, [x[:4], "x"], [y[:4], y[4:]])
    assert all(torch.equal(p, q) for p, q in zip(before, model.parameters()))


# ---- mixed precision ---------------------------------------------------------------------------------------


def test_under_bf16_autocast_the_teleport_runs_in_float32():
    """The teleport inside ``torch.autocast(bfloat16)`` finds what it finds in float32 (its passes run with
    autocast disabled), and the network's float32 outputs are kept."""
    x, y = torch.randn(32, 1, 8, 8, generator=torch.Generator().manual_seed(0)), torch.arange(32) % 10
    models = []
    for autocast in (False, True):
        torch.manual_seed(0)
        model = digits_cnn()
        teleporter = st.Teleporter(model, F.cross_entropy, schedule=[0], accept="always", state="keep")
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            record = teleporter.maybe(0, x, y)
        models.append((model, record))
    (plain, one), (mixed, other) = models
    assert other.t == 1 and other.log_scales == one.log_scales  # bit for bit: no bf16 anywhere in the teleport
    assert other.grad_norm_sq_before == one.grad_norm_sq_before and other.loss_after == one.loss_after
    torch.manual_seed(0)
    original = digits_cnn()
    torch.testing.assert_close(mixed(x), original(x), rtol=1e-5, atol=1e-6)  # compared in float32
    with torch.autocast("cpu", dtype=torch.bfloat16):  # and in bf16 the outputs agree as far as bf16 goes
        assert (mixed(x).float() - original(x).float()).abs().max() < 0.1


def test_under_bf16_autocast_the_attention_heads_move_in_float32():
    """A GPT's head groups are moved by matrix products, which autocast would run in bf16: the move is computed
    with autocast disabled, so the teleported weights are those of the same teleport without autocast."""
    from symtele.models_gpt import GPT

    g = torch.Generator().manual_seed(1)
    x, y = torch.randint(0, 20, (4, 16), generator=g), torch.randint(0, 20, (4, 16), generator=g)

    def loss(out, targets):
        return F.cross_entropy(out.reshape(-1, out.shape[-1]), targets.reshape(-1))

    models = []
    for autocast in (False, True):
        torch.manual_seed(0)
        model = GPT(vocab_size=20, n_layer=1, d_model=32, n_head=4, context=16)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        teleporter = st.Teleporter(model, loss, optimizer, schedule=[0], accept="always")
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            record = teleporter.maybe(0, x, y)
        assert record.t == 1 and record.trace["attention"]["moved"] > 0
        models.append(model)
    for (name, p), q in zip(models[0].named_parameters(), models[1].parameters()):
        assert p.dtype == q.dtype == torch.float32 and torch.equal(p, q), name


def test_a_mixed_precision_loop_with_a_grad_scaler_teleports_and_trains():
    model = _mlp(torch.float32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    teleporter = st.Teleporter(model, F.cross_entropy, optimizer, every=2, accept="always")
    for step in range(5):
        x, y = _batch(16, seed=step, dtype=torch.float32)
        teleporter.maybe(step, x, y)  # its own float32 gradient: the scaler's scale plays no part
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    assert [r.epoch for r in teleporter.records] == [2, 4]
    assert all(r.t == 1 and r.grad_norm_sq_after > r.grad_norm_sq_before for r in teleporter.records)
    assert all(abs(r.loss_after - r.loss_before) <= 1e-5 * r.loss_before for r in teleporter.records)


# ---- torch.compile -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
def test_a_compiled_model_teleports_without_a_recompile(backend):
    """``torch.compile(model)`` is accepted; the teleport rescales the shared parameters in place, the compiled
    model is not recompiled, and compiled and eager outputs agree after it (the eager and aot_eager
    backends: no C++ compiler needed)."""
    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()
    model = _mlp(torch.float32)
    counter = CompileCounterWithBackend(backend)
    compiled = torch.compile(model, backend=counter)
    optimizer = torch.optim.SGD(compiled.parameters(), lr=0.05, momentum=0.9)
    teleporter = st.Teleporter(compiled, F.cross_entropy, optimizer, every=2, accept="always")
    x_check, _ = _batch(16, seed=99, dtype=torch.float32)  # the training batches' shape: no recompile for a new one
    for step in range(6):
        x, y = _batch(16, seed=step, dtype=torch.float32)
        record = teleporter.maybe(step, x, y)
        if record is not None:
            assert record.t == 1
            torch.testing.assert_close(compiled(x_check), model(x_check), rtol=1e-5, atol=1e-6)
        optimizer.zero_grad()
        F.cross_entropy(compiled(x), y).backward()
        optimizer.step()
    assert [r.epoch for r in teleporter.records] == [2, 4]
    assert counter.frame_count == 1  # one graph, compiled once: the teleports did not recompile it


def test_a_compiled_model_teleports_from_p_grad_without_a_recompile():
    """From the gradient the compiled model's backward pass left in p.grad: rewritten to the teleported point's
    (the eager model's gradient there), and the compiled graph reused."""
    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()
    model = _mlp(torch.float32)
    counter = CompileCounterWithBackend("eager")
    compiled = torch.compile(model, backend=counter)
    optimizer = torch.optim.SGD(compiled.parameters(), lr=0.05, momentum=0.9)
    teleporter = st.Teleporter(compiled, F.cross_entropy, optimizer, every=2, accept="always")
    for step in range(4):
        x, y = _batch(16, seed=step, dtype=torch.float32)
        optimizer.zero_grad()
        F.cross_entropy(compiled(x), y).backward()
        record = teleporter.maybe_after_backward(step, x, y)
        if record is not None:
            assert record.t == 1 and record.grad_evals == 0
            rewritten = [p.grad.clone() for p in model.parameters()]
            eager = copy.deepcopy(model)
            eager.zero_grad()
            F.cross_entropy(eager(x), y).backward()
            for g, p in zip(rewritten, eager.parameters()):
                torch.testing.assert_close(g, p.grad, rtol=1e-4, atol=1e-6)
        optimizer.step()
    assert [r.epoch for r in teleporter.records] == [2]
    assert counter.frame_count == 1


def test_the_teleporter_of_a_compiled_model_acts_on_the_original_module():
    model = _mlp(torch.float32)
    compiled = torch.compile(copy.deepcopy(model), backend="eager")
    x, y = _batch(16, seed=0, dtype=torch.float32)
    a = st.Teleporter(model, F.cross_entropy, schedule=[0], accept="always", state="keep").maybe(0, x, y)
    b = st.Teleporter(compiled, F.cross_entropy, schedule=[0], accept="always", state="keep").maybe(0, x, y)
    assert a.log_scales == b.log_scales
    for p, q in zip(model.parameters(), compiled.parameters()):
        assert torch.equal(p, q)


def _readme_examples():
    """The Python examples of the README's subsection on training setups, in order."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text[text.index("### Distributed, mixed precision, compiled, accumulated, Lightning") :].split("\n## ")[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_the_readme_examples_of_accumulation_mixed_precision_and_compile_run():
    """As pasted, but compiled with the eager backend (the default, inductor, needs a C++ compiler)."""
    distributed, accumulation, mixed, compiled, lightning = _readme_examples()
    assert "torch.compile(model)" in compiled
    compiled = compiled.replace("torch.compile(model)", 'torch.compile(model, backend="eager")')
    namespace: dict = {}
    exec(compile(accumulation, "README.md", "exec"), namespace)
    assert [r.epoch for r in namespace["teleporter"].records] == [10, 20]
    exec(compile(mixed, "README.md", "exec"), namespace)
    records = namespace["teleporter"].records
    assert [r.epoch for r in records] == [10, 20, 30, 40, 50] and all(r.grad_evals == 0 for r in records)
    exec(compile(compiled, "README.md", "exec"), namespace)
    records = namespace["teleporter"].records
    assert [r.epoch for r in records] == [10, 20] and all(r.grad_evals == 1 for r in records)
