"""Attention heads found in a ``torch.fx`` graph: their query–key and value–output matrix groups.

The groups are :class:`~symtele.teleports.symmetry.PairGroup` objects; the math is in
:mod:`~symtele.teleports.symmetry`.

Three forms are recognised:

* ``nn.MultiheadAttention`` called as a module (fused ``in_proj_weight`` or separate ``q/k/v_proj_weight``,
  ``batch_first`` either way, with or without biases), also inside ``nn.TransformerEncoderLayer``,
  ``nn.TransformerDecoderLayer``, ``nn.TransformerEncoder``/``Decoder`` and ``nn.Transformer`` (``torch.fx``
  does not trace into ``torch.nn``'s modules): two groups per head
  (:func:`~symtele.teleports.attention.multihead_attention_groups`);
* hand-written attention: every ``Linear`` (or ``F.linear`` on a parameter) output is followed entry by entry,
  each entry knowing the row of the weight (and bias) that made it, through the reshapes that split it into
  heads (:data:`FOLLOWED`: ``split``/``chunk``/``unbind``, ``view``/``reshape``, ``transpose``/``permute``,
  indexing, ``contiguous``, multiplication or division by a number) to the places where attention uses it:
  the scores (``q @ k.transpose(-2, -1)``, or the query and key of ``F.scaled_dot_product_attention``), the
  values (``att @ v``, or the value of ``F.scaled_dot_product_attention``), whose output is followed on to
  the one linear layer that reads it (the output projection, its columns per head).

A head is one pairing of ``d`` query rows with ``d`` key rows (or of ``d`` value rows with the output
projection's columns that read them) across the score's leading (batch and head) axes. A group is kept only
if every row it moves reaches exactly its one place: a row that also reaches anything else (a rotary
embedding ``q * cos + rotate(q) * sin``, a nonlinearity, an addition, a second attention, the network's
output) drops the group with the reason, and so does a parameter used anywhere else; nothing is guessed.
A rotary embedding keeps only the ``A`` that commute with its rotations (one scaled rotation per frequency
pair); that subgroup is not built: the query–key group is dropped with the reason.

The groups are then checked numerically like every other (:mod:`~symtele.teleports.verification`: a random
``A`` per group on a float64 copy, every output in train and eval mode). ``torch.fx`` itself cannot trace a
causal mask sliced by the traced length (``bias[:, :, :T, :T]``, as nanoGPT writes it); a mask of the full
length, ``is_causal=True`` or ``F.scaled_dot_product_attention`` trace.
"""

from __future__ import annotations

import inspect
import operator
from dataclasses import dataclass, replace

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from .attention import multihead_attention_groups
from .rules import PERMUTE, TRANSPOSE, _number, _shape, not_torch_own, replaced_forward
from .symmetry import Block, Dropped, PairGroup

#: modules whose attention groups come from their ``nn.MultiheadAttention`` submodules (``torch.fx`` leaves)
ATTENTION_MODULES = (
    nn.MultiheadAttention,
    nn.TransformerEncoderLayer,
    nn.TransformerDecoderLayer,
    nn.TransformerEncoder,
    nn.TransformerDecoder,
    nn.Transformer,
)

#: the operations a projection's rows are followed through, by name (functions by ``__name__``)
FOLLOWED = (
    "view, reshape, flatten, transpose, permute, split, chunk, unbind, indexing, contiguous, clone, "
    "multiplication or division by a number"
)

SDPA = inspect.signature(
    lambda query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False: None
)
SPLIT = inspect.signature(lambda input, split_size_or_sections, dim=0: None)
CHUNK = inspect.signature(lambda input, chunks, dim=0: None)
UNBIND = inspect.signature(lambda input, dim=0: None)
BINARY = inspect.signature(lambda input, other: None)
MATMUL = (operator.matmul, torch.matmul, torch.bmm)
ROLES = (("queries", "query"), ("keys", "key"), ("values", "value"))
SCALED_DOT_PRODUCT = (F.scaled_dot_product_attention,)
#: a copy of the rows tensor larger than this is not made (the rows could not be followed)
LARGEST = 1 << 22


@dataclass
class _Rows:
    """A traced tensor whose entries come from rows of a projection.

    ``rows`` has the value's shape (stride 0 along the axes the rows do not depend on) and gives each entry's
    row of ``weight`` (and of ``bias``); ``site`` names the attention whose output it is (``None`` for a
    projection's own output, or its reshapes).
    """

    weight: str
    bias: str | None
    rows: torch.Tensor
    site: str | None = None


@dataclass
class _Site:
    """One attention: its heads (``(left rows, right rows)`` pairs, or why there are none) and operands."""

    kind: str
    left: _Rows
    right: _Rows | None
    heads: list[tuple[tuple[int, ...], tuple[int, ...]]] | None
    why: str = ""


def _distinct(rows: torch.Tensor) -> list[int]:
    """The rows a value holds (its axes of stride 0 read once)."""
    index = tuple(0 if s == 0 else slice(None) for s in rows.stride())
    return rows[index].unique().tolist()


def _free(rows: torch.Tensor, axis: int) -> bool:
    """Whether the rows are the same all along ``axis`` (stride 0, size 1, or equal entries, checked)."""
    if rows.shape[axis] == 1 or rows.stride(axis) == 0:
        return True
    return rows.numel() <= LARGEST and bool((rows == rows.narrow(axis, 0, 1)).all())


def _leading(rows: torch.Tensor) -> str | None:
    """Why the second-to-last axis (the sequence) is not free of rows, or ``None``."""
    if rows.dim() < 2:
        return "it has no sequence axis"
    if not _free(rows, -2):
        return "its sequence axis carries features"
    return None


def _pairs(left: torch.Tensor, right: torch.Tensor) -> tuple[list, str]:
    """The heads of a product over the last axis.

    ``left[..., 0, :]`` against ``right[..., 0, :]`` along the broadcast leading axes, each distinct pairing one
    head (``(pairs, "")``, or ``([], why)``).
    """
    for side in (left, right):
        why = _leading(side)
        if why:
            return [], why
    a, b = left[..., 0, :], right[..., 0, :]
    try:
        lead = torch.broadcast_shapes(a.shape[:-1], b.shape[:-1])
    except RuntimeError:
        return [], "its operands' leading axes do not broadcast"
    if a.shape[:-1] != lead or b.shape[:-1] != lead:
        return [], "one operand is shared across the other's heads (grouped or multi-query attention)"
    if a.shape[-1] != b.shape[-1]:
        return [], "its operands' head dimensions differ"
    width = a.shape[-1]
    if a.expand(*lead, width).numel() > LARGEST:
        return [], "too many entries to follow"
    both = torch.cat([a.expand(*lead, width), b.expand(*lead, width)], -1).reshape(-1, 2 * width).unique(dim=0)
    heads = [(tuple(r[:width].tolist()), tuple(r[width:].tolist())) for r in both]
    for side in (0, 1):
        seen: dict[int, int] = {}
        for h, pair in enumerate(heads):
            if len(set(pair[side])) != width:
                return [], "a head reads one row twice"
            for r in pair[side]:
                if seen.setdefault(r, h) != h:
                    return [], "one row is read by two heads"
    heads.sort(key=lambda pair: min(pair[0]))
    return heads, ""


class HeadWalk:
    """Finds the attention groups of one graph (see the module's docstring).

    Args:
        gm: the traced graph, shapes propagated.
        names: ``id`` of each parameter → its name in the model.
        uses: ``id`` of each parameter → who uses it in this graph, once per use.
    """

    def __init__(self, gm: fx.GraphModule, names: dict[int, str], uses: dict[int, list[str]]):
        self.gm, self.names, self.uses = gm, names, uses
        self.values: dict[fx.Node, _Rows | list[_Rows]] = {}
        self.row_uses: dict[tuple[str, int], list[tuple]] = {}
        self.sites: dict[str, _Site] = {}
        self.reads: dict[str, list[tuple[str, list[int]]]] = {}  # site → (output weight, its column per v row)
        self.groups: list[PairGroup] = []
        self.dropped: list[Dropped] = []
        self.lost: dict[fx.Node, str] = {}  # values made from rows by something not followed, and where
        self.scored: set[fx.Node] = set()  # values made from attention scores
        self.lost_scores: set[fx.Node] = set()  # values made from scores whose queries or keys are lost

    # ---- bookkeeping ----------------------------------------------------------------------------------
    def note(self, value: _Rows, use: tuple) -> None:
        """Record that every row ``value`` holds reaches ``use``.

        Args:
            value: rows of a projection.
            use: ``(role, where)``: ``"q"``, ``"k"``, ``"v"``, ``"o"`` with the attention's site, or ``"other"``
                with a description.
        """
        for r in _distinct(value.rows):
            self.row_uses.setdefault((value.weight, r), []).append(use)

    def other(self, node: fx.Node, what: str) -> None:
        """Every followed input of ``node`` reaches ``what``: not an attention use (its output is lost).

        Args:
            node: the node its inputs reach.
            what: a description of the use, for the reasons of groups dropped.
        """
        for arg in node.all_input_nodes:
            for value in self._listed(self.values.get(arg)):
                self.note(value, ("other", f"{what} at {node.name}"))
                self.lost.setdefault(node, f"{what} at {node.name}")

    def lose(self, node: fx.Node) -> None:
        """``node`` is made from a lost value: lost too (for the reason an attention after it gives).

        Args:
            node: a node none of whose inputs is followed.
        """
        for arg in node.all_input_nodes:
            if arg in self.lost:
                self.lost.setdefault(node, self.lost[arg])
            if arg in self.lost_scores:
                self.lost_scores.add(node)

    def lost_operands(self, node: fx.Node, operands: dict[str, object]) -> set[str]:
        """Drop the groups of an attention whose operands are lost, with the reason.

        An operand is lost when it is made from projections by an operation that is not followed.

        Args:
            node: the attention's node.
            operands: its operands by role (``"queries"``, ``"keys"``, ``"values"``).

        Returns:
            The kinds dropped (``"qk"``, ``"vo"``).
        """
        lost = {role: self.lost[x] for role, x in operands.items() if isinstance(x, fx.Node) and x in self.lost}
        out = set()
        scope = self.site_name(node, _Rows("", None, torch.zeros(0))).rpartition(":")[0]
        for kind, roles in (("qk", ("queries", "keys")), ("vo", ("values",))):
            why = next((f"its {r} come from a projection through {lost[r]}" for r in roles if r in lost), "")
            if not why:
                continue
            if kind == "qk":
                why += (
                    " (were it a rotary embedding, only the A that commute with its rotations would be exact; that "
                    "subgroup is not built)"
                )
            self.dropped.append(Dropped(f"{scope}.{kind}" if scope else kind, why))
            out.add(kind)
        return out

    @staticmethod
    def _listed(value) -> list[_Rows]:
        return [] if value is None else value if isinstance(value, list) else [value]

    def site_name(self, node: fx.Node, value: _Rows) -> str:
        """The name of the attention at ``node``: ``"<module>:<node>"``.

        Args:
            node: the attention's node.
            value: one of its operands; its projection's module names the attention when the node has no
                module stack.

        Returns:
            The site's name (the node's name alone when no module is known).
        """
        stack = node.meta.get("nn_module_stack") or {}
        projection = value.weight.rpartition(".")[0]  # the module of the projection, then the one holding it
        scope = next(reversed(stack.values()))[0] if stack else projection.rpartition(".")[0] or projection
        return f"{scope}:{node.name}" if scope else node.name

    def param(self, tensor) -> str | None:
        """The model's name of ``tensor`` if it is one of its parameters.

        Args:
            tensor: any object.

        Returns:
            The parameter's name, or ``None``.
        """
        return self.names.get(id(tensor)) if isinstance(tensor, torch.Tensor) else None

    def attr(self, node) -> torch.Tensor | None:
        """The tensor a ``get_attr`` node fetches.

        Args:
            node: a graph node (or any argument of one).

        Returns:
            The attribute (``None`` if absent), or ``None`` for any other node or object.
        """
        if not isinstance(node, fx.Node) or node.op != "get_attr":
            return None
        owner, _, name = str(node.target).rpartition(".")
        return getattr(self.gm.get_submodule(owner) if owner else self.gm, name, None)

    # ---- the walk -------------------------------------------------------------------------------------
    def run(self) -> HeadWalk:
        """Walk the graph's nodes in order, then make the groups (:meth:`finish`).

        An operation where following the rows fails ends its rows, with the error as the reason.

        Returns:
            This walk, with ``groups`` and ``dropped``.
        """
        for node in self.gm.graph.nodes:
            if node.op in ("call_module", "call_function", "call_method"):
                try:
                    self.call(node)
                except Exception as error:  # noqa: BLE001 (an operation the rules misread: end its rows, say why)
                    self.other(node, f"{node.name}, where following the rows failed ({type(error).__name__}: {error})")
            elif node.op == "output":
                self.other(node, "the network's output")
        self.finish()
        return self

    def call(self, node: fx.Node) -> None:
        """Handle one call: an attention module, a linear layer, an attention product, or a followed operation.

        Args:
            node: a ``call_module``, ``call_function`` or ``call_method`` node.
        """
        module = self.gm.get_submodule(node.target) if node.op == "call_module" else None
        if module is not None and replaced_forward(module):
            self.other(node, f"{node.target} ({type(module).__name__}, its forward replaced on the instance)")
            return
        if isinstance(module, ATTENTION_MODULES):
            self.other(node, f"{node.target} ({type(module).__name__})")
            self.attention_module(str(node.target), module)
            return
        target = node.target
        name = target if node.op == "call_method" else getattr(target, "__name__", str(target))
        if any(arg in self.scored for arg in node.all_input_nodes):
            self.scored.add(node)  # made from attention scores (attention weights)
        followed = [v for arg in node.all_input_nodes for v in self._listed(self.values.get(arg))]
        if isinstance(module, nn.Linear) or target is F.linear:
            self.linear(node, module)
            return
        lost = set()
        if target in SCALED_DOT_PRODUCT:
            try:
                bound = SDPA.bind(*node.args, **node.kwargs).arguments
            except TypeError:
                self.other(node, "scaled_dot_product_attention with unknown arguments")
                return
            lost = self.lost_operands(node, {r: bound.get(n) for r, n in ROLES})
        elif target in MATMUL or name in ("matmul", "bmm", "__matmul__"):
            left, right = node.args[:2]
            operands = {}  # scores of two projections' products, or attention weights applied to one
            if left in self.scored or left in self.lost_scores:  # weights of scores whose q or k are lost: still
                operands = {"values": right}  # weights that do not depend on the values' rows (else those stray)
            elif (left in self.values or left in self.lost) and (right in self.values or right in self.lost):
                operands = {"queries": left, "keys": right}
            lost = self.lost_operands(node, operands)
            if lost:
                self.other(node, "an attention whose other operand is lost")
                if "queries" in operands:
                    self.lost_scores.add(node)
                return
        if not followed:
            self.lose(node)
            return
        if target in SCALED_DOT_PRODUCT:
            self.sdpa(node, lost)
        elif target in MATMUL or name in ("matmul", "bmm", "__matmul__"):
            self.matmul(node)
        elif node.op == "call_method" and name in ("size", "dim", "numel"):
            return
        elif target is getattr and node.args[1] in ("shape", "dtype", "device", "ndim"):
            return
        else:
            self.follow(node, name)

    def linear(self, node: fx.Node, module: nn.Module | None) -> None:
        """A source of rows (its output), and maybe an attention's output projection (its input).

        Args:
            node: an ``nn.Linear`` call or an ``F.linear`` call.
            module: the ``nn.Linear``, or ``None`` for ``F.linear``.
        """
        if module is not None:
            x, weight, bias = node.args[0] if node.args else node.kwargs.get("input"), module.weight, module.bias
            wname, bname = self.param(weight), self.param(bias)
        else:
            args = inspect.signature(lambda input, weight, bias=None: None).bind(*node.args, **node.kwargs)
            args.apply_defaults()
            x, weight, bias = args.arguments["input"], self.attr(args.arguments["weight"]), args.arguments["bias"]
            wname = self.param(weight)
            bname = self.param(self.attr(bias)) if bias is not None else None
            if bias is not None and bname is None:
                wname = None  # a bias that is not a parameter: the rows cannot be moved
        value = self.values.get(x) if isinstance(x, fx.Node) else None
        if isinstance(value, _Rows) and value.site is not None and wname is not None and value.rows.dim() >= 1:
            self.output_projection(node, value, wname, tuple(weight.shape))
        elif value is not None:
            self.other(node, f"a linear layer ({node.name}) that is no attention's output projection")
        shape = _shape(node)
        if wname is None or shape is None or weight.dim() != 2 or (bias is not None and bname is None):
            return
        self.values[node] = _Rows(wname, bname, torch.arange(shape[-1]).expand(*shape))

    def output_projection(self, node, value: _Rows, wname: str, wshape: tuple) -> None:
        """A linear layer reading an attention's output: record its column of each value row.

        Args:
            node: the linear layer's node.
            value: the attention's output rows.
            wname: the layer's weight's name.
            wshape: the weight's shape.
        """
        rows = value.rows
        free = all(_free(rows, i) for i in range(rows.dim() - 1))
        if not free or rows.shape[-1] != wshape[1]:
            self.other(node, "an output projection reading the heads along another axis")
            return
        columns = rows[(0,) * (rows.dim() - 1)].tolist()
        if len(set(columns)) != len(columns):
            self.other(node, "an output projection reading one value row twice")
            return
        self.note(value, ("o", value.site))
        self.reads.setdefault(value.site, []).append((wname, columns))

    def sdpa(self, node: fx.Node, lost: set[str]) -> None:
        """``F.scaled_dot_product_attention``: its scores (queries and keys) and its values.

        Args:
            node: the call's node.
            lost: the kinds (``"qk"``, ``"vo"``) already dropped for lost operands.
        """
        try:
            bound = SDPA.bind(*node.args, **node.kwargs)
        except TypeError:
            self.other(node, "scaled_dot_product_attention with unknown arguments")
            return
        bound.apply_defaults()
        a = bound.arguments
        q, k, v = (self.values.get(a[n]) if isinstance(a[n], fx.Node) else None for n in ("query", "key", "value"))
        masked = isinstance(a["attn_mask"], fx.Node) and a["attn_mask"] in self.values
        if masked or a["enable_gqa"] is not False or not all(isinstance(t, _Rows) or t is None for t in (q, k, v)):
            why = "a mask made from projections" if masked else "enable_gqa" if a["enable_gqa"] is not False else ""
            why = f"scaled_dot_product_attention with {why or 'operands the rules do not follow'} at {node.name}"
            self.other(node, why)
            rows = next((t for t in (q, k, v) if isinstance(t, _Rows)), None)
            scope = self.site_name(node, rows).rpartition(":")[0] if rows is not None else ""
            self.dropped.append(Dropped(f"{scope}.qk, {scope}.vo" if scope else "qk, vo", why))
            return
        site = self.site_name(node, q or k or v)
        if "qk" in lost:
            for t in (q, k):
                if t is not None:
                    self.note(t, ("other", f"an attention whose queries or keys are lost at {node.name}"))
        else:
            self.scores(node, site, q, k)
        if v is not None and "vo" not in lost:
            self.apply(node, site, v)

    def matmul(self, node: fx.Node) -> None:
        """A matrix product: attention scores of two projections, or attention weights applied to values.

        Args:
            node: the product's node.
        """
        left, right = (self.values.get(a) if isinstance(a, fx.Node) else None for a in node.args[:2])
        if len(node.args) != 2 or node.kwargs or not all(isinstance(t, _Rows) or t is None for t in (left, right)):
            self.other(node, "a product the attention rules do not know")
        elif left is not None and right is not None and left.site is None and right.site is None:
            self.scores(node, self.site_name(node, left), left, replace(right, rows=right.rows.transpose(-2, -1)))
        elif left is None and right is not None and right.site is None:
            self.apply(node, self.site_name(node, right), right)
        else:
            self.other(node, "a product with an untracked matrix on the right, or with an attention's output")

    def scores(self, node: fx.Node, site: str, q: _Rows | None, k: _Rows | None) -> None:
        """``q kᵀ`` per head (``k`` with its feature axis last).

        Args:
            node: the scores' node.
            site: the attention's name.
            q: the queries' rows (``None``: not from a projection).
            k: the keys' rows (``None``: not from a projection).
        """
        if q is None or k is None:
            self.other(node, "attention scores whose other operand is no projection")
            return
        if q.site is not None or k.site is not None:
            self.other(node, "attention scores of an attention's output")
            return
        self.scored.add(node)
        heads, why = _pairs(q.rows, k.rows)
        site = f"{site}:scores"
        self.sites[site] = _Site("qk", q, k, heads or None, why)
        self.note(q, ("q", site))
        self.note(k, ("k", site))

    def apply(self, node: fx.Node, site: str, v: _Rows) -> None:
        """``attn · v`` per head: the output carries ``v``'s rows, to be read by the output projection.

        Args:
            node: the product's node.
            site: the attention's name.
            v: the values' rows.
        """
        shape, why = _shape(node), _leading(v.rows)
        heads = []
        if not why and shape is not None and len(shape) == v.rows.dim():
            lead = v.rows[..., 0, :]
            flat = lead.reshape(-1, lead.shape[-1]).unique(dim=0)
            heads = sorted(((tuple(r.tolist()), ()) for r in flat), key=lambda pair: min(pair[0]))
            rows_seen = [r for pair in heads for r in pair[0]]
            if len(rows_seen) != len(set(rows_seen)):
                heads, why = [], "one value row is read by two heads"
        elif not why:
            why = "its output's shape is not its values'"
        site = f"{site}:values"
        self.sites[site] = _Site("vo", v, None, heads or None, why)
        self.note(v, ("v", site))
        if heads and shape is not None:
            out = v.rows[..., :1, :].expand(*shape[:-2], 1, v.rows.shape[-1]).expand(*shape)
            self.values[node] = _Rows(v.weight, v.bias, out, site)

    def follow(self, node: fx.Node, name: str) -> None:
        """A reshape, a split or a scaling by a number: the rows go along; anything else ends them.

        Args:
            node: the operation's node.
            name: the operation's name (the method's, or the function's ``__name__``).
        """
        out = self._followed(node, name)
        if out is None:
            self.other(node, f"`{name}` (the rows are followed only through {FOLLOWED})")
        else:
            self.values[node] = out

    def _followed(self, node: fx.Node, name: str):
        args = [self.values.get(a) if isinstance(a, fx.Node) else None for a in node.args]
        value = args[0] if args else None
        if value is None or any(a is not None for a in args[1:]):
            if name in ("mul", "__mul__") and len(args) == 2 and args[1] is not None and args[0] is None:
                value, node_args = args[1], (node.args[1], node.args[0])
            else:
                return None
        else:
            node_args = node.args
        if any(isinstance(v, fx.Node) and v in self.values for v in node.kwargs.values()):
            return None
        if isinstance(value, list):
            index = node_args[1] if name == "getitem" else None
            return value[index] if isinstance(index, int) and -len(value) <= index < len(value) else None
        rows = value.rows
        shape = _shape(node)
        try:
            if name in ("contiguous", "clone"):
                return value
            if name in ("view", "reshape", "flatten", "unflatten") and shape is not None:
                try:
                    new = rows.view(shape)
                except RuntimeError:
                    if rows.numel() > LARGEST:
                        return None
                    new = rows.reshape(shape)
                return replace(value, rows=new)
            if name == "transpose":
                bound = TRANSPOSE.bind(*node_args, **node.kwargs).arguments
                return replace(value, rows=rows.transpose(bound["dim0"], bound["dim1"]))
            if name == "permute":
                dims = PERMUTE.bind(*node_args, **node.kwargs).arguments["dims"]
                dims = dims[0] if len(dims) == 1 and isinstance(dims[0], (tuple, list)) else dims
                return replace(value, rows=rows.permute(*dims))
            if name in ("split", "chunk", "unbind"):
                signature = {"split": SPLIT, "chunk": CHUNK, "unbind": UNBIND}[name]
                bound = signature.bind(*node_args, **node.kwargs)
                bound.apply_defaults()
                a = dict(bound.arguments)
                a.pop("input")
                if any(isinstance(x, fx.Node) for x in a.values()):
                    return None
                parts = getattr(rows, name)(*a.values())
                return [replace(value, rows=p) for p in parts]
            if name == "getitem":
                index = node_args[1]
                if any(isinstance(i, fx.Node) for i in (index if isinstance(index, tuple) else (index,))):
                    return None
                return replace(value, rows=rows[index])
            if name in ("mul", "__mul__", "truediv", "div", "__truediv__"):
                factor = node_args[1]
                number = _number(factor) and factor != 0
                return value if number or (isinstance(factor, fx.Node) and "tensor_meta" not in factor.meta) else None
        except (TypeError, RuntimeError, IndexError, ValueError):
            return None
        return None

    def attention_module(self, target: str, module: nn.Module) -> None:
        """The groups of every ``nn.MultiheadAttention`` in a leaf module (see the module's docstring).

        The leaf is not traced: its attention is read by ``torch.nn``'s classes. An attention inside a module
        (the attention itself included) that is a subclass overriding one of its class's methods, or has a method
        replaced on the instance (:func:`~symtele.teleports.rules.not_torch_own`), is dropped with the reason.

        Args:
            target: the module's path in the graph.
            module: the module (an attention or transformer module of :data:`ATTENTION_MODULES`).
        """
        for sub, m in module.named_modules():
            if not isinstance(m, nn.MultiheadAttention):
                continue
            path = f"{target}.{sub}" if sub else target
            parts = sub.split(".") if sub else []
            chain = [".".join(parts[:i]) for i in range(len(parts) + 1)]  # the leaf, then each module down to m
            changed = ""
            for inner in chain:
                why = not_torch_own(module.get_submodule(inner))
                if why:
                    changed = f"`{target}.{inner}` ({why})" if inner else f"`{target}` ({why})"
                    break
            if changed:  # the groups are read off torch's classes: a subclass's own method may compute anything
                self.dropped.append(Dropped(f"{path}.qk, {path}.vo", changed))
                continue
            try:
                groups = multihead_attention_groups(m, f"{path}.")
            except ValueError as error:
                self.dropped.append(Dropped(f"{path}.qk, {path}.vo", str(error).removeprefix("Invalid module: ")))
                continue
            for group in groups:
                self.module_group(group)

    def module_group(self, group: PairGroup) -> None:
        """Rename ``group``'s blocks to the model's parameter names and keep it if :meth:`check` allows.

        A block whose tensor is not a parameter of the model drops the group, with the reason.

        Args:
            group: a group of an ``nn.MultiheadAttention``, its blocks named from the graph's root.
        """
        blocks = []
        for b in group.blocks:
            owner, _, attr = b.param.rpartition(".")
            name = self.param(getattr(self.gm.get_submodule(owner), attr, None))
            if name is None:
                self.dropped.append(Dropped(group.name, f"`{b.param}` is not a parameter of the model"))
                return
            blocks.append(replace(b, param=name))
        self.check(replace(group, blocks=tuple(blocks)))

    # ---- the groups -----------------------------------------------------------------------------------
    def check(self, group: PairGroup) -> None:
        """Keep ``group`` if each of its parameters is used once in the graph, else drop it with the reason.

        Args:
            group: the group found.
        """
        why = self.reused(group.params)
        if why:
            self.dropped.append(Dropped(group.name, why))
        else:
            self.groups.append(group)

    def reused(self, params) -> str:
        """Why one of ``params`` is used more than once in the graph.

        Args:
            params: parameter names.

        Returns:
            The reason, naming the parameter and its users, or ``""``.
        """
        for name in params:
            pid = next((pid for pid, n in self.names.items() if n == name), None)
            who = self.uses.get(pid, [])
            if len(who) > 1:
                users = sorted(set(who))
                what = f"`{users[0]}` is called {len(who)} times" if len(users) == 1 else ", ".join(users)
                return f"`{name}` is used more than once ({what})"
        return ""

    def finish(self) -> None:
        """Make the groups of every attention found, dropping those whose rows reach anything else."""
        layer_heads: dict[tuple[str, str], int] = {}
        for site, s in self.sites.items():
            layer, kind = site.rsplit(":", 2)[0], s.kind
            if s.heads is None:
                self.dropped.append(Dropped(f"{layer}.{kind}", f"attention at {site}: {s.why}"))
                continue
            reads = self.reads.get(site, [])
            for left_rows, right_rows in s.heads:
                head = layer_heads.get((layer, kind), 0)
                layer_heads[(layer, kind)] = head + 1
                name = f"{layer}.{kind}[{head}]"
                why = self.reused([s.left.weight, *([s.right.weight] if s.right else [])])
                if kind == "qk":
                    why = why or self.stray(s.left.weight, left_rows, {("q", site)})
                    why = why or self.stray(s.right.weight, right_rows, {("k", site)})
                elif not why:
                    why = self.stray(s.left.weight, left_rows, {("v", site), ("o", site)})
                    if len(reads) != 1 and (not why or " times in attention" in why):
                        why = "its output is read by no linear layer" if not reads else "its output is read twice"
                if why:
                    self.dropped.append(Dropped(name, why))
                    continue
                d = len(left_rows)
                blocks = [Block(s.left.weight, _compact(left_rows), "left")]
                if s.left.bias is not None:
                    blocks.append(Block(s.left.bias, _compact(left_rows), "left"))
                if kind == "qk":
                    blocks.append(Block(s.right.weight, _compact(right_rows), "right"))
                    if s.right.bias is not None:
                        blocks.append(Block(s.right.bias, _compact(right_rows), "right"))
                else:
                    weight, columns = reads[0]
                    positions = {r: c for c, r in enumerate(columns)}
                    if any(r not in positions for r in left_rows):
                        self.dropped.append(Dropped(name, "the output projection does not read all its values"))
                        continue
                    blocks.append(Block(weight, _compact([positions[r] for r in left_rows]), "right", True))
                self.check(PairGroup(layer, kind, head, d, tuple(blocks)))

    def stray(self, weight: str, rows, allowed: set) -> str:
        """Why some of ``rows`` of ``weight`` reach more than the ``allowed`` uses (each once).

        Args:
            weight: the projection's weight's name.
            rows: its rows the group moves.
            allowed: the uses ``(role, site)`` each row must reach, once each, and nothing else.

        Returns:
            The reason (the first row that strays), or ``""``.
        """
        for r in rows:
            uses = self.row_uses.get((weight, r), [])
            extra = [u for u in uses if u not in allowed]
            if extra:
                role, where = extra[0]
                if role == "other":
                    return f"row {r} of `{weight}` reaches {where}"
                names = {"q": "query", "k": "key", "v": "value", "o": "output"}
                mine = next(u for u in sorted(allowed) if u[0] != "o")[0]
                if role != mine:  # q = k, or v = k: one projection in two roles
                    return f"row {r} of `{weight}` is both a {names[mine]} and a {names[role]} ({where})"
                return f"row {r} of `{weight}` reaches a second attention ({where})"
            if len(uses) != len(allowed):
                return f"row {r} of `{weight}` is used {len(uses)} times in attention"
        return ""


def _compact(rows) -> slice | tuple[int, ...]:
    """Consecutive rows as a slice, others as they are."""
    rows = [int(r) for r in rows]
    if rows == list(range(rows[0], rows[0] + len(rows))):
        return slice(rows[0], rows[0] + len(rows))
    return tuple(rows)


def find_heads(gm: fx.GraphModule, names: dict[int, str], uses: dict[int, list[str]]) -> HeadWalk:
    """The attention groups of one graph, and those dropped with the reason (:class:`HeadWalk`).

    Args:
        gm: the traced graph, shapes propagated.
        names: ``id`` of each parameter → its name in the model.
        uses: ``id`` of each parameter → who uses it in this graph, once per use.

    Returns:
        The walk, with ``groups`` (kept) and ``dropped``.
    """
    return HeadWalk(gm, names, uses).run()
