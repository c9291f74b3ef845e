"""Every attention head group of a network at once: Gram matrices, ascent and action, stacked.

The math is :mod:`~symtele.teleports.attention`'s, group by group; here the groups of one head dimension ``d``
are computed together, so that a teleport of all the heads of a model costs a few batched operations per
parameter instead of a few per block of every head. The blocks of all the groups that sit in one parameter
(the query, key and value rows of a fused projection, say) are gathered by one index into a stack of
``d × m`` matrices:

* the Gram matrices: each block's ``G Gᵀ`` in one batched product, summed into its group's ``C_L`` or ``C_R``;
* the action: each block multiplied by its group's ``Aᵀ`` (left) or ``A^{−1}`` (right) in one batched product,
  written back by the same index.

Blocks of different groups never share a row (discovery keeps a group only if each of its rows reaches its one
place), so the order of the groups does not matter. :func:`ascend_heads` runs the whole closed-form teleport:
the Gram matrices, ``steps`` ascent steps of every group at once (:func:`~symtele.teleports.attention.ascend_pair`
on the stack) and the action. The :class:`~symtele.teleporter.Teleporter` goes the same way: :func:`plan_pairs`
ascends, and the :class:`PairPath` it returns carries the parameters, the gradient and the optimiser's state to
any fraction of the path, the blocks of the same stacks multiplied by ``Aᵀ``/``A^{−1}`` (parameters),
``A^{−1}``/``Aᵀ`` (gradients) or their entrywise squares (squared-gradient state).
"""

from __future__ import annotations

import torch

from .attention import ascend_pair
from .symmetry import PairGroup

#: how tensors move with the groups, by the ``power`` of :meth:`PairPath.apply`: the blocks' matrices on the left
#: and on the right side, from the groups' ``A`` and ``A^{−1}``
_MAPS = {
    -1: lambda a, inverse: (a.mT, inverse),  # parameters: left ``Aᵀ P``, right ``A^{−1} R``
    1: lambda a, inverse: (inverse, a.mT),  # gradients and gradient-like state (act_on_gradient)
    2: lambda a, inverse: (inverse.square(), a.mT.square()),  # squared-gradient state, approximately (act_on_squares)
}


def stack_of(groups: list[PairGroup]) -> HeadStack:
    """The :class:`HeadStack` of ``groups``, made once per layout and kept (the last few dozen).

    A model's groups are the same at every teleport, and a stack's index tensors cost about as much to build as
    its arithmetic on a small model: the stack is looked up by what its layout depends on (each group's blocks:
    parameter, rows, side, columns).

    Args:
        groups: the groups, of one head dimension.

    Returns:
        Their stack.
    """
    key = tuple(
        (
            g.d,
            tuple(
                (b.param, (b.rows.start, b.rows.stop, b.rows.step) if isinstance(b.rows, slice) else b.rows, b.side)
                + (b.columns,)
                for b in g.blocks
            ),
        )
        for g in groups
    )
    stack = _STACKS.pop(key, None) or HeadStack(groups)
    _STACKS[key] = stack  # the most recent last
    while len(_STACKS) > 32:
        del _STACKS[next(iter(_STACKS))]
    return stack


#: :func:`stack_of`'s stacks, by layout, the least recently used first
_STACKS: dict[tuple, HeadStack] = {}


def _rows_of(rows: slice | tuple[int, ...], size: int) -> list[int]:
    """A block's row indices in a dimension of ``size``."""
    return list(range(size)[rows]) if isinstance(rows, slice) else list(rows)


class HeadStack:
    """Attention head groups of one head dimension, laid out for stacked computation.

    Args:
        groups: the groups (``Symmetry.pair_groups``, or those of one ``d``).

    Raises:
        ValueError: ``groups`` empty, or of more than one head dimension.
    """

    def __init__(self, groups: list[PairGroup]):
        if not groups:
            raise ValueError("Invalid groups: empty")
        dims = sorted({g.d for g in groups})
        if len(dims) != 1:
            raise ValueError(f"Invalid groups: head dimensions {dims} (stack the groups of one d at a time)")
        self.groups, self.d = list(groups), dims[0]
        # (param, columns) -> [(group index, block)], in the groups' order
        self.parts: dict[tuple[str, bool], list[tuple[int, object]]] = {}
        for i, group in enumerate(self.groups):
            for block in group.blocks:
                self.parts.setdefault((block.param, block.columns), []).append((i, block))
        self._layout: dict[tuple[str, bool, int], tuple] = {}

    def _index(self, param: str, columns: bool, size: int, device) -> tuple:
        """``(rows, owner, left)`` of one parameter's blocks: their rows (``n·d``), groups and sides (``n``)."""
        key = (param, columns, size)
        if key not in self._layout:
            blocks = self.parts[(param, columns)]
            rows = torch.tensor([r for _, b in blocks for r in _rows_of(b.rows, size)])
            owner = torch.tensor([i for i, _ in blocks])
            left = torch.tensor([b.side == "left" for _, b in blocks])
            self._layout[key] = (rows, owner, left, {})
        rows, owner, left, placed = self._layout[key]
        if device not in placed:
            placed[device] = (rows.to(device), owner.to(device), left.to(device))
        return placed[device]

    def _blocks(self, tensor: torch.Tensor, param: str, columns: bool) -> tuple[torch.Tensor, tuple]:
        """The parameter's blocks of ``tensor`` as an ``n × d × m`` stack, and their ``(rows, owner, left)``."""
        view = tensor.T if columns else tensor
        rows, owner, left = self._index(param, columns, view.shape[0], tensor.device)
        return view.index_select(0, rows).reshape(owner.shape[0], self.d, -1), (rows, owner, left)

    def grams(self, grads: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(C_L, C_R)`` of every group, stacked ``G × d × d`` (float64), as :func:`~.attention.grams` of each.

        Args:
            grads: every parameter's gradient, by name.

        Returns:
            The stacked Gram matrices, in the order of the groups.
        """
        device = next(iter(grads.values())).device
        c_left = torch.zeros(len(self.groups), self.d, self.d, dtype=torch.float64, device=device)
        c_right = torch.zeros_like(c_left)
        for param, columns in self.parts:
            stack, (_, owner, left) = self._blocks(grads[param], param, columns)
            stack = stack.double()
            products = stack @ stack.mT
            c_left.index_add_(0, owner[left], products[left])
            c_right.index_add_(0, owner[~left], products[~left])
        return c_left, c_right

    def derivatives(
        self, params: dict[str, torch.Tensor], grads: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The derivative of the loss along every group, and the size of the terms it sums (float64).

        Moving by ``A = exp(εX)`` changes a left block by ``dP = XᵀP`` and a right block by ``dR = −XR``, so
        ``d/dε L = Σ_left ⟨G_P, XᵀP⟩ − Σ_right ⟨G_R, XR⟩ = ⟨X, M⟩`` with ``M = Σ_left P G_Pᵀ − Σ_right G_R Rᵀ``
        (``d × d``). A loss the group keeps has ``M = 0``; a gradient with a term the group does not keep (a
        penalty ``λ‖W‖²`` on a projection, say) does not.

        Args:
            params: every parameter, by name.
            grads: every parameter's gradient (``p.grad``), by name.

        Returns:
            ``(M, terms)``, stacked ``G × d × d`` in the order of the groups: ``terms`` sums the absolute values
            of the products summed into each entry of ``M``.
        """
        device = next(iter(grads.values())).device
        slope = torch.zeros(len(self.groups), self.d, self.d, dtype=torch.float64, device=device)
        terms = torch.zeros_like(slope)
        for param, columns in self.parts:
            p, (_, owner, left) = self._blocks(params[param], param, columns)
            g = self._blocks(grads[param], param, columns)[0]
            p, g = p.double(), g.double()
            slope.index_add_(0, owner[left], p[left] @ g[left].mT)
            slope.index_add_(0, owner[~left], -(g[~left] @ p[~left].mT))
            terms.index_add_(0, owner[left], p[left].abs() @ g[left].abs().mT)
            terms.index_add_(0, owner[~left], g[~left].abs() @ p[~left].abs().mT)
        return slope, terms

    def move(
        self, left: torch.Tensor, right: torch.Tensor, tensors: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """``tensors`` with every block replaced by ``M @ block``, ``M`` its group's ``left`` or ``right`` matrix.

        Args:
            left: the matrices of the groups' left blocks, stacked ``G × d × d`` in the order of the groups.
            right: those of their right blocks, alike.
            tensors: tensors of the parameters' shapes, by name; a parameter missing from it (no optimiser state
                yet) is skipped.

        Returns:
            New tensors for the parameters the groups touch, the others as they are.
        """
        out = dict(tensors)
        for param, columns in self.parts:
            if param not in out:
                continue
            p = out[param]
            stack, (rows, owner, on_left) = self._blocks(p, param, columns)
            m = torch.where(on_left[:, None, None], left[owner], right[owner]).to(device=p.device, dtype=p.dtype)
            moved = p.clone()
            target = moved.T if columns else moved
            target.index_copy_(0, rows, (m @ stack).reshape(rows.shape[0], *target.shape[1:]))
            out[param] = moved
        return out

    def act(self, elements: torch.Tensor, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``params`` with every group's blocks moved by its ``A`` (left ``Aᵀ P``, right ``A^{−1} R``).

        Args:
            elements: the groups' ``A``, stacked ``G × d × d``.
            params: every parameter, by name.

        Returns:
            New tensors for the parameters the groups touch, the others as they are; equal to
            :func:`~.attention.act` of each group in turn.
        """
        return self.move(*_MAPS[-1](elements, torch.linalg.inv(elements)), params)


def ascend_heads(
    groups: list[PairGroup],
    params: dict[str, torch.Tensor],
    grads: dict[str, torch.Tensor],
    steps: int = 10,
    max_step: float = 0.1,
) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
    """The closed-form teleport along every attention head group, from the gradient at ``params``.

    The groups' Gram matrices (:meth:`HeadStack.grams`), ``steps`` steps ``A ← A exp(max_step · D/‖D‖₂)`` of
    every group at once (:func:`~symtele.teleports.attention.ascend_pair` on the stack), and the action
    (:meth:`HeadStack.act`), one stack per head dimension. No forward pass checks the loss.

    Args:
        groups: the attention head groups (``Symmetry.pair_groups``).
        params: every parameter, by name.
        grads: every parameter's gradient at ``params``, by name.
        steps: ascent steps.
        max_step: the spectral norm of each step's ``X``.

    Returns:
        ``(moved, elements)``: the parameters after the teleport, by name, and each group's ``A`` (float64, in
        the order of ``groups``).

    Raises:
        ValueError: ``groups`` empty.
    """
    if not groups:
        raise ValueError("Invalid groups: empty")
    elements: list[torch.Tensor | None] = [None] * len(groups)
    moved = dict(params)
    for d in dict.fromkeys(g.d for g in groups):
        indices = [i for i, g in enumerate(groups) if g.d == d]
        stack = stack_of([groups[i] for i in indices])
        trail, _ = ascend_pair(*stack.grams(grads), steps=steps, max_step=max_step)
        moved = stack.act(trail[-1], moved)
        for i, a in zip(indices, trail[-1]):
            elements[i] = a
    return moved, elements


class PairPath:
    """The attention groups' part of a teleport's path: each moving group's ascent trail and the step it keeps.

    At a fraction ``t`` of the path each group stands at ``trail[round(t · kept)]`` (``t = 1``: the steepest step
    its ascent found, ``t = 0``: the identity). The parameters, the gradient and the optimiser's state follow by
    the action of :func:`~.attention.act`, :func:`~.attention.act_on_gradient` and
    :func:`~.attention.act_on_squares`, computed for all the groups of one head dimension at once
    (:class:`HeadStack`).

    Args:
        moves: ``(group, trail, kept)`` per group that moves (``kept > 0``).
    """

    def __init__(self, moves: list[tuple[PairGroup, list[torch.Tensor], int]]):
        self.moves = moves

    def __bool__(self) -> bool:
        """Whether any group moves."""
        return bool(self.moves)

    def elements(self, t: float) -> list[tuple[PairGroup, torch.Tensor]]:
        """``(group, A)`` of every group that has moved at fraction ``t`` of the path."""
        return [(group, trail[k]) for group, trail, k in self._at(t)]

    def _at(self, t: float) -> list[tuple[PairGroup, list[torch.Tensor], int]]:
        return [(group, trail, round(t * kept)) for group, trail, kept in self.moves if round(t * kept)]

    def params(self) -> set[str]:
        """The names of the parameters the groups touch."""
        return {b.param for group, _, _ in self.moves for b in group.blocks}

    def apply(self, t: float, tensors: dict[str, torch.Tensor], power: int = -1) -> dict[str, torch.Tensor]:
        """``tensors`` carried to fraction ``t`` of the path.

        Args:
            t: the fraction.
            tensors: by parameter name (a parameter missing is skipped).
            power: how they transform: as parameters (``-1``), as gradients (1), as squared gradients (2,
                approximately), not at all (0).

        Returns:
            New tensors for the parameters the groups touch, the others as they are.
        """
        if power == 0:
            return tensors
        moved = [i for i, (_, _, kept) in enumerate(self.moves) if round(t * kept)]
        for d in dict.fromkeys(self.moves[i][0].d for i in moved):
            of_d = [i for i in moved if self.moves[i][0].d == d]
            a = torch.stack([self.moves[i][1][round(t * self.moves[i][2])] for i in of_d])
            tensors = stack_of([self.moves[i][0] for i in of_d]).move(*_MAPS[power](a, torch.linalg.inv(a)), tensors)
        return tensors


def plan_pairs(
    grads: dict[str, torch.Tensor], groups: list[PairGroup], *, steps: int = 10, max_step: float = 0.1
) -> tuple[PairPath, list[dict]]:
    """Every group's closed-form ascent from the gradient at hand, each keeping its steepest step.

    The groups act on disjoint blocks, so each ascends on its own Gram matrices (:func:`~.attention.ascend_pair`,
    all the groups of one head dimension at once on a :class:`HeadStack`) and they compose in any order.

    Args:
        grads: the gradient at the point the groups move from, by name.
        groups: the pair groups (``Symmetry.pair_groups``, verified at discovery).
        steps: ascent steps per group.
        max_step: the spectral norm of each step's Lie-algebra element.

    Returns:
        ``(path, rows)``: the :class:`PairPath` of the groups that move, and per group (in the order of ``groups``)
        its ``name``, its part of ``‖∇L‖²`` ``before`` and ``after`` the step kept, and that ``step``.
    """
    rows: list[dict | None] = [None] * len(groups)
    moves: list[tuple | None] = [None] * len(groups)
    for d in dict.fromkeys(g.d for g in groups):
        indices = [i for i, g in enumerate(groups) if g.d == d]
        trail, values = ascend_pair(*stack_of([groups[i] for i in indices]).grams(grads), steps, max_step)
        values = torch.stack(values)  # steps × groups
        for j, i in enumerate(indices):
            best = int(torch.argmax(values[:, j]))  # the first of equal maxima: a group that stopped keeps its step
            rows[i] = {"name": groups[i].name, "before": float(values[0, j]), "after": float(values[best, j])}
            rows[i]["step"] = best
            if best:
                moves[i] = (groups[i], [a[j] for a in trail[: best + 1]], best)
    return PairPath([m for m in moves if m is not None]), rows
