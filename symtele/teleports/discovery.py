"""Find a network's positive rescaling symmetries from its graph (``torch.fx``).

A *unit* is one output channel (or feature) of a layer that computes it linearly from its
weights: ``Linear``, ``Conv1d/2d/3d`` (grouped and depthwise included) and the affine part of
``BatchNorm``. Dividing everything that produces the unit by ``d > 0`` (its weight slice and its
bias) divides the unit's value by ``d``. That value may then pass through positively homogeneous
operations, ``φ(x / d) = φ(x) / d`` channel by channel: ReLU, LeakyReLU of any slope
(``σ(cz) = cσ(z)`` for ``c > 0``), Identity, Dropout, max and average pooling (adaptive included),
``Flatten`` and reshapes that keep the channels in order (a channel's scale then covers all its
flattened features), spatial means, multiplication by a positive constant. Every layer that
reads the unit multiplies the matching input slice of its weight by ``d``, and the network
computes exactly what it did. Units added together (a residual stream) must share one scale;
concatenation keeps each part's own.

``BatchNorm`` normalises its input channel by channel, so in train mode its input could take any
scale; in eval mode it divides by the running statistics, and ``√(d² v + ε) ≠ d √(v + ε)``.
So a layer that feeds a ``BatchNorm`` is never rescaled (that would break eval mode); the
``BatchNorm``'s own affine output starts new units instead. Its running statistics never change.

Anything else a unit reaches (Tanh, GELU, softmax, an attention product, the network's output, a
module called twice, an operation this module does not know) fixes its scale to 1: the chain ends
there, the rest of the network is still covered, and the result lists the layers that were left
out and why.

:func:`discover` traces a module with an example input and returns a :class:`Symmetry`: the
parameters each scale acts on (``terms``), and a readable description of the groups.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

#: modules that pass every channel's scale through unchanged
HOMOGENEOUS_MODULES = (
    nn.ReLU,
    nn.LeakyReLU,
    nn.Identity,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d,
)
#: functions (and tensor methods, by name) that do the same
HOMOGENEOUS_FUNCTIONS = {
    F.relu,
    torch.relu,
    F.dropout,
    F.dropout1d,
    F.dropout2d,
    F.dropout3d,
    F.max_pool1d,
    F.max_pool2d,
    F.max_pool3d,
    F.avg_pool1d,
    F.avg_pool2d,
    F.avg_pool3d,
    F.adaptive_avg_pool1d,
    F.adaptive_avg_pool2d,
    F.adaptive_avg_pool3d,
    F.adaptive_max_pool1d,
    F.adaptive_max_pool2d,
    F.adaptive_max_pool3d,
}
HOMOGENEOUS_METHODS = {"relu", "relu_", "contiguous", "clone", "detach"}
#: operations on a tensor's shape only, whatever its scale
SHAPE_METHODS = {"size", "dim", "numel"}
LINEAR_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@dataclass(frozen=True)
class Term:
    """One way the scales act on a parameter: ``param ← param · exp(sign · s[units])``.

    ``units`` is a long tensor broadcastable to the parameter's shape (size 1 along the axes the
    action does not depend on) giving, for each entry, the index of its scale; index ``n_scales``
    stands for "no scale" (always 1). ``sign`` is −1 where the parameter produces the unit (it is
    divided by the scale) and +1 where it reads it (multiplied)."""

    param: str
    units: torch.Tensor
    sign: int


@dataclass(frozen=True)
class Group:
    """Units that share scales: ``size`` independent scales, which layers produce them (divided by
    the scale) and which read them (multiplied)."""

    size: int
    producers: tuple[str, ...]
    consumers: tuple[str, ...]


@dataclass
class Symmetry:
    """The positive rescalings of a network: ``n_scales`` log-scales ``s``; parameter ``p`` becomes
    ``p · exp(Σ_t sign_t · s[units_t])`` over its terms; ``groups`` describes them; ``left`` lists the
    layers not rescaled, with the reason."""

    n_scales: int
    terms: list[Term]
    groups: list[Group]
    left: dict[str, str] = field(default_factory=dict)

    def log_factor(self, name: str, s: torch.Tensor, like: torch.Tensor) -> torch.Tensor | None:
        """``Σ_t sign_t · s[units_t]`` for the parameter ``name`` (broadcastable to it), or ``None`` if no
        scale acts on it."""
        terms = [t for t in self.terms if t.param == name]
        if not terms:
            return None
        padded = torch.cat([s, s.new_zeros(1)])
        out = torch.zeros((), dtype=like.dtype, device=like.device)
        for t in terms:
            out = out + t.sign * padded[t.units.to(like.device)]
        return out

    @property
    def params(self) -> list[str]:
        """The parameters some scale acts on, in the order first met."""
        return list(dict.fromkeys(t.param for t in self.terms))

    def __str__(self) -> str:
        lines = [f"{self.n_scales} independent scales in {len(self.groups)} groups"]
        for i, g in enumerate(self.groups):
            lines.append(
                f"  group {i}: {g.size} scales; divided: {', '.join(g.producers)}; multiplied: "
                f"{', '.join(g.consumers) or '(none)'}"
            )
        if self.left:
            lines.append("not rescaled:")
            lines += [f"  {name}: {why}" for name, why in self.left.items()]
        return "\n".join(lines)


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
            if low == 0:
                self.why[high] = "added to a value whose scale is fixed"

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


def _shape(node) -> tuple | None:
    meta = node.meta.get("tensor_meta")
    return None if meta is None or not hasattr(meta, "shape") else tuple(meta.shape)


def _positive_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0 and math.isfinite(x)


class _Walker:
    """Propagates channel scales through the graph; collects terms."""

    def __init__(self, gm: fx.GraphModule, names: dict[int, str]):
        self.gm, self.names = gm, names
        self.units = _Units()
        self.values: dict[fx.Node, _Value] = {}
        self.raw_terms: list[tuple[str, torch.Tensor, int, str]] = []  # (param, units, sign, layer)
        self.called: set[str] = set()
        self.producers: dict[str, list[int]] = {}
        self.consumers: dict[str, list[torch.Tensor]] = {}

    # ---- helpers ------------------------------------------------------------------------------
    def scaled(self, arg):
        return self.values.get(arg) if isinstance(arg, fx.Node) else None

    def fix_inputs(self, node, why: str) -> None:
        for arg in node.all_input_nodes:
            v = self.values.get(arg)
            if v is not None:
                self.units.fix(v.units, why)

    def param_name(self, module: nn.Module, attr: str) -> str:
        return self.names[id(getattr(module, attr))]

    # ---- node kinds ---------------------------------------------------------------------------
    def run(self) -> None:
        for node in self.gm.graph.nodes:
            if node.op == "call_module":
                self.call_module(node)
            elif node.op == "call_function":
                self.call_function(node, node.target)
            elif node.op == "call_method":
                self.call_method(node)
            elif node.op == "output":
                self.fix_inputs(node, "reaches the network's output")
            elif node.op == "get_attr":
                pass  # a parameter used outside a layer: any scaled value meeting it is fixed where it meets
            # placeholders (inputs) carry no scale

    def call_module(self, node) -> None:
        module = self.gm.get_submodule(node.target)
        name = str(node.target)
        source = self.scaled(node.args[0]) if node.args else None
        if isinstance(module, LINEAR_LAYERS + BATCH_NORMS) and name in self.called:
            self.fix_inputs(node, f"read by {name}, which is called more than once")
            return
        if isinstance(module, LINEAR_LAYERS):
            self.called.add(name)
            self.linear(node, module, name, source)
        elif isinstance(module, BATCH_NORMS):
            self.called.add(name)
            if source is not None:
                self.units.fix(source.units, f"feeds BatchNorm {name} (rescaling its input would break eval mode)")
            if module.affine:
                out = self.units.new(module.num_features)
                for attr in ("weight", "bias"):
                    self.raw_terms.append((self.param_name(module, attr), out, -1, name))
                self.producers.setdefault(name, []).extend(out.tolist())
                self.values[node] = _Value(out, 1)
        elif isinstance(module, nn.LeakyReLU) and module.negative_slope < 0:
            self.fix_inputs(node, f"passes through {name} (LeakyReLU with a negative slope)")
        elif isinstance(module, HOMOGENEOUS_MODULES):
            self.through(node, source)
        elif isinstance(module, nn.Flatten):
            self.flatten(node, source, module.start_dim, module.end_dim)
        else:
            self.fix_inputs(node, f"passes through {name} ({type(module).__name__})")

    def linear(self, node, module, name, source) -> None:
        """A ``Linear``/``Conv``: it reads its input's units and produces new ones."""
        weight = self.param_name(module, "weight")
        conv = not isinstance(module, nn.Linear)
        shape = module.weight.shape
        if source is not None:
            expected = 1 if conv else len(_shape(node.args[0])) - 1
            if source.axis != expected:
                self.units.fix(source.units, f"read by {name} along another axis")
            else:
                units = source.units
                if conv and module.groups > 1:
                    per_in, per_out = shape[1], shape[0] // module.groups
                    group_of_out = torch.arange(shape[0]) // per_out
                    index = group_of_out[:, None] * per_in + torch.arange(per_in)[None, :]
                    read = units[index].reshape(shape[0], shape[1], *([1] * (len(shape) - 2)))
                else:
                    read = units.reshape(1, -1, *([1] * (len(shape) - 2)))
                self.raw_terms.append((weight, read, +1, name))
                self.consumers.setdefault(name, []).append(units)
        out = self.units.new(shape[0])
        self.raw_terms.append((weight, out.reshape(-1, *([1] * (len(shape) - 1))), -1, name))
        if module.bias is not None:
            self.raw_terms.append((self.param_name(module, "bias"), out, -1, name))
        self.producers.setdefault(name, []).extend(out.tolist())
        self.values[node] = _Value(out, 1 if conv else len(_shape(node)) - 1)

    def through(self, node, source) -> None:
        if source is not None:
            self.values[node] = source

    def flatten(self, node, source, start: int, end: int) -> None:
        if source is None:
            return
        shape = _shape(node.args[0])
        start, end, axis = start % len(shape), end % len(shape), source.axis
        if start > axis or end < start:  # the dimensions after the channels: the channels unchanged
            self.values[node] = source
        elif end < axis and start >= 1:  # dimensions between the batch and the channels merged
            self.values[node] = _Value(source.units, axis - (end - start))
        elif start == axis:  # each channel becomes the block of features it flattens into
            per_channel = math.prod(shape[axis + 1 : end + 1])
            self.values[node] = _Value(source.units.repeat_interleave(per_channel), axis)
        else:
            self.units.fix(source.units, f"flattened across its channels at {node.name}")

    def call_function(self, node, fn) -> None:
        args = node.args
        source = self.scaled(args[0]) if args else None
        if fn in HOMOGENEOUS_FUNCTIONS:
            self.through(node, source)
        elif fn is F.leaky_relu:
            slope = node.kwargs.get("negative_slope", args[1] if len(args) > 1 else 0.01)
            if _positive_number(slope) or slope == 0:
                self.through(node, source)
            else:
                self.fix_inputs(node, f"passes through {node.name} (LeakyReLU with a negative slope)")
        elif fn in (operator.add, torch.add, operator.iadd) and len(args) == 2 and not node.kwargs:
            self.add(node, *args)
        elif fn in (operator.mul, torch.mul, operator.truediv) and len(args) == 2:
            scalar = args[1] if isinstance(args[0], fx.Node) else args[0]
            tensor = args[0] if isinstance(args[0], fx.Node) else args[1]
            if _positive_number(scalar):
                self.through(node, self.scaled(tensor))
            else:
                self.fix_inputs(node, f"multiplied by {scalar!r} at {node.name}")
        elif fn is torch.cat:
            self.cat(node, args[0], node.kwargs.get("dim", args[1] if len(args) > 1 else 0))
        elif fn is torch.flatten:
            start = node.kwargs.get("start_dim", args[1] if len(args) > 1 else 0)
            end = node.kwargs.get("end_dim", args[2] if len(args) > 2 else -1)
            self.flatten(node, source, start, end)
        elif fn in (torch.mean, torch.sum):
            self.reduce(node, source, node.kwargs.get("dim", args[1] if len(args) > 1 else None))
        elif fn in (getattr, operator.getitem) and source is not None and not isinstance(_shape(node), tuple):
            pass  # x.shape, x.shape[0]: not a tensor
        else:
            self.fix_inputs(node, f"passes through {getattr(fn, '__name__', fn)} at {node.name}")

    def call_method(self, node) -> None:
        method, args = node.target, node.args
        source = self.scaled(args[0])
        if method in SHAPE_METHODS:
            return
        if method in HOMOGENEOUS_METHODS:
            self.through(node, source)
        elif method in ("view", "reshape"):
            self.reshape(node, source)
        elif method == "flatten":
            start = node.kwargs.get("start_dim", args[1] if len(args) > 1 else 0)
            end = node.kwargs.get("end_dim", args[2] if len(args) > 2 else -1)
            self.flatten(node, source, start, end)
        elif method in ("mean", "sum"):
            self.reduce(node, source, node.kwargs.get("dim", args[1] if len(args) > 1 else None))
        elif method in ("add", "add_") and len(args) == 2:
            self.add(node, *args)
        else:
            self.fix_inputs(node, f"passes through .{method}() at {node.name}")

    def add(self, node, a, b) -> None:
        va, vb = self.scaled(a), self.scaled(b)
        if va is None and vb is None:
            return
        if va is None or vb is None or va.axis != vb.axis or va.units.shape != vb.units.shape:
            self.fix_inputs(node, f"added to an unscaled or differently shaped value at {node.name}")
            return
        for x, y in zip(va.units.tolist(), vb.units.tolist()):
            self.units.join(x, y)
        self.values[node] = va

    def cat(self, node, parts, dim) -> None:
        values = [self.scaled(p) for p in parts]
        if all(v is None for v in values):
            return
        shapes = [_shape(p) for p in parts]
        axis = dim % len(shapes[0])
        if any(v is not None and v.axis != axis for v in values):
            self.fix_inputs(node, f"concatenated along another axis at {node.name}")
            return
        units = [v.units if v is not None else torch.zeros(s[axis], dtype=torch.long) for v, s in zip(values, shapes)]
        self.values[node] = _Value(torch.cat(units), axis)

    def reduce(self, node, source, dim) -> None:
        if source is None:
            return
        dims = dim if isinstance(dim, (tuple, list)) else (dim,)
        rank = len(_shape(node.args[0]))
        if dim is None or source.axis in [d % rank for d in dims]:
            self.fix_inputs(node, f"reduced over its channels at {node.name}")
            return
        keep = node.kwargs.get("keepdim", False)
        below = sum(1 for d in dims if d % rank < source.axis)
        self.values[node] = _Value(source.units, source.axis if keep else source.axis - below)

    def reshape(self, node, source) -> None:
        if source is None:
            return
        before, after = _shape(node.args[0]), _shape(node)
        if after[: source.axis + 1] == before[: source.axis + 1]:
            self.values[node] = source  # the channels and everything before them unchanged
        elif len(after) == source.axis + 1 and after[:-1] == before[: source.axis]:
            per_channel = math.prod(before[source.axis + 1 :])
            self.values[node] = _Value(source.units.repeat_interleave(per_channel), source.axis)
        else:
            self.fix_inputs(node, f"reshaped across its channels at {node.name}")


def discover(model: nn.Module, example: torch.Tensor) -> Symmetry:
    """The positive rescaling symmetries of ``model`` (see the module's docstring), found by tracing it
    with ``torch.fx`` and propagating shapes with the input ``example`` (one batch).

    Raises ``TypeError`` for a non-module, ``ValueError`` naming the model when ``torch.fx`` cannot trace
    it or the example does not run through it, and ``ValueError`` when it has no scalable units at all.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"Invalid model: expected a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(example, torch.Tensor):
        raise TypeError(f"Invalid example: expected a tensor (one input batch), got {type(example).__name__}")
    try:
        gm = fx.symbolic_trace(model)
    except Exception as error:  # noqa: BLE001 (fx raises many kinds)
        raise ValueError(
            f"Invalid model: torch.fx cannot trace {type(model).__name__} ({type(error).__name__}: {error})"
        ) from error
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    modes = {m: m.training for m in model.modules()}  # the traced graph shares the model's submodules
    try:
        gm.eval()  # shapes only: no batch statistics, no dropout
        with torch.no_grad():
            ShapeProp(gm).propagate(example)
    except Exception as error:  # noqa: BLE001
        raise ValueError(
            f"Invalid example: an input of shape {tuple(example.shape)} does not run through "
            f"{type(model).__name__} ({type(error).__name__}: {error})"
        ) from error
    finally:
        for m, mode in modes.items():
            m.train(mode)
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(buffers[name])
    names = {id(p): name for name, p in model.named_parameters()}
    walker = _Walker(gm, names)
    walker.run()
    return _symmetry(walker)


def _symmetry(walker: _Walker) -> Symmetry:
    """Number the free units' roots, map every term onto them, and describe the groups."""
    units = walker.units
    roots = sorted({units.root(u) for u in range(1, len(units.parent))} - {0})
    index = {r: i for i, r in enumerate(roots)}
    n = len(roots)
    lookup = torch.tensor([index.get(units.root(u), n) for u in range(len(units.parent))])
    terms = []
    for param, unit_ids, sign, _layer in walker.raw_terms:
        mapped = lookup[unit_ids]
        if bool((mapped < n).any()):
            terms.append(Term(param, mapped, sign))
    members: dict[int, tuple[set, set]] = {}
    for layer, ids in walker.producers.items():
        for u in ids:
            r = units.root(u)
            if r:
                members.setdefault(r, (set(), set()))[0].add(layer)
    for layer, unit_lists in walker.consumers.items():
        for ids in unit_lists:
            for u in ids.unique().tolist():
                r = units.root(u)
                if r:
                    members.setdefault(r, (set(), set()))[1].add(layer)
    grouped: dict[tuple, int] = {}
    for r in roots:
        producers, consumers = members.get(r, (set(), set()))
        key = (tuple(sorted(producers)), tuple(sorted(consumers)))
        grouped[key] = grouped.get(key, 0) + 1
    groups = [Group(size, p, c) for (p, c), size in grouped.items()]
    left = {}
    for layer, ids in walker.producers.items():
        free = [u for u in ids if units.root(u) != 0]
        if not free:
            left[layer] = units.reason(ids[0]) or "its units are fixed"
    return Symmetry(n, terms, groups, left)
