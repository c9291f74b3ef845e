"""Every symmetry discovery finds is exact, or it says why not: one network per case that could break a
rescaling (a layer called twice, tied weights, hooks, parametrisations, mode-dependent code, ...), and random
networks built from all of them.

Each check applies the discovered symmetry with random log-scales of its own (not the verification's) to the
model's parameters and compares every output, in train and in eval mode, in float64; the rules alone
(``verify=False``) must already be exact, so the numerical verification inside ``discover`` is a second line,
not the one these tests rely on.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as hs
from torch import nn
from torch.nn.utils import parametrizations, prune
from torch.utils._pytree import tree_flatten

import symtele as st
from symtele.models import digits_resnet, resnet18
from symtele.teleports import rules
from symtele.teleports.rules import Rule


def outputs(model, x, train: bool) -> list[torch.Tensor]:
    """Every output (a tuple's, a dict's) in one mode, the random number generator seeded, the buffers as
    they were."""
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    model.train(train)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        with torch.no_grad():
            out = model(x)
    with torch.no_grad():
        for n, b in model.named_buffers():
            b.copy_(buffers[n])
    return tree_flatten(out)[0]


def assert_exact(model, x, symmetry, seed=1, rtol=1e-10):
    """Random log-scales (normal, σ = 0.5) applied in place to ``model``'s parameters keep every output in
    train and eval mode within ``rtol`` of its size; the parameters are restored after."""
    named = dict(model.named_parameters())
    s = torch.randn(symmetry.n_scales, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)) * 0.5
    before = {mode: outputs(model, x, mode) for mode in (True, False)}
    saved = {n: p.detach().clone() for n, p in named.items()}
    with torch.no_grad():
        for name in symmetry.params:
            named[name].mul_(torch.exp(symmetry.log_factor(name, s, named[name])))
    try:
        for mode in (True, False):
            for b, a in zip(before[mode], outputs(model, x, mode)):
                finite = torch.isfinite(b)
                scale = float(b[finite].abs().max()) if bool(finite.any()) else 0.0
                torch.testing.assert_close(
                    a,
                    b,
                    rtol=0,
                    atol=rtol * scale,
                    equal_nan=True,
                    msg=lambda m, mode=mode: f"{mode=}: {m}\n{symmetry}",
                )
    finally:
        with torch.no_grad():
            for n, p in named.items():
                p.copy_(saved[n])


def rules_and_check(model, x):
    """Discover with the rules alone and with verification; both exact, and the verification drops nothing
    the rules kept."""
    model = model.double()
    x = x.double() if x.is_floating_point() else x
    alone = st.discover(model, x, verify=False)
    assert_exact(model, x, alone)
    found = st.discover(model, x)
    assert found.n_scales == alone.n_scales, str(found)
    assert_exact(model, x, found)
    return found


class Net(nn.Module):
    """``fc3(relu(fc2(relu(fc1(x)))))`` of width 6, with ``route`` replacing the forward when given."""

    def __init__(self, route=None, d=4):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(d, 6), nn.Linear(6, 6), nn.Linear(6, 3)
        self.route = route

    def forward(self, x):
        if self.route is not None:
            return self.route(self, x)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


X = torch.randn(5, 4)


def test_a_plain_network_keeps_its_scales():
    found = rules_and_check(Net(), X)
    assert found.n_scales == 12 and found.left == {"fc3": "reaches the network's output"}
    assert found.verified.startswith("verified: every output kept within 1e-09")


def test_a_layer_called_twice_is_pinned():
    found = rules_and_check(Net(lambda m, x: m.fc3(F.relu(m.fc2(F.relu(m.fc2(F.relu(m.fc1(x)))))))), X)
    assert found.n_scales == 0 and "`fc2` is called twice" in str(found)


def test_a_batchnorm_called_twice_is_pinned():
    class TwiceBN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn, self.head = nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.Linear(3, 2)

        def forward(self, x):
            h = F.relu(self.bn(F.relu(self.bn(self.conv(x)))))
            return self.head(h.mean((2, 3)))

    found = rules_and_check(TwiceBN(), torch.randn(4, 1, 5, 5))
    assert found.n_scales == 0 and found.left["bn"] == "`bn` is called twice"


def test_a_siamese_encoder_is_pinned_and_the_head_kept():
    class Siamese(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = nn.Sequential(nn.Linear(2, 5), nn.ReLU(), nn.Linear(5, 3))
            self.head = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 1))

        def forward(self, x):
            return self.head(torch.cat([self.enc(x[:, :2]), self.enc(x[:, 2:])], dim=1))

    found = rules_and_check(Siamese(), X)
    assert found.left["enc.0"] == "`enc.0` is called twice" and found.left["enc.2"] == "`enc.2` is called twice"
    assert found.n_scales == 4 and [g.producers for g in found.groups] == [("head.0",)]
    assert "enc.0 (Linear): `enc.0` is called twice" in str(found)


def test_two_linears_sharing_a_weight_are_pinned():
    model = Net(lambda m, x: m.fc3(F.relu(m.fc2(F.relu(m.fc2b(F.relu(m.fc1(x))))))))
    model.fc2b = nn.Linear(6, 6)
    model.fc2b.weight = model.fc2.weight
    found = rules_and_check(model, X)
    assert found.n_scales == 0 and "`fc2.weight` is shared by fc2, fc2b" in str(found)


def test_a_decoder_tied_to_an_embedding_is_pinned():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.fc = nn.Embedding(10, 4), nn.Linear(4, 4)
            self.dec = nn.Linear(4, 10, bias=False)
            self.dec.weight = self.emb.weight

        def forward(self, tokens):
            return self.dec(F.relu(self.fc(self.emb(tokens).mean(1))))

    found = rules_and_check(Tied(), torch.randint(0, 10, (3, 5)))
    assert found.n_scales == 0 and found.left["fc"] == "`emb.weight` is shared by dec, emb"


def test_a_weight_read_transposed_by_f_linear_is_pinned():
    found = rules_and_check(Net(lambda m, x: F.linear(F.relu(m.fc1(x)), m.fc1.weight.t())), X)
    assert found.n_scales == 0 and found.left["fc1"] == "`fc1.weight` is shared by fc1, t"


@pytest.mark.parametrize(
    "route, user",
    [
        (lambda m, x: m.fc3(F.relu(m.fc2(F.relu(m.fc1(x))))) + m.fc1.weight.norm(), "norm"),
        (lambda m, x: m.fc3(F.relu(m.fc2(F.relu(m.fc1(x))))) + (x @ m.fc1.weight.t()).sum(1, True), "t"),
    ],
)
def test_a_weight_used_outside_its_layer_is_pinned(route, user):
    found = rules_and_check(Net(route), X)
    assert found.left["fc1"] == f"`fc1.weight` is shared by fc1, {user}"
    assert found.n_scales == 6  # fc2's units are kept


def test_the_shape_of_a_weight_is_not_a_use():
    found = rules_and_check(Net(lambda m, x: m.fc3(F.relu(m.fc2(F.relu(m.fc1(x)))) * m.fc1.weight.shape[0])), X)
    assert found.n_scales == 12


def test_a_weight_read_outside_its_layer_pins_the_units_it_reads_too():
    found = rules_and_check(Net(lambda m, x: m.fc3(F.relu(m.fc2(F.relu(m.fc1(x))))) + m.fc2.weight.norm()), X)
    assert found.n_scales == 0 and found.left["fc1"] == found.left["fc2"] == "`fc2.weight` is shared by fc2, norm"


def test_reverse_division_is_not_homogeneous():
    found = rules_and_check(Net(lambda m, x: m.fc3(F.relu(m.fc2(2.0 / m.fc1(x))))), X)
    assert "`2.0 / fc1` at truediv is not positively homogeneous" == found.left["fc1"]
    assert found.n_scales == 6  # fc2's units are kept


def test_division_by_a_number_passes():
    found = rules_and_check(Net(lambda m, x: m.fc3(F.relu(m.fc2(F.relu(m.fc1(x) / 3.0))))), X)
    assert found.n_scales == 12


def test_keyword_arguments_are_read_like_positional_ones():
    class Keywords(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn, self.fc = nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.Linear(3, 2)

        def forward(self, x):
            h = F.relu(self.bn(input=self.conv(x)))
            return self.fc(torch.flatten(h.mean(dim=3, keepdim=True).mean(2, True), start_dim=1))

    found = rules_and_check(Keywords(), torch.randn(4, 1, 5, 5))
    assert [g.producers for g in found.groups] == [("bn",)] and found.n_scales == 3


@pytest.mark.parametrize(
    "pool, shape",
    [
        (nn.MaxPool1d(2), (5, 4)),  # (B, D): the features are pooled
        (nn.AvgPool1d(2), (5, 7, 4)),  # (B, T, D): the last axis, the features, is pooled
        (lambda h: F.max_pool1d(h, 2), (5, 7, 4)),
        (nn.AdaptiveAvgPool1d(3), (5, 4)),
    ],
)
def test_pooling_over_linear_features_pins_them(pool, shape):
    class Pooled(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.pool, self.fc2 = nn.Linear(4, 6), pool, nn.Linear(3, 2)

        def forward(self, x):
            return self.fc2(self.pool(F.relu(self.fc1(x))))

    found = rules_and_check(Pooled(), torch.randn(*shape))
    assert found.n_scales == 0 and "pools across the scaled channels" in found.left["fc1"]


def test_pooling_over_positions_keeps_the_channels():
    model = nn.Sequential(nn.Conv1d(2, 3, 3), nn.ReLU(), nn.MaxPool1d(2), nn.Flatten(), nn.Linear(6, 2))
    found = rules_and_check(model, torch.randn(4, 2, 6))
    assert found.n_scales == 3


def test_code_that_depends_on_the_mode_keeps_what_holds_in_both():
    class Branch(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2, self.fc3 = nn.Linear(4, 6), nn.Linear(6, 6), nn.Linear(6, 2)

        def forward(self, x):
            h = F.relu(self.fc1(x))
            h = h * 2 if self.training else torch.tanh(h)
            return self.fc3(F.relu(self.fc2(h)))

    found = rules_and_check(Branch(), X)
    assert found.n_scales == 6 and found.left["fc1"].startswith("passes through tanh() at tanh")


def test_noise_in_train_mode_only_pins_what_it_touches():
    class Noise(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2, self.fc3 = nn.Linear(4, 6), nn.Linear(6, 6), nn.Linear(6, 2)

        def forward(self, x):
            h = F.relu(self.fc1(x))
            if self.training:
                h = h + 0.1 * torch.randn_like(h)
            return self.fc3(F.relu(self.fc2(h)))

    found = rules_and_check(Noise(), X)
    assert found.n_scales == 6 and "randn_like" in found.left["fc1"]


class Blocks(nn.Module):
    def __init__(self, blocks):
        super().__init__()
        self.blocks = blocks

    def forward(self, x):
        return self.blocks(x)


@pytest.mark.parametrize("kind", ["forward", "pre"])
def test_a_hooked_module_is_pinned(kind):
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Sequential(nn.Linear(6, 6), nn.ReLU()), nn.Linear(6, 2))
    blocks = Blocks(model)
    if kind == "forward":
        model[2].register_forward_hook(lambda module, args, out: out + 1.0)
    else:
        model[2].register_forward_pre_hook(lambda module, args: (args[0] + 1.0,))
    found = rules_and_check(blocks, X)
    assert found.n_scales == 0 and found.left["blocks.2.0"] == "hook on `blocks.2`"
    assert found.left["blocks.0"] == "hook on `blocks.2`"


def test_a_global_hook_pins_everything():
    handle = nn.modules.module.register_module_forward_hook(lambda module, args, out: out)
    try:
        found = st.discover(Net(), X)
    finally:
        handle.remove()
    assert found.n_scales == 0 and "a global forward hook" in found.left["fc1"]


@pytest.mark.parametrize("style", ["hook", "parametrize"])
def test_weight_norm_is_rescaled_through_its_magnitude(style):
    model = Net()
    for name in ("fc1", "fc3"):
        layer = getattr(model, name)
        if style == "hook":
            with pytest.warns(FutureWarning):
                torch.nn.utils.weight_norm(layer)
        else:
            parametrizations.weight_norm(layer)
    found = rules_and_check(model, X)
    assert found.n_scales == 6 and [g.producers for g in found.groups] == [("fc1",)]
    magnitude = "fc1.weight_g" if style == "hook" else "fc1.parametrizations.weight.original0"
    assert magnitude in found.params and "weight-normalised" in found.left["fc2"]


@pytest.mark.parametrize("style", ["hook", "parametrize"])
def test_spectral_norm_is_dropped_with_the_reason(style):
    model = Net()
    (torch.nn.utils.spectral_norm if style == "hook" else parametrizations.spectral_norm)(model.fc2)
    found = rules_and_check(model, X)
    assert found.n_scales == 0  # fc1's units are read by fc2, fc2's are produced by it
    assert ("spectrally normalised" if style == "hook" else "parametrised (_SpectralNorm)") in found.left["fc2"]


def test_a_pruned_weight_is_rescaled_through_weight_orig():
    model = Net()
    prune.l1_unstructured(model.fc2, "weight", 0.4)
    found = rules_and_check(model, X)
    assert found.n_scales == 12 and "fc2.weight_orig" in found.params


def test_a_mean_over_the_channels_pins_them():
    model = Net(lambda m, x: m.fc3(F.relu(m.fc2(F.relu(m.fc1(x)).mean(1, True).expand(-1, 6)))))
    found = rules_and_check(model, X)
    assert found.left["fc1"] == "reduced over its channels at mean" and found.n_scales == 6


def test_a_maxout_is_pinned():
    model = Net(lambda m, x: m.fc3(F.relu(m.fc2(m.fc1(x).view(-1, 3, 2).max(-1).values.repeat(1, 2)))))
    found = rules_and_check(model, X)
    assert found.left["fc1"].startswith("reshaped across its channels") and found.n_scales == 6


def test_a_compiled_model_is_read_through_its_original():
    model = Net().double()
    compiled = torch.compile(model)
    found = st.discover(compiled, X.double())
    assert found.n_scales == 12 and set(found.params) <= {n for n, _ in compiled.named_parameters()}
    assert_exact(compiled._orig_mod, X.double(), _unprefixed(found))


def _unprefixed(symmetry):
    from symtele.teleports.symmetry import Term

    terms = [Term(t.param.removeprefix("_orig_mod."), t.units, t.sign) for t in symmetry.terms]
    return type(symmetry)(symmetry.n_scales, terms, symmetry.groups)


def test_a_forward_that_fixes_its_dtype_is_checked_in_that_dtype():
    model = Net(lambda m, x: m.fc3(F.relu(m.fc2(F.relu(m.fc1(x)).float()))))
    found = st.discover(model, X)
    assert found.n_scales == 6 and found.left["fc1"].startswith("passes through .float() at float")
    assert found.verified.startswith("verified: every output kept within 0.0001 (float32")
    assert_exact(model, X, found, rtol=1e-5)


def test_frozen_parameters_are_pinned():
    model = Net()
    model.fc2.bias.requires_grad_(False)
    found = rules_and_check(model, X)
    assert found.n_scales == 6 and found.left["fc2"] == "`fc2.bias` is frozen (requires_grad=False)"


def test_dropout_in_train_mode_keeps_the_scales():
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Dropout(0.5), nn.Linear(6, 2))
    found = rules_and_check(model, X)
    assert found.n_scales == 6


def test_a_refused_activation_says_what_is_supported():
    found = st.discover(nn.Sequential(nn.Linear(4, 6), nn.GELU(), nn.Linear(6, 2)), X)
    assert found.left["0"] == (
        "passes through 1 (GELU), which no positive scale passes (supported: ReLU, LeakyReLU, PReLU, abs, "
        "clamp(min=0), Identity, Dropout, pooling, padding, Upsample)"
    )
    assert "0 (Linear): passes through 1 (GELU)" in str(found)


def test_every_output_is_compared_and_the_record_is_data():
    def route(m, x):
        h = m.fc1(x)
        return {"logits": m.fc3(F.relu(m.fc2(F.relu(h)))), "hidden": (h,)}

    model = Net(route)
    found = rules_and_check(model, X)
    assert found.left["fc1"] == "reaches the network's output" and found.n_scales == 6  # the hidden output
    data = found.to_dict()
    assert data["n_scales"] == 6 and {"layer": "fc1", "reason": "reaches the network's output"} in data["dropped"]


def test_a_wrong_rule_is_caught_by_the_verification(monkeypatch):
    monkeypatch.setitem(rules.MODULES, nn.Tanh, Rule(rules._through))  # tanh(x/d) ≠ tanh(x)/d
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 2)).double()
    assert st.discover(model, X.double(), verify=False).n_scales == 11
    found = st.discover(model, X.double())
    assert found.n_scales == 5 and [g.producers for g in found.groups] == [("2",)]
    assert found.left["0"].startswith("group of 0 failed numerical verification: an output changed by ")
    assert_exact(model, X.double(), found)


def test_discovery_changes_nothing_in_the_model():
    torch.manual_seed(0)
    model = digits_resnet().train()
    model.fc.eval()  # mixed modes
    state = {k: v.clone() for k, v in model.state_dict().items()}
    modes = {n: m.training for n, m in model.named_modules()}
    x = torch.randn(4, 1, 8, 8)
    rng, threads = torch.get_rng_state(), torch.get_num_threads()
    st.discover(model, x)
    assert torch.equal(torch.get_rng_state(), rng) and torch.get_num_threads() == threads
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert all(p.dtype == torch.float32 for p in model.parameters())


# ---- symmetries the table adds --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "norm, shape",
    [
        (nn.GroupNorm(2, 4), (3, 1, 5, 5)),
        (nn.InstanceNorm2d(4, affine=True), (3, 1, 5, 5)),
        (nn.InstanceNorm2d(4, affine=True, track_running_stats=True), (3, 1, 5, 5)),
        (nn.LayerNorm(4), (3, 2, 4)),
    ],
)
def test_the_affine_output_of_a_normaliser_is_rescaled(norm, shape):
    class Normed(nn.Module):
        def __init__(self):
            super().__init__()
            conv = len(shape) == 4
            self.first = nn.Conv2d(1, 4, 3, padding=1) if conv else nn.Linear(4, 4)
            self.norm, self.last = norm, nn.Linear(4, 2)
            self.conv = conv

        def forward(self, x):
            h = F.relu(self.norm(self.first(x)))
            return self.last(h.mean((2, 3)) if self.conv else h)

    with torch.no_grad():
        if norm.weight is not None:
            norm.weight.uniform_(0.5, 2)
            norm.bias.uniform_(-1, 1)
    found = rules_and_check(Normed(), torch.randn(*shape))
    assert [g.producers for g in found.groups] == [("norm",)] and found.n_scales == 4
    assert "feeds" in found.left["first"]


def test_abs_upsample_and_interpolate_pass_the_scales():
    class Spatial(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(1, 3, 3, padding=1), nn.Conv2d(3, 3, 3, padding=1)
            self.up, self.fc = nn.Upsample(scale_factor=2, mode="bilinear"), nn.Linear(3, 2)

        def forward(self, x):
            h = self.up(self.a(x).abs())
            h = F.interpolate(F.relu(self.b(h)), size=(3, 3), mode="nearest")
            return self.fc(h.sum((2, 3)))

    found = rules_and_check(Spatial(), torch.randn(2, 1, 4, 4))
    assert found.n_scales == 6


@pytest.mark.parametrize(
    "step, channels, kept",
    [
        (nn.PReLU(3), 3, 6),
        (nn.ZeroPad2d(1), 3, 6),
        (nn.ReflectionPad2d((1, 0, 2, 1)), 3, 6),
        (lambda h: F.pad(h, (1, 1, 0, 0), mode="replicate"), 3, 6),
        (lambda h: torch.clamp(h, min=0), 3, 6),
        (lambda h: h.clamp(0, 6), 3, 3),
        (nn.ConstantPad2d(1, 0.5), 3, 3),
        (lambda h: F.pad(h, (0, 0, 0, 0, 1, 1)), 5, 3),  # pads the channels
    ],
)
def test_prelu_padding_and_clamp(step, channels, kept):
    class Padded(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.step, self.b, self.fc = nn.Conv2d(1, 3, 3), step, nn.Conv2d(channels, 3, 1), nn.Linear(3, 2)

        def forward(self, x):
            return self.fc(F.relu(self.b(self.step(self.a(x)))).mean((2, 3)))

    found = rules_and_check(Padded(), torch.randn(2, 1, 6, 6))
    assert found.n_scales == kept, str(found)


@pytest.mark.parametrize("groups", [1, 2])
def test_transposed_convolutions_are_layers(groups):
    model = nn.Sequential(
        nn.ConvTranspose2d(2, 4, 3, groups=groups),
        nn.ReLU(),
        nn.ConvTranspose2d(4, 6, 2, stride=2, groups=groups),
        nn.LeakyReLU(0.3),
        nn.Conv2d(6, 2, 3),
    )
    found = rules_and_check(model, torch.randn(3, 2, 3, 3))
    assert found.n_scales == 10


def test_a_bias_added_after_a_convolution_produces_the_unit():
    class Biased(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bias = nn.Conv2d(1, 3, 3, bias=False), nn.Parameter(torch.randn(3))
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            h = F.relu(self.conv(x) + self.bias.view(1, -1, 1, 1))
            return self.fc(h.mean((2, 3)))

    found = rules_and_check(Biased(), torch.randn(2, 1, 5, 5))
    assert found.n_scales == 3 and "bias" in found.params


@pytest.mark.parametrize("size, kept", [(6, 12), (1, 6)])
def test_a_parameter_added_to_linear_features(size, kept):
    model = Net(lambda m, x: m.fc3(F.relu(m.fc2(F.relu(m.fc1(x) + m.shift)))))
    model.shift = nn.Parameter(torch.randn(size))
    found = rules_and_check(model, X)
    assert found.n_scales == kept and ("shift" in found.params) == (size == 6)
    if size == 1:
        assert found.left["fc1"] == "added to an unscaled value at add (`fc1 + shift`)"


def test_the_cache_follows_the_module_tree_and_the_hooks():
    from symtele.teleports.rescale import symmetry_of

    model = Net()
    first = symmetry_of(model, X)
    assert symmetry_of(model, torch.randn(9, 4)) is first and symmetry_of(model.eval(), X) is first
    model.fc2 = nn.Linear(6, 6)
    second = symmetry_of(model, X)
    assert second is not first and second.n_scales == 12
    handle = model.fc2.register_forward_hook(lambda m, a, out: out + 1)
    with pytest.raises(ValueError, match="no positively rescalable units .*fc2: hook on `fc2`"):
        symmetry_of(model, X)
    handle.remove()
    model.fc2.bias.requires_grad_(False)
    assert symmetry_of(model, X).n_scales == 6


def test_resnet18_keeps_its_scales_under_verification():
    found = st.discover(resnet18(), torch.randn(2, 3, 32, 32))
    assert found.n_scales == 2880 and not any("verification" in d.reason for d in found.dropped)


# ---- random networks ------------------------------------------------------------------------------------------
W = 4  # every hidden width: any layer may be reused anywhere
OPS = [
    "linear",
    "relu",
    "leaky",
    "tanh",
    "gelu",
    "abs",
    "neg",
    "dropout",
    "reuse",
    "tied",
    "rdiv",
    "div",
    "bias",
    "mul_const",
    "mul_param",
    "square",
    "hook",
    "pre_hook",
    "train_branch",
    "noise",
    "layernorm",
    "batchnorm",
    "channel_mean",
    "pool_features",
    "weight_norm",
    "spectral_norm",
    "prune",
    "frozen",
    "residual",
    "maxout",
    "norm_outside",
    "transposed",
]

#: the operations every scale passes (half the draws come from these, so that many networks keep scales)
BENIGN = ["linear", "relu", "leaky", "abs", "neg", "dropout", "div", "bias", "mul_const", "mul_param", "residual"]


class Random(nn.Module):
    """A network built from ``ops`` on (B, W) features (see :data:`OPS`), ending in ``Linear(W, 3)``; with
    ``two`` it also returns the last hidden features."""

    def __init__(self, ops, draws, two):
        super().__init__()
        self.ops, self.two = ops, two
        self.mods = nn.ModuleList()
        self.linears: list[int] = []
        self.extra = nn.ParameterList()
        for op, draw in zip(ops, draws):
            self.mods.append(self.make(op, draw))
        self.head = nn.Linear(W, 3)

    def make(self, op, draw):
        if op in ("linear", "hook", "pre_hook", "weight_norm", "spectral_norm", "prune", "frozen", "residual"):
            layer = nn.Linear(W, W, bias=draw % 2 == 0)
            if op == "hook":
                layer.register_forward_hook(lambda m, a, out: out + 0.5)
            elif op == "pre_hook":
                layer.register_forward_pre_hook(lambda m, a: (a[0] * 2.0 - 0.1,))
            elif op == "weight_norm":
                parametrizations.weight_norm(layer)
            elif op == "spectral_norm":
                parametrizations.spectral_norm(layer)
            elif op == "prune":
                prune.random_unstructured(layer, "weight", 0.3)
            elif op == "frozen":
                layer.weight.requires_grad_(False)
            self.linears.append(len(self.mods))
            return layer
        if op == "tied":
            layer = nn.Linear(W, W)
            plain = [i for i in self.linears if isinstance(self.mods[i]._parameters.get("weight"), nn.Parameter)]
            if plain:
                layer.weight = self.mods[plain[draw % len(plain)]].weight
            return layer
        if op == "layernorm":
            return nn.LayerNorm(W)
        if op == "batchnorm":
            return nn.BatchNorm1d(W)
        if op == "leaky":
            return nn.LeakyReLU([-0.5, 0.0, 0.2, 1.5][draw % 4])
        if op == "pool_features":
            return nn.AvgPool1d(3, stride=1, padding=1)
        if op in ("bias", "mul_param"):
            self.extra.append(nn.Parameter(torch.rand(W) + 0.5))
            return nn.Identity()
        if op == "transposed":
            return nn.ConvTranspose1d(W, W, 1)
        return nn.Identity()

    def forward(self, x):
        h, extra = x, 0
        for i, op in enumerate(self.ops):
            m = self.mods[i]
            if op in ("linear", "hook", "pre_hook", "weight_norm", "spectral_norm", "prune", "frozen", "tied"):
                h = m(h)
            elif op == "residual":
                h = h + m(h)
            elif op == "reuse":
                h = self.mods[self.linears[0]](h) if self.linears else h
            elif op == "relu":
                h = F.relu(h)
            elif op == "tanh":
                h = torch.tanh(h)
            elif op == "gelu":
                h = F.gelu(h)
            elif op == "abs":
                h = h.abs()
            elif op == "neg":
                h = -h
            elif op == "dropout":
                h = F.dropout(h, 0.3, self.training)
            elif op == "rdiv":
                h = 2.0 / h
            elif op == "div":
                h = h / 3.0
            elif op == "bias":
                h = h + self.extra[extra]
                extra += 1
            elif op == "mul_const":
                h = h * -1.5
            elif op == "mul_param":
                h = h * self.extra[extra]
                extra += 1
            elif op == "square":
                h = h * h
            elif op == "train_branch":
                h = h * 2.0 if self.training else torch.sigmoid(h)
            elif op == "noise":
                if self.training:
                    h = h + 0.1 * torch.randn_like(h)
            elif op == "channel_mean":
                h = h - h.mean(1, True)
            elif op == "maxout":
                h = h.view(-1, W // 2, 2).max(-1).values.repeat(1, 2)
            elif op == "norm_outside":
                h = h + self.mods[self.linears[0]].weight.norm() if self.linears else h
            elif op == "transposed":
                h = m(h.unsqueeze(-1)).flatten(1)
            else:
                h = m(h)
        out = self.head(h)
        return (out, h) if self.two else out


@hs.composite
def random_networks(draw):
    ops = draw(hs.lists(hs.one_of(hs.sampled_from(BENIGN), hs.sampled_from(OPS)), min_size=1, max_size=7))
    ops = ["linear", *ops]  # at least one layer to rescale
    draws = draw(hs.lists(hs.integers(0, 3), min_size=len(ops), max_size=len(ops)))
    return ops, draws, draw(hs.booleans()), draw(hs.integers(0, 2**16))


@settings(derandomize=True, max_examples=500, deadline=None, suppress_health_check=list(HealthCheck))
@given(random_networks())
def test_random_networks_keep_every_output_or_say_why(arch):
    ops, draws, two, seed = arch
    torch.manual_seed(seed)
    model = Random(ops, draws, two).double()
    x = torch.randn(5, W, dtype=torch.float64)
    with one_thread():  # tiny networks: one thread is fastest, and steady on a busy machine
        found = st.discover(model, x)
        assert not any("verification" in d.reason for d in found.dropped), (ops, str(found))
        assert_exact(model, x, found, seed=seed)
    assert all(d.reason for d in found.dropped)
    event("some scales kept" if found.n_scales else "every scale pinned")


@contextlib.contextmanager
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


C, L = 4, 6  # channels and positions of the convolutional networks: every op keeps them
CONV_OPS = [
    "conv",
    "grouped",
    "depthwise",
    "relu",
    "leaky",
    "abs",
    "maxpool",
    "avgpool",
    "upsample",
    "interpolate",
    "batchnorm",
    "groupnorm",
    "instancenorm",
    "positions_layernorm",
    "position_mean",
    "channel_mean",
    "channel_pool",
    "transposed",
    "residual",
    "concat",
    "transpose_axes",
    "bias_param",
    "reuse",
    "hook",
    "tanh",
    "dropout2",
    "pool_unsqueezed",
    "pool_positions_unsqueezed",
    "linear_channels",
]
CONV_BENIGN = [
    "conv",
    "grouped",
    "relu",
    "leaky",
    "maxpool",
    "avgpool",
    "upsample",
    "residual",
    "concat",
    "transposed",
    "linear_channels",
]


class RandomConv(nn.Module):
    """A 1-D convolutional network built from ``ops`` on (B, C, L) (see :data:`CONV_OPS`), flattened into
    ``Linear(C·L, 3)``."""

    def __init__(self, ops, draws):
        super().__init__()
        self.ops = ops
        self.mods = nn.ModuleList(self.make(op, draw) for op, draw in zip(ops, draws))
        self.head = nn.Linear(C * L, 3)

    @staticmethod
    def make(op, draw):
        if op in ("conv", "hook", "residual", "reuse"):
            layer = nn.Conv1d(C, C, 3, padding=1, bias=draw % 2 == 0)
            if op == "hook":
                layer.register_forward_hook(lambda m, a, out: out * 2.0 + 0.1)
            return layer
        if op == "grouped":
            return nn.Conv1d(C, C, 3, padding=1, groups=2)
        if op == "depthwise":
            return nn.Conv1d(C, C, 1, groups=C)
        if op == "concat":
            return nn.Conv1d(2 * C, C, 1)
        if op == "transposed":
            return nn.ConvTranspose1d(C, C, 3, padding=1, groups=[1, 2][draw % 2])
        if op == "leaky":
            return nn.LeakyReLU([-0.5, 0.0, 0.2, 1.5][draw % 4])
        if op == "batchnorm":
            return nn.BatchNorm1d(C)
        if op == "groupnorm":
            return nn.GroupNorm(2, C)
        if op == "instancenorm":
            return nn.InstanceNorm1d(C, affine=True, track_running_stats=draw % 2 == 0)
        if op == "positions_layernorm":
            return nn.LayerNorm(L)
        if op == "maxpool":
            return nn.MaxPool1d(3, stride=1, padding=1)
        if op == "avgpool":
            return nn.AvgPool1d(3, stride=1, padding=1)
        if op == "channel_pool":  # on (B, C, L) it pools over C and L (read as one unbatched image)
            return nn.MaxPool2d(3, stride=1, padding=1)
        if op == "bias_param":
            return nn.ParameterList([nn.Parameter(torch.randn(C))])
        if op == "linear_channels":
            return nn.Linear(C, C)
        return nn.Identity()

    def forward(self, x):
        h, first = x, None
        for op, m in zip(self.ops, self.mods):
            if op in ("conv", "hook", "grouped", "depthwise", "transposed", "batchnorm", "groupnorm", "instancenorm"):
                h = m(h)
                first = m if first is None and op == "conv" else first
            elif op in ("maxpool", "avgpool", "leaky", "positions_layernorm"):
                h = m(h)
            elif op == "residual":
                h = h + m(F.relu(h))
            elif op == "reuse":
                h = (first or m)(h)
            elif op == "concat":
                h = m(torch.cat([h, F.relu(h)], dim=1))
            elif op == "relu":
                h = F.relu(h)
            elif op == "abs":
                h = torch.abs(h)
            elif op == "tanh":
                h = h.tanh()
            elif op == "dropout2":
                h = F.dropout1d(h, 0.5, self.training)
            elif op == "upsample":
                h = F.avg_pool1d(F.interpolate(h, scale_factor=2, mode="linear"), 2)
            elif op == "interpolate":
                h = F.interpolate(h, size=L, mode="nearest")
            elif op == "position_mean":
                h = h - h.mean(-1, keepdim=True)
            elif op == "channel_mean":
                h = h - h.mean(1, True)
            elif op == "channel_pool":
                h = m(h)
            elif op == "transpose_axes":
                h = torch.tanh(h.transpose(1, 2)).transpose(1, 2)
            elif op == "bias_param":
                h = h + m[0].view(1, -1, 1)
            elif op == "pool_unsqueezed":  # (B, 1, C, L): pools across the channels
                h = F.max_pool2d(h.unsqueeze(1), 3, 1, 1).squeeze(1)
            elif op == "pool_positions_unsqueezed":  # (B, C, L, 1): pools the positions only
                h = torch.squeeze(F.avg_pool2d(torch.unsqueeze(h, -1), (3, 1), 1, (1, 0)), -1)
            elif op == "linear_channels":  # a Linear over the channels, moved to the last axis and back
                h = m(h.permute(0, 2, 1)).transpose(1, 2)
        return self.head(h.flatten(1))


@hs.composite
def random_conv_networks(draw):
    ops = draw(hs.lists(hs.one_of(hs.sampled_from(CONV_BENIGN), hs.sampled_from(CONV_OPS)), min_size=1, max_size=6))
    ops = ["conv", *ops]
    draws = draw(hs.lists(hs.integers(0, 3), min_size=len(ops), max_size=len(ops)))
    return ops, draws, draw(hs.integers(0, 2**16))


@settings(derandomize=True, max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(random_conv_networks())
def test_random_convolutional_networks_keep_every_output_or_say_why(arch):
    ops, draws, seed = arch
    torch.manual_seed(seed)
    model = RandomConv(ops, draws).double()
    for m in model.modules():  # normalisers with statistics and affine parameters of their own
        if getattr(m, "running_var", None) is not None:
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    x = torch.randn(5, C, L, dtype=torch.float64)
    with one_thread():
        found = st.discover(model, x)
        assert not any("verification" in d.reason for d in found.dropped), (ops, str(found))
        assert_exact(model, x, found, seed=seed)
    assert all(d.reason for d in found.dropped)
    event("some scales kept" if found.n_scales else "every scale pinned")


def _siamese():
    class Siamese(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = nn.Sequential(nn.Linear(2, 5), nn.ReLU(), nn.Linear(5, 3))
            self.head = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3))

        def forward(self, x):
            return self.head(F.relu(torch.cat([self.enc(x[:, :2]), self.enc(x[:, 2:])], dim=1)))

    return Siamese()


def _hooked():
    model = nn.Sequential(
        nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 3)
    )
    model[2].register_forward_hook(lambda module, args, out: out + 1.0)  # layer 4's scales remain
    return model


def _weight_normed():
    model = Net()
    parametrizations.weight_norm(model.fc1)
    prune.l1_unstructured(model.fc2, "weight", 0.4)
    return model


@pytest.mark.parametrize("make", [_siamese, _hooked, _weight_normed])
def test_a_teleport_of_a_tricky_network_keeps_every_output(make):
    torch.manual_seed(0)
    model = make().double()
    x, y = torch.randn(16, 4, dtype=torch.float64), torch.randint(0, 3, (16,))
    before = {mode: outputs(model, x, mode) for mode in (True, False)}
    record = st.teleport_model(model, F.cross_entropy, x, y)
    assert record.grad_norm_sq_after > record.grad_norm_sq_before
    for mode in (True, False):
        for b, a in zip(before[mode], outputs(model, x, mode)):
            assert float((a - b).abs().max()) <= 1e-10 * float(b.abs().max())
