"""Adversarial audit of the optimiser side of "never worse": the look-ahead's shadow step is the user's real next
step (every torch.optim optimiser, per-group settings, frozen parameters, learning-rate schedulers), it changes
nothing of the real optimiser or scheduler, and the transported state is the state of the run replayed in the
teleported coordinates (or the transport is refused, naming the optimiser, before anything changes)."""

import copy

import pytest
import torch
import torch.nn.functional as F
from test_adversarial_audit import _assert_same, _replayed_step  # noqa: E402 (the test helpers beside this file)
from torch import nn

import symtele as st
import symtele.teleporter as teleporter_module
from symtele.lookahead import shadow_step


class Averaged(torch.optim.Optimizer):
    """A user's optimiser: SGD on a running average of the gradients, with a setting kept as an attribute."""

    def __init__(self, params, lr=0.05, keep=0.5):
        super().__init__(params, {"lr": lr})
        self.keep = keep  # an instance attribute, not a group setting

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                state["avg"] = state.get("avg", torch.zeros_like(p)) * self.keep + p.grad
                p.add_(state["avg"], alpha=-group["lr"])


ZOO = {
    "sgd": lambda g: torch.optim.SGD(g, lr=0.05),
    "sgd-momentum-dampening-maximize": lambda g: torch.optim.SGD(
        g, lr=0.05, momentum=0.9, dampening=0.2, maximize=True
    ),
    "sgd-nesterov": lambda g: torch.optim.SGD(g, lr=0.05, momentum=0.9, nesterov=True),
    "sgd-nesterov-foreach": lambda g: torch.optim.SGD(g, lr=0.05, momentum=0.9, nesterov=True, foreach=True),
    "adam-amsgrad-maximize": lambda g: torch.optim.Adam(g, lr=1e-3, amsgrad=True, maximize=True),
    "adam-foreach": lambda g: torch.optim.Adam(g, lr=1e-3, foreach=True),
    "adam-for-loop": lambda g: torch.optim.Adam(g, lr=1e-3, foreach=False),
    "adam-fused": lambda g: torch.optim.Adam(g, lr=1e-3, fused=True),
    "adamw-fused-amsgrad": lambda g: torch.optim.AdamW(g, lr=1e-3, fused=True, amsgrad=True),
    "adamw": lambda g: torch.optim.AdamW(g, lr=1e-3),
    "rmsprop-centered-momentum": lambda g: torch.optim.RMSprop(g, lr=1e-3, centered=True, momentum=0.5),
    "adagrad-lr-decay-initial": lambda g: torch.optim.Adagrad(g, lr=0.01, lr_decay=0.1, initial_accumulator_value=0.2),
    "nadam": lambda g: torch.optim.NAdam(g, lr=1e-3),
    "radam": lambda g: torch.optim.RAdam(g, lr=1e-3),
    "adamax": lambda g: torch.optim.Adamax(g, lr=1e-3),
    "asgd": lambda g: torch.optim.ASGD(g, lr=1e-2, t0=2),
    "rprop": lambda g: torch.optim.Rprop(g, lr=1e-3),
    "adadelta": lambda g: torch.optim.Adadelta(g),
    "custom-with-an-attribute": lambda g: Averaged([{k: v for k, v in x.items() if k != "weight_decay"} for x in g]),
}


def _zoo_setup(make):
    """A net with a frozen layer and a parameter the loss never reaches, in two groups of their own lr and decay,
    after 4 real steps (non-trivial state); then a fresh backward pass (the gradient of the next step)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3), nn.Linear(3, 3))
    model[3].requires_grad_(False)
    unused = nn.Parameter(torch.randn(3))  # p.grad stays None
    groups = [
        {"params": [model[0].weight, model[0].bias], "lr": 0.01, "weight_decay": 0.01},
        {"params": [model[2].weight, model[2].bias, unused, *model[3].parameters()], "weight_decay": 0.0},
    ]
    optimizer = make(groups)
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    for i in range(4):
        optimizer.zero_grad()
        F.cross_entropy(model(x[i : i + 8]), y[i : i + 8]).backward()
        optimizer.step()
    optimizer.zero_grad()
    F.cross_entropy(model(x), y).backward()
    return model, optimizer


def _snapshot(optimizer):
    params = [p for g in optimizer.param_groups for p in g["params"]]
    state = {p: {k: v.clone() if torch.is_tensor(v) else v for k, v in optimizer.state[p].items()} for p in params}
    groups = copy.deepcopy([{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups])
    return [p.detach().clone() for p in params], state, groups


def _same_snapshot(a, b) -> bool:
    (pa, sa, ga), (pb, sb, gb) = a, b
    same_state = all(
        set(sa[p]) == set(sb[p])
        and all(torch.equal(v, sb[p][k]) if torch.is_tensor(v) else v == sb[p][k] for k, v in sa[p].items())
        for p in sa
    )
    return all(torch.equal(x, y) for x, y in zip(pa, pb)) and same_state and ga == gb


@pytest.mark.parametrize("name", sorted(ZOO))
def test_the_shadow_step_is_the_real_step_bit_for_bit_and_changes_nothing(name):
    """Every optimiser (those the transport knows and those it does not, a user's own with an attribute): the shadow
    step equals the real ``step()`` bit for bit, across groups of their own lr and decay, a frozen parameter and one
    whose ``p.grad`` is ``None``; the real optimiser's parameters, state, counters and groups are untouched."""
    model, optimizer = _zoo_setup(ZOO[name])
    params = [p for g in optimizer.param_groups for p in g["params"]]
    before = _snapshot(optimizer)
    shadow = shadow_step(
        optimizer, {p: p.detach() for p in params}, {p: p.grad for p in params if p.grad is not None}, optimizer.state
    )
    assert _same_snapshot(_snapshot(optimizer), before)
    optimizer.step()
    assert all(torch.equal(shadow[p], p.detach()) for p in params)


SCHEDULERS = {
    "step": lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=2, gamma=0.5),
    "one-cycle": lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.1, total_steps=20),
    "lambda": lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda k: 1 / (1 + k)),
}


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_a_scheduler_the_look_ahead_uses_the_next_steps_lr_and_does_not_advance_it(name):
    """A scheduler stepped each iteration: the shadow step (``lr_scale=1``) from the loop's point is the real next
    step bit for bit (the lr the scheduler set, and OneCycle's momentum), and a Teleporter's look-ahead at every step
    leaves the scheduler's state and the groups' lr exactly as it found them."""
    model, optimizer = _zoo_setup(lambda g: torch.optim.SGD(g, lr=0.05, momentum=0.9))
    scheduler = SCHEDULERS[name](optimizer)
    for _ in range(3):
        optimizer.step()
        scheduler.step()
    params = [p for g in optimizer.param_groups for p in g["params"]]
    shadow = shadow_step(
        optimizer, {p: p.detach() for p in params}, {p: p.grad for p in params if p.grad is not None}, optimizer.state
    )
    optimizer.step()
    assert all(torch.equal(shadow[p], p.detach()) for p in params)

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    scheduler = SCHEDULERS[name](optimizer)
    teleporter = st.Teleporter(net, F.cross_entropy, optimizer, every=1, start=1)
    g = torch.Generator().manual_seed(1)
    for step in range(6):
        x, y = torch.randn(32, 4, generator=g), torch.randint(0, 3, (32,), generator=g)
        schedule = (copy.deepcopy(scheduler.state_dict()), [dict(g, params=None) for g in optimizer.param_groups])
        teleporter.maybe(step, x, y)
        assert scheduler.state_dict() == schedule[0]
        assert [dict(g, params=None) for g in optimizer.param_groups] == schedule[1]
        optimizer.zero_grad()
        F.cross_entropy(net(x), y).backward()
        optimizer.step()
        scheduler.step()
    assert len(teleporter.records) == 5


@pytest.mark.parametrize("after_backward", [False, True])
def test_the_look_aheads_step_from_where_it_stands_is_the_users_next_step(monkeypatch, after_backward):
    """Adam over a net with a frozen layer and a parameter the loss never reaches, both in the optimiser: the real
    step does not move them (no ``p.grad``), so neither may the look-ahead's step (a zero gradient would: Adam's
    ``exp_avg`` moves them). With ``horizon=1`` the look-ahead's step from the original point is the real step."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3), nn.Linear(3, 3))
    net[3].requires_grad_(False)
    net.register_parameter("unused", nn.Parameter(torch.randn(3)))
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(32, 4, generator=g), torch.randint(0, 3, (32,), generator=g)) for _ in range(4)]
    for x, y in batches[:2]:  # Adam's state for every parameter the real steps move
        optimizer.zero_grad()
        F.cross_entropy(net(x), y).backward()
        optimizer.step()
    net[3].weight.requires_grad_(True)  # a step with the last layer trained: it gets Adam state too
    optimizer.zero_grad()
    F.cross_entropy(net(batches[2][0]), batches[2][1]).backward()
    optimizer.step()
    net[3].weight.requires_grad_(False)
    net.unused.grad = None
    steps = []
    real_shadow = teleporter_module.shadow_step

    def recorded(*args, **kwargs):  # the look-ahead reuses its buffers for the next trial: keep copies
        new = real_shadow(*args, **kwargs)
        steps.append({p: v.clone() for p, v in new.items()})
        return new

    monkeypatch.setattr(teleporter_module, "shadow_step", recorded)
    teleporter = st.Teleporter(net, F.cross_entropy, optimizer, schedule=[0], horizon=1.0, lookahead_batch=batches[0])
    x, y = batches[3]
    optimizer.zero_grad()
    reference = copy.deepcopy((net, optimizer))  # the real next step, on copies (a Parameter's copy has no grad)
    F.cross_entropy(reference[0](x), y).backward()
    if after_backward:
        F.cross_entropy(net(x), y).backward()
        record = teleporter.maybe_after_backward(0, x, y)
    else:
        record = teleporter.maybe(0, x, y)
    assert record.trace["lookahead"]["t"][0] == 0.0 and steps
    ref_net, ref_optimizer = reference
    ref_optimizer.step()
    named = dict(ref_net.named_parameters())
    for p, value in steps[0].items():
        n = next(n for n, q in net.named_parameters() if q is p)
        torch.testing.assert_close(value, named[n].detach(), rtol=1e-6, atol=1e-7, msg=n)
    assert torch.equal(steps[0][net[3].weight], net[3].weight.detach())  # frozen: never rescaled, never stepped
    assert torch.equal(steps[0][net.unused], net.unused.detach())


def _groups(decay_first, decay_second, lr_first, lr_second, **settings):
    def make(params):
        params = list(params)
        return [
            {
                "params": params[:2],
                "lr": lr_first,
                **({"weight_decay": decay_first} if decay_first is not None else {}),
            },
            {
                "params": params[2:],
                "lr": lr_second,
                **({"weight_decay": decay_second} if decay_second is not None else {}),
            },
        ]

    return make


TRANSPORTED = {
    "adam-amsgrad-maximize": lambda p: torch.optim.Adam(p, lr=1e-2, amsgrad=True, maximize=True),
    "adamw-amsgrad-decay": lambda p: torch.optim.AdamW(p, lr=1e-2, amsgrad=True, weight_decay=0.1),
    "adamw-per-group": lambda p: torch.optim.AdamW(_groups(0.2, 0.0, 1e-2, 3e-2)(p), betas=(0.8, 0.95)),
    "sgd-nesterov-maximize-decay": lambda p: torch.optim.SGD(
        p, lr=0.05, momentum=0.9, nesterov=True, maximize=True, weight_decay=0.1
    ),
    "sgd-per-group": lambda p: torch.optim.SGD(_groups(0.1, 0.0, 0.05, 0.02)(p), momentum=0.9, dampening=0.1),
    "rmsprop-centered": lambda p: torch.optim.RMSprop(p, lr=1e-3, centered=True),
    "rmsprop-per-group": lambda p: torch.optim.RMSprop(_groups(None, None, 1e-3, 3e-3)(p), alpha=0.9),
    "adagrad-per-group": lambda p: torch.optim.Adagrad(_groups(None, None, 1e-2, 3e-2)(p), lr_decay=0.1),
}


@pytest.mark.parametrize("name", sorted(TRANSPORTED))
def test_the_transported_state_is_the_replayed_runs_for_more_settings(name):
    """amsgrad's ``max_exp_avg_sq``, ``maximize``, AdamW's decoupled decay, Nesterov, RMSprop's centred ``grad_avg``
    and groups of their own settings: the state after the teleport, and the next step, are the replayed run's."""
    _assert_same(*_replayed_step(TRANSPORTED[name]))


class SubclassedAdam(torch.optim.Adam):
    """A user's Adam with its own step (whose state the transport cannot know)."""


UNKNOWN = {
    "nadam": lambda p: torch.optim.NAdam(p, lr=1e-3),
    "radam": lambda p: torch.optim.RAdam(p, lr=1e-3),
    "adamax": lambda p: torch.optim.Adamax(p, lr=1e-3),
    "asgd": lambda p: torch.optim.ASGD(p, lr=1e-2),
    "rprop": lambda p: torch.optim.Rprop(p, lr=1e-3),
    "custom": lambda p: Averaged(p),
    "subclassed-adam": lambda p: SubclassedAdam(p, lr=1e-3),
}


@pytest.mark.parametrize("name", sorted(UNKNOWN))
def test_an_optimiser_the_transport_does_not_know_is_refused_by_name_and_keep_and_reset_work(name):
    """``state="transport"`` with an optimiser it does not know is refused when the Teleporter is made, naming it;
    ``keep`` leaves its state bit for bit, ``reset`` clears it, and the outputs are kept."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3)).double()
    optimizer = UNKNOWN[name](net.parameters())
    with pytest.raises(TypeError, match=rf"state='transport' knows .* not {type(optimizer).__name__}"):
        st.Teleporter(net, F.cross_entropy, optimizer, every=1)
    x, y = torch.randn(32, 4, dtype=torch.float64), torch.randint(0, 3, (32,))
    for _ in range(2):
        optimizer.zero_grad()
        F.cross_entropy(net(x), y).backward()
        optimizer.step()
    for state in ("keep", "reset"):
        model, opt = copy.deepcopy((net, optimizer))
        kept = {k: {n: v.clone() if torch.is_tensor(v) else v for n, v in s.items()} for k, s in opt.state.items()}
        outputs = model(x)
        record = st.Teleporter(model, F.cross_entropy, opt, schedule=[0], state=state, accept="always").teleport(x, y)
        assert record.t == 1
        torch.testing.assert_close(model(x), outputs, rtol=1e-10, atol=1e-12)
        if state == "keep":
            assert record.state == "kept"
            assert all(
                all(torch.equal(v, kept[k][n]) if torch.is_tensor(v) else v == kept[k][n] for n, v in s.items())
                for k, s in opt.state.items()
            )
        else:
            assert record.state == "reset" and not any(opt.state.get(p) for p in model.parameters())


def test_clipping_in_the_users_loop_is_not_in_the_judged_step_as_documented(monkeypatch):
    """A documented limit: the loop clips the global gradient norm after ``maybe_after_backward``; the look-ahead's
    step from where it stands is the optimiser's step on the unclipped gradient, not the real (clipped) one."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(32, 4, generator=g), torch.randint(0, 3, (32,), generator=g)
    steps = []
    real_shadow = teleporter_module.shadow_step

    def recorded(*args, **kwargs):
        new = real_shadow(*args, **kwargs)
        steps.append({p: v.clone() for p, v in new.items()})
        return new

    monkeypatch.setattr(teleporter_module, "shadow_step", recorded)
    teleporter = st.Teleporter(net, F.cross_entropy, optimizer, schedule=[0], horizon=1.0, lookahead_batch=(x, y))
    before = {p: p.detach().clone() for p in net.parameters()}
    F.cross_entropy(net(x), y).backward()
    unclipped = {p: before[p] - 0.1 * p.grad for p in net.parameters()}
    teleporter.maybe_after_backward(0, x, y)
    norm = float(torch.nn.utils.clip_grad_norm_(net.parameters(), 0.01))
    assert norm > 0.1  # the clip is active
    for p in net.parameters():
        torch.testing.assert_close(steps[0][p], unclipped[p], rtol=0, atol=1e-7)
    clipped_move = sum(float((0.1 * p.grad).square().sum()) for p in net.parameters()) ** 0.5
    judged_move = sum(float((steps[0][p] - before[p]).square().sum()) for p in net.parameters()) ** 0.5
    assert judged_move > 10 * clipped_move


def test_a_coupled_decay_switched_on_after_the_teleporter_was_made_is_refused_before_anything_changes():
    """Adam whose weight decay is switched on mid-run (a decay schedule): ``transport`` cannot separate it from the
    moments, so the teleport raises, naming it, and the parameters and the state are as they were."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3)).double()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    teleporter = st.Teleporter(net, F.cross_entropy, optimizer, schedule=[0], accept="always")
    x, y = torch.randn(32, 4, dtype=torch.float64), torch.randint(0, 3, (32,))
    F.cross_entropy(net(x), y).backward()
    optimizer.step()
    optimizer.param_groups[0]["weight_decay"] = 0.1
    before = _snapshot(optimizer)
    with pytest.raises(TypeError, match=r"Adam with weight_decay=0.1 \(a coupled L2 penalty\)"):
        teleporter.maybe(0, x, y)
    assert _same_snapshot(_snapshot(optimizer), before)
