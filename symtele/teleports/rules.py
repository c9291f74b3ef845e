"""The rule table of :func:`~symtele.teleports.discovery.discover`.

How per-channel scales pass through each operation a ``torch.fx`` graph can hold.

Each operation (a module type in :data:`MODULES`, a function in :data:`FUNCTIONS`, a tensor method in
:data:`METHODS`) has a :class:`Rule`: a handler that says how the scales of its inputs reach its output (on
which axis, and what it does to the weights), and the signature its arguments are read with, so that
positional and keyword forms (``x.mean(1, True)``, ``self.bn(input=h)``) are one case. Anything the table
does not know fixes the scales of the channels it touches at 1 (the *pin*): the chain ends there, the rest
of the network is still covered.

A handler is ``handle(walk, node, args, module)``: ``walk`` (a :class:`~symtele.teleports.discovery._Walk`)
gives the scales of a traced value (``walk.value(x)``: a :class:`Value`, its units along one axis, or
``None`` for an unscaled one), sets the output's (``walk.set``), records that a parameter produces units
(``walk.produce``, divided by the scale) or reads them (``walk.read``, multiplied), and pins
(``walk.pin_inputs(node, why)``); ``args`` are the call's arguments by name; ``module`` the called module.

**Attention.** Attention has no positive scale of its own but a larger matrix symmetry per head
(:mod:`~symtele.teleports.symmetry` has the math, :mod:`~symtele.teleports.heads` finds it beside this table);
the rules here are the diagonal scales around it:

* ``nn.MultiheadAttention``: its query, key and value projections read the units of their inputs (a normaliser
  before it: ``W[:, j] · d_j``); its output is not rescaled (:func:`_attention_module`);
* ``nn.TransformerEncoderLayer``/``DecoderLayer`` (and ``nn.TransformerEncoder``/``Decoder``, layer by layer),
  pre-norm: each normaliser's ``γ, β`` into the projections after it (self-attention's q, k, v; the decoder's
  cross-attention query; the MLP's ``linear1``) (:func:`_transformer_layer`);
* the same layers, post-norm: the normalisers before the last feed a residual sum (pinned), the last one's units
  leave the layer with its output;
* their MLP: ``linear1``'s hidden units rescaled through ReLU into ``linear2``; GELU (or any other activation)
  has no positive scale, said so (:func:`_feed_forward`);
* a hand-written block needs no rule of its own: ``LayerNorm`` into ``c_attn`` (a ``Linear``) and ReLU MLPs are
  the rules above; ``split`` is not in the table, so ``c_attn``'s own output units are pinned (its heads' matrix
  groups move them instead).

**Adding a layer.** Say ``torch.abs`` were missing. ``|x / d| = |x| / d`` for ``d > 0``, so its output
carries the scales of its input on the same axis: the rule is :func:`_through` (input scales pass
unchanged; shapes must match). Add the entry to the table, with the signature its arguments are read
with::

    FUNCTIONS[torch.abs] = Rule(_through, INPUT)      # torch.abs(x)
    METHODS["abs"] = Rule(_through, INPUT)            # x.abs()

A module is added the same way (``MODULES[nn.ReLU] = Rule(_through)``; its signature is its ``forward``'s).
An operation that creates units (a new layer type) has a handler that calls ``walk.produce`` for
the parameters that produce them and ``walk.read`` for the weights that read its input; see
:func:`_layer_module`. Then add a test that builds a network with it and checks, through
:func:`~symtele.teleports.discovery.discover` with ``verify=False``, that the scales it finds keep every output
(``tests/test_trust.py`` has one per case): with verification on, a wrong rule's groups would be dropped, not
reported.
"""

from __future__ import annotations

import inspect
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

#: what a refused activation is told is supported
SUPPORTED = "ReLU, LeakyReLU, PReLU, abs, clamp(min=0), Identity, Dropout, pooling, padding, Upsample"

# ---- pins: why a scale is fixed, most telling first -------------------------------------------------------
STRUCTURE, RULE, OUTPUT = 0, 1, 2


@dataclass
class Value:
    """A traced tensor whose channels along ``axis`` carry the scales ``units`` (one per channel).

    Args:
        units: the scale of each channel (a long tensor, one entry per channel).
        axis: the channel axis of the tensor.
    """

    units: torch.Tensor
    axis: int


@dataclass
class ParamValue:
    """A traced tensor that is a 1-D parameter laid along ``axis`` (size 1 on every other axis).

    Args:
        pid: the parameter's ``id``.
        axis: the axis its entries lie along.
    """

    pid: int
    axis: int


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
        reads: the arguments besides the first whose scales ``handle`` takes care of. A scaled value in any
            other argument (``F.prelu(x, weight)``'s weight, ``F.linear``'s bias, an attention mask) is pinned
            before ``handle`` runs: no rule passes its scale on, so it must not move.
    """

    handle: Callable
    signature: inspect.Signature | None = None
    reads: tuple[str, ...] = ()


def _signature(f) -> inspect.Signature:
    return inspect.signature(f)


INPUT = _signature(lambda input, *args, **kwargs: None)
LEAKY = _signature(lambda input, negative_slope=0.01, inplace=False: None)
FLATTEN = _signature(lambda input, start_dim=0, end_dim=-1: None)
PAD = _signature(lambda input, pad, mode="constant", value=None: None)
CLAMP = _signature(lambda input, min=None, max=None: None)
TRANSPOSE = _signature(lambda input, dim0, dim1: None)
PERMUTE = _signature(lambda input, *dims: None)
UNSQUEEZE = _signature(lambda input, dim: None)
SQUEEZE = _signature(lambda input, dim=None: None)
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
#: the second operand of a binary operation, the weight of ``F.linear``/``F.conv*``: read by their rules too
BOTH, WEIGHT = ("other",), ("weight",)


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
    """Pooling over the last ``pooled`` axes (``None``: every axis after the channels, as ``Upsample``).

    The scales pass only when the channel axis is not pooled and the channel count is kept.
    """

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


def _pad(walk, node, a, module=None):
    """Padding of the last axes with zeros or with the channel's own entries (reflect, replicate, circular).

    The scales pass when the channel axis is not padded.
    """
    if module is not None:
        pad, value = module.padding, getattr(module, "value", 0.0)
        mode = "constant" if hasattr(module, "value") else "copies"
    else:
        pad, mode, value = a["pad"], a["mode"], a["value"]
    v = walk.value(a["input"])
    if v is None:
        return
    before, after = _shape(a["input"]), _shape(node)
    if mode == "constant" and value not in (None, 0, 0.0):
        walk.pin_inputs(node, f"padded with {value!r} at {walk.label(node)}")
    elif after is None or len(after) != len(before) or v.axis >= len(before) - len(pad) // 2:
        walk.pin_inputs(node, f"{walk.label(node)} pads the scaled channels (axis {v.axis})")
    else:
        walk.set(node, v)


def _clamp(walk, node, a, module=None):
    """``clamp(x, min=0)`` is ReLU; any other bound is not homogeneous."""
    if _number(a["min"]) and a["min"] == 0 and a["max"] is None:
        _through(walk, node, a)
    else:
        walk.pin_inputs(node, f"clamped to [{a['min']}, {a['max']}] at {walk.label(node)}")


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
        walk.set(node, Value(v.units, axis - (end - start)))
    elif start == axis:  # each channel becomes the block of features it flattens into
        walk.set(node, Value(v.units.repeat_interleave(math.prod(shape[axis + 1 : end + 1])), axis))
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
        walk.set(node, Value(v.units.repeat_interleave(math.prod(before[v.axis + 1 :])), v.axis))
    else:
        walk.pin_inputs(node, f"reshaped across its channels at {walk.label(node)}")


def _moved(walk, node, x, axis_after):
    """The output carries ``x``'s scales on the axis ``axis_after(axis, rank)`` (``None``: pin)."""
    v, before, after = walk.value(x), _shape(x), _shape(node)
    if v is None:
        return
    axis = axis_after(v.axis, len(before)) if after is not None else None
    if axis is None or after[axis] != before[v.axis]:
        walk.pin_inputs(node, f"moved its channels out of reach at {walk.label(node)}")
        return
    walk.set(node, Value(v.units, axis))


def _transpose(walk, node, a, module=None):
    """``x.transpose(i, j)``: the channel axis swapped along."""
    i, j = a["dim0"], a["dim1"]

    def after(axis, rank):
        first, second = i % rank, j % rank
        return second if axis == first else first if axis == second else axis

    _moved(walk, node, a["input"], after)


def _permute(walk, node, a, module=None):
    """``x.permute(dims)``: the channel axis goes where ``dims`` puts it."""
    dims = a["dims"][0] if len(a["dims"]) == 1 and isinstance(a["dims"][0], (tuple, list)) else a["dims"]
    _moved(walk, node, a["input"], lambda axis, rank: [d % rank for d in dims].index(axis))


def _unsqueeze(walk, node, a, module=None):
    """``x.unsqueeze(d)``: a new axis of size 1 before or after the channels."""
    d = a["dim"]
    _moved(walk, node, a["input"], lambda axis, rank: axis + 1 if d % (rank + 1) <= axis else axis)


def _squeeze(walk, node, a, module=None):
    """``x.squeeze(d)``: axes of size 1 removed, never the channels'."""
    x = a["input"]
    shape = _shape(x)
    dims = a["dim"]
    if dims is None:
        dims = [i for i, n in enumerate(shape or ()) if n == 1]
    dims = [d % len(shape) for d in (dims if isinstance(dims, (tuple, list)) else [dims])] if shape else []
    dropped = [d for d in dims if shape[d] == 1]
    _moved(walk, node, x, lambda axis, rank: None if axis in dropped else axis - sum(d < axis for d in dropped))


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
    walk.set(node, Value(v.units, v.axis if keep else v.axis - sum(1 for d in dims if d < v.axis)))


def _add(walk, node, a, module=None):
    """``x + y`` and ``x − y`` (with any ``alpha``).

    Both scaled alike, or a parameter added to a scaled value (that parameter produces the unit too).
    """
    x, y = a["input"], a["other"]
    vx, vy = walk.value(x), walk.value(y)
    if vx is None and vy is None:
        return
    if vx is None:
        x, y, vx, vy = y, x, vy, vx
    out = _shape(node)
    if vy is None:
        p = walk.param_value(y)
        aligned = p is not None and len(out) - len(_shape(y)) + p.axis == vx.axis
        if aligned and out == _shape(x) and walk.d.params[p.pid].numel() == vx.units.numel():
            walk.produce(walk.name_of(p.pid), p.pid, vx.units, walk.param_label(p.pid))
            walk.set(node, vx)
        else:
            walk.pin_inputs(node, f"added to an unscaled value at {walk.label(node)} (`{_text(x)} + {_text(y)}`)")
        return
    # broadcasting along other axes (``h - h.mean(-1, keepdim=True)``) keeps the channels apart
    same_rank = len(out) == len(_shape(x)) == len(_shape(y))
    if not (same_rank and vx.axis == vy.axis and vx.units.shape == vy.units.shape):
        walk.pin_inputs(node, f"added to a differently shaped value at {walk.label(node)}")
        return
    for i, j in zip(vx.units.tolist(), vy.units.tolist()):
        walk.d.units.join(i, j)
    walk.set(node, vx)


def _factor(y, node, x) -> bool:
    """Whether ``x * y`` (or ``x / y``), ``y`` unscaled, acts on ``x`` channel by channel.

    That is ``y`` a number, a number computed in the graph (``w.shape[0]``: no tensor), or a tensor that
    broadcasts to ``x``'s shape.
    """
    if _number(y):
        return True
    if not isinstance(y, fx.Node):
        return False
    if "tensor_meta" not in y.meta:
        return True
    return _shape(y) is not None and _shape(node) == _shape(x)


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
    if _factor(y, node, x):
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
    if a["rounding_mode"] is None and _factor(y, node, x):
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
    walk.set(node, Value(torch.cat(units), axis))


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
    """A normaliser: its input is pinned (see the module's docstring).

    Its affine output, per channel along ``channel_axis(rank)``, starts new units.
    """

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
        walk.set(node, Value(out, axis))

    return handle


def _affine(walk, layer: str, norm: nn.Module) -> torch.Tensor | None:
    """New units for the affine ``γ, β`` of the normaliser ``norm`` (named ``layer``), produced by them.

    ``None`` if it has none or they are not plain parameters (then pinned with the reason).
    """
    weight, bias = walk.weight_of(norm, "weight"), walk.weight_of(norm, "bias")
    if weight is None:
        return None
    walk.d.kinds[layer] = type(norm).__name__
    if weight.role != "plain" or weight.param.dim() != 1 or (bias is not None and bias.role != "plain"):
        walk.pin(walk.d.keyed(id(norm), 1), weight.why or (bias.why if bias else "") or "not one scale per channel")
        return None
    out = walk.d.keyed(id(weight.param), weight.param.numel())
    walk.produce(layer, id(weight.param), out)
    if bias is not None:
        walk.produce(layer, id(bias.param), out)
    return out


def _read_projections(walk, layer: str, attention: nn.MultiheadAttention, inputs) -> None:
    r"""``nn.MultiheadAttention``'s query, key and value projections read the units of ``inputs``.

    ``inputs`` are three :class:`Value`\ s or ``None``, on their last axis: ``W[:, j] · d_j`` undoes
    ``x_j / d_j``.
    """
    e = attention.embed_dim
    if attention.in_proj_weight is not None:
        w = walk.weight_of(attention, "in_proj_weight")
        if w is None or w.role != "plain":
            for v in inputs:
                if v is not None:
                    walk.pin(v.units, f"read by {layer}: {w.why if w else 'no weight'}")
            return
        units = torch.zeros(3 * e, e, dtype=torch.long)
        for i, v in enumerate(inputs):
            if v is not None:
                units[i * e : (i + 1) * e] = v.units.reshape(1, -1)
        whole = torch.cat([v.units for v in inputs if v is not None]) if any(inputs) else None
        if whole is not None:
            walk.read(layer, id(w.param), units, whole)
        return
    for v, attr in zip(inputs, ("q_proj_weight", "k_proj_weight", "v_proj_weight")):
        if v is None:
            continue
        w = walk.weight_of(attention, attr)
        if w is None or w.role != "plain":
            walk.pin(v.units, f"read by {layer}: {w.why if w else 'no weight'}")
        else:
            walk.read(layer, id(w.param), v.units.reshape(1, -1), v.units)


def _attention_module(walk, node, a, module):
    """``nn.MultiheadAttention``: its projections read the units of its inputs.

    The inputs' units are on their last axis (a normaliser before it); its own head groups are matrix groups
    (:mod:`~symtele.teleports.heads`); its output is not rescaled.
    """
    inputs = []
    for key in ("query", "key", "value"):
        v, shape = walk.value(a[key]), _shape(a[key])
        if v is not None and (shape is None or v.axis != len(shape) - 1):
            walk.pin(v.units, f"read by {walk.label(node)} along another axis")
            v = None
        inputs.append(v)
    walk.d.kinds.setdefault(str(node.target), type(module).__name__)
    _read_projections(walk, str(node.target), module, inputs)


def _feed_forward(walk, path: str, layer: nn.Module, reads: torch.Tensor | None) -> None:
    """A transformer layer's MLP ``linear2(σ(linear1(x)))``.

    ``linear1`` reads ``reads`` (the units of the normaliser before it, or ``None``) and produces a unit per
    hidden neuron, rescaled through σ = ReLU and read by ``linear2``; any other σ (GELU) has no positive scale,
    said so.
    """
    first, second = layer.linear1, layer.linear2
    w1, b1, w2 = (walk.weight_of(m, k) for m, k in ((first, "weight"), (first, "bias"), (second, "weight")))
    name = f"{path}.linear1"
    walk.d.kinds.setdefault(name, type(first).__name__)
    if reads is not None:
        if w1 is not None and w1.role == "plain":
            walk.read(name, id(w1.param), reads.reshape(1, -1), reads)
        else:
            walk.pin(reads, f"read by {name}: {w1.why if w1 else 'no weight'}")
    if w1 is None or w1.role != "plain":
        return
    hidden = walk.d.keyed(id(w1.param), w1.param.shape[0])
    walk.produce(name, id(w1.param), hidden)
    if b1 is not None:
        if b1.role == "plain":
            walk.produce(name, id(b1.param), hidden)
        else:
            walk.pin(hidden, b1.why, STRUCTURE)
    activation, changed = layer.activation, not_torch_own(layer)
    changed = f"passes through {path}: {changed}" if changed else ""
    relu = activation in (F.relu, torch.relu) or isinstance(activation, nn.ReLU)
    for part in ("activation", "dropout", "linear1", "linear2"):
        module = getattr(layer, part)
        why = not_torch_own(module, hooks=part in ("activation", "dropout")) if isinstance(module, nn.Module) else ""
        changed = changed or (f"passes through {path}.{part}: {why}" if why else "")
    if changed:
        walk.pin(hidden, changed)
    elif not relu:
        kind = getattr(activation, "__name__", type(activation).__name__)
        walk.pin(hidden, f"passes through {kind} in {path}, which no positive scale passes (supported: {SUPPORTED})")
    elif w2 is not None and w2.role == "plain":
        walk.read(f"{path}.linear2", id(w2.param), hidden.reshape(1, -1), hidden)
    else:
        walk.pin(hidden, f"read by {path}.linear2: {w2.why if w2 else 'no weight'}")


def _transformer_layer(walk, path: str, layer: nn.Module) -> torch.Tensor | None:
    """The positive scales inside one ``nn.TransformerEncoderLayer``/``DecoderLayer`` (a ``torch.fx`` leaf).

    Pre-norm (``norm_first``): each normaliser's ``γ, β`` are read by the projections after it (``norm1``: the
    self-attention's query, key and value; a decoder's ``norm2``: the cross-attention's query; the last: the
    MLP's ``linear1``). Post-norm: the normalisers before the last feed a residual sum (pinned); the last one's
    units are the layer's output (returned). The MLP's hidden units with ReLU. Returns the output's units or
    ``None``.
    """
    decoder = isinstance(layer, nn.TransformerDecoderLayer)
    norms = [f"norm{i}" for i in ((1, 2, 3) if decoder else (1, 2))]
    units = [_affine(walk, f"{path}.{n}", getattr(layer, n)) for n in norms]
    whole = not_torch_own(layer)  # a subclass's own _sa_block or _ff_block: nothing inside is read by its class
    for i, n in enumerate(norms):
        why = whole or not_torch_own(getattr(layer, n))
        if units[i] is not None and why:
            walk.pin(units[i], f"{path}{'' if whole else '.' + n}: {why}")
            units[i] = None
    if layer.norm_first:
        reads = [("self_attn", [_value(units[0])] * 3)]
        if decoder:
            reads.append(("multihead_attn", [_value(units[1]), None, None]))
        for attention, inputs in reads:
            module = getattr(layer, attention)
            why = not_torch_own(module)
            if why:
                for v in inputs:
                    if v is not None:
                        walk.pin(v.units, f"read by {path}.{attention}: {why}")
            else:
                _read_projections(walk, f"{path}.{attention}", module, inputs)
        _feed_forward(walk, path, layer, units[-1])
        return None
    for n, u in zip(norms[:-1], units[:-1]):
        if u is not None:
            walk.pin(u, f"{path}.{n}'s output is added to the residual stream inside {path}")
    _feed_forward(walk, path, layer, None)
    return units[-1]


def _value(units: torch.Tensor | None) -> Value | None:
    return None if units is None else Value(units, -1)


def _transformer_module(walk, node, a, module):
    """``nn.TransformerEncoderLayer``/``DecoderLayer`` and their stacks ``nn.TransformerEncoder``/``Decoder``.

    These are ``torch.fx`` leaves: the scales inside each layer (:func:`_transformer_layer`); their inputs enter
    a residual stream or a normaliser (pinned); the output carries the units of the last normaliser.
    """
    name, path = walk.label(node), str(node.target)
    walk.d.kinds.setdefault(path, type(module).__name__)
    walk.pin_inputs(node, f"enters {name}, whose residual stream or normalisers fix its scale")
    if isinstance(module, (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)):
        out = _transformer_layer(walk, path, module)
    else:
        out = None
        for i, layer in enumerate(module.layers):
            out = _transformer_layer(walk, f"{path}.layers.{i}", layer)
            if out is not None and i + 1 < len(module.layers):
                walk.pin(out, f"{path}.layers.{i}'s output enters the next layer's residual stream")
        if module.norm is not None:
            if out is not None:
                walk.pin(out, f"{path}.layers.{len(module.layers) - 1}'s output feeds {path}.norm")
            out = _affine(walk, f"{path}.norm", module.norm)
    shape = _shape(node)
    if out is not None and shape is not None and shape[-1] == out.numel():
        walk.set(node, Value(out, len(shape) - 1))


CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
CONV_T = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)

#: module types and their rules (subclasses match too; the signature is the module's ``forward``'s)
MODULES: dict[type, Rule] = {
    **{t: Rule(_through) for t in (nn.ReLU, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)},
    nn.LeakyReLU: Rule(_leaky),
    nn.PReLU: Rule(_through),  # its slopes are not rescaled: prelu(x/d) = prelu(x)/d
    **{
        t: Rule(_pad)
        for t in (
            nn.ZeroPad1d,
            nn.ZeroPad2d,
            nn.ZeroPad3d,
            nn.ConstantPad1d,
            nn.ConstantPad2d,
            nn.ConstantPad3d,
            nn.ReflectionPad1d,
            nn.ReflectionPad2d,
            nn.ReflectionPad3d,
            nn.ReplicationPad1d,
            nn.ReplicationPad2d,
            nn.ReplicationPad3d,
            nn.CircularPad1d,
            nn.CircularPad2d,
            nn.CircularPad3d,
        )
    },
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
    nn.MultiheadAttention: Rule(_attention_module, reads=("key", "value")),
    **{
        t: Rule(_transformer_module)
        for t in (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer, nn.TransformerEncoder, nn.TransformerDecoder)
    },
}

#: functions (``call_function`` targets) and their rules
FUNCTIONS: dict[Callable, Rule] = {
    **{f: Rule(_through, INPUT) for f in (F.relu, torch.relu, torch.relu_, F.relu_, torch.abs, operator.abs)},
    **{f: Rule(_through, INPUT) for f in (operator.neg, torch.neg, F.dropout, F.dropout1d, F.dropout2d)},
    F.dropout3d: Rule(_through, INPUT),
    F.leaky_relu: Rule(_leaky, LEAKY),
    F.prelu: Rule(_through, INPUT),
    F.pad: Rule(_pad, PAD),
    torch.clamp: Rule(_clamp, CLAMP),
    **{f: Rule(_spatial(1), INPUT) for f in (F.max_pool1d, F.avg_pool1d, F.adaptive_avg_pool1d, F.adaptive_max_pool1d)},
    **{f: Rule(_spatial(2), INPUT) for f in (F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d)},
    **{f: Rule(_spatial(3), INPUT) for f in (F.max_pool3d, F.avg_pool3d, F.adaptive_avg_pool3d, F.adaptive_max_pool3d)},
    F.interpolate: Rule(_spatial(None), INPUT),
    torch.flatten: Rule(_flatten, FLATTEN),
    torch.reshape: Rule(_reshape, INPUT),
    torch.transpose: Rule(_transpose, TRANSPOSE),
    torch.permute: Rule(_permute, PERMUTE),
    torch.unsqueeze: Rule(_unsqueeze, UNSQUEEZE),
    torch.squeeze: Rule(_squeeze, SQUEEZE),
    torch.mean: Rule(_reduce, REDUCE),
    torch.sum: Rule(_reduce, REDUCE),
    **{
        f: Rule(_add, BINARY, BOTH)
        for f in (operator.add, operator.iadd, torch.add, operator.sub, operator.isub, torch.sub)
    },
    **{f: Rule(_mul, BINARY, BOTH) for f in (operator.mul, operator.imul, torch.mul)},
    **{f: Rule(_div, BINARY, BOTH) for f in (operator.truediv, operator.itruediv, torch.div)},
    **{f: Rule(_cat, CAT) for f in (torch.cat, torch.concat, torch.concatenate)},
    getattr: Rule(_getattr, GETATTR),
    operator.getitem: Rule(_getitem, GETITEM),
    F.linear: Rule(_layer_function("linear"), LINEAR_F, WEIGHT),
    **{f: Rule(_layer_function("conv"), CONV_F, WEIGHT) for f in (F.conv1d, F.conv2d, F.conv3d)},
    **{f: Rule(_layer_function("transpose"), CONV_T_F, WEIGHT) for f in (F.conv_transpose1d, F.conv_transpose2d)},
    F.conv_transpose3d: Rule(_layer_function("transpose"), CONV_T_F, WEIGHT),
}

#: tensor methods (``call_method`` targets, by name; the tensor is ``input``) and their rules
METHODS: dict[str, Rule] = {
    **{m: Rule(_through, INPUT) for m in ("relu", "relu_", "abs", "abs_", "neg", "contiguous", "clone", "detach")},
    "flatten": Rule(_flatten, FLATTEN),
    "clamp": Rule(_clamp, CLAMP),
    "clamp_": Rule(_clamp, CLAMP),
    "view": Rule(_reshape, INPUT),
    "reshape": Rule(_reshape, INPUT),
    "transpose": Rule(_transpose, TRANSPOSE),
    "permute": Rule(_permute, PERMUTE),
    "unsqueeze": Rule(_unsqueeze, UNSQUEEZE),
    "squeeze": Rule(_squeeze, SQUEEZE),
    "mean": Rule(_reduce, REDUCE),
    "sum": Rule(_reduce, REDUCE),
    **{m: Rule(_add, BINARY, BOTH) for m in ("add", "add_", "sub", "sub_")},
    **{m: Rule(_mul, BINARY, BOTH) for m in ("mul", "mul_")},
    **{m: Rule(_div, BINARY, BOTH) for m in ("div", "div_")},
    **{m: Rule(_shape_only, INPUT) for m in ("size", "dim", "numel")},
}


def replaced_forward(module: nn.Module) -> bool:
    """Whether ``module``'s ``forward`` is replaced on the instance (``m.forward = f``): its class's rule is not its."""
    return "forward" in vars(module)


def not_torch_own(module: nn.Module, *, hooks: bool = False) -> str:
    """Why ``module`` may not compute what the ``torch.nn`` class it derives from computes, or ``""``.

    The rules read the modules *inside* a ``torch.fx`` leaf (a transformer layer's attention, activation,
    dropout, normalisers and linear layers) by their ``torch.nn`` class, without tracing them. That holds only if
    no subclass defined outside ``torch`` overrides a method of that class (``class Capped(nn.ReLU)`` with its own
    ``forward``, a layer's ``_ff_block``), no method is replaced on the instance (``m.forward = f``), and, with
    ``hooks``, no forward hook or pre-hook is registered on it (for modules without parameters, whose hooks
    :func:`~symtele.teleports.discovery.discover` cannot pin through a parameter).

    Args:
        module: a module called inside a leaf.
        hooks: also refuse a module with forward hooks or pre-hooks.

    Returns:
        The reason (naming the class, the method, or the hook), or ``""``.
    """
    mro = type(module).__mro__
    base = next((c for c in mro if c.__module__.startswith("torch.")), nn.Module)
    for cls in mro[: mro.index(base)]:
        for key, value in vars(cls).items():
            if callable(value) and hasattr(base, key) and not key.startswith("__"):
                return f"`{cls.__name__}` overrides {base.__name__}.{key}"
    for key, value in vars(module).items():
        if callable(value) and hasattr(base, key) and not isinstance(value, nn.Module):
            return f"its {key} is replaced on the instance"
    if hooks and (module._forward_hooks or module._forward_pre_hooks):
        return "a forward hook is registered on it"
    return ""


def _module_rule(module: nn.Module) -> Rule | None:
    if replaced_forward(module):
        return None
    for cls in type(module).__mro__:
        if cls in MODULES:
            return MODULES[cls]
    return None
