"""Find a network's positive rescaling symmetries from its graph (``torch.fx``), and check them numerically.

A *unit* is one output channel (or feature) of a layer that computes it linearly from its weights:
``Linear``, ``Conv1d/2d/3d`` and ``ConvTranspose1d/2d/3d`` (grouped and depthwise included), the functional
``F.linear``/``F.conv*`` on a parameter, and the affine output of ``BatchNorm``, ``GroupNorm``,
``LayerNorm`` (over the last dimension) and ``InstanceNorm``. Dividing everything that produces the unit by
``d > 0`` (its weight slice, its bias, a parameter added to it) divides the unit's value by ``d``. The value
may then pass through operations that are positively homogeneous channel by channel, ``φ(x / d) = φ(x) / d``:
ReLU, LeakyReLU of any slope, ``abs``, negation, Identity, Dropout, pooling over the spatial axes (never over
the channels), ``Upsample``/``interpolate``, ``Flatten`` and reshapes that keep the channels in order (a
channel's scale then covers all its flattened features), sums and means over other axes, multiplication
by a constant or by an unscaled tensor, division by one. Every layer that reads the unit multiplies the
matching input slice of its weight by ``d``, and the network computes exactly what it did. Units added
together (a residual stream) share one scale; a concatenation keeps each part's own.

A normaliser's input is never rescaled: ``BatchNorm`` in eval mode divides by its running statistics, and
``GroupNorm``/``LayerNorm``/``InstanceNorm`` divide by ``√(v + ε)``, and ``√(d² v + ε) ≠ d √(v + ε)``; its
affine output starts new units instead. Running statistics never change.

**The rule table.** Each operation the graph can hold (a module type in :data:`MODULES`, a function in
:data:`FUNCTIONS`, a tensor method in :data:`METHODS`) has a :class:`Rule`: a handler that says how the
scales of its inputs reach its output, and the signature its arguments are read with, so that positional
and keyword forms (``x.mean(1, True)``, ``self.bn(input=h)``) are one case. Anything the table does not
know fixes the scales of the channels it touches at 1 (the *pin*): the chain ends there, the rest of the
network is still covered.

**Identity.** Every parameter is tracked by the tensor itself, not by a module's name: a parameter used
twice (a layer called twice, a shared encoder, tied weights, a weight read outside its layer) pins every
scale acting on it. Frozen parameters (``requires_grad=False``), modules with forward hooks or pre-hooks,
and weights under a parametrisation the table does not know (spectral normalisation, say) are pinned with
the reason; a weight-normalised weight is rescaled through its magnitude only, a pruned one through
``weight_orig``. A ``torch.compile``-d model is read through ``_orig_mod`` (the same parameters).

**Both modes.** Code may depend on ``self.training``: the model is traced in train mode and in eval mode
and only what holds in both is kept.

**Verification.** The rules are not trusted alone: :func:`discover` applies random log-scales (uniform in
[−0.5, 0.5]) to a float64 copy of the model and compares every output on the example batch, in train and
in eval mode, with the random number generator forked and seeded alike for both runs (dropout draws the
same mask). Groups whose scales change an output by more than 1e-9 of its size are found by bisection and
dropped, each with the change measured. Discovery never changes the model: it works on a copy.

**Adding a layer.** Say ``torch.abs`` were missing. ``|x / d| = |x| / d`` for ``d > 0``, so its output
carries the scales of its input on the same axis: the rule is :func:`_through` (input scales pass
unchanged; shapes must match). Add the entry to the table, with the signature its arguments are read
with::

    FUNCTIONS[torch.abs] = Rule(_through, INPUT)      # torch.abs(x)
    METHODS["abs"] = Rule(_through, INPUT)            # x.abs()

A module is added the same way (``MODULES[nn.ReLU] = Rule(_through)``; its signature is its ``forward``'s).
An operation that creates units (a new layer type) has a handler that calls :meth:`_Walk.produce` for
the parameters that produce them and :meth:`_Walk.read` for the weights that read its input; see
:func:`_layer_module`. Then add a test that builds a network with it and checks, through
:func:`discover`, that the scales it finds keep every output (``tests/test_trust.py`` has one per case);
the verification inside :func:`discover` would drop a wrong rule's groups, so the test also asserts the
groups are kept.
"""

from __future__ import annotations

import copy
import inspect
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp
from torch.nn.utils import parametrize
from torch.utils._pytree import tree_flatten

from .symmetry import Dropped, Group, Symmetry, Term

#: the relative change of an output beyond which a group fails verification (float64)
VERIFY_RTOL = 1e-9
#: log-scales of the verification are drawn uniformly from [−VERIFY_SPREAD, VERIFY_SPREAD]
VERIFY_SPREAD = 0.5
#: what a refused activation is told is supported
SUPPORTED = "ReLU, LeakyReLU, abs, Identity, Dropout, pooling, Upsample"

# ---- pins: why a scale is fixed, most telling first -------------------------------------------------------
STRUCTURE, RULE, OUTPUT = 0, 1, 2


class _Units:
    """Scale variables with a union–find: units joined must share a scale; unit 0 is "fixed at 1".

    No path compression, so a fixed unit's chain still leads to the unit that was fixed, and to why."""

    def __init__(self):
        self.parent = [0]
        self.why: dict[int, str] = {}

    def new(self, count: int) -> torch.Tensor:
        first = len(self.parent)
        self.parent += list(range(first, first + count))
        return torch.arange(first, first + count)

    def root(self, u: int) -> int:
        while self.parent[u] != u:
            u = self.parent[u]
        return u

    def join(self, a: int, b: int) -> None:
        ra, rb = self.root(a), self.root(b)
        if ra != rb:
            low, high = sorted((ra, rb))  # the fixed unit 0 stays a root
            self.parent[high] = low

    def fix(self, units: torch.Tensor, why: str) -> None:
        for u in units.unique().tolist():
            r = self.root(u)
            if r != 0:
                self.why[r] = why
                self.parent[r] = 0

    def reason(self, u: int) -> str | None:
        """Why unit ``u`` is fixed (``None`` if it is not)."""
        while self.parent[u] != 0:
            if self.parent[u] == u:
                return None
            u = self.parent[u]
        return self.why.get(u)


@dataclass
class _Value:
    """A traced tensor whose channels along ``axis`` carry the scales ``units`` (one per channel)."""

    units: torch.Tensor
    axis: int


@dataclass
class _ParamValue:
    """A traced tensor that is a 1-D parameter laid along ``axis`` (size 1 on every other axis)."""

    pid: int
    axis: int


@dataclass
class _Weight:
    """What a layer's weight (or bias) is made of: the parameter the scales act on, and how.

    ``role`` is ``"plain"`` (the tensor itself: produced and read), ``"magnitude"`` (a weight-normalised
    weight's magnitude ``g`` along ``axis``: it may be divided per output channel, its input channels not
    rescaled) or ``"refused"`` (``why`` says why); ``None`` for an absent bias."""

    param: torch.Tensor | None
    role: str
    why: str = ""
    axis: int = 0


def _shape(node) -> tuple | None:
    meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _text(x) -> str:
    return x.name if isinstance(x, fx.Node) else repr(x)


# ---- the rules ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rule:
    """How the scales pass through one operation.

    Args:
        handle: ``handle(walk, node, args, module)``: reads the scales of the inputs from ``walk``, sets the
            output's (:meth:`_Walk.set`), records terms or pins; ``args`` are the call's arguments by name.
        signature: how the arguments are named (``None`` for a module: its ``forward``'s).
    """

    handle: Callable
    signature: inspect.Signature | None = None


def _signature(f) -> inspect.Signature:
    return inspect.signature(f)


INPUT = _signature(lambda input, *args, **kwargs: None)
LEAKY = _signature(lambda input, negative_slope=0.01, inplace=False: None)
FLATTEN = _signature(lambda input, start_dim=0, end_dim=-1: None)
REDUCE = _signature(lambda input, dim=None, keepdim=False, *args, dtype=None, **kwargs: None)
BINARY = _signature(lambda input, other, *args, alpha=1, rounding_mode=None, **kwargs: None)
CAT = _signature(lambda tensors, dim=0, *args, axis=None, **kwargs: None)
LINEAR_F = _signature(lambda input, weight, bias=None: None)
CONV_F = _signature(lambda input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1: None)
CONV_T_F = _signature(
    lambda input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1: None
)
GETATTR = _signature(lambda obj, name, *default: None)
GETITEM = _signature(lambda obj, index: None)


def _through(walk, node, a, module=None):
    """The output carries the input's scales, on the same axis (an elementwise homogeneous operation)."""
    x = a["input"]
    if walk.value(x) is not None and _shape(node) != _shape(x):
        walk.pin_inputs(node, f"changes the shape at {walk.label(node)}")
        return
    walk.set(node, walk.value(x))


def _leaky(walk, node, a, module=None):
    """LeakyReLU of any finite slope ``a``: ``σ(x/d) = σ(x)/d`` for ``d > 0`` (the sign of ``x`` is kept)."""
    slope = module.negative_slope if module is not None else a["negative_slope"]
    if _number(slope):
        _through(walk, node, a)
    else:
        walk.pin_inputs(node, f"LeakyReLU slope {slope!r} at {walk.label(node)} is not a number")


def _spatial(pooled: int | None):
    """Pooling over the last ``pooled`` axes (``None``: every axis after the channels, as ``Upsample``): the
    scales pass only when the channel axis is not pooled and the channel count is kept."""

    def handle(walk, node, a, module=None):
        x = a["input"]
        v, before, after = walk.value(x), _shape(x), _shape(node)
        if v is None:
            return
        if after is None or before is None or len(after) != len(before):
            walk.pin_inputs(node, f"{walk.label(node)} does not return one tensor of its input's rank")
            return
        last = len(before) - (pooled if pooled is not None else len(before) - 2)
        if pooled is None and v.axis != 1 or v.axis >= last or after[v.axis] != before[v.axis]:
            walk.pin_inputs(node, f"{walk.label(node)} pools across the scaled channels (axis {v.axis})")
            return
        walk.set(node, v)

    return handle


def _flatten(walk, node, a, module=None):
    x = a["input"]
    start, end = (module.start_dim, module.end_dim) if module is not None else (a["start_dim"], a["end_dim"])
    v, shape = walk.value(x), _shape(x)
    if v is None:
        return
    start, end, axis = start % len(shape), end % len(shape), v.axis
    if start > axis or end <= start:  # the dimensions after the channels: the channels unchanged
        walk.set(node, v)
    elif end < axis:  # dimensions before the channels merged
        walk.set(node, _Value(v.units, axis - (end - start)))
    elif start == axis:  # each channel becomes the block of features it flattens into
        walk.set(node, _Value(v.units.repeat_interleave(math.prod(shape[axis + 1 : end + 1])), axis))
    else:
        walk.pin_inputs(node, f"flattened across its channels at {walk.label(node)}")


def _reshape(walk, node, a, module=None):
    x = a["input"]
    v = walk.value(x)
    if v is None:
        walk.set_param(node, walk.param_value(x))
        return
    before, after = _shape(x), _shape(node)
    if after is None or node.meta["tensor_meta"].dtype != x.meta["tensor_meta"].dtype:
        walk.pin_inputs(node, f"reinterpreted at {walk.label(node)}")
    elif after[: v.axis + 1] == before[: v.axis + 1]:
        walk.set(node, v)  # the channels and everything before them unchanged
    elif len(after) == v.axis + 1 and after[:-1] == before[: v.axis]:
        walk.set(node, _Value(v.units.repeat_interleave(math.prod(before[v.axis + 1 :])), v.axis))
    else:
        walk.pin_inputs(node, f"reshaped across its channels at {walk.label(node)}")


def _reduce(walk, node, a, module=None):
    """``sum``/``mean`` over axes other than the channels'."""
    x, dim, keep = a["input"], a["dim"], a["keepdim"]
    v = walk.value(x)
    if v is None:
        return
    rank = len(_shape(x))
    dims = [d % rank for d in (dim if isinstance(dim, (tuple, list)) else (dim,))] if dim is not None else []
    if dim is None or v.axis in dims or not isinstance(keep, bool):
        walk.pin_inputs(node, f"reduced over its channels at {walk.label(node)}")
        return
    walk.set(node, _Value(v.units, v.axis if keep else v.axis - sum(1 for d in dims if d < v.axis)))


def _add(walk, node, a, module=None):
    """``x + y`` and ``x − y`` (with any ``alpha``): both scaled alike, or a parameter added to a scaled value
    (that parameter produces the unit too)."""
    x, y = a["input"], a["other"]
    vx, vy = walk.value(x), walk.value(y)
    if vx is None and vy is None:
        return
    if vx is None:
        x, y, vx, vy = y, x, vy, vx
    out = _shape(node)
    if vy is None:
        p = walk.param_value(y)
        if p is not None and out == _shape(x) and len(out) - len(_shape(y)) + p.axis == vx.axis:
            walk.produce(walk.name_of(p.pid), p.pid, vx.units, walk.param_label(p.pid))
            walk.set(node, vx)
        else:
            walk.pin_inputs(node, f"added to an unscaled value at {walk.label(node)} (`{_text(x)} + {_text(y)}`)")
        return
    if not (out == _shape(x) == _shape(y) and vx.axis == vy.axis and vx.units.shape == vy.units.shape):
        walk.pin_inputs(node, f"added to a differently shaped value at {walk.label(node)}")
        return
    for i, j in zip(vx.units.tolist(), vy.units.tolist()):
        walk.d.units.join(i, j)
    walk.set(node, vx)


def _mul(walk, node, a, module=None):
    """A scaled value times a number or an unscaled tensor (that keeps its shape)."""
    x, y = a["input"], a["other"]
    vx, vy = walk.value(x), walk.value(y)
    if vx is None and vy is None:
        return
    if vx is not None and vy is not None:
        walk.pin_inputs(node, f"`{_text(x)} * {_text(y)}` at {walk.label(node)} multiplies two scaled values")
        return
    if vx is None:
        x, y, vx = y, x, vy
    if _number(y) or (isinstance(y, fx.Node) and _shape(y) is not None and _shape(node) == _shape(x)):
        walk.set(node, vx)
    else:
        walk.pin_inputs(node, f"multiplied by {_text(y)} at {walk.label(node)}")


def _div(walk, node, a, module=None):
    """A scaled value divided by a non-zero number or an unscaled tensor; ``c / x`` is not homogeneous."""
    x, y = a["input"], a["other"]
    vx, vy = walk.value(x), walk.value(y)
    if vy is not None:
        walk.pin_inputs(node, f"`{_text(x)} / {_text(y)}` at {walk.label(node)} is not positively homogeneous")
        return
    if vx is None:
        return
    tensor = isinstance(y, fx.Node) and _shape(y) is not None and _shape(node) == _shape(x)
    if a["rounding_mode"] is None and ((_number(y) and y != 0) or tensor):
        walk.set(node, vx)
    else:
        walk.pin_inputs(node, f"`{_text(x)} / {_text(y)}` at {walk.label(node)} is not positively homogeneous")


def _cat(walk, node, a, module=None):
    parts = a["tensors"]
    dim = a["axis"] if a["axis"] is not None else a["dim"]
    values = [walk.value(p) for p in parts]
    if all(v is None for v in values):
        return
    shapes = [_shape(p) for p in parts]
    axis = dim % len(shapes[0])
    if any(v is not None and v.axis != axis for v in values):
        walk.pin_inputs(node, f"concatenated along another axis at {walk.label(node)}")
        return
    units = [v.units if v is not None else torch.zeros(s[axis], dtype=torch.long) for v, s in zip(values, shapes)]
    walk.set(node, _Value(torch.cat(units), axis))


def _shape_only(walk, node, a, module=None):
    """``x.size()``, ``x.dim()``: nothing scaled comes out."""


def _getattr(walk, node, a, module=None):
    """``x.shape`` and the like pass nothing on; a tensor attribute of a scaled tensor (``x.T``) pins it."""
    if _shape(node) is not None and walk.value(a["obj"]) is not None:
        walk.pin_inputs(node, f"`{_text(a['obj'])}.{a['name']}` at {walk.label(node)}")


def _getitem(walk, node, a, module=None):
    if walk.value(a["obj"]) is not None:
        walk.pin_inputs(node, f"indexed at {walk.label(node)}")


def _layer_module(walk, node, a, module):
    """``Linear``, ``Conv*``, ``ConvTranspose*``: reads its input's units, produces new ones."""
    kind = "linear" if isinstance(module, nn.Linear) else "transpose" if isinstance(module, CONV_T) else "conv"
    groups = getattr(module, "groups", 1)
    walk.layer(node, a["input"], walk.weight_of(module, "weight"), walk.weight_of(module, "bias"), kind, groups)


def _layer_function(kind):
    """``F.linear``/``F.conv*``/``F.conv_transpose*`` with a parameter as its weight."""

    def handle(walk, node, a, module=None):
        weight, bias = (walk.functional_weight(a[k]) for k in ("weight", "bias"))
        walk.layer(node, a["input"], weight, bias, kind, a.get("groups", 1))

    return handle


def _normaliser(channel_axis):
    """A normaliser: its input is pinned (see the module's docstring); its affine output, per channel along
    ``channel_axis(rank)``, starts new units."""

    def handle(walk, node, a, module):
        name, layer = walk.label(node), str(node.target)
        kind = type(module).__name__
        walk.d.kinds[layer] = kind
        walk.pin_inputs(node, f"feeds {kind} {name} (the scale of a normaliser's input is not used)")
        shape = _shape(node)
        weight, bias = walk.weight_of(module, "weight"), walk.weight_of(module, "bias")
        if weight is None or shape is None:
            return
        axis = channel_axis(len(shape))
        if weight.role != "plain" or weight.param.dim() != 1 or (bias is not None and bias.role != "plain"):
            why = weight.why or (bias.why if bias else "") or f"{kind}'s affine weight is not one per channel"
            walk.pin(walk.d.keyed(id(module), shape[axis]), why)
            return
        out = walk.d.keyed(id(weight.param), weight.param.numel())
        walk.produce(layer, id(weight.param), out)
        if bias is not None:
            walk.produce(layer, id(bias.param), out)
        walk.set(node, _Value(out, axis))

    return handle


CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
CONV_T = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)

#: module types and their rules (subclasses match too; the signature is the module's ``forward``'s)
MODULES: dict[type, Rule] = {
    **{t: Rule(_through) for t in (nn.ReLU, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)},
    nn.LeakyReLU: Rule(_leaky),
    **{t: Rule(_spatial(1)) for t in (nn.MaxPool1d, nn.AvgPool1d, nn.AdaptiveAvgPool1d, nn.AdaptiveMaxPool1d)},
    **{t: Rule(_spatial(2)) for t in (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)},
    **{t: Rule(_spatial(3)) for t in (nn.MaxPool3d, nn.AvgPool3d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool3d)},
    nn.Upsample: Rule(_spatial(None)),
    nn.Flatten: Rule(_flatten),
    **{t: Rule(_layer_module) for t in (nn.Linear, *CONV, *CONV_T)},
    **{t: Rule(_normaliser(lambda rank: 1)) for t in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)},
    nn.GroupNorm: Rule(_normaliser(lambda rank: 1)),
    nn.LayerNorm: Rule(_normaliser(lambda rank: rank - 1)),
    nn.InstanceNorm1d: Rule(_normaliser(lambda rank: rank - 2)),
    nn.InstanceNorm2d: Rule(_normaliser(lambda rank: rank - 3)),
    nn.InstanceNorm3d: Rule(_normaliser(lambda rank: rank - 4)),
}

#: functions (``call_function`` targets) and their rules
FUNCTIONS: dict[Callable, Rule] = {
    **{f: Rule(_through, INPUT) for f in (F.relu, torch.relu, torch.relu_, F.relu_, torch.abs, operator.abs)},
    **{f: Rule(_through, INPUT) for f in (operator.neg, torch.neg, F.dropout, F.dropout1d, F.dropout2d)},
    F.dropout3d: Rule(_through, INPUT),
    F.leaky_relu: Rule(_leaky, LEAKY),
    **{f: Rule(_spatial(1), INPUT) for f in (F.max_pool1d, F.avg_pool1d, F.adaptive_avg_pool1d, F.adaptive_max_pool1d)},
    **{f: Rule(_spatial(2), INPUT) for f in (F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d)},
    **{f: Rule(_spatial(3), INPUT) for f in (F.max_pool3d, F.avg_pool3d, F.adaptive_avg_pool3d, F.adaptive_max_pool3d)},
    F.interpolate: Rule(_spatial(None), INPUT),
    torch.flatten: Rule(_flatten, FLATTEN),
    torch.reshape: Rule(_reshape, INPUT),
    torch.mean: Rule(_reduce, REDUCE),
    torch.sum: Rule(_reduce, REDUCE),
    **{f: Rule(_add, BINARY) for f in (operator.add, operator.iadd, torch.add, operator.sub, operator.isub, torch.sub)},
    **{f: Rule(_mul, BINARY) for f in (operator.mul, operator.imul, torch.mul)},
    **{f: Rule(_div, BINARY) for f in (operator.truediv, operator.itruediv, torch.div)},
    **{f: Rule(_cat, CAT) for f in (torch.cat, torch.concat, torch.concatenate)},
    getattr: Rule(_getattr, GETATTR),
    operator.getitem: Rule(_getitem, GETITEM),
    F.linear: Rule(_layer_function("linear"), LINEAR_F),
    **{f: Rule(_layer_function("conv"), CONV_F) for f in (F.conv1d, F.conv2d, F.conv3d)},
    **{f: Rule(_layer_function("transpose"), CONV_T_F) for f in (F.conv_transpose1d, F.conv_transpose2d)},
    F.conv_transpose3d: Rule(_layer_function("transpose"), CONV_T_F),
}

#: tensor methods (``call_method`` targets, by name; the tensor is ``input``) and their rules
METHODS: dict[str, Rule] = {
    **{m: Rule(_through, INPUT) for m in ("relu", "relu_", "abs", "abs_", "neg", "contiguous", "clone", "detach")},
    "flatten": Rule(_flatten, FLATTEN),
    "view": Rule(_reshape, INPUT),
    "reshape": Rule(_reshape, INPUT),
    "mean": Rule(_reduce, REDUCE),
    "sum": Rule(_reduce, REDUCE),
    **{m: Rule(_add, BINARY) for m in ("add", "add_", "sub", "sub_")},
    **{m: Rule(_mul, BINARY) for m in ("mul", "mul_")},
    **{m: Rule(_div, BINARY) for m in ("div", "div_")},
    **{m: Rule(_shape_only, INPUT) for m in ("size", "dim", "numel")},
}


def _module_rule(module: nn.Module) -> Rule | None:
    for cls in type(module).__mro__:
        if cls in MODULES:
            return MODULES[cls]
    return None


# ---- the walk -----------------------------------------------------------------------------------------------
class _Discovery:
    """What the walks of one model's graphs (train and eval mode) share: the scales, the terms, who produces
    and reads which units, and the pins (applied at the end, the most telling reason first)."""

    def __init__(self, names: dict[int, str], params: dict[int, torch.Tensor], kinds: dict[str, str]):
        self.names, self.params, self.kinds = names, params, kinds
        self.units = _Units()
        self.by_key: dict[object, torch.Tensor] = {}
        self.terms: dict[tuple, tuple[int, torch.Tensor, int]] = {}
        self.producers: dict[str, list[int]] = {}
        self.consumers: dict[str, list[torch.Tensor]] = {}
        self.pins: list[tuple[int, torch.Tensor, str]] = []

    def keyed(self, key, count: int) -> torch.Tensor:
        """The units of the producer ``key`` (the same in every graph)."""
        if key not in self.by_key or self.by_key[key].numel() != count:
            self.by_key[key] = self.units.new(count)
        return self.by_key[key]

    def add_term(self, pid: int, units: torch.Tensor, sign: int) -> None:
        key = (pid, sign, tuple(units.shape), tuple(units.flatten().tolist()))
        self.terms.setdefault(key, (pid, units, sign))

    def pin(self, units: torch.Tensor, why: str, priority: int = RULE) -> None:
        self.pins.append((priority, units, why))


class _Walk:
    """Propagates channel scales through one graph by the rule table (see the module's docstring)."""

    def __init__(self, d: _Discovery, gm: fx.GraphModule):
        self.d, self.gm = d, gm
        self.values: dict[fx.Node, _Value] = {}
        self.param_values: dict[fx.Node, _ParamValue] = {}
        self.uses: dict[int, list[str]] = {}  # parameter → who uses it, once per use
        self.own_terms: dict[int, dict] = {}  # parameter → its terms in this graph, by their content

    # ---- what rules call ------------------------------------------------------------------------------
    def value(self, x) -> _Value | None:
        return self.values.get(x) if isinstance(x, fx.Node) else None

    def param_value(self, x) -> _ParamValue | None:
        return self.param_values.get(x) if isinstance(x, fx.Node) else None

    def set(self, node, value: _Value | None) -> None:
        if value is not None:
            self.values[node] = value

    def set_param(self, node, p: _ParamValue | None) -> None:
        """A parameter reshaped: still laid along one axis if exactly one axis has all its entries."""
        shape = _shape(node)
        if p is None or shape is None or len(node.users) != 1:
            return
        size = self.d.params[p.pid].numel()
        axes = [i for i, n in enumerate(shape) if n != 1]
        if (len(axes) == 1 and shape[axes[0]] == size) or (not axes and size == 1):
            self.param_values[node] = _ParamValue(p.pid, axes[0] if axes else len(shape) - 1)

    def pin(self, units: torch.Tensor, why: str, priority: int = RULE) -> None:
        self.d.pin(units, why, priority)

    def pin_inputs(self, node, why: str, priority: int = RULE) -> None:
        for arg in node.all_input_nodes:
            v = self.values.get(arg)
            if v is not None:
                self.d.pin(v.units, why, priority)

    def label(self, node) -> str:
        if node.op == "call_module":
            kind = type(self.gm.get_submodule(node.target)).__name__
            return f"{node.target} ({kind})" if str(node.target).rsplit(".", 1)[-1].isdigit() else str(node.target)
        return node.name

    def name_of(self, pid: int) -> str:
        return self.d.names[pid]

    def param_label(self, pid: int) -> str:
        name = self.d.names[pid]
        self.d.kinds.setdefault(name, "parameter")
        return name

    def produce(self, layer: str, pid: int, units: torch.Tensor, label: str | None = None, shape=None) -> None:
        """``param`` produces ``units`` (divided by their scales), laid out as ``shape`` (default: the
        parameter's first axis, or the units as they are)."""
        param = self.d.params[pid]
        if shape is None:
            shape = (-1, *([1] * (param.dim() - 1))) if param.dim() > 0 else ()
        self.term(pid, units.reshape(shape), -1)
        self.d.producers.setdefault(label or layer, []).extend(units.flatten().tolist())

    def read(self, layer: str, pid: int, units: torch.Tensor, whole: torch.Tensor) -> None:
        """``param`` reads the units (multiplied by their scales), laid out as ``units``."""
        self.term(pid, units, +1)
        self.d.consumers.setdefault(layer, []).append(whole)

    def term(self, pid: int, units: torch.Tensor, sign: int) -> None:
        self.d.add_term(pid, units, sign)
        key = (sign, tuple(units.shape), tuple(units.flatten().tolist()))
        self.own_terms.setdefault(pid, {})[key] = units

    def weight_of(self, module: nn.Module, attr: str) -> _Weight | None:
        """What ``module.<attr>`` is made of (see :class:`_Weight`); ``None`` if it has none."""
        path = self.path_of(module)
        full = f"{path}.{attr}" if path else attr
        if parametrize.is_parametrized(module, attr):
            chain = module.parametrizations[attr]
            kinds = [type(p).__name__ for p in chain]
            out_axis = 1 if isinstance(module, CONV_T) else 0
            if kinds == ["_WeightNorm"] and attr == "weight" and chain[0].dim == out_axis:
                return _Weight(chain.original0, "magnitude", axis=out_axis)
            return _Weight(None, "refused", f"`{full}` is parametrised ({', '.join(kinds)}); no scale passes it")
        for hook in module._forward_pre_hooks.values():
            if getattr(hook, "name", None) == attr and type(hook).__name__ == "WeightNorm":
                out_axis = 1 if isinstance(module, CONV_T) else 0
                if hook.dim == out_axis:
                    return _Weight(getattr(module, f"{attr}_g"), "magnitude", axis=out_axis)
                return _Weight(None, "refused", f"`{full}` is weight-normalised along axis {hook.dim}")
            if getattr(hook, "name", None) == attr and type(hook).__name__ == "SpectralNorm":
                return _Weight(None, "refused", f"`{full}` is spectrally normalised (W/σ(W)); no scale passes it")
            if _prunes(hook, attr):
                return _Weight(getattr(module, f"{attr}_orig"), "plain")
        tensor = getattr(module, attr, None)
        if tensor is None:
            return None
        if id(tensor) not in self.d.names:
            return _Weight(None, "refused", f"`{full}` is not a parameter of the model")
        return _Weight(tensor, "plain")

    def functional_weight(self, x) -> _Weight | None:
        """The weight (or bias) argument of ``F.linear``/``F.conv*``: a parameter itself, or refused."""
        if x is None:
            return None
        if isinstance(x, fx.Node) and x.op == "get_attr":
            tensor = self.attr(x.target)
            if id(tensor) in self.d.names:
                return _Weight(tensor, "plain")
        return _Weight(None, "refused", f"the weight `{_text(x)}` is not a parameter used as it is")

    def path_of(self, module: nn.Module) -> str:
        for name, m in self.gm.named_modules():
            if m is module:
                return name
        return type(module).__name__

    def attr(self, target: str):
        owner, _, name = target.rpartition(".")
        return getattr(self.gm.get_submodule(owner) if owner else self.gm, name)

    def layer(self, node, x, weight: _Weight, bias: _Weight | None, kind: str, groups: int) -> None:
        """A linear layer (``kind`` ``linear``, ``conv`` or ``transpose``) reading ``x``: its weight reads the
        input's units (multiplied), its weight and bias produce new ones (divided)."""
        name = self.label(node)
        layer = str(node.target) if node.op == "call_module" else name
        module = self.gm.get_submodule(node.target) if node.op == "call_module" else None
        self.d.kinds.setdefault(layer, type(module).__name__ if module is not None else kind)
        v, shape_in, shape_out = self.value(x), _shape(x), _shape(node)
        if weight is None or weight.role == "refused" or shape_in is None or shape_out is None:
            why = weight.why if weight is not None else f"{name} has no weight"
            priority = STRUCTURE if module is not None else RULE
            self.pin_inputs(node, why, priority)
            if module is not None and shape_out is not None:  # listed with the reason, its output unscaled
                out = self.d.keyed(("refused", layer), 1)
                self.d.producers.setdefault(layer, []).extend(out.tolist())
                self.pin(out, why, priority)
            return
        w = weight.param
        n_out = shape_out[-1] if kind == "linear" else shape_out[len(shape_out) - (w.dim() - 2) - 1]
        out_axis = len(shape_out) - 1 if kind == "linear" else len(shape_out) - (w.dim() - 2) - 1
        pid = id(w)
        out = self.d.keyed(pid, n_out)
        if v is not None:
            expected = len(shape_in) - 1 if kind == "linear" else len(shape_in) - (w.dim() - 2) - 1
            if weight.role != "plain":
                self.pin(v.units, f"`{self.name_of(pid)}` is weight-normalised: its input channels are not rescaled")
            elif v.axis != expected:
                self.pin(v.units, f"read by {name} along another axis")
            else:
                self.read(layer, pid, self._read_units(v.units, w.shape, kind, groups), v.units)
        if weight.role == "magnitude":
            g = weight.param
            self.produce(layer, pid, out, shape=[-1 if i == weight.axis else 1 for i in range(g.dim())])
        elif kind == "transpose":
            per_in, per_out = w.shape[0] // groups, w.shape[1]
            index = (torch.arange(w.shape[0]) // per_in)[:, None] * per_out + torch.arange(per_out)[None, :]
            self.term(pid, out[index].reshape(w.shape[0], per_out, *([1] * (w.dim() - 2))), -1)
            self.d.producers.setdefault(layer, []).extend(out.tolist())
        else:
            self.produce(layer, pid, out)
        if bias is not None:
            if bias.role == "plain":
                self.produce(layer, id(bias.param), out)
            else:
                self.pin(out, bias.why, STRUCTURE)
        self.set(node, _Value(out, out_axis))

    @staticmethod
    def _read_units(units, shape, kind, groups):
        if kind == "linear":
            return units.reshape(1, -1)
        rest = [1] * (len(shape) - 2)
        if kind == "transpose":
            return units.reshape(-1, 1, *rest)
        if groups > 1:
            per_in, per_out = shape[1], shape[0] // groups
            index = (torch.arange(shape[0]) // per_out)[:, None] * per_in + torch.arange(per_in)[None, :]
            return units[index].reshape(shape[0], shape[1], *rest)
        return units.reshape(1, -1, *rest)

    # ---- nodes ----------------------------------------------------------------------------------------
    def run(self) -> None:
        for node in self.gm.graph.nodes:
            if node.op == "get_attr":
                self.get_attr(node)
            elif node.op == "output":
                self.pin_inputs(node, "reaches the network's output", OUTPUT)
                for arg in node.all_input_nodes:
                    if arg in self.param_values:
                        self.use(self.param_values[arg].pid, "the network's output")
            elif node.op in ("call_module", "call_function", "call_method"):
                self.call(node)

    def use(self, pid: int, who: str) -> None:
        self.uses.setdefault(pid, []).append(who)

    def get_attr(self, node) -> None:
        tensor = self.attr(node.target)
        if not isinstance(tensor, torch.Tensor) or id(tensor) not in self.d.names:
            return
        for user in node.users:
            self.use(id(tensor), user.name)
        if tensor.dim() <= 1 and len(node.users) == 1:
            self.param_values[node] = _ParamValue(id(tensor), 0)

    def call(self, node) -> None:
        module = self.gm.get_submodule(node.target) if node.op == "call_module" else None
        if module is not None:
            for p in module.parameters():
                if id(p) in self.d.names:
                    self.use(id(p), str(node.target))
            rule = _module_rule(module)
        elif node.op == "call_function":
            rule = FUNCTIONS.get(node.target)
        else:
            rule = METHODS.get(node.target)
        if rule is None:
            self.unknown(node, module)
            return
        signature = rule.signature or inspect.signature(module.forward)
        try:
            bound = signature.bind(*node.args, **node.kwargs)
        except TypeError as error:
            self.pin_inputs(node, f"the arguments of {self.label(node)} do not match its rule ({error})")
            return
        bound.apply_defaults()
        args = dict(bound.arguments)
        if module is not None and "input" not in args and args:
            args["input"] = next(iter(args.values()))
        rule.handle(self, node, args, module)

    def unknown(self, node, module) -> None:
        if module is not None:
            what = f"{node.target} ({type(module).__name__})"
            self.pin_inputs(node, f"passes through {what}, which no positive scale passes (supported: {SUPPORTED})")
        else:
            name = node.target if node.op == "call_method" else getattr(node.target, "__name__", str(node.target))
            form = f".{name}()" if node.op == "call_method" else f"{name}()"
            self.pin_inputs(node, f"passes through {form} at {node.name}, which the rule table does not know")


def _prunes(hook, attr: str) -> bool:
    """Whether ``hook`` is ``torch.nn.utils.prune``'s pre-hook for ``attr`` (``weight = weight_orig · mask``)."""
    from torch.nn.utils import prune

    return isinstance(hook, prune.BasePruningMethod) and getattr(hook, "_tensor_name", None) == attr


def _recognised(hook) -> bool:
    """A pre-hook :meth:`_Walk.weight_of` reads: weight normalisation, spectral normalisation, pruning."""
    from torch.nn.utils import prune

    return type(hook).__name__ in ("WeightNorm", "SpectralNorm") or isinstance(hook, prune.BasePruningMethod)


def _hooked(model: nn.Module) -> dict[str, str]:
    """Modules whose forward hooks or pre-hooks the graph does not show, with the reason."""
    from torch.nn.modules import module as torch_module

    if torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks:
        return {"": "a global forward hook (register_module_forward_hook) is registered"}
    out = {}
    for name, m in model.named_modules():
        pre = [h for h in m._forward_pre_hooks.values() if not _recognised(h)]
        if pre or m._forward_hooks:
            out[name] = f"hook on `{name or type(model).__name__}`"
    return out


def _in_scope(node, path: str) -> bool:
    if path == "":
        return True
    if node.op == "call_module" and (node.target == path or str(node.target).startswith(path + ".")):
        return True
    return path in (node.meta.get("nn_module_stack") or {})


# ---- discover -----------------------------------------------------------------------------------------------
def _copy(model: nn.Module) -> nn.Module:
    """A float64 deep copy; tensors a hook computes (``weight`` of the old ``weight_norm`` or of ``prune``) are
    copied detached, the hook recomputes them."""
    memo = {}
    for m in model.modules():
        for value in vars(m).values():
            if isinstance(value, torch.Tensor) and value.grad_fn is not None:
                memo[id(value)] = value.detach().clone()
    try:
        work = copy.deepcopy(model, memo)
    except Exception as error:  # noqa: BLE001 (a module may refuse to be copied in many ways)
        raise ValueError(
            f"Invalid model: {type(model).__name__} cannot be copied ({type(error).__name__}: {error})"
        ) from error
    return work.double()


def _modes(model: nn.Module) -> list[dict[str, bool]]:
    """The modes to check: all train, all eval, and the model's own if it is neither."""
    own = {n: m.training for n, m in model.named_modules()}
    out = [dict.fromkeys(own, True), dict.fromkeys(own, False)]
    return out if own in out else [*out, own]


def _set_modes(model: nn.Module, modes: dict[str, bool]) -> None:
    for name, m in model.named_modules():
        m.training = modes[name]


def _trace(work: nn.Module, example, modes, buffers) -> list[fx.GraphModule]:
    """The graph in each mode (one when they are the same code), shapes propagated with ``example``."""
    graphs, codes = [], set()
    for mode in modes:
        _set_modes(work, mode)
        try:
            gm = fx.symbolic_trace(work)
        except Exception as error:  # noqa: BLE001 (fx raises many kinds)
            raise ValueError(
                f"Invalid model: torch.fx cannot trace {type(work).__name__} ({type(error).__name__}: {error})"
            ) from error
        if gm.code in codes:
            continue
        codes.add(gm.code)
        try:
            with torch.no_grad():
                ShapeProp(gm).propagate(example)
        except Exception as error:  # noqa: BLE001
            raise ValueError(
                f"Invalid example: an input of shape {tuple(example.shape)} does not run through "
                f"{type(work).__name__} ({type(error).__name__}: {error})"
            ) from error
        finally:
            _restore(work, buffers)
        graphs.append(gm)
    return graphs


def _restore(work: nn.Module, buffers: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for name, b in work.named_buffers():
            b.copy_(buffers[name])


def discover(model: nn.Module, example: torch.Tensor, *, verify: bool = True, seed: int = 0) -> Symmetry:
    """The positive rescaling symmetries of ``model`` (see the module's docstring).

    Args:
        model: any ``torch.nn.Module`` that ``torch.fx`` can trace (a ``torch.compile``-d one is read through
            ``_orig_mod``). It is not changed: modes, buffers, parameters and the random number generator
            are as they were.
        example: one input batch.
        verify: check the groups numerically and drop those that change an output (see the module's
            docstring); without it the rules alone decide.
        seed: the seed of the verification's random scales and of the forked random number generator.

    Returns:
        The :class:`~symtele.teleports.symmetry.Symmetry`: the scales, their terms, the groups, and every layer
        left out with the reason.

    Raises:
        TypeError: ``model`` is not a module or ``example`` not a tensor.
        ValueError: ``torch.fx`` cannot trace the model, or ``example`` does not run through it.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"Invalid model: expected a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(example, torch.Tensor):
        raise TypeError(f"Invalid example: expected a tensor (one input batch), got {type(example).__name__}")
    base = model._orig_mod if type(model).__name__ == "OptimizedModule" and hasattr(model, "_orig_mod") else model
    names = {id(p): n for n, p in model.named_parameters()}
    devices = [example.device] if example.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        work = _copy(base)
        copies = {id(q): names[id(p)] for p, q in zip(base.parameters(), work.parameters())}
        params = {id(q): q for q in work.parameters()}
        x = example.double() if example.is_floating_point() else example
        buffers = {n: b.clone() for n, b in work.named_buffers()}
        modes = _modes(base)
        graphs = _trace(work, x, modes, buffers)
        kinds = {n: type(m).__name__ for n, m in work.named_modules()}
        found = _walk(work, graphs, copies, params, kinds)
        if verify and found.n_scales:
            found = _verify(found, work, x, modes, buffers, copies, seed)
    return found


def _walk(work, graphs, names, params, kinds) -> Symmetry:
    """Walk every graph, pin what the graphs do not show (shared and frozen parameters, hooks), and number the
    scales."""
    d = _Discovery(names, params, kinds)
    walks = []
    for gm in graphs:
        walk = _Walk(d, gm)
        walk.run()
        walks.append(walk)
    terms_of: dict[int, list[torch.Tensor]] = {}
    for pid, units, _sign in d.terms.values():
        terms_of.setdefault(pid, []).append(units)

    def pin_param(pid, why):
        for units in terms_of.get(pid, []):
            d.pin(units, why, STRUCTURE)

    for pid, name in names.items():
        uses = max((w.uses.get(pid, []) for w in walks), key=len)
        if len(uses) > 1:
            who = sorted(set(uses))
            times = "twice" if len(uses) == 2 else f"{len(uses)} times"
            what = f"`{who[0]}` is called {times}" if len(who) == 1 else f"`{name}` is shared by {', '.join(who)}"
            pin_param(pid, what)
        every = {k: u for w in walks for k, u in w.own_terms.get(pid, {}).items()}
        for walk in walks:  # a term one mode's graph lacks: its units must not move
            for k in every.keys() - walk.own_terms.get(pid, {}).keys():
                d.pin(every[k], f"`{name}` is used differently in train and in eval mode")
        if not params[pid].requires_grad and pid in terms_of:
            pin_param(pid, f"`{name}` is frozen (requires_grad=False)")
    for path, why in _hooked(work).items():
        for walk in walks:
            for node in walk.gm.graph.nodes:
                if _in_scope(node, path):
                    walk.pin_inputs(node, why, STRUCTURE)
                    if node in walk.values:
                        d.pin(walk.values[node].units, why, STRUCTURE)
        prefix = f"{path}." if path else ""
        for pname, p in work.named_parameters():
            if pname.startswith(prefix):
                pin_param(id(p), why)
    for _, units, why in sorted(d.pins, key=lambda pin: pin[0]):
        d.units.fix(units, why)
    return _symmetry(d)


def _symmetry(d: _Discovery) -> Symmetry:
    """Number the free units' roots, map every term onto them, and describe the groups."""
    units = d.units
    roots = sorted({units.root(u) for u in range(1, len(units.parent))} - {0})
    members: dict[int, tuple[set, set]] = {r: (set(), set()) for r in roots}
    for layer, ids in d.producers.items():
        for u in ids:
            r = units.root(u)
            if r:
                members[r][0].add(layer)
    for layer, unit_lists in d.consumers.items():
        for ids in unit_lists:
            for u in ids.unique().tolist():
                r = units.root(u)
                if r:
                    members[r][1].add(layer)
    grouped: dict[tuple, list[int]] = {}
    for r in roots:
        producers, consumers = members[r]
        grouped.setdefault((tuple(sorted(producers)), tuple(sorted(consumers))), []).append(r)
    order = [r for rs in grouped.values() for r in rs]  # the scales of a group side by side
    index = {r: i for i, r in enumerate(order)}
    n = len(order)
    lookup = torch.tensor([index.get(units.root(u), n) for u in range(len(units.parent))])
    terms = []
    for pid, unit_ids, sign in d.terms.values():
        mapped = lookup[unit_ids]
        if bool((mapped < n).any()):
            terms.append(Term(d.names[pid], mapped, sign))
    groups, start = [], 0
    for (p, c), rs in grouped.items():
        groups.append(Group(len(rs), p, c, tuple(range(start, start + len(rs)))))
        start += len(rs)
    dropped = []
    for layer, ids in d.producers.items():
        if all(units.root(u) == 0 for u in ids):
            dropped.append(Dropped(layer, units.reason(ids[0]) or "its units are fixed"))
    return Symmetry(n, terms, groups, dropped, d.kinds)


# ---- verification ---------------------------------------------------------------------------------------
def _outputs(work, x, seed) -> list:
    torch.manual_seed(seed)
    with torch.no_grad():
        leaves, _ = tree_flatten(work(x))
    return leaves


def _change(before: list, after: list) -> float:
    """The largest change of any output, relative to that output's largest finite entry (``inf`` if an output
    is not comparable: another shape or type, a non-finite entry that moved, an integer that changed)."""
    if len(before) != len(after):
        return math.inf
    worst = 0.0
    for b, a in zip(before, after):
        if not isinstance(b, torch.Tensor):
            if b != a:
                return math.inf
            continue
        if not isinstance(a, torch.Tensor) or a.shape != b.shape or a.dtype != b.dtype:
            return math.inf
        if not b.is_floating_point() and not b.is_complex():
            if not torch.equal(a, b):
                return math.inf
            continue
        finite = torch.isfinite(b)
        if not torch.equal(finite, torch.isfinite(a)) or not torch.equal(
            b[~finite].nan_to_num(), a[~finite].nan_to_num()
        ):
            return math.inf
        if bool(finite.any()):
            size = float(b[finite].abs().max())
            worst = max(worst, float((a[finite] - b[finite]).abs().max()) / max(size, 1e-300))
    return worst


def _verify(found: Symmetry, work, x, modes, buffers, names, seed) -> Symmetry:
    """Apply random log-scales group by group to the float64 copy ``work`` and drop every group that changes
    an output beyond :data:`VERIFY_RTOL` (found by bisection), with the change measured."""
    by_name = {names[id(p)]: p for p in work.parameters()}
    original = {n: p.detach().clone() for n, p in by_name.items()}
    g = torch.Generator().manual_seed(seed)
    s = (torch.rand(found.n_scales, generator=g, dtype=torch.float64) * 2 - 1) * VERIFY_SPREAD
    baseline = []
    for mode in modes:
        _set_modes(work, mode)
        _restore(work, buffers)
        baseline.append(_outputs(work, x, seed))

    def change(groups: list[int]) -> tuple[float, int]:
        """The worst relative change of any output with the scales of ``groups`` applied, and in which mode."""
        t = torch.zeros_like(s)
        for i in groups:
            idx = list(found.groups[i].scales)
            t[idx] = s[idx]
        with torch.no_grad():
            for name in found.params:
                p = by_name[name]
                p.copy_(original[name] * torch.exp(found.log_factor(name, t, p)))
        worst = (0.0, 0)
        try:
            for k, mode in enumerate(modes):
                _set_modes(work, mode)
                _restore(work, buffers)
                worst = max(worst, (_change(baseline[k], _outputs(work, x, seed)), k))
        finally:
            with torch.no_grad():
                for name in found.params:
                    by_name[name].copy_(original[name])
        return worst

    def failing(groups: list[int]) -> dict[int, tuple[float, int]]:
        worst = change(groups)
        if worst[0] <= VERIFY_RTOL:
            return {}
        if len(groups) == 1:
            return {groups[0]: worst}
        half = len(groups) // 2
        out = {**failing(groups[:half]), **failing(groups[half:])}
        return out or dict.fromkeys(groups, worst)  # each half alone keeps the outputs, together they do not

    kept, dropped = list(range(len(found.groups))), []
    while kept:
        bad = failing(kept)
        if not bad:
            break
        for i, (worst, k) in bad.items():
            group = found.groups[i]
            mode = "train" if all(modes[k].values()) else "eval" if not any(modes[k].values()) else "the model's"
            dropped.append(
                Dropped(
                    ", ".join(group.producers),
                    f"group of {', '.join(group.producers)} failed numerical verification: an output changed by "
                    f"{worst:.1e} (relative) in {mode} mode",
                )
            )
        kept = [i for i in kept if i not in bad]
    _restore(work, buffers)
    result = found.keep(kept, dropped)
    mode_names = ["train", "eval", "the model's own"][: len(modes)]
    result.verified = (
        f"verified: every output kept within {VERIFY_RTOL:g} (float64, random log-scales in ±{VERIFY_SPREAD:g}) "
        f"in {', '.join(mode_names)} mode"
    )
    return result
