"""The teleporter in a user's own minibatch loop: in place, on schedule, optimiser state kept, reset or
transported exactly as the group action predicts."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import symtele as st
from symtele.models import digits_cnn, digits_resnet
from symtele.teleports.rescale import scale_factors

OPTIMIZERS = {
    "sgd-momentum": lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9),
    "rmsprop": lambda p: torch.optim.RMSprop(p, lr=1e-3, momentum=0.5, centered=True),
    "adagrad": lambda p: torch.optim.Adagrad(p, lr=0.01),
    "adam": lambda p: torch.optim.Adam(p, lr=1e-3, amsgrad=True),
    "adamw": lambda p: torch.optim.AdamW(p, lr=1e-3),
}
#: the power of e^{-a} each state entry takes (the group acts on the gradient by e^{-a})
POWER = {
    "momentum_buffer": 1,
    "square_avg": 2,
    "grad_avg": 1,
    "sum": 2,
    "exp_avg": 1,
    "exp_avg_sq": 2,
    "max_exp_avg_sq": 2,
}


def _batches(n=4, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, 1, 8, 8, generator=g), torch.randint(0, 10, (size,), generator=g)) for _ in range(n)]


def _train(model, optimizer, batches, teleporter=None):
    for step, (x, y) in enumerate(batches):
        if teleporter is not None:
            teleporter.maybe(step, x, y)
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_transport_moves_the_state_as_the_group_action_predicts(name):
    torch.manual_seed(0)
    model = digits_resnet()
    optimizer = OPTIMIZERS[name](model.parameters())
    batches = _batches()
    _train(model, optimizer, batches)
    before = {p: {k: v.clone() for k, v in optimizer.state[p].items()} for p in model.parameters()}
    x, y = batches[0]
    teleporter = st.Teleporter(model, F.cross_entropy, optimizer, schedule=[7], state="transport", accept="always")
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    record = teleporter.maybe(7, x, y)
    assert record is not None and record.epoch == 7 and record.state.startswith("transported")
    symmetry = st.discover(model, x)
    factors = scale_factors(symmetry, torch.tensor(record.log_scales, dtype=torch.float64), params)
    rms_momentum = isinstance(optimizer, torch.optim.RMSprop)
    moved = 0
    for n, p in model.named_parameters():
        f = factors.get(n, torch.ones(()))
        assert torch.allclose(p, params[n] * f)
        for key, old in before[p].items():
            if key == "step":
                assert torch.equal(optimizer.state[p][key], old)
                continue
            power = 0 if (rms_momentum and key == "momentum_buffer") else POWER[key]
            assert torch.allclose(optimizer.state[p][key], old / f**power, rtol=1e-6), (n, key)
            moved += power > 0 and n in factors
    assert moved > 0


def test_keep_and_reset_and_an_unknown_optimizer():
    model = digits_cnn()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    batches = _batches()
    _train(model, optimizer, batches)
    buffers = {p: optimizer.state[p]["momentum_buffer"].clone() for p in model.parameters()}
    st.Teleporter(model, F.cross_entropy, optimizer, schedule=[0], state="keep", accept="always").teleport(*batches[0])
    assert all(torch.equal(optimizer.state[p]["momentum_buffer"], buffers[p]) for p in model.parameters())
    reset = st.Teleporter(model, F.cross_entropy, optimizer, schedule=[0], state="reset", accept="always")
    record = reset.teleport(*batches[0])
    assert record.state == "reset" and not any(optimizer.state[p] for p in model.parameters())
    with pytest.raises(TypeError, match="LBFGS with state='transport'"):
        st.Teleporter(model, F.cross_entropy, torch.optim.LBFGS(model.parameters()), every=10)
    with pytest.raises(TypeError, match="state='transport' knows"):
        st.Teleporter(model, F.cross_entropy, torch.optim.Adadelta(model.parameters()), every=10)


def test_the_schedule_and_the_loop():
    torch.manual_seed(0)
    model = digits_cnn()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    teleporter = st.Teleporter(model, F.cross_entropy, optimizer, every=3, start=1, accept="always")
    for step, (x, y) in enumerate(_batches(8)):
        teleporter.maybe(step, x, y)
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    assert [r.epoch for r in teleporter.records] == [1, 4, 7]
    assert all(r.grad_norm_sq_after > r.grad_norm_sq_before for r in teleporter.records)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_a_teleport_changes_neither_outputs_nor_statistics_nor_modes(mode):
    torch.manual_seed(0)
    model = digits_resnet().train(mode == "train")
    modes = {n: m.training for n, m in model.named_modules()}
    x, y = _batches(1, 64)[0]
    with torch.no_grad():
        before = model(x)
    running = {n: b.clone() for n, b in model.named_buffers()}
    st.teleport_model(model, F.cross_entropy, x, y)
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert all(torch.equal(b, running[n]) for n, b in model.named_buffers())
    with torch.no_grad():
        after = model(x)
    assert float((after - before).abs().max() / before.abs().max()) <= 1e-5


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(model="net"), TypeError, "Invalid model"),
        (dict(loss_fn=3), TypeError, "Invalid loss_fn"),
        (dict(state="move"), ValueError, "Invalid state: 'move'"),
        (dict(optimizer=None, state="reset"), ValueError, "Invalid optimizer: None"),
        (dict(every=None), ValueError, "Invalid schedule"),
        (dict(every=0), ValueError, "Invalid every: 0"),
        (dict(teleport=st.PositiveScale()), TypeError, "Invalid teleport"),
    ],
)
def test_bad_arguments_are_named_before_any_compute(kwargs, error, match):
    model = digits_cnn()
    args = dict(model=model, loss_fn=F.cross_entropy, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), every=5)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        st.Teleporter(args.pop("model"), args.pop("loss_fn"), args.pop("optimizer"), **args)


def test_a_batch_of_the_wrong_shape_is_named():
    model = digits_cnn()
    teleporter = st.Teleporter(model, F.cross_entropy, every=1, state="keep", accept="always")
    with pytest.raises(ValueError, match=r"Invalid example: an input of shape \(4, 64\)"):
        teleporter.teleport(torch.randn(4, 64), torch.zeros(4, dtype=torch.long))


@pytest.mark.parametrize("after_backward", [False, True])
def test_a_loss_that_is_not_a_scalar_is_named(after_backward):
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    teleporter = st.Teleporter(model, lambda out, y: (out - y).square(), every=1, state="keep", accept="always")
    x, y = torch.randn(5, 3), torch.randn(5, 2)
    if after_backward:
        (model(x) - y).square().mean().backward()
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match="Invalid loss_fn: returned"):
        teleporter.teleport(x, y, after_backward=after_backward)
    assert all(torch.equal(p, q) for p, q in zip(before, model.parameters()))
