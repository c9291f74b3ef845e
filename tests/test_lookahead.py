"""Look-ahead acceptance and honest teleport records: the look-ahead's step is the optimiser's own, a declined
teleport changes nothing at all, errors name their origin, and weight decay is treated exactly or refused."""

import math

import pytest
import torch
import torch.nn.functional as F
from test_teleporter import _batches, _train  # noqa: E402 (the test helpers beside this file)
from torch import nn

import symtele as st
from symtele.lookahead import GIVE_UP, Z, chunk_losses, paired_z, shadow_step
from symtele.models import digits_cnn
from symtele.optimizer_state import DecayPart, transport_state

OPTIMIZERS = {
    "sgd-nesterov-decay": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-2),
    "sgd-dampening": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.5, dampening=0.3),
    "adam-amsgrad": lambda p: torch.optim.Adam(p, lr=1e-3, amsgrad=True),
    "adamw": lambda p: torch.optim.AdamW(p, lr=1e-3, weight_decay=0.1),
    "rmsprop": lambda p: torch.optim.RMSprop(p, lr=1e-3, momentum=0.5, centered=True),
    "adagrad": lambda p: torch.optim.Adagrad(p, lr=0.01),
}


def _net():
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Flatten(),
        nn.Linear(4 * 64, 16),
        nn.ReLU(),
        nn.Linear(16, 10),
    )


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_the_shadow_step_is_the_optimizers_own_step_and_touches_nothing(name):
    torch.manual_seed(0)
    model = _net()
    optimizer = OPTIMIZERS[name](model.parameters())
    _train(model, optimizer, _batches(3))
    x, y = _batches(1, seed=1)[0]
    optimizer.zero_grad()
    torch.manual_seed(5)
    F.cross_entropy(model(x), y).backward()
    params = list(model.parameters())
    before = {p: (p.detach().clone(), {k: v.clone() for k, v in optimizer.state[p].items()}) for p in params}
    shadow = shadow_step(optimizer, {p: p.detach() for p in params}, {p: p.grad for p in params}, optimizer.state)
    for p in params:  # neither the parameters nor the state moved
        assert torch.equal(p, before[p][0])
        assert all(torch.equal(v, before[p][1][k]) for k, v in optimizer.state[p].items())
    optimizer.step()
    assert all(torch.equal(shadow[p], p.detach()) for p in params)


def test_a_declined_teleport_leaves_the_run_bit_for_bit_as_without_it(monkeypatch):
    """Dropout and BatchNorm in train mode: the teleports' forward passes draw from a forked generator and run on
    copies of the running statistics, so a run whose teleports are all declined is the plain run exactly."""
    monkeypatch.setattr("symtele.teleporter.TRIALS", ())  # no point along the path is tried: every teleport declined
    batches = _batches(12)
    runs = []
    for teleport in (False, True):
        torch.manual_seed(0)
        model = _net()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        teleporter = st.Teleporter(model, F.cross_entropy, optimizer, every=4) if teleport else None
        _train(model, optimizer, batches, teleporter)
        runs.append((model, optimizer, teleporter, torch.rand(3)))  # where the global random stream stands
    (plain, plain_opt, _, plain_next), (other, other_opt, teleporter, other_next) = runs
    assert torch.equal(plain_next, other_next)
    assert [r.epoch for r in teleporter.records] == [4, 8]
    assert all(r.t == 0 and r.stopped.startswith("declined by the look-ahead") for r in teleporter.records), [
        str(r) for r in teleporter.records
    ]
    assert all(r.state == "untouched (not teleported)" and r.log_scales is None for r in teleporter.records)
    for (name, a), b in zip(plain.state_dict().items(), other.state_dict().values()):
        assert torch.equal(a, b), name
    for p, q in zip(plain.parameters(), other.parameters()):
        assert torch.equal(plain_opt.state[p]["momentum_buffer"], other_opt.state[q]["momentum_buffer"])


def test_an_accepted_teleport_goes_t_of_the_way_and_records_its_trials():
    torch.manual_seed(0)
    model = digits_cnn()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    held_out = _batches(1, 64, seed=9)[0]
    teleporter = st.Teleporter(model, F.cross_entropy, optimizer, every=5, lookahead_batch=held_out)
    _train(model, optimizer, _batches(11))
    x, y = _batches(1, seed=3)[0]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    record = teleporter.maybe(5, x, y)
    trials = record.trace["lookahead"]
    assert trials["t"][0] == 0.0 and len(trials["t"]) == len(trials["loss"]) == len(trials["z"]) >= 2
    assert trials["chunks"] == 8 and record.t in (0.0, 1.0, 0.5, 0.25)
    if record.t:
        assert trials["z"][-1] < -Z and trials["loss"][-1] < trials["loss"][0] and trials["t"][-1] == record.t
        symmetry = st.discover(model, x)
        s = torch.tensor(record.log_scales, dtype=torch.float64)
        for n, p in model.named_parameters():
            a = symmetry.log_factor(n, s, p)
            expected = before[n] if a is None else before[n] * torch.exp(a).to(p.dtype)
            assert torch.allclose(p.detach(), expected, rtol=1e-6, atol=0), n
        assert record.grad_norm_sq_after > record.grad_norm_sq_before
    else:
        assert all(z >= -Z for z in trials["z"][1:])
        assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert record.grad_evals == 1 and record.forward_evals >= 1 + len(trials["t"])


def test_adam_teleports_are_accepted_where_they_help():
    """On the digits CNN with Adam, the look-ahead accepts some teleports (it is not a switch that is always off)."""
    torch.manual_seed(0)
    model = digits_cnn()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    data = st.digits_data(0)
    x, y = data.x_train.reshape(-1, 1, 8, 8), data.y_train
    teleporter = st.Teleporter(model, F.cross_entropy, optimizer, every=6)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    _train(model, optimizer, [(x[order[i : i + 64]], y[order[i : i + 64]]) for i in range(0, 64 * 20, 64)], teleporter)
    assert len(teleporter.records) == 3
    assert any(r.t > 0 for r in teleporter.records), [str(r) for r in teleporter.records]


def test_a_record_prints_as_one_line():
    torch.manual_seed(0)
    model = digits_cnn()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = _batches(1)[0]
    record = st.Teleporter(model, F.cross_entropy, optimizer, every=1, accept="always").teleport(x, y, step=3)
    text = str(record)
    assert "\n" not in text and text.startswith("TeleportRecord(step=3, t=1, ‖∇L‖² ")
    assert "loss kept" in text and "cost 1 grad eval + 1 forward" in text and "state transported" in text
    assert len(record.log_scales) == st.discover(model, x).n_scales and str(record.log_scales[0])[:6] not in text


def test_start_defaults_to_every_and_the_first_teleport_without_another_batch_is_declined():
    model = digits_cnn()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    teleporter = st.Teleporter(model, F.cross_entropy, optimizer, every=3)
    x, y = _batches(1)[0]
    assert teleporter.maybe(0, x, y) is None and teleporter.maybe(1, x, y) is None
    before = [p.detach().clone() for p in model.parameters()]
    record = st.Teleporter(model, F.cross_entropy, optimizer, every=3).teleport(x, y)
    assert record.t == 0 and "no batch other than the teleport batch" in record.stopped
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
    with pytest.raises(ValueError, match="Invalid start: 2"):
        st.Teleporter(model, F.cross_entropy, optimizer, schedule=[5], start=2)


@pytest.mark.parametrize(
    "loss_fn, targets, where",
    [
        (F.cross_entropy, torch.rand(16), "the loss function raised on (model(inputs), targets) of the teleport batch"),
        (F.binary_cross_entropy_with_logits, torch.zeros(16, dtype=torch.long), "the loss function raised"),
    ],
)
def test_an_error_in_the_users_loss_says_where_it_came_from_before_anything_changes(loss_fn, targets, where):
    torch.manual_seed(0)
    model = digits_cnn()
    x = _batches(1)[0][0]
    before = [p.detach().clone() for p in model.parameters()]
    teleporter = st.Teleporter(model, loss_fn, every=1, state="keep", accept="always")
    with pytest.raises(Exception, match=r"the loss function raised") as info:
        teleporter.teleport(x, targets)
    assert where in str(info.value) and info.value.__cause__ is not None
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))


@pytest.mark.parametrize(
    "make, state, match",
    [
        (lambda p: torch.optim.Adam(p, weight_decay=1e-4), "transport", "coupled L2 penalty"),
        (lambda p: torch.optim.RMSprop(p, weight_decay=1e-4), "transport", "coupled L2 penalty"),
        (lambda p: torch.optim.LBFGS(p), "keep", "LBFGS with state='keep'"),
        (lambda p: torch.optim.Adadelta(p), "transport", "state='transport' knows"),
    ],
)
def test_optimisers_whose_state_cannot_be_treated_are_refused_by_name(make, state, match):
    model = digits_cnn()
    with pytest.raises(TypeError, match=match):
        st.Teleporter(model, F.cross_entropy, make(model.parameters()), every=5, state=state, accept="always")


def test_lbfgs_is_refused_for_the_look_ahead_and_works_with_reset():
    model = digits_cnn()
    with pytest.raises(TypeError, match="LBFGS steps through a closure"):
        st.Teleporter(model, F.cross_entropy, torch.optim.LBFGS(model.parameters()), every=5, state="reset")
    lbfgs = torch.optim.LBFGS(model.parameters())
    st.Teleporter(model, F.cross_entropy, lbfgs, every=5, state="reset", accept="always")


def test_sgd_momentum_with_weight_decay_is_transported_term_by_term():
    """m = Σ μ^(t-k)(1-τ)(g_k + λ p_k): the gradient part moves as e^{-a}, the decay part as e^{+a}."""
    torch.manual_seed(0)
    model = digits_cnn()
    mu, tau, lam = 0.9, 0.1, 0.05
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=mu, dampening=tau, weight_decay=lam)
    decay = DecayPart(optimizer)
    gradient_part, decay_part = {}, {}
    for k, (x, y) in enumerate(_batches(4)):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        for p in model.parameters():  # the two sums, kept apart by hand
            g, d = p.grad.detach().clone(), lam * p.detach().clone()
            if k == 0:
                gradient_part[p], decay_part[p] = g, d
            else:
                gradient_part[p] = mu * gradient_part[p] + (1 - tau) * g
                decay_part[p] = mu * decay_part[p] + (1 - tau) * d
        optimizer.step()
    for p in model.parameters():
        assert torch.allclose(decay.part[p], decay_part[p], rtol=1e-5, atol=1e-7)
        assert torch.allclose(optimizer.state[p]["momentum_buffer"], gradient_part[p] + decay_part[p], atol=1e-6)
    factors = {p: torch.exp(0.3 * torch.randn(p.shape[0], *[1] * (p.dim() - 1))) for p in model.parameters()}
    moved = transport_state(optimizer, factors, decay)
    assert any("weight-decay part" in m for m in moved)
    for p, f in factors.items():
        expected = gradient_part[p] / f + decay_part[p] * f
        assert torch.allclose(optimizer.state[p]["momentum_buffer"], expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(TypeError, match="already has momentum buffers"):
        DecayPart(optimizer)


def test_the_l2_penalty_change_is_recorded_and_adamw_has_none():
    torch.manual_seed(0)
    x, y = _batches(1)[0]
    for make, has in ((lambda p: torch.optim.SGD(p, lr=0.01, weight_decay=1e-3), True), (torch.optim.AdamW, False)):
        model = digits_cnn()
        optimizer = make(model.parameters())
        before = sum(float(p.detach().double().square().sum()) for p in model.parameters())
        record = st.Teleporter(model, F.cross_entropy, optimizer, every=1, accept="always").teleport(x, y)
        after = sum(float(p.detach().double().square().sum()) for p in model.parameters())
        if has:
            assert record.trace["l2_penalty"] == pytest.approx([0.5e-3 * before, 0.5e-3 * after], rel=1e-6)
        else:
            assert "l2_penalty" not in record.trace


def test_dropout_in_train_mode_does_not_stop_a_teleport():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 3))
    x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
    record = st.teleport_model(model, F.cross_entropy, x, y)
    assert record.steps_taken == 10 and record.stopped is None
    assert record.grad_norm_sq_after > record.grad_norm_sq_before


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(accept="sometimes"), ValueError, "Invalid accept: 'sometimes'"),
        (dict(horizon=0), ValueError, "Invalid horizon: 0"),
        (dict(lookahead_batch=torch.zeros(3)), TypeError, "Invalid lookahead_batch"),
        (dict(optimizer=None, state="keep"), ValueError, "accept='lookahead' tries the optimizer's next step"),
    ],
)
def test_bad_look_ahead_arguments_are_named(kwargs, error, match):
    model = digits_cnn()
    args = dict(optimizer=torch.optim.SGD(model.parameters(), lr=0.1), every=5)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        st.Teleporter(model, F.cross_entropy, args.pop("optimizer"), **args)


def test_a_loss_the_rescaling_does_not_keep_is_walked_back_naming_the_group():
    """A loss with an L2 penalty is not invariant: the walk-back says so, beyond rounding, and names the group."""
    from symtele.teleports.rescale import Rescale, rescale_teleport

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).double()
    x, y = torch.randn(16, 6, dtype=torch.float64), torch.randint(0, 3, (16,))
    params = {n: p.detach() for n, p in model.named_parameters()}

    def loss_of(p):
        out = torch.func.functional_call(model, p, (x,))
        return F.cross_entropy(out, y) + 0.1 * sum(v.square().sum() for v in p.values())

    leaves = {n: p.clone().requires_grad_(True) for n, p in params.items()}
    loss = loss_of(leaves)
    grads = dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values()))))
    symmetry = st.discover(model, x)
    _, _, _, record = rescale_teleport(params, grads, symmetry, loss_of, loss.detach(), Rescale())
    assert record.steps_taken == 0 and "far beyond rounding: group 0 (0 (Linear)) does not keep it" in record.stopped


def test_the_judging_batch_is_cut_into_chunks_of_one_forward_pass():
    outputs, targets = torch.randn(20, 3, dtype=torch.float64), torch.randint(0, 3, (20,))
    whole = chunk_losses(F.cross_entropy, [(outputs, targets)], 8)
    per_sample = F.cross_entropy(outputs, targets, reduction="none")
    assert whole == pytest.approx([float(per_sample[i].mean()) for i in torch.arange(20).tensor_split(8)], rel=1e-12)
    micro = [(outputs[:7], targets[:7]), (outputs[7:9], targets[7:9]), (outputs[9:], targets[9:])]
    assert chunk_losses(F.cross_entropy, micro, 8) == pytest.approx(whole, rel=1e-12)  # micro-batches: the same
    assert chunk_losses(F.cross_entropy, [(outputs[:3], targets[:3])], 8) == pytest.approx(per_sample[:3].tolist())
    pairs = [((outputs, outputs), targets)]
    assert chunk_losses(lambda o, t: o[0].sum(), pairs) == [float(outputs.sum())]  # a tuple cannot be cut
    assert len(chunk_losses(F.mse_loss, [(outputs[:1], outputs[:1])])) == 1


def test_a_point_is_accepted_only_when_its_chunks_are_lower_consistently():
    base = [1.0, 1.0, 1.0, 1.0]
    assert paired_z([0.9, 0.95, 0.92, 0.91], base) < -Z  # every chunk lower
    noisy = [0.5, 1.4, 0.7, 1.3]  # a lower mean, carried by two chunks
    assert sum(noisy) < sum(base) and -Z < paired_z(noisy, base) < 0
    assert paired_z([0.8] * 4, base) == -math.inf and paired_z([1.2] * 4, base) == math.inf
    assert paired_z([float("nan")] + [0.1] * 3, base) == math.inf
    assert paired_z([0.1] * 4, [float("inf")] * 4) == -math.inf


@pytest.mark.parametrize(
    ("full_step_z", "tried"),
    [(GIVE_UP, [0.0, 1.0]), (GIVE_UP - 0.5, [0.0, 1.0, 0.5, 0.25])],
)
def test_a_full_step_consistently_higher_ends_the_search(monkeypatch, full_step_z, tried):
    """The shorter steps are tried only when the full step was not consistently higher (z below GIVE_UP)."""
    zs = iter([full_step_z, 0.0, 0.0])
    monkeypatch.setattr("symtele.teleporter.paired_z", lambda trial, base: next(zs))
    torch.manual_seed(0)
    model = digits_cnn()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    teleporter = st.Teleporter(model, F.cross_entropy, optimizer, every=5, lookahead_batch=_batches(1, 64, seed=9)[0])
    _train(model, optimizer, _batches(5))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    record = teleporter.maybe(5, *_batches(1, seed=3)[0])
    assert record.trace["lookahead"]["t"] == tried and record.t == 0
    assert f"(t = {', '.join(f'{t:g}' for t in tried[1:])})" in record.stopped
    assert record.forward_evals == 1 + len(tried)  # the teleport's own check, then one per point judged
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
