"""Find a network's positive rescaling symmetries from its graph (``torch.fx``), and check them numerically.

A *unit* is one output channel (or feature) of a layer that computes it linearly from its weights:
``Linear``, ``Conv1d/2d/3d`` and ``ConvTranspose1d/2d/3d`` (grouped and depthwise included), the functional
``F.linear``/``F.conv*`` on a parameter, and the affine output of ``BatchNorm``, ``GroupNorm``,
``LayerNorm`` (over the last dimension) and ``InstanceNorm``. Dividing everything that produces the unit by
``d > 0`` (its weight slice, its bias, a parameter added to it) divides the unit's value by ``d``. The value
may then pass through operations that are positively homogeneous channel by channel, ``φ(x / d) = φ(x) / d``:
ReLU, LeakyReLU of any slope, PReLU, ``clamp(min=0)``, ``abs``, negation, Identity, Dropout, pooling and
padding (zeros or the channel's own entries) over the spatial axes (never over the channels),
``Upsample``/``interpolate``, ``Flatten`` and reshapes that keep the channels in order (a channel's scale then
covers all its flattened features), ``transpose``/``permute``/``unsqueeze``/``squeeze`` (the channel axis
moves along), sums and means over other axes, multiplication by a constant or by an unscaled tensor, division
by one. Every layer that reads the unit multiplies the matching input slice of its weight by ``d``, and the
network computes exactly what it did. Units added together (a residual stream) share one scale; a
concatenation keeps each part's own.

A normaliser's input is never rescaled: ``BatchNorm`` in eval mode divides by its running statistics, and
``GroupNorm``/``LayerNorm``/``InstanceNorm`` divide by ``√(v + ε)``, and ``√(d² v + ε) ≠ d √(v + ε)``; its
affine output starts new units instead. Running statistics never change.

The rules for each operation are a table (:mod:`~symtele.teleports.rules`; how to add a layer is there).

**Attention.** Beside the positive scales, every attention head's query–key and value–output matrix groups
(``GL(d_head)`` each) are found in the same graphs (:mod:`~symtele.teleports.heads`) and carried in
``Symmetry.pair_groups``: kept only if found alike in train and eval mode, on parameters that are trainable and
under no hook, and verified numerically with a random group element.

**Identity.** Every parameter is tracked by the tensor itself, not by a module's name: a parameter used
twice (a layer called twice, a shared encoder, tied weights, a weight read outside its layer) pins every
scale acting on it, and so does a parameter whose memory another parameter, buffer or tensor attribute
shares (``dec.weight.data = enc.weight.data.t()``). Frozen parameters (``requires_grad=False``), modules with
forward hooks or pre-hooks, modules whose ``forward`` is replaced on the instance, and weights under a
parametrisation the table does not know (spectral normalisation, say) are pinned with the reason; a
weight-normalised weight is rescaled through its magnitude only, a pruned one through ``weight_orig``. A
``torch.compile``-d model is read through ``_orig_mod`` (the same parameters).

A value ``forward`` stores on a module (``self.features = h``, ``self.log.append(h)``) counts as an output of
the network: whoever reads it later would see it rescaled.

**Both modes.** Code may depend on ``self.training``: the model is traced in train mode and in eval mode
and only what holds in both is kept.

**Verification.** The rules are not trusted alone: the groups are checked numerically on a float64 copy of
the model and those that change an output are dropped (:mod:`~symtele.teleports.verification`).
Discovery never changes the model: it works on a copy, with the random number generator forked.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import io
import operator
import sys
from dataclasses import dataclass

import torch
import torch.fx as fx
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp
from torch.nn.utils import parametrize

from .heads import find_heads
from .rules import (
    CONV_T,
    FUNCTIONS,
    METHODS,
    OUTPUT,
    RULE,
    STRUCTURE,
    SUPPORTED,
    ParamValue,
    Value,
    _module_rule,
    _shape,
    _text,
    replaced_forward,
)
from .symmetry import Dropped, Group, PairGroup, Symmetry, Term
from .verification import restore, set_modes
from .verification import verify as verify_symmetry


class _Units:
    """Scale variables with a union–find: units joined must share a scale; unit 0 is "fixed at 1".

    No path compression, so a fixed unit's chain still leads to the unit that was fixed, and to why.
    """

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
class _Weight:
    """What a layer's weight (or bias) is made of: the parameter the scales act on, and how.

    ``role`` is ``"plain"`` (the tensor itself: produced and read), ``"magnitude"`` (a weight-normalised
    weight's magnitude ``g`` along ``axis``: it may be divided per output channel, its input channels not
    rescaled) or ``"refused"`` (``why`` says why); ``None`` for an absent bias.
    """

    param: torch.Tensor | None
    role: str
    why: str = ""
    axis: int = 0


# ---- the walk -----------------------------------------------------------------------------------------------
class _Discovery:
    """What the walks of one model's graphs (train and eval mode) share.

    The scales, the terms, who produces and reads which units, and the pins (applied at the end, the most
    telling reason first).
    """

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
        self.values: dict[fx.Node, Value] = {}
        self.param_values: dict[fx.Node, ParamValue] = {}
        self.uses: dict[int, list[str]] = {}  # parameter → who uses it, once per use
        self.paths: dict[int, str] | None = None  # module → its name, made when first needed
        self.own_terms: dict[int, dict] = {}  # parameter → its terms in this graph, by their content

    # ---- what rules call ------------------------------------------------------------------------------
    def value(self, x) -> Value | None:
        return self.values.get(x) if isinstance(x, fx.Node) else None

    def param_value(self, x) -> ParamValue | None:
        return self.param_values.get(x) if isinstance(x, fx.Node) else None

    def set(self, node, value: Value | None) -> None:
        if value is not None:
            self.values[node] = value

    def set_param(self, node, p: ParamValue | None) -> None:
        """A parameter reshaped: still laid along one axis if exactly one axis has all its entries."""
        shape = _shape(node)
        if p is None or shape is None or len(node.users) != 1:
            return
        size = self.d.params[p.pid].numel()
        axes = [i for i, n in enumerate(shape) if n != 1]
        if (len(axes) == 1 and shape[axes[0]] == size) or (not axes and size == 1):
            self.param_values[node] = ParamValue(p.pid, axes[0] if axes else len(shape) - 1)

    def pin(self, units: torch.Tensor, why: str, priority: int = RULE) -> None:
        self.d.pin(units, why, priority)

    def pin_scaled(self, value, why: str) -> None:
        """Pin every scaled value in ``value`` (a node, or nodes inside tuples, lists, dicts)."""

        def pin(arg):
            v = self.values.get(arg)
            if v is not None:
                self.d.pin(v.units, why)
            return arg

        fx.node.map_arg(value, pin)

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
        """``param`` produces ``units`` (divided by their scales).

        The units are laid out as ``shape`` (default: the parameter's first axis, or the units as they are).
        """
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
        if self.paths is None:
            self.paths = {id(m): name for name, m in self.gm.named_modules()}
        return self.paths.get(id(module), type(module).__name__)

    def attr(self, target: str):
        owner, _, name = target.rpartition(".")
        return getattr(self.gm.get_submodule(owner) if owner else self.gm, name)

    def layer(self, node, x, weight: _Weight, bias: _Weight | None, kind: str, groups: int) -> None:
        """A linear layer (``kind`` ``linear``, ``conv`` or ``transpose``) reading ``x``.

        Its weight reads the input's units (multiplied), its weight and bias produce new ones (divided).
        """
        name = self.label(node)
        layer = str(node.target) if node.op == "call_module" else name
        module = self.gm.get_submodule(node.target) if node.op == "call_module" else None
        self.d.kinds.setdefault(layer, type(module).__name__ if module is not None else kind)
        v, shape_in, shape_out = self.value(x), _shape(x), _shape(node)
        if weight is None or weight.role == "refused" or shape_in is None or shape_out is None:
            why = weight.why if weight is not None else f"{name} has no weight"
            priority = STRUCTURE if module is not None else RULE
            self.pin_inputs(node, f"read by {name}: {why}", priority)
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
                self.pin(v.units, f"read by {name}, whose weight is weight-normalised (over its inputs too)")
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
        self.set(node, Value(out, out_axis))

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
                for escaped, name in self.gm.meta.get(ESCAPED, {}).items():
                    if escaped in self.values:
                        why = f"stored as `{name}` by forward, where the graph does not show who reads it"
                        self.d.pin(self.values[escaped].units, why, STRUCTURE)
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
            if not _reads_shape_only(user):
                self.use(id(tensor), user.name)
        if tensor.dim() <= 1 and len(node.users) == 1:
            self.param_values[node] = ParamValue(id(tensor), 0)

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
        if module is None and "out" in node.kwargs:  # written into a tensor the graph holds under another node
            self.pin_inputs(node, f"{self.label(node)} writes its result into `out=`")
            return
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
        for key, value in list(args.items())[1:]:
            if key not in rule.reads:
                what = "an argument" if key in ("args", "kwargs") else f"the argument `{key}`"
                self.pin_scaled(value, f"reaches {what} of {self.label(node)}, whose rule does not rescale it")
        first = next(iter(args.values()), None)
        if module is not None and "input" not in args and args:
            args["input"] = first
        rule.handle(self, node, args, module)
        if node in self.values and self.value(first) is None and _in_place(node):
            # ``buf.mul_(h)``: ``buf``, which the graph holds as unscaled, now holds scaled values
            self.pin(self.values[node].units, f"written in place into an unscaled tensor at {self.label(node)}")

    def unknown(self, node, module) -> None:
        if module is not None and replaced_forward(module):
            what = f"{node.target} ({type(module).__name__})"
            self.pin_inputs(node, f"passes through {what}, whose forward is replaced on the instance")
        elif module is not None:
            what = f"{node.target} ({type(module).__name__})"
            self.pin_inputs(node, f"passes through {what}, which no positive scale passes (supported: {SUPPORTED})")
        else:
            name = node.target if node.op == "call_method" else getattr(node.target, "__name__", str(node.target))
            form = f".{name}()" if node.op == "call_method" else f"{name}()"
            self.pin_inputs(
                node,
                f"passes through {form} at {node.name}, which the rule table does not know (supported: {SUPPORTED})",
            )


#: the in-place operators (``a += b`` and the like)
IN_PLACE = (operator.iadd, operator.isub, operator.imul, operator.itruediv)


def _in_place(node) -> bool:
    """Whether ``node`` writes into its first argument (``x.mul_(y)``, ``operator.imul(x, y)``, ``torch.relu_(x)``).

    ``torch.fx`` traces an augmented assignment ``x *= y`` as ``x * y``: that ``x`` changed, for whoever else holds
    it, the graph does not show.
    """
    if node.op == "call_method":
        return node.target.endswith("_") and not node.target.startswith("_")
    name = getattr(node.target, "__name__", "")
    return node.target in IN_PLACE or (name.endswith("_") and not name.startswith("_"))


def _reads_shape_only(node) -> bool:
    """``w.shape``, ``w.size()``, ``w.dtype``: a use of a parameter that does not read its values."""
    if node.op == "call_method":
        return node.target in ("size", "dim", "numel")
    return node.op == "call_function" and node.target is getattr and node.args[1] in SHAPE_ATTRIBUTES


#: tensor attributes that say nothing of its values
SHAPE_ATTRIBUTES = ("shape", "dtype", "device", "ndim", "is_cuda")


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


def _extent(t: torch.Tensor) -> tuple[int, int, int] | None:
    """``(storage, first byte, byte past the last)`` of the memory a strided tensor can read; ``None`` if none."""
    try:
        if t.layout != torch.strided or t.numel() == 0 or t.device.type == "meta":
            return None
        storage = t.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError, ValueError):  # a tensor without plain storage (lazy, a subclass)
        return None
    if storage == 0:
        return None
    low = sum(min(0, (n - 1) * s) for n, s in zip(t.shape, t.stride()))
    high = sum(max(0, (n - 1) * s) for n, s in zip(t.shape, t.stride()))
    start = t.data_ptr()
    return storage, start + low * t.element_size(), start + (high + 1) * t.element_size()


def _aliased(model: nn.Module, names: dict[int, str]) -> dict[str, str]:
    """Parameters whose memory another tensor of ``model`` also holds, with the reason (by parameter name).

    Two parameter objects can share memory (``dec.weight.data = enc.weight.data.t()``,
    ``nn.Parameter(other.weight.data)``), and so can a parameter and a buffer or a tensor attribute. Rescaling
    one in place then changes the other, which neither the graph nor the working copy (a deep copy does not keep
    the sharing) shows. ``names`` maps each parameter's ``id`` to its name.
    """
    tensors: dict[int, tuple[str, torch.Tensor]] = {}
    for path, m in model.named_modules():
        held = [*m._parameters.items(), *m._buffers.items()]
        held += [(k, v) for k, v in vars(m).items() if isinstance(v, torch.Tensor)]
        for key, t in held:
            if isinstance(t, torch.Tensor) and id(t) not in tensors:
                tensors[id(t)] = (names.get(id(t)) or (f"{path}.{key}" if path else key), t)
    by_storage: dict[int, list[tuple[int, int, str, int]]] = {}
    for tid, (name, t) in tensors.items():
        extent = _extent(t)
        if extent is not None:
            by_storage.setdefault(extent[0], []).append((extent[1], extent[2], name, tid))
    out = {}
    for spans in by_storage.values():
        for i, (start, end, name, tid) in enumerate(spans):
            for start2, end2, name2, tid2 in spans[i + 1 :]:
                if start < end2 and start2 < end:
                    for pid, own, other in ((tid, name, name2), (tid2, name2, name)):
                        if pid in names:
                            why = f"`{own}` shares its memory with `{other}` (rescaling one changes both)"
                            out.setdefault(own, why)
    return out


def _in_scope(node, path: str) -> bool:
    if path == "":
        return True
    if node.op == "call_module" and (node.target == path or str(node.target).startswith(path + ".")):
        return True
    return path in (node.meta.get("nn_module_stack") or {})


# ---- discover -----------------------------------------------------------------------------------------------
def _copy(model: nn.Module, double: bool) -> nn.Module:
    """A deep copy of ``model`` (in float64 if ``double``).

    Tensors a hook computes (``weight`` of the old ``weight_norm`` or of ``prune``) are copied detached, the
    hook recomputes them.
    """
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
    return work.double() if double else work


def _modes(model: nn.Module) -> list[dict[str, bool]]:
    """The modes to check: all train, all eval, and the model's own if it is neither."""
    own = {n: m.training for n, m in model.named_modules()}
    out = [dict.fromkeys(own, True), dict.fromkeys(own, False)]
    return out if own in out else [*out, own]


#: ``gm.meta`` key of the values forward stored on a module while traced (node → where)
ESCAPED = "symtele_escaped"


def _keep_escaped(work: nn.Module, gm: fx.GraphModule) -> None:
    """Make the values ``forward`` stored on a module while traced outputs of ``gm`` too.

    ``self.features = h`` or ``self.log.append(h)`` keeps a value the graph's outputs do not show; whoever reads
    it later would see it rescaled. As outputs, every rule and the attention heads' walk treat them as such;
    ``gm.meta[ESCAPED]`` names them for the reason.
    """
    escaped: dict[fx.Node, str] = {}

    def scan(where: str, value, depth: int) -> None:
        if isinstance(value, fx.Proxy) and value.node.graph is gm.graph:
            escaped.setdefault(value.node, where)
        elif depth and isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                scan(f"{where}[{i}]", item, depth - 1)
        elif depth and isinstance(value, dict):
            for key, item in value.items():
                scan(f"{where}[{key!r}]", item, depth - 1)

    for path, m in work.named_modules():
        for key, value in vars(m).items():
            if key not in MODULE_INTERNALS:
                scan(f"{path}.{key}" if path else key, value, 2)
    gm.meta[ESCAPED] = escaped
    if escaped:
        output = next(n for n in gm.graph.nodes if n.op == "output")
        output.args = ((output.args[0], list(escaped)),)
        gm.recompile()


#: what every ``nn.Module`` keeps in its ``__dict__`` (the rest are its own attributes)
MODULE_INTERNALS = frozenset(vars(nn.Module()))


def _trace(work: nn.Module, example, modes, buffers) -> list[fx.GraphModule]:
    """The graph in each mode (one when they are the same code), shapes propagated with ``example``."""
    graphs, codes = [], set()
    for mode in modes:
        set_modes(work, mode)
        try:
            gm = fx.symbolic_trace(work)
        except Exception as error:  # noqa: BLE001 (fx raises many kinds)
            raise ValueError(
                f"Invalid model: torch.fx cannot trace {type(work).__name__} ({type(error).__name__}: {error})"
            ) from error
        _keep_escaped(work, gm)
        if gm.code in codes:
            continue
        codes.add(gm.code)
        printed = io.StringIO()  # ShapeProp prints the traceback of a failing node before it raises
        try:
            with torch.no_grad(), contextlib.redirect_stderr(printed):
                ShapeProp(gm).propagate(example.clone())  # a forward may change its input in place
        except Exception as error:  # noqa: BLE001
            cause = error.__cause__ or error  # the model's own error, not ShapeProp's wrapper around it
            raise ValueError(
                f"Invalid example: an input of shape {tuple(example.shape)} does not run through "
                f"{type(work).__name__} ({type(cause).__name__}: {cause})"
            ) from error
        else:
            sys.stderr.write(printed.getvalue())  # what the forward itself wrote (warnings) is not lost
        finally:
            restore(work, buffers)
        graphs.append(gm)
    return graphs


def discover(model: nn.Module, example: torch.Tensor, *, verify: bool = True, seed: int = 0) -> Symmetry:
    """The positive rescaling symmetries of ``model`` (see the module's docstring).

    Args:
        model: any ``torch.nn.Module`` that ``torch.fx`` can trace (a ``torch.compile``-d one is read through
            ``_orig_mod``). It is not changed: modes, buffers, parameters, the random number generator and
            torch's thread count (one thread while discovering on the CPU) are as they were.
        example: one input batch.
        verify: check the groups numerically and drop those that change an output (see the module's
            docstring); without it the rules alone decide.
        seed: the seed of the verification's random scales and of the forked random number generator.

    Returns:
        The :class:`~symtele.teleports.symmetry.Symmetry`: the scales, their terms, the groups, the attention
        heads' matrix groups (``pair_groups``), and every layer or group left out with the reason.

    Raises:
        TypeError: ``model`` is not a module or ``example`` not a tensor.
        ValueError: ``torch.fx`` cannot trace the model, or ``example`` is empty or does not run through it.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"Invalid model: expected a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(example, torch.Tensor):
        raise TypeError(f"Invalid example: expected a tensor (one input batch), got {type(example).__name__}")
    if example.dim() and not example.shape[0]:
        raise ValueError(f"Invalid example: an empty batch (shape {tuple(example.shape)}); give at least one input")
    base = model._orig_mod if type(model).__name__ == "OptimizedModule" and hasattr(model, "_orig_mod") else model
    names = {id(p): n for n, p in model.named_parameters()}
    devices = [example.device] if example.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), _one_thread(example.device.type == "cpu"):
        modes = _modes(base)
        try:
            work, x, buffers, graphs = _prepare(base, example, modes, double=True)
        except ValueError:  # a forward that fixes its own dtype (``x.float()``): the model's dtype, then
            work, x, buffers, graphs = _prepare(base, example, modes, double=False)
        copies = {id(q): names[id(p)] for p, q in zip(base.parameters(), work.parameters())}
        params = {id(q): q for q in work.parameters()}
        kinds = {n: type(m).__name__ for n, m in work.named_modules()}
        found = _walk(work, graphs, copies, params, kinds, _aliased(base, names))
        if verify and (found.n_scales or found.pair_groups):
            found = verify_symmetry(found, work, x, modes, buffers, copies, seed)
    return found


def _prepare(base: nn.Module, example: torch.Tensor, modes, double: bool):
    """The working copy (float64 if ``double``), the example in its dtype, its buffers, and its graphs."""
    work = _copy(base, double)
    x = example.double() if double and example.is_floating_point() else example
    buffers = {n: b.clone() for n, b in work.named_buffers()}
    return work, x, buffers, _trace(work, x, modes, buffers)


@contextlib.contextmanager
def _one_thread(cpu: bool):
    """Run with one torch thread when ``cpu``; the thread count is restored after.

    Discovery's forward passes are small (one example batch): on the CPU one thread runs them fastest, and
    steadily on a busy machine (many short parallel regions wait on a second thread).
    """
    threads = torch.get_num_threads()
    if cpu:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _walk(work, graphs, names, params, kinds, aliased: dict[str, str]) -> Symmetry:
    """Walk every graph, pin what the graphs do not show, and number the scales.

    What the graphs do not show: shared and frozen parameters, hooks, and parameters whose memory another tensor
    of the model holds (``aliased``: parameter name → why, found on the model itself).
    """
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
        if name in aliased:
            pin_param(pid, aliased[name])
    for _, units, why in sorted(d.pins, key=lambda pin: pin[0]):
        d.units.fix(units, why)
    found = _symmetry(d)
    found.pair_groups, dropped = _pair_groups(work, graphs, walks, names, params, aliased)
    found.dropped += dropped
    return found


def _pair_groups(work, graphs, walks, names, params, aliased) -> tuple[list[PairGroup], list[Dropped]]:
    """The attention heads' matrix groups found in every graph (:mod:`~symtele.teleports.heads`).

    A group found in one of the graphs only, or whose parameters are frozen, under a hook or share their memory
    with another tensor (``aliased``), is left out and dropped with the reason.
    """
    found = [find_heads(gm, names, walk.uses) for gm, walk in zip(graphs, walks)]
    dropped = list(dict.fromkeys(d for f in found for d in f.dropped))
    gone = {d.layer for d in dropped}
    keys = [{(g.name, repr(g.blocks)): g for g in f.groups} for f in found]  # (a slice is not hashable)
    every = {k: g for ks in keys for k, g in ks.items()}
    hooked = _hooked(work)
    frozen = {names[pid] for pid, p in params.items() if not p.requires_grad}
    kept = []
    for key, group in every.items():
        if group.name in gone:
            continue
        why = ""
        if any(key not in ks for ks in keys):
            why = "found in one of train and eval mode only"
        for name in group.params:
            under = [path for path in hooked if path == "" or name.startswith(f"{path}.")]
            if under:
                why = why or hooked[under[0]]
            if name in frozen:
                why = why or f"`{name}` is frozen (requires_grad=False)"
            if name in aliased:
                why = why or aliased[name]
        if why:
            dropped.append(Dropped(group.name, why))
        else:
            kept.append(group)
    return kept, dropped


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
