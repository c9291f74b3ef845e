"""Symmetries found from the graph of any network: exact on every architecture, the closed form equal to
double backpropagation, and the scales the architecture implies (torchvision's ResNet-18 included)."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs
from torch import nn

import symtele as st
from symtele.models import digits_cnn, digits_resnet, resnet18
from symtele.teleports.rescale import Rescale, _Squares, gradient_norm_reference, rescale_teleport, scale_factors


class Residual(nn.Module):
    """``relu(body(x) + x)``, or with a 1×1 convolution and BatchNorm on the shortcut."""

    def __init__(self, channels, shortcut):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1)
        )
        self.shortcut = (
            nn.Sequential(nn.Conv2d(channels, channels, 1), nn.BatchNorm2d(channels)) if shortcut else nn.Identity()
        )

    def forward(self, x):
        return F.relu(self.body(x) + self.shortcut(x))


class Concat(nn.Module):
    """Two convolutions side by side, concatenated along the channels."""

    def __init__(self, channels):
        super().__init__()
        self.a, self.b = nn.Conv2d(channels, channels, 3, padding=1), nn.Conv2d(channels, 2, 1)

    def forward(self, x):
        return torch.cat([F.leaky_relu(self.a(x), 0.2), self.b(x)], dim=1)


@hs.composite
def architectures(draw):
    """A random MLP or CNN: biases or not, LeakyReLU slopes, grouped convolutions, pooling, BatchNorm,
    residual blocks, concatenations, and sometimes an activation no rescaling passes (Tanh) in the middle."""
    if draw(hs.booleans()):
        widths = draw(hs.lists(hs.integers(2, 6), min_size=2, max_size=4))
        layers, fan_in = [], 5
        for i, w in enumerate(widths):
            layers.append(nn.Linear(fan_in, w, bias=draw(hs.booleans())))
            act = draw(hs.sampled_from(["relu", "leaky", "identity", "tanh"] if 0 < i else ["relu", "leaky"]))
            layers.append(
                {
                    "relu": nn.ReLU(),
                    "leaky": nn.LeakyReLU(draw(hs.floats(0.0, 2.0))),
                    "identity": nn.Identity(),
                    "tanh": nn.Tanh(),
                }[act]
            )
            fan_in = w
        layers.append(nn.Linear(fan_in, 3))
        return nn.Sequential(*layers), (7, 5)
    c = draw(hs.sampled_from([2, 4]))
    layers = [nn.Conv2d(1, c, 3, padding=1, bias=draw(hs.booleans())), nn.ReLU()]
    if draw(hs.booleans()):
        layers += [nn.Conv2d(c, c, 3, padding=1, groups=draw(hs.sampled_from([1, 2, c]))), nn.LeakyReLU(0.1)]
    if draw(hs.booleans()):
        layers += [nn.BatchNorm2d(c), nn.ReLU()]
    block = draw(hs.sampled_from(["none", "residual", "shortcut", "concat", "tanh"]))
    if block in ("residual", "shortcut"):
        layers.append(Residual(c, block == "shortcut"))
    elif block == "concat":
        layers.append(Concat(c))
        c += 2
    elif block == "tanh":
        layers += [nn.Conv2d(c, c, 1), nn.Tanh()]
    layers.append(draw(hs.sampled_from([nn.MaxPool2d(2), nn.AvgPool2d(2), nn.AdaptiveAvgPool2d(4)])))
    layers += [nn.Flatten(), nn.Linear(c * 16, 5), nn.ReLU(), nn.Linear(5, 3)]
    return nn.Sequential(*layers), (6, 1, 8, 8)


def _setup(model, shape, seed=0):
    torch.manual_seed(seed)
    model = model.double()
    for m in model.modules():  # BatchNorm with statistics and affine parameters of its own
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 2)
            m.bias.data.uniform_(-1, 1)
    x = torch.randn(shape, dtype=torch.float64)
    y = torch.randint(0, 3, (shape[0],))
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    buffers = {n: b.clone() for n, b in model.named_buffers()}

    def loss_of(p):
        return F.cross_entropy(torch.func.functional_call(model, {**p, **buffers}, (x,)), y)

    return model, x, params, loss_of


def _grads(loss_of, params):
    leaves = {n: p.clone().requires_grad_(True) for n, p in params.items()}
    loss = loss_of(leaves)
    return loss.detach(), dict(zip(params, torch.autograd.grad(loss, list(leaves.values()))))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(architectures(), hs.integers(0, 3))
def test_every_discovered_rescaling_is_exact_and_its_closed_form_is_double_backprop(arch, seed):
    model, x, params, loss_of = _setup(*arch, seed=seed)
    symmetry = st.discover(model, x)
    s = torch.randn(symmetry.n_scales, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    factors = scale_factors(symmetry, s, params)
    moved = {n: p * factors[n] if n in factors else p for n, p in params.items()}
    for mode in ("train", "eval"):  # BatchNorm with batch statistics and with running statistics
        model.train(mode == "train")
        before = torch.func.functional_call(model, params, (x,))
        after = torch.func.functional_call(model, moved, (x,))
        assert torch.allclose(after, before, rtol=1e-10, atol=1e-12), (mode, str(symmetry))
    model.train()
    if symmetry.n_scales:
        loss, grads = _grads(loss_of, params)
        value, slope = _Squares(symmetry, grads).objective_and_slope(s)
        ref_value, ref_slope = gradient_norm_reference(loss_of, params, symmetry, s)
        assert abs(value / ref_value - 1) <= 1e-10
        assert torch.allclose(slope, ref_slope, rtol=1e-10, atol=1e-10 * float(ref_slope.abs().max()))
        _, _, _, record = rescale_teleport(params, grads, symmetry, loss_of, loss, Rescale())
        assert record.loss_after == pytest.approx(record.loss_before, rel=1e-10)
        if record.stopped is None:
            assert record.grad_norm_sq_after > record.grad_norm_sq_before
        else:
            assert "moved nothing" in record.stopped


def test_an_activation_in_the_middle_ends_the_chain_and_the_rest_is_covered():
    model = nn.Sequential(
        nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 7), nn.ReLU(), nn.Linear(7, 2)
    )
    symmetry = st.discover(model, torch.randn(3, 4))
    assert symmetry.n_scales == 5 + 7  # the units after layers 0 and 4; layer 2's feed Tanh
    assert symmetry.left.keys() == {"2", "6"} and symmetry.left["6"] == "reaches the network's output"
    assert symmetry.left["2"].startswith("passes through 3 (Tanh), which no positive scale passes (supported: ReLU")
    assert "12 independent scales" in str(symmetry) and "not rescaled" in str(symmetry)


def test_resnet18_has_the_scales_its_architecture_implies():
    model = resnet18()
    symmetry = st.discover(model, torch.randn(2, 3, 32, 32))
    # each stage: one residual stream (the stem's BatchNorm or the downsampling shortcut's, and every
    # block's second BatchNorm, added together) and each block's inner BatchNorm, per channel
    widths = (64, 128, 256, 512)
    assert symmetry.n_scales == sum(3 * w for w in widths)
    streams = [g for g in symmetry.groups if any(p.endswith("bn2") for p in g.producers)]
    assert sorted(g.size for g in streams) == list(widths)
    assert sorted(streams, key=lambda g: g.size)[0].producers == ("bn1", "layer1.0.bn2", "layer1.1.bn2")
    assert ("layer2.0.bn2", "layer2.0.downsample.1", "layer2.1.bn2") in [g.producers for g in streams]
    assert sorted(streams, key=lambda g: g.size)[-1].consumers == ("fc", "layer4.1.conv1")
    inner = [g for g in symmetry.groups if g.producers[0].endswith(".bn1")]
    assert sorted(g.size for g in inner) == sorted(w for w in widths for _ in range(2))
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    assert sorted(symmetry.left) == sorted([*convs, "fc"])  # every convolution feeds a BatchNorm
    assert all("BatchNorm" in symmetry.left[c] for c in convs)


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("dtype, rtol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_a_resnet18_teleport_keeps_its_outputs(mode, dtype, rtol):
    # batch 32 of 32×32 (the benchmark's); in float32 the network's own rounding, against float64, is 6e-6
    torch.manual_seed(0)
    model = resnet18().to(dtype).train(mode == "train")
    x, y = torch.randn(32, 3, 32, 32, dtype=dtype), torch.randint(0, 10, (32,))
    with torch.no_grad():
        before = model(x)
    running = {n: b.clone() for n, b in model.named_buffers()}
    record = st.teleport_model(model, F.cross_entropy, x, y)
    assert all(torch.equal(b, running[n]) for n, b in model.named_buffers())  # statistics untouched
    with torch.no_grad():
        after = model(x)
    assert float((after - before).abs().max() / before.abs().max()) <= rtol
    assert record.grad_norm_sq_after > record.grad_norm_sq_before and record.steps_taken == 10


def test_torchvision_resnet18_is_handled_the_same_way():
    models = pytest.importorskip("torchvision.models", exc_type=ImportError)
    ours, theirs = (st.discover(m, torch.randn(2, 3, 32, 32)) for m in (resnet18(), models.resnet18(num_classes=10)))
    assert ours.n_scales == theirs.n_scales and ours.groups == theirs.groups


@pytest.mark.parametrize("make", [digits_cnn, digits_resnet])
def test_digits_networks_are_covered(make):
    symmetry = st.discover(make(), torch.randn(2, 1, 8, 8))
    assert symmetry.n_scales > 0 and symmetry.left.keys() <= {n for n, _ in make().named_modules()}


def test_the_default_step_moves_any_network_and_lr_reproduces_the_course_project():
    # a cross-entropy MLP at initialisation: the course project's lr = 1e-4 barely moves ‖∇L‖², the
    # scale-free default (each log-scale moves by at most 0.1 per step) raises it by a clear factor
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 10))
    x, y = torch.randn(128, 64), torch.randint(0, 10, (128,))
    course = st.teleport_model(model, F.cross_entropy, x, y, lr=1e-4)
    assert abs(course.grad_norm_sq_after / course.grad_norm_sq_before - 1) < 1e-3
    default = st.teleport_model(model, F.cross_entropy, x, y)
    assert default.grad_norm_sq_after > 1.5 * default.grad_norm_sq_before
    assert max(abs(v) for v in default.log_scales) <= 10 * 0.1 + 1e-12


def test_the_closed_form_agrees_with_the_positive_scale_teleport_on_a_chain():
    # the course project's parameterisation through the graph: the same steps as PositiveScale on a
    # bias-free ReLU chain given as a list of weights
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(5, 6, bias=False), nn.ReLU(), nn.Linear(6, 7, bias=False), nn.ReLU(), nn.Linear(7, 8, bias=False)
    ).double()
    x, y = torch.rand(4, 5, dtype=torch.float64), torch.rand(4, 8, dtype=torch.float64)

    def loss_fn(out, target):
        return 0.5 * (out - target).square().sum()

    weights = [p.detach().clone() for p in model.parameters()]
    objective = st.ModuleObjective(model, loss_fn, x, y)
    loss, grads = objective.loss_and_grad(weights)
    expected, _, _, _ = st.PositiveScale(lr=1e-3, steps=10, clamp=0.1)(objective, weights, grads, loss)
    got, _, _, record = Rescale(lr=1e-3, steps=10, clamp=0.1)(objective, weights, grads, loss)
    for a, b in zip(got, expected):
        assert torch.allclose(a, b, rtol=1e-10)


@pytest.mark.parametrize(
    "model, example, match",
    [
        (nn.Linear(3, 2), torch.randn(2, 3), "no positively rescalable units"),
        (digits_cnn(), torch.randn(2, 3, 8, 8), "Invalid example: an input of shape \\(2, 3, 8, 8\\)"),
    ],
)
def test_models_without_symmetry_or_with_a_bad_batch_are_named(model, example, match):
    with pytest.raises(ValueError, match=match):
        st.teleport_model(model, F.cross_entropy, example, torch.zeros(2, dtype=torch.long))


class TwoLayers(nn.Module):
    """``Linear(n, n)`` then ``Linear(n, 2)``, joined by the function ``route(a, b, x)``."""

    def __init__(self, n, route):
        super().__init__()
        self.a, self.b, self.route = nn.Linear(n, n), nn.Linear(n, 2), route

    def forward(self, x):
        return self.route(self.a, self.b, x)


def test_an_untraceable_model_is_a_clear_error():
    def data_dependent(a, b, x):
        h = a(x)
        return b(h) if h.sum() > 0 else b(-h)

    class DataDependent(TwoLayers):
        def __init__(self):
            super().__init__(3, data_dependent)

    with pytest.raises(ValueError, match="torch.fx cannot trace DataDependent"):
        st.discover(DataDependent(), torch.randn(2, 3))
    with pytest.raises(TypeError, match="Invalid model"):
        st.discover("resnet", torch.randn(2, 3))


class Reshaped(nn.Module):
    """Conv1d or Conv3d layers, a mean over the positions, ``view(N, -1)`` and multiplication by a constant."""

    def __init__(self, conv, channels=3):
        super().__init__()
        self.a, self.b = conv(1, channels, 3, padding=1), conv(channels, channels, 3, padding=1)
        self.fc = nn.Linear(channels * 4, 2)
        self.flat = conv is nn.Conv3d  # flatten the positions of a volume first

    def forward(self, x):
        h = F.relu(self.b(F.relu(self.a(x)))) * 0.5
        h = F.adaptive_avg_pool1d(h.flatten(2) if self.flat else h, 4)
        return self.fc(h.view(h.size(0), -1))


@pytest.mark.parametrize("conv, shape", [(nn.Conv1d, (3, 1, 8)), (nn.Conv3d, (3, 1, 4, 4, 4))])
def test_conv1d_conv3d_and_reshapes_are_covered_exactly(conv, shape):
    model, x, params, loss_of = _setup(Reshaped(conv), shape)
    symmetry = st.discover(model, x)
    assert symmetry.n_scales == 6 and symmetry.left == {"fc": "reaches the network's output"}
    factors = scale_factors(symmetry, torch.linspace(-1, 1, 6, dtype=torch.float64), params)
    moved = {n: p * factors[n] if n in factors else p for n, p in params.items()}
    before, after = (torch.func.functional_call(model, p, (x,)) for p in (params, moved))
    assert torch.allclose(after, before, rtol=1e-12)


def test_an_input_added_to_a_layer_fixes_that_layer():
    skip = TwoLayers(4, lambda a, b, x: b(F.relu(a(x) + x)))  # the input has no scale to share
    symmetry = st.discover(skip, torch.randn(2, 4))
    assert symmetry.n_scales == 0 and "added to an unscaled" in symmetry.left["a"]
