"""Networks a user could plausibly write that try to make a teleport change what the network computes.

Each network either keeps every output after a teleport that moves (``accept="always"``) and after the default
look-ahead, on fresh inputs in train and in eval mode, or has the part that would change them left out with the
reason. The optimiser's state after ``state="transport"`` must be the state of the same run replayed in the
teleported coordinates (every past gradient ``g·e^{-a}``), so that the next step is the one that run would take.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._pytree import tree_flatten

import symtele as st
from symtele.teleports import rescale


def outputs(model, x) -> dict[bool, list[torch.Tensor]]:
    """Every output in train and in eval mode (dropout seeded, running statistics restored); the mode is restored."""
    was = model.training
    out = {}
    for train in (True, False):
        buffers = {n: b.clone() for n, b in model.named_buffers()}
        model.train(train)
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(0)
            out[train] = [t.detach().clone() for t in tree_flatten(model(x))[0]]
        with torch.no_grad():
            for n, b in model.named_buffers():
                b.copy_(buffers[n])
    model.train(was)
    return out


def assert_kept(before, after, rtol):
    for train in (True, False):
        for b, a in zip(before[train], after[train]):
            torch.testing.assert_close(
                a, b, rtol=0, atol=rtol * float(b.abs().max()), msg=lambda m, train=train: f"{train=}: {m}"
            )


def teleport_keeps_outputs(make, x, y, accept, rtol=2e-5):
    """A teleport of ``make()`` on ``(x, y)`` (after one step, so the look-ahead has a batch to judge on) keeps
    every output on fresh inputs; returns the record."""
    torch.manual_seed(0)
    model = make()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    teleporter = st.Teleporter(model, F.mse_loss, optimizer, schedule=[1], accept=accept)
    teleporter.maybe(0, x, y)
    optimizer.zero_grad()
    F.mse_loss(model(x), y).backward()
    optimizer.step()
    fresh = 3 * torch.randn_like(x)
    before = outputs(model, fresh)
    record = teleporter.maybe(1, x, y)
    assert_kept(before, outputs(model, fresh), rtol)
    return record


# ---- parameters that share memory without being one parameter ------------------------------------------------
class SharedMemory(nn.Module):
    """``l0 → enc → dec → out`` whose ``dec`` weight shares memory with ``enc``'s (``tie``), and a free branch.

    ``"data"``: ``dec.weight.data = enc.weight.data.t()``; ``"parameter"``: ``dec.weight =
    nn.Parameter(enc.weight.data)``; ``"attribute"``: a tensor attribute ``enc.weight.data.t()`` read by
    ``F.linear``. Rescaling ``enc.weight`` in place changes the other too.
    """

    def __init__(self, tie: str):
        super().__init__()
        self.tie = tie
        self.l0, self.enc, self.dec, self.out = nn.Linear(6, 6), nn.Linear(6, 6), nn.Linear(6, 6), nn.Linear(6, 3)
        self.free, self.head = nn.Linear(6, 8), nn.Linear(8, 3)
        if tie == "data":
            self.dec.weight.data = self.enc.weight.data.t()
        elif tie == "parameter":
            self.dec.weight = nn.Parameter(self.enc.weight.data)
        else:
            self.enc_t = self.enc.weight.data.t()

    def forward(self, x):
        h = F.relu(self.enc(F.relu(self.l0(x))))
        h = F.linear(h, self.enc_t) if self.tie == "attribute" else self.dec(h)
        return self.out(F.relu(h)) + self.head(F.relu(self.free(x)))


@pytest.mark.parametrize("tie", ["data", "parameter", "attribute"])
@pytest.mark.parametrize("accept", ["always", "lookahead"])
def test_parameters_sharing_memory_are_pinned_and_a_teleport_keeps_the_outputs(tie, accept):
    torch.manual_seed(0)
    x, y = torch.randn(32, 6), torch.randn(32, 3)
    record = teleport_keeps_outputs(lambda: SharedMemory(tie), x, y, accept)
    if accept == "always":
        assert record.t == 1 and record.log_scales is not None
    found = st.discover(SharedMemory(tie), x[:4])
    assert "shares its memory with" in found.left["enc"], str(found)
    assert "free" not in found.left, str(found)  # the free branch is still rescaled


# ---- scaled values in arguments no rule rescales -------------------------------------------------------------
class ComputedPReLUSlope(nn.Module):
    """A PReLU whose slope a layer computes from the batch: ``prelu(h, relu(g(mean x)))``."""

    def __init__(self):
        super().__init__()
        self.a, self.g, self.c = nn.Linear(6, 8), nn.Linear(6, 1), nn.Linear(8, 3)

    def forward(self, x):
        return self.c(F.prelu(-F.relu(self.a(x)), F.relu(self.g(x.mean(0)))))


class ComputedBias(nn.Module):
    """``F.linear`` whose bias a layer computes from the first example."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(6, 8), nn.Linear(6, 3)
        self.w = nn.Parameter(torch.randn(3, 8))

    def forward(self, x):
        return F.linear(F.relu(self.a(x)), self.w, F.relu(self.b(x[0])))


class FeatureMask(nn.Module):
    """``nn.MultiheadAttention`` with a float attention mask a layer computes from the features."""

    def __init__(self):
        super().__init__()
        self.inp, self.bias, self.head = nn.Linear(6, 6), nn.Linear(6, 5), nn.Linear(6, 3)
        self.mha = nn.MultiheadAttention(6, 2, batch_first=True)

    def forward(self, x):
        h = F.relu(self.inp(x))
        out, _ = self.mha(h, h, h, attn_mask=F.relu(self.bias(x[0])))
        return self.head(out)


class WritesIntoAnother(nn.Module):
    """Writes the scaled features into a tensor made from the input, in place (``buf.mul_(h)``) or by ``out=``."""

    def __init__(self, how: str):
        super().__init__()
        self.how = how
        self.a, self.c, self.d = nn.Linear(6, 6), nn.Linear(6, 3), nn.Linear(6, 3)

    def forward(self, x):
        h = F.relu(self.a(x))
        buf = torch.ones_like(x)
        if self.how == "in place":
            buf.mul_(h)
        else:
            torch.mul(h, 2.0, out=buf)
        return self.c(h) + self.d(buf)


def assert_exact(model, x, symmetry, rtol=1e-10):
    """Random log-scales (σ = 0.5) on a float64 model keep every output in train and eval mode."""
    named = dict(model.named_parameters())
    s = torch.randn(symmetry.n_scales, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 0.5
    before = outputs(model, x)
    with torch.no_grad():
        for name in symmetry.params:
            named[name].mul_(torch.exp(symmetry.log_factor(name, s, named[name])))
    assert_kept(before, outputs(model, x), rtol)


ARGUMENT = "whose rule does not rescale it"


@pytest.mark.parametrize(
    "make, shape, pinned, why",
    [
        (ComputedPReLUSlope, (5, 6), "g", ARGUMENT),
        (ComputedBias, (5, 6), "b", ARGUMENT),
        (FeatureMask, (4, 5, 6), "bias", ARGUMENT),
        (lambda: WritesIntoAnother("in place"), (5, 6), "a", "written in place into an unscaled tensor"),
        (lambda: WritesIntoAnother("out"), (5, 6), "a", "writes its result into `out=`"),
    ],
)
def test_a_scale_leaving_through_a_way_no_rule_follows_is_pinned_by_the_rules_alone(make, shape, pinned, why):
    torch.manual_seed(0)
    model, x = make().double(), torch.randn(*shape, dtype=torch.float64)
    alone = st.discover(model, x, verify=False)
    assert why in alone.left[pinned], str(alone)
    if not isinstance(model, WritesIntoAnother):
        assert alone.n_scales > 0
    assert_exact(model, x, alone)


def test_a_prelu_slope_the_example_leaves_at_zero_is_not_kept_by_the_verification():
    """On this example ``relu(g(mean x)) = 0`` whatever ``g``'s scale: only the rule can pin it."""
    torch.manual_seed(0)
    model = ComputedPReLUSlope().double()
    with torch.no_grad():
        model.g.weight.fill_(1.0)
        model.g.bias.fill_(-0.1)
    half = torch.randn(3, 6, dtype=torch.float64)
    found = st.discover(model, torch.cat([half, -half]))  # mean 0: the slope is 0 on it
    assert "g" in found.left and not any("g" in group.producers for group in found.groups), str(found)
    assert_exact(model, torch.randn(6, 6, dtype=torch.float64) + 1, found)  # mean ≈ 1: the slope is not 0


# ---- a flag that forward branches on, set after the discovery was cached ------------------------------------
class Capped(nn.Module):
    """``c(min(relu(b(relu(a(x)))), cap))``: the cap is an attribute, off until it is set."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(6, 8), nn.Linear(8, 8), nn.Linear(8, 3)
        self.cap = None

    def forward(self, x):
        h = F.relu(self.b(F.relu(self.a(x))))
        if self.cap is not None:
            h = h.clamp(max=self.cap)
        return self.c(h)


def test_a_flag_set_after_a_teleport_is_followed_by_the_next_one():
    torch.manual_seed(0)
    model = Capped()
    x, y = torch.randn(32, 6), torch.randn(32, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    teleporter = st.Teleporter(model, F.mse_loss, optimizer, schedule=[0, 1], accept="always")
    teleporter.maybe(0, x, y)  # the discovery without the cap is cached
    model.cap = 2.0
    fresh = 3 * torch.randn(64, 6)
    before = outputs(model, fresh)
    record = teleporter.maybe(1, x, y)
    assert_kept(before, outputs(model, fresh), 2e-5)
    assert record.log_scales is not None and any(record.log_scales)  # a ↔ b still moves


def test_a_teleporter_discovers_once_over_many_teleports():
    """Attributes that torch's own modules keep (old-style weight norm's recomputed weight, BatchNorm's settings)
    do not change between calls: the cached discovery serves every teleport."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.utils.weight_norm(nn.Linear(64, 8)),
        nn.ReLU(),
        nn.Linear(8, 3),
    )
    calls = []
    discover = rescale.discover
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    teleporter = st.Teleporter(model, F.mse_loss, optimizer, every=1, accept="always")
    g = torch.Generator().manual_seed(0)
    try:
        rescale.discover = lambda *a, **k: calls.append(1) or discover(*a, **k)
        for step in range(3):
            x, y = torch.randn(8, 1, 4, 4, generator=g), torch.randn(8, 3, generator=g)
            teleporter.maybe(step, x, y)
            optimizer.zero_grad()
            F.mse_loss(model(x), y).backward()
            optimizer.step()
    finally:
        rescale.discover = discover
    assert len(calls) == 1


# ---- a module whose forward is replaced on the instance --------------------------------------------------------
class PatchedActivation(nn.Module):
    """``c(act(b(relu(a(x)))))`` with ``act`` an ``nn.ReLU`` whose forward was replaced by a clamp to [0, 1]."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c, self.act = nn.Linear(6, 8), nn.Linear(8, 8), nn.Linear(8, 3), nn.ReLU()
        self.act.forward = lambda x: torch.clamp(x, 0, 1)

    def forward(self, x):
        return self.c(self.act(self.b(F.relu(self.a(x)))))


def test_a_module_whose_forward_is_replaced_on_the_instance_is_not_read_by_its_class():
    """On a small batch the clamp never bites, so only the rule can tell; the fresh inputs are 300 times larger."""
    torch.manual_seed(0)
    x, y = 0.01 * torch.randn(16, 6), torch.randn(16, 3)
    record = teleport_keeps_outputs(PatchedActivation, x, y, "always")
    assert record.t == 1 and any(record.log_scales)  # a ↔ b still moves
    found = st.discover(PatchedActivation(), x)
    assert "forward is replaced on the instance" in found.left["b"], str(found)


# ---- values forward stores on the module -------------------------------------------------------------------
class StoresFeatures(nn.Module):
    """Keeps its hidden features for later (a feature penalty, a plot): ``self.features = h`` or a list."""

    def __init__(self, how: str):
        super().__init__()
        self.how, self.log = how, []
        self.a, self.b, self.c = nn.Linear(6, 8), nn.Linear(8, 8), nn.Linear(8, 3)

    def forward(self, x):
        h = F.relu(self.a(x))
        if self.how == "attribute":
            self.features = h
        else:
            self.log.append(h.detach())
        return self.c(F.relu(self.b(h)))


class StoresQueries(nn.Module):
    """Hand-written attention that keeps its queries (``what="q"``) or its attention weights (``"att"``)."""

    def __init__(self, what: str):
        super().__init__()
        self.what = what
        self.qkv, self.o, self.head = nn.Linear(8, 24), nn.Linear(8, 8), nn.Linear(8, 3)

    def forward(self, x):
        b, t, _ = x.shape
        q, k, v = self.qkv(x).split(8, dim=2)
        q, k, v = (z.view(b, t, 2, 4).transpose(1, 2) for z in (q, k, v))
        att = torch.softmax(q @ k.transpose(-2, -1) / 2.0, -1)
        self.saved = q if self.what == "q" else att
        return self.head(F.relu(self.o((att @ v).transpose(1, 2).reshape(b, t, 8))))


@pytest.mark.parametrize("how", ["attribute", "list"])
def test_features_stored_by_forward_are_outputs_too(how):
    torch.manual_seed(0)
    x, y = torch.randn(16, 6), torch.randn(16, 3)
    model = StoresFeatures(how)
    found = st.discover(model, x)
    assert "stored as" in found.left["a"] and "b" not in found.left, str(found)
    with torch.no_grad():
        model(x)
    before = (model.features if how == "attribute" else model.log[-1]).clone()
    record = st.Teleporter(model, F.mse_loss, schedule=[0], state="keep", accept="always").maybe(0, x, y)
    assert record.t == 1 and any(record.log_scales)
    with torch.no_grad():
        model(x)
    after = model.features if how == "attribute" else model.log[-1]
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-6)


def test_stored_queries_drop_the_query_key_groups_and_stored_weights_keep_them():
    torch.manual_seed(0)
    x = torch.randn(3, 5, 8)
    kinds = {what: sorted(g.kind for g in st.discover(StoresQueries(what), x).pair_groups) for what in ("q", "att")}
    assert kinds == {"q": ["vo", "vo"], "att": ["qk", "qk", "vo", "vo"]}


# ---- a forward that changes its input in place ----------------------------------------------------------------
class ScalesItsInput(nn.Module):
    """``x.mul_(0.5)`` first: every forward pass halves the tensor it is given."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(6, 8), nn.Linear(8, 3)

    def forward(self, x):
        return self.b(F.relu(self.a(x.mul_(0.5))))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_forward_that_changes_its_input_in_place_changes_neither_the_discovery_nor_the_batch(dtype):
    torch.manual_seed(0)
    model = ScalesItsInput().to(dtype)
    x, y = torch.randn(16, 6, dtype=dtype), torch.randn(16, 3, dtype=dtype)
    x0 = x.clone()
    found = st.discover(model, x)
    assert torch.equal(x, x0) and found.n_scales == 8, str(found)
    record = st.Teleporter(model, F.mse_loss, schedule=[0], state="keep", accept="always").maybe(0, x, y)
    assert torch.equal(x, x0)  # the teleport's forward passes ran on copies of the batch
    assert record.t == 1 and record.stopped is None, record


# ---- the optimiser's state, against the run replayed in the teleported coordinates ------------------------
def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3)).double()


def _replayed_step(make_optimizer):
    """Train 3 steps, teleport (``state="transport"``), take a 4th step. Replay: the same 3 steps' gradients
    mapped by ``g / f`` fed to a fresh optimiser on the parameters ``p·f``, then its own 4th step from the
    teleported point. Returns the two states after the teleport and the two points after the 4th step."""
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(8, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (8,), generator=g))]
    batches += [(torch.randn(8, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (8,), generator=g))]
    batches = batches * 2

    def step(model, optimizer, batch):
        optimizer.zero_grad()
        F.cross_entropy(model(batch[0]), batch[1]).backward()
        optimizer.step()

    model = _net()
    optimizer = make_optimizer(model.parameters())
    teleporter = st.Teleporter(model, F.cross_entropy, optimizer, schedule=[3], accept="always")
    for batch in batches[:3]:
        step(model, optimizer, batch)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    record = teleporter.teleport(*batches[3])
    assert record.t == 1 and record.state.startswith("transported")
    named = dict(model.named_parameters())
    factor = {n: named[n].detach() / before[n] for n in named}

    original, replay = _net(), _net()
    optimizer_original, optimizer_replay = make_optimizer(original.parameters()), make_optimizer(replay.parameters())
    p_original, p_replay = dict(original.named_parameters()), dict(replay.named_parameters())
    for x, y in batches[:3]:
        optimizer_original.zero_grad()
        F.cross_entropy(original(x), y).backward()
        with torch.no_grad():
            for n, p in p_replay.items():
                p.copy_(p_original[n] * factor[n])
                p.grad = p_original[n].grad / factor[n]
        optimizer_replay.step()
        optimizer_original.step()
    with torch.no_grad():
        for n, p in p_replay.items():
            p.copy_(named[n])  # the teleported point itself
    states = [
        {n: dict(opt.state[params[n]]) for n in params}
        for opt, params in ((optimizer, named), (optimizer_replay, p_replay))
    ]
    step(model, optimizer, batches[3])
    step(replay, optimizer_replay, batches[3])
    return states, [{n: p.detach() for n, p in m.named_parameters()} for m in (model, replay)]


def _decay_from_the_second_step(params):
    """SGD with momentum whose weight decay is switched on after its first step (a weight-decay schedule)."""
    optimizer = torch.optim.SGD(params, lr=0.05, momentum=0.9)

    def switch_on(opt, args, kwargs):
        for group in opt.param_groups:
            group["weight_decay"] = 0.1

    optimizer.register_step_post_hook(switch_on)
    return optimizer


OPTIMIZERS = {
    "sgd-nesterov-decay": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.1),
    "sgd-dampening-decay": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, dampening=0.3, weight_decay=0.1),
    "adam-amsgrad": lambda p: torch.optim.Adam(p, lr=1e-2, amsgrad=True),
    "adamw": lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1),
    "adagrad-initial-accumulator": lambda p: torch.optim.Adagrad(p, lr=1e-2, initial_accumulator_value=0.1),
    "sgd-decay-switched-on": _decay_from_the_second_step,
}


def _assert_same(states, points):
    teleported, replayed = states
    for n in teleported:
        for key, value in teleported[n].items():
            if isinstance(value, torch.Tensor) and value.dim():
                torch.testing.assert_close(value, replayed[n][key], rtol=1e-10, atol=0, msg=f"{n} {key}")
    for n in points[0]:
        torch.testing.assert_close(points[0][n], points[1][n], rtol=1e-10, atol=1e-14, msg=f"{n} after the step")


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_the_transported_state_is_the_state_of_the_run_replayed_in_the_new_coordinates(name):
    _assert_same(*_replayed_step(OPTIMIZERS[name]))


def test_a_momentum_buffer_loaded_after_the_teleporter_was_made_is_refused_for_transport():
    """Resuming from a checkpoint: the loaded buffers' weight-decay part is unknown, so no exact transport exists;
    the teleport says so before anything changes (and, without weight decay, transports them)."""
    for decay in (0.0, 0.01):
        model = _net()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=decay)
        x, y = torch.randn(16, 5, dtype=torch.float64), torch.randint(0, 3, (16,))
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
        checkpoint = optimizer.state_dict()
        resumed = _net()
        optimizer = torch.optim.SGD(resumed.parameters(), lr=0.1, momentum=0.9, weight_decay=decay)
        teleporter = st.Teleporter(resumed, F.cross_entropy, optimizer, schedule=[0], accept="always")
        optimizer.load_state_dict(checkpoint)
        resumed.zero_grad()
        F.cross_entropy(resumed(x), y).backward()
        before = [p.detach().clone() for p in resumed.parameters()]
        if decay:
            with pytest.raises(TypeError, match="not followed from its first step"):
                teleporter.maybe(0, x, y)
            assert all(torch.equal(p, q) for p, q in zip(resumed.parameters(), before))
        else:
            assert teleporter.maybe(0, x, y).state.startswith("transported: momentum_buffer")


@pytest.mark.xfail(
    strict=True,
    reason="RMSprop's momentum buffer accumulates g/(√v + ε); in the new coordinates that is g/(√v + e^{a}ε), "
    "which no function of the buffer gives: the transport keeps it, exact only as ε/√v → 0",
)
def test_rmsprop_momentum_is_transported_exactly():
    _assert_same(*_replayed_step(lambda p: torch.optim.RMSprop(p, lr=1e-3, momentum=0.5)))


# ---- networks that are handled: every output kept on fresh inputs ------------------------------------------
class Block(nn.Module):
    """``head(mid(act(a(x))))`` on features, or a small CNN, with one operation ``op`` under test."""

    def __init__(self, op: str):
        super().__init__()
        self.op = op
        self.a, self.b, self.c = nn.Linear(6, 8), nn.Linear(8, 8), nn.Linear(8, 3)
        self.conv1, self.conv2 = nn.Conv2d(2, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.bn, self.gn, self.se = nn.BatchNorm2d(8), nn.GroupNorm(2, 8), nn.Linear(8, 8)
        self.prelu, self.relu6 = nn.PReLU(8, init=-0.7), nn.ReLU6()
        with torch.no_grad():
            self.bn.running_mean.uniform_(-1, 1)
            self.bn.running_var.uniform_(0.5, 2)

    def forward(self, x):
        if self.op in ("bn", "gn", "se", "shuffle"):
            h = F.relu(self.conv1(x))
            if self.op == "bn":
                h = F.relu(self.bn(self.conv2(h)))
            elif self.op == "gn":
                h = F.relu(self.gn(self.conv2(h)))
            elif self.op == "se":  # squeeze and excitation: a gate computed from the scaled features
                h = h * torch.sigmoid(self.se(h.mean((2, 3))))[:, :, None, None]
            else:  # channel shuffle
                b, c, hh, ww = h.shape
                h = self.conv2(h.view(b, 2, c // 2, hh, ww).transpose(1, 2).reshape(b, c, hh, ww))
            return self.c(F.adaptive_avg_pool2d(F.relu(h), 1).flatten(1))
        h = self.b(F.relu(self.a(x)))
        if self.op == "relu6":
            h = self.relu6(h)
        elif self.op == "mask":
            h = h * (h > 0)
        elif self.op == "where":
            h = torch.where(h > 0, h, 0.0)
        elif self.op == "prelu":
            h = self.prelu(h)
        elif self.op == "inplace":  # F.relu in place: ``h`` itself is rectified, and read again
            F.relu(h, inplace=True)
            h = h + 0.5 * F.relu(h)
        return self.c(h)


CASES = {
    "relu6": (6,),
    "mask": (6,),
    "where": (6,),
    "prelu": (6,),
    "inplace": (6,),
    "bn": (2, 4, 4),
    "gn": (2, 4, 4),
    "se": (2, 4, 4),
    "shuffle": (2, 4, 4),
}


@pytest.mark.parametrize("accept", ["always", "lookahead"])
@pytest.mark.parametrize("op", sorted(CASES))
def test_a_teleport_of_a_handled_network_keeps_every_output(op, accept):
    torch.manual_seed(0)
    x, y = torch.randn(16, *CASES[op]), torch.randn(16, 3)
    record = teleport_keeps_outputs(lambda: Block(op), x, y, accept)
    if accept == "always":
        assert record.t == 1 and record.log_scales is not None and any(record.log_scales)
