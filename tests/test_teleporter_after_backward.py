"""The Teleporter from the gradient the user's backward pass left in ``p.grad``: the same training as the
teleport before the backward pass, ``p.grad`` rewritten to autograd's gradient at the teleported point, and
the edge cases (unused parameters, a GradScaler's scaled gradients, non-finite gradients, BatchNorm)."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import symtele as st
from symtele.models import digits_cnn, digits_resnet
from symtele.models_gpt import GPT


def _batches(n=7, size=24, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(size, 1, 8, 8, generator=g, dtype=dtype), torch.randint(0, 10, (size,), generator=g))
        for _ in range(n)
    ]


def _loss_backward(model, x, y):
    """The user's backward pass: one batch, or micro-batches whose losses are divided by their number."""
    if isinstance(x, list):
        for xs, ys in zip(x, y):
            (F.cross_entropy(model(xs), ys) / len(x)).backward()
    else:
        F.cross_entropy(model(x), y).backward()


def _run(after_backward, make_model, make_optimizer, batches, micro=1, **options):
    """Train on ``batches``, teleporting before the backward pass (``maybe``) or after it."""
    torch.manual_seed(0)
    model = make_model()
    optimizer = make_optimizer(model.parameters())
    teleporter = st.Teleporter(model, F.cross_entropy, optimizer, **options)
    for step, (x, y) in enumerate(batches):
        if micro > 1:
            x, y = list(x.chunk(micro)), list(y.chunk(micro))
        optimizer.zero_grad()
        if after_backward:
            _loss_backward(model, x, y)
            teleporter.maybe_after_backward(step, x, y)
        else:
            teleporter.maybe(step, x, y)
            _loss_backward(model, x, y)
        optimizer.step()
    return model.requires_grad_(False), teleporter.records


def _cnn():
    return digits_cnn().double()


def _resnet():
    return digits_resnet().double()


@pytest.mark.parametrize("accept", ["always", "lookahead"])
@pytest.mark.parametrize(
    "make_model, make_optimizer, micro",
    [
        (_cnn, lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-3), 1),
        (_resnet, lambda p: torch.optim.AdamW(p, lr=1e-3), 1),
        (_cnn, lambda p: torch.optim.Adam(p, lr=1e-3), 3),
    ],
    ids=["cnn-sgd", "resnet-adamw", "cnn-adam-accumulated"],
)
def test_after_backward_trains_as_the_teleport_before_backward(monkeypatch, accept, make_model, make_optimizer, micro):
    """float64: the same parameters after several steps with teleports, to 1e-10 relative."""
    monkeypatch.setattr("symtele.teleporter.Z", 0.0)  # any consistently lower point applied: some teleports are
    options = dict(every=2, accept=accept, horizon=1.0)
    before, one = _run(False, make_model, make_optimizer, _batches(), micro, **options)
    after, other = _run(True, make_model, make_optimizer, _batches(), micro, **options)
    assert [r.epoch for r in one] == [r.epoch for r in other] == [2, 4, 6]
    assert [r.t for r in one] == [r.t for r in other] and any(r.t for r in other)
    assert all(r.grad_evals == 1 for r in one) and all(r.grad_evals == 0 for r in other)
    for r, s in zip(one, other):
        assert s.loss_before == pytest.approx(r.loss_before, rel=1e-12)
        if r.t:
            torch.testing.assert_close(torch.tensor(s.log_scales), torch.tensor(r.log_scales), rtol=1e-9, atol=1e-12)
    for (name, p), q in zip(before.named_parameters(), after.parameters()):
        assert float((p - q).abs().max()) <= 1e-10 * float(p.abs().max()), name
    for b, c in zip(before.buffers(), after.buffers()):
        torch.testing.assert_close(b, c, rtol=1e-10, atol=1e-12)


def _gpt():
    torch.manual_seed(0)
    return GPT(vocab_size=20, n_layer=1, d_model=32, n_head=4, context=16).double()


def _gpt_loss(out, targets):
    return F.cross_entropy(out.reshape(-1, out.shape[-1]), targets.reshape(-1))


@pytest.mark.parametrize("network", ["resnet", "gpt"])
def test_the_rewritten_gradient_is_autograds_at_the_teleported_point(network):
    if network == "gpt":
        model, loss_fn = _gpt(), _gpt_loss
        g = torch.Generator().manual_seed(1)
        x, y = torch.randint(0, 20, (4, 16), generator=g), torch.randint(0, 20, (4, 16), generator=g)
    else:
        torch.manual_seed(0)
        model, loss_fn = _resnet(), F.cross_entropy
        x, y = _batches(1)[0]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    teleporter = st.Teleporter(model, loss_fn, optimizer, schedule=[0], accept="always")
    loss_fn(model(x), y).backward()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    record = teleporter.maybe_after_backward(0, x, y)
    assert record.t == 1 and record.grad_evals == 0
    if network == "gpt":
        assert record.trace["attention"]["moved"] > 0  # the head groups' gradient map is tested too
    moved = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert moved
    rewritten = {n: p.grad.clone() for n, p in model.named_parameters()}
    check = copy.deepcopy(model)  # the teleported network, its gradient by autograd
    check.zero_grad()
    loss_fn(check(x), y).backward()
    for n, p in check.named_parameters():
        scale = float(p.grad.abs().max())
        assert float((rewritten[n] - p.grad).abs().max()) <= 1e-10 * scale, n
    assert record.grad_norm_sq_after == pytest.approx(sum(float(g.square().sum()) for g in rewritten.values()), 1e-9)


class _WithUnused(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
        self.unused = nn.Linear(6, 3)

    def forward(self, x):
        return self.body(x)


def test_a_parameter_without_a_gradient_is_a_zero_one_and_keeps_none():
    torch.manual_seed(0)
    model = _WithUnused().double()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    teleporter = st.Teleporter(model, F.cross_entropy, optimizer, schedule=[0], accept="always")
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (32,), generator=g)
    with pytest.raises(ValueError, match="Invalid gradient: p.grad is None for every parameter"):
        teleporter.maybe_after_backward(0, x, y)
    F.cross_entropy(model(x), y).backward()
    record = teleporter.maybe_after_backward(0, x, y)
    assert record.t == 1 and record.grad_norm_sq_after > record.grad_norm_sq_before
    assert model.unused.weight.grad is None and model.unused.bias.grad is None
    assert model.body[0].weight.grad is not None


def _float_mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 4))


def test_a_grad_scalers_scaled_gradients_are_refused_until_unscaled():
    model = _float_mlp()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    teleporter = st.Teleporter(model, F.cross_entropy, optimizer, schedule=[0], accept="always")
    x, y = torch.randn(16, 10), torch.arange(16) % 4
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = F.cross_entropy(model(x), y)
    scaler.scale(loss).backward()
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match="Invalid scaler: the gradients in p.grad are still multiplied by its scale"):
        teleporter.maybe_after_backward(0, x, y, scaler=scaler)
    with pytest.raises(TypeError, match="Invalid scaler: expected a torch.amp.GradScaler"):
        teleporter.maybe_after_backward(0, x, y, scaler=2.0)
    with pytest.raises(ValueError, match="Invalid scaler: only with after_backward=True"):
        teleporter.teleport(x, y, scaler=scaler)
    assert all(torch.equal(p, q) for p, q in zip(before, model.parameters()))
    scaler.unscale_(optimizer)
    unscaled = [p.grad.clone() for p in model.parameters()]
    record = teleporter.maybe_after_backward(0, x, y, scaler=scaler)
    assert record.t == 1
    factors = [q / p for p, q in zip(before, model.parameters())]  # the positive scale of every entry
    for p, g, f in zip(model.parameters(), unscaled, factors):
        torch.testing.assert_close(p.grad, g / f, rtol=1e-5, atol=1e-8)  # the unscaled gradient, moved
    scaler.step(optimizer)
    scaler.update()
    assert scaler.get_scale() == 2.0**10  # nothing was found infinite: the step was taken


def test_a_gradient_that_is_not_finite_is_not_teleported_from():
    model = _float_mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    teleporter = st.Teleporter(model, F.cross_entropy, optimizer, schedule=[0], accept="always")
    x, y = torch.randn(16, 10), torch.arange(16) % 4
    F.cross_entropy(model(x), y).backward()
    model[0].weight.grad[0, 0] = float("inf")
    params = [p.detach().clone() for p in model.parameters()]
    grads = [p.grad.clone() for p in model.parameters()]
    record = teleporter.maybe_after_backward(0, x, y)
    assert record.t == 0 and record.stopped.startswith("not teleported: the gradient in p.grad is not finite")
    assert record.state == "untouched (not teleported)" and record.grad_evals == 0
    assert all(torch.equal(p, q) for p, q in zip(params, model.parameters()))
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads))


@pytest.mark.parametrize("make_model", [digits_cnn, digits_resnet])
def test_batchnorm_statistics_measure_nothing_the_teleport_scales(make_model):
    """The user's forward pass updated the running statistics at the old point; the teleport keeps them, and
    the eval-mode outputs (which use them) are those of the network before the teleport."""
    torch.manual_seed(0)
    model = make_model().train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    teleporter = st.Teleporter(model, F.cross_entropy, optimizer, schedule=[3], accept="always")
    batches = _batches(4, 64, dtype=torch.float32)
    for step, (x, y) in enumerate(batches):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        if step == 3:
            running = {n: b.clone() for n, b in model.named_buffers()}
            with torch.no_grad():
                evaluated = model.eval()(x)
            model.train()
            params = [p.detach().clone() for p in model.parameters()]
        record = teleporter.maybe_after_backward(step, x, y)
        if step == 3:
            assert record.t == 1 and any(not torch.equal(p, q) for p, q in zip(params, model.parameters()))
            assert all(torch.equal(b, running[n]) for n, b in model.named_buffers())
            with torch.no_grad():
                after = model.eval()(x)
            model.train()
            assert float((after - evaluated).abs().max() / evaluated.abs().max()) <= 1e-5
        optimizer.step()
    if make_model is digits_resnet:
        assert any("running" in n for n, _ in model.named_buffers())


def test_the_look_ahead_never_writes_into_p_grad_whatever_the_optimisers_step_path():
    """SGD with Nesterov momentum on its foreach path adds the momentum into the gradient it is given: the
    look-ahead's trial steps get copies, so its trials are those of the for-loop path and a declined teleport
    leaves ``p.grad`` as the backward pass wrote it."""
    x, y = _batches(1, seed=3)[0]
    judge = _batches(1, seed=9)[0]
    trials, grads = [], []
    for foreach in (False, True):
        torch.manual_seed(0)
        model = _cnn()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, foreach=foreach)
        for bx, by in _batches(3, seed=5):  # momentum buffers exist
            optimizer.zero_grad()
            _loss_backward(model, bx, by)
            optimizer.step()
        teleporter = st.Teleporter(model, F.cross_entropy, optimizer, every=1, lookahead_batch=judge)
        optimizer.zero_grad()
        _loss_backward(model, x, y)
        before = [p.grad.clone() for p in model.parameters()]
        record = teleporter.maybe_after_backward(1, x, y)
        trials.append(record.trace["lookahead"]["loss"])
        assert record.t == 0  # declined: the user's step must be the step without a teleport
        assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), before))
        grads.append([p.grad.clone() for p in model.parameters()])
    assert trials[0] == pytest.approx(trials[1], rel=1e-12, abs=0)
    assert all(torch.allclose(a, b, rtol=1e-12, atol=0) for a, b in zip(*grads))


@pytest.mark.parametrize(
    "tensor",
    [
        torch.tensor(1.5, dtype=torch.float64),
        torch.randn(3, 5),
        torch.randn(7, dtype=torch.bfloat16),
        torch.ones(3, 2).T,
    ],
)
def test_the_checksum_reads_every_bit_of_any_shape_and_dtype(tensor):
    from symtele.teleporter import _checksum

    same = _checksum([tensor, tensor.clone()])
    assert same == _checksum([tensor.clone(), tensor])  # the order does not matter
    flipped = tensor.clone().reshape(-1)
    bits = flipped.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[tensor.element_size()])
    bits[0] ^= 1  # the lowest bit of one entry
    assert _checksum([tensor, flipped.reshape(tensor.shape)]) != same


@pytest.mark.parametrize("change", ["l2-in-the-loss", "clipped-per-parameter", "clipped-as-a-whole"])
def test_a_p_grad_that_the_rescalings_do_not_keep_is_not_teleported_from(change):
    """The derivative of the loss along every scale is zero for a loss the rescalings keep: a gradient with a
    penalty in it, or clipped entry by entry, is refused with the reason; one clipped as a whole is not."""
    torch.manual_seed(0)
    model = _cnn()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = _batches(1, seed=3)[0]
    teleporter = st.Teleporter(model, F.cross_entropy, optimizer, every=1, accept="always")
    loss = F.cross_entropy(model(x), y)
    if change == "l2-in-the-loss":
        loss = loss + 1e-4 * sum((p**2).sum() for p in model.parameters())
    loss.backward()
    if change == "clipped-per-parameter":
        torch.nn.utils.clip_grad_value_(model.parameters(), 1e-3)
    if change == "clipped-as-a-whole":
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1e-3)
    before = {n: (p.detach().clone(), p.grad.clone()) for n, p in model.named_parameters()}
    record = teleporter.maybe_after_backward(1, x, y)
    if change == "clipped-as-a-whole":
        assert record.t == 1 and record.grad_norm_sq_after > record.grad_norm_sq_before
        return
    assert record.t == 0 and record.stopped.startswith("not teleported: p.grad is not the gradient of a loss"), record
    assert "call maybe() before the backward pass" in record.stopped
    for n, p in model.named_parameters():
        assert torch.equal(p.detach(), before[n][0]) and torch.equal(p.grad, before[n][1]), n
