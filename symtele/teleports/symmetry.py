r"""The symmetries of a network as data, as :func:`~symtele.teleports.discovery.discover` builds them.

Which parameters each log-scale acts on, how the scales group, the attention heads' matrix groups, and what
was left out and why.

A :class:`Symmetry` has ``n_scales`` log-scales ``s``; parameter ``p`` becomes ``p · exp(a_p(s))`` with
``a_p(s) = Σ_t sign_t · s[units_t]`` over its :class:`Term`\ s. Scales that rescale the same layers form a
:class:`Group`; every layer (or group) that is not rescaled is a :class:`Dropped` record with its reason.

Beside these diagonal scalings, every attention head has two matrix groups (:class:`PairGroup`), each an
invertible ``A ∈ GL(d_head)`` acting on row blocks (:class:`Block`) of the projections in
``torch.nn.Linear`` layout (``out × in``, so a head's queries are ``q = x W_Qᵀ``):

    query–key (``"qk"``):  W_Q ← Aᵀ W_Q, b_Q ← Aᵀ b_Q, W_K ← A^{−1} W_K, b_K ← A^{−1} b_K,
        that is ``q ← q A`` and ``k ← k A^{−T}``, so every score ``q kᵀ`` is kept;
    value–output (``"vo"``, ``A = B``):  W_V ← Bᵀ W_V, b_V ← Bᵀ b_V, W_Oᵀ ← B^{−1} W_Oᵀ (the head's columns of
        the output projection), that is ``v ← v B`` and ``O ← B^{−1} O``, so ``attn · v · O`` is kept.

Blocks multiplied by ``Aᵀ`` are on the ``"left"`` side, those by ``A^{−1}`` on the ``"right"``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class Term:
    """One way the scales act on a parameter: ``param ← param · exp(sign · s[units])``.

    Args:
        param: the parameter's name in ``model.named_parameters()``.
        units: a long tensor broadcastable to the parameter's shape (size 1 along the axes the action does
            not depend on) giving, for each entry, the index of its scale; index ``n_scales`` stands for
            "no scale" (always 1).
        sign: −1 where the parameter produces the unit (it is divided by the scale), +1 where it reads it
            (multiplied).
    """

    param: str
    units: torch.Tensor
    sign: int


@dataclass(frozen=True)
class Group:
    """Scales that rescale the same layers.

    Args:
        size: the number of independent scales.
        producers: the layers that produce their units (divided by the scale).
        consumers: the layers that read them (multiplied).
        scales: their indices in ``s``.
    """

    size: int
    producers: tuple[str, ...]
    consumers: tuple[str, ...]
    scales: tuple[int, ...] = field(default=(), compare=False, repr=False)


@dataclass(frozen=True)
class Dropped:
    """A layer (or a group of layers) whose scales are fixed at 1, and why.

    Args:
        layer: the layer's name (or the group's).
        reason: why it is not rescaled.
    """

    layer: str
    reason: str


@dataclass(frozen=True)
class Block:
    """The rows of one parameter that a head's matrix group moves, as a ``d × m`` matrix.

    Args:
        param: the parameter's name in ``model.named_parameters()``.
        rows: its ``d`` rows (a slice, or the row indices in the head's order), of the first dimension, or of
            the second when ``columns`` is true (the output projection's columns, transposed to rows).
        side: ``"left"`` (``P ← Aᵀ P``: queries, values) or ``"right"`` (``R ← A^{−1} R``: keys, the output
            projection's columns).
        columns: whether ``rows`` index the second dimension.
    """

    param: str
    rows: slice | tuple[int, ...]
    side: str
    columns: bool = False

    @property
    def index(self) -> slice | list[int]:
        """``rows`` as an index of a tensor dimension."""
        return self.rows if isinstance(self.rows, slice) else list(self.rows)

    def describe(self) -> str:
        """``"c_attn.weight rows 0:4"``: the parameter and its rows (or columns)."""
        if isinstance(self.rows, slice):
            span = f"{self.rows.start}:{self.rows.stop}"
        else:
            span = "[" + ",".join(map(str, self.rows)) + "]"
        return f"{self.param} {'columns' if self.columns else 'rows'} {span}"


@dataclass(frozen=True)
class PairGroup:
    """One attention head's query–key or value–output symmetry: ``A ∈ GL(d)`` on its blocks (module docstring).

    Args:
        layer: the attention's name (its module, or where its scores are computed).
        kind: ``"qk"`` (queries and keys) or ``"vo"`` (values and the output projection).
        head: the head's index in the layer.
        d: the head's dimension.
        blocks: the row blocks it moves (:class:`Block`).
    """

    layer: str
    kind: str
    head: int
    d: int
    blocks: tuple[Block, ...]

    @property
    def name(self) -> str:
        """``"blocks.0.attn.qk[1]"``."""
        return f"{self.layer or 'attention'}.{self.kind}[{self.head}]"

    @property
    def params(self) -> list[str]:
        """The parameters it moves, in the order of its blocks."""
        return list(dict.fromkeys(b.param for b in self.blocks))

    def to_dict(self) -> dict:
        """The group as plain data (JSON-ready)."""
        return {
            "layer": self.layer,
            "kind": self.kind,
            "head": self.head,
            "d": self.d,
            "blocks": [
                {
                    "param": b.param,
                    "rows": [b.rows.start, b.rows.stop] if isinstance(b.rows, slice) else list(b.rows),
                    "side": b.side,
                    "columns": b.columns,
                }
                for b in self.blocks
            ],
        }


@dataclass
class Symmetry:
    """The positive rescalings of a network (see the module's docstring).

    Args:
        n_scales: the number of independent log-scales.
        terms: how they act on the parameters.
        groups: the scales grouped by the layers they rescale.
        dropped: every layer (or group) not rescaled, with the reason.
        kinds: the type name of every layer named in ``groups`` and ``dropped``, for messages.
        verified: how the symmetry was checked numerically (``None`` if it was not).
        pair_groups: the attention heads' matrix groups (:class:`PairGroup`).
    """

    n_scales: int
    terms: list[Term]
    groups: list[Group]
    dropped: list[Dropped] = field(default_factory=list)
    kinds: dict[str, str] = field(default_factory=dict)
    verified: str | None = None
    pair_groups: list[PairGroup] = field(default_factory=list)

    @property
    def left(self) -> dict[str, str]:
        """The layers not rescaled, by name, with the (first) reason."""
        out: dict[str, str] = {}
        for d in self.dropped:
            out.setdefault(d.layer, d.reason)
        return out

    @property
    def params(self) -> list[str]:
        """The parameters some scale acts on, in the order first met."""
        return list(dict.fromkeys(t.param for t in self.terms))

    def log_factor(self, name: str, s: torch.Tensor, like: torch.Tensor) -> torch.Tensor | None:
        """``a_p(s) = Σ_t sign_t · s[units_t]`` for the parameter ``name``.

        Args:
            name: the parameter's name.
            s: the log-scales, ``(*batch, n_scales)``: leading dimensions index copies of the network, each with
                its own scales (the parameter then has them too).
            like: the parameter (for its dtype and device).

        Returns:
            ``a_p(s)``, broadcastable to the parameter, in ``like``'s dtype and device; ``None`` if no scale acts
            on it.
        """
        terms = [t for t in self.terms if t.param == name]
        if not terms:
            return None
        padded = torch.cat([s, s.new_zeros(*s.shape[:-1], 1)], -1).to(device=like.device)
        out = torch.zeros((), dtype=padded.dtype, device=like.device)
        for t in terms:
            out = out + t.sign * padded[..., t.units.to(like.device)]
        return out.to(like.dtype)

    def keep(self, kept: list[int], dropped: list[Dropped] = ()) -> Symmetry:
        """The symmetry with only the groups ``kept``, the scales renumbered.

        Args:
            kept: indices into ``groups``, in the order the new groups take.
            dropped: records to add to ``dropped``.

        Returns:
            A new :class:`Symmetry` (terms left with no kept scale are removed; the matrix groups are kept).
        """
        old = [i for g in kept for i in self.groups[g].scales]
        lookup = torch.full((self.n_scales + 1,), len(old), dtype=torch.long)
        lookup[torch.tensor(old, dtype=torch.long)] = torch.arange(len(old))
        terms = []
        for t in self.terms:
            units = lookup[t.units]
            if bool((units < len(old)).any()):
                terms.append(Term(t.param, units, t.sign))
        groups, start = [], 0
        for g in kept:
            group = self.groups[g]
            groups.append(Group(group.size, group.producers, group.consumers, tuple(range(start, start + group.size))))
            start += group.size
        return Symmetry(
            len(old), terms, groups, [*self.dropped, *dropped], self.kinds, self.verified, list(self.pair_groups)
        )

    def keep_pairs(self, kept: list[int], dropped: list[Dropped] = ()) -> Symmetry:
        """The symmetry with only the matrix groups ``kept``.

        Args:
            kept: indices into ``pair_groups``.
            dropped: records to add to ``dropped``.

        Returns:
            A new :class:`Symmetry` with the same scales.
        """
        pairs = [self.pair_groups[i] for i in kept]
        return Symmetry(
            self.n_scales, self.terms, self.groups, [*self.dropped, *dropped], self.kinds, self.verified, pairs
        )

    def label(self, layer: str) -> str:
        """``layer`` with its type when its name alone does not say it (``1 (ReLU)`` in an ``nn.Sequential``).

        Args:
            layer: a layer's name.

        Returns:
            The name, followed by the type in parentheses when the name is empty or ends in an index and the
            type is known.
        """
        kind = self.kinds.get(layer)
        last = layer.rsplit(".", 1)[-1]
        return f"{layer} ({kind})" if kind and (last.isdigit() or not layer) else layer

    def to_dict(self) -> dict:
        """The groups and the dropped layers as plain data (JSON-ready)."""
        return {
            "n_scales": self.n_scales,
            "groups": [
                {"size": g.size, "producers": list(g.producers), "consumers": list(g.consumers)} for g in self.groups
            ],
            "pair_groups": [g.to_dict() for g in self.pair_groups],
            "dropped": [{"layer": d.layer, "reason": d.reason} for d in self.dropped],
            "verified": self.verified,
        }

    def __str__(self) -> str:
        """The groups, the attention head groups, the layers not rescaled and the check, one per line."""
        lines = [f"{self.n_scales} independent scales in {len(self.groups)} groups"]
        for i, g in enumerate(self.groups):
            consumers = ", ".join(self.label(c) for c in g.consumers) or "(none)"
            lines.append(
                f"  group {i}: {g.size} scales; divided: {', '.join(self.label(p) for p in g.producers)}; "
                f"multiplied: {consumers}"
            )
        if self.pair_groups:
            lines.append(f"{len(self.pair_groups)} attention head groups (GL(d) each)")
            for g in self.pair_groups:
                left = ", ".join(b.describe() for b in g.blocks if b.side == "left")
                right = ", ".join(b.describe() for b in g.blocks if b.side == "right")
                lines.append(f"  {g.name}: d={g.d}; times Aᵀ: {left}; times A⁻¹: {right}")
        if self.dropped:
            lines.append("not rescaled:")
            lines += [f"  {self.label(d.layer)}: {d.reason}" for d in self.dropped]
        if self.verified:
            lines.append(self.verified)
        return "\n".join(lines)
