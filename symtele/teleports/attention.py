"""The GL(d) symmetry of attention heads, and the closed-form ascent of ``‖∇L‖²`` along it.

An attention head sees its queries and keys only through the scores ``q kᵀ`` and its values only through
``attn · v`` followed by the output projection. For any invertible ``A ∈ GL(d_head)``,

    q ← q A,   k ← k A^{−T}   keep every score,      v ← v B,   W_O^h ← B^{−1} W_O^h   keep every output

(``W_O^h``: the rows of the output projection, in ``x W`` layout, that read head ``h``).

In the weights of ``torch.nn.Linear`` layout (a head's ``d`` rows of the query, key and value projections,
its bias entries as one more column; the output projection's ``d`` columns for the head, transposed to rows)
both are one *pair action* on row blocks (:class:`~symtele.teleports.symmetry.PairGroup`, found in every form by
:func:`~symtele.teleports.discovery.discover`, see :mod:`~symtele.teleports.heads`):

    left blocks  P ← Aᵀ P   (the queries' rows; the values' rows, with ``A = B``),
    right blocks R ← A^{−1} R   (the keys' rows; the output projection's columns, transposed).

The action is linear in the weights and keeps the loss for every input, so the gradient is equivariant,
``G_P ← A^{−1} G_P`` and ``G_R ← Aᵀ G_R``, and with the Gram matrices ``C_L = Σ_P G_P G_Pᵀ`` and
``C_R = Σ_R G_R G_Rᵀ`` (``d × d``, from the gradient at hand)

    ‖∇L(g_A·w)‖²_pair = tr(A^{−1} C_L A^{−T}) + tr(Aᵀ C_R A).

Moving on from ``A`` by ``A ← A exp(εX)``, the Gram matrices at the current point are ``C_L' = A^{−1} C_L
A^{−T}`` and ``C_R' = Aᵀ C_R A``, and

    d/dε ‖∇L‖² = 2 tr(X (C_R' − C_L')),

so the steepest ascent direction in the Lie algebra is the symmetric matrix ``D = C_R' − C_L'``. Each step
moves by ``X = max_step · D / ‖D‖₂`` (no eigenvalue of the step's ``exp(X)`` leaves ``[e^{−max_step},
e^{max_step}]``: the scale-free rule of the positive rescaling, of which a diagonal ``A`` is the special
case). Every step costs a few ``d × d`` products per head: after the gradient, the ascent is free.
:func:`pair_gradient_norm_reference` computes the same objective by double backpropagation (the definition
the closed form is tested against).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .symmetry import Block, PairGroup


def _rows(tensor: torch.Tensor, block: Block) -> torch.Tensor:
    """The block's rows as a ``d × m`` matrix (a bias as one column)."""
    part = tensor[:, block.index].T if block.columns else tensor[block.index]
    return part.reshape(part.shape[0], -1)


def multihead_attention_groups(module: nn.MultiheadAttention, prefix: str = "") -> list[PairGroup]:
    """The query–key and value–output pair groups of every head of ``module``.

    Args:
        module: an ``nn.MultiheadAttention`` (fused ``in_proj_weight``, or separate ``q/k/v_proj_weight`` when
            ``kdim``/``vdim`` differ from ``embed_dim``), with or without biases.
        prefix: the module's name in the model followed by a dot (``"encoder.layers.0.self_attn."``).

    Returns:
        Two groups per head, query–key first.

    Raises:
        ValueError: ``add_bias_kv`` (learned key and value rows that no weight produces) is not handled.
    """
    if module.bias_k is not None or module.bias_v is not None:
        raise ValueError(f"Invalid module: {prefix or 'MultiheadAttention'} has add_bias_kv, which is not handled")
    e, heads = module.embed_dim, module.num_heads
    d = e // heads
    fused = module.in_proj_weight is not None
    bias = module.in_proj_bias is not None
    layer = prefix.removesuffix(".")
    groups = []
    for h in range(heads):
        rows = slice(h * d, (h + 1) * d)
        q, k, v = (slice(i * e + h * d, i * e + (h + 1) * d) for i in range(3))
        if fused:
            qk = [Block(f"{prefix}in_proj_weight", q, "left"), Block(f"{prefix}in_proj_weight", k, "right")]
            vo = [Block(f"{prefix}in_proj_weight", v, "left")]
        else:
            qk = [Block(f"{prefix}q_proj_weight", rows, "left"), Block(f"{prefix}k_proj_weight", rows, "right")]
            vo = [Block(f"{prefix}v_proj_weight", rows, "left")]
        if bias:
            qk += [Block(f"{prefix}in_proj_bias", q, "left"), Block(f"{prefix}in_proj_bias", k, "right")]
            vo.append(Block(f"{prefix}in_proj_bias", v, "left"))
        vo.append(Block(f"{prefix}out_proj.weight", rows, "right", columns=True))
        groups.append(PairGroup(layer, "qk", h, d, tuple(qk)))
        groups.append(PairGroup(layer, "vo", h, d, tuple(vo)))
    return groups


def grams(group: PairGroup, grads: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(C_L, C_R)``: the Gram matrices of the group's left and right gradient blocks, in float64."""
    out = {"left": torch.zeros(group.d, group.d, dtype=torch.float64), "right": None}
    out["right"] = out["left"].clone()
    for block in group.blocks:
        g = _rows(grads[block.param], block).double()
        out[block.side] = out[block.side].to(g.device) + g @ g.T
    return out["left"], out["right"]


def outside(group: PairGroup, grads: dict[str, torch.Tensor]) -> torch.Tensor:
    """``Σ ‖g‖²`` over every gradient entry the group does not move (the rest of ``‖∇L‖²``, kept by it), float64."""
    total = torch.zeros((), dtype=torch.float64)
    moved = {}
    for block in group.blocks:
        mask = moved.setdefault(block.param, torch.zeros_like(grads[block.param], dtype=torch.bool))
        if block.columns:
            mask[:, block.index] = True
        else:
            mask[block.index] = True
    for name, g in grads.items():
        part = g[~moved[name]] if name in moved else g
        total = total.to(g.device) + part.double().square().sum()
    return total


def gradient_norm(group: PairGroup, grads: dict[str, torch.Tensor], a: torch.Tensor) -> torch.Tensor:
    """``‖∇L(g_A·w)‖²`` in closed form from the gradient at ``w``.

    :func:`pair_objective` of the group's Gram matrices plus the entries it does not move (:func:`outside`).

    Args:
        group: the pair group.
        grads: every parameter's gradient at ``w``, by name.
        a: the group element ``A``.

    Returns:
        The squared norm (float64).
    """
    c_left, c_right = grams(group, grads)
    return pair_objective(c_left, c_right, a.to(c_left.device)) + outside(group, grads).to(c_left.device)


def pair_objective(c_left: torch.Tensor, c_right: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """``tr(A^{−1} C_L A^{−T}) + tr(Aᵀ C_R A)``: the group's part of ``‖∇L(g_A·w)‖²``.

    Stacked ``… × d × d`` arguments give one value per group.
    """
    return _objective(c_left, c_right, a, torch.linalg.inv(a))


def pair_slope(c_left: torch.Tensor, c_right: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """``D = C_R' − C_L'``: half the derivative of :func:`pair_objective` in ``X`` for ``A ← A exp(X)`` at 0.

    Stacked ``… × d × d`` arguments give one ``D`` per group.
    """
    return _slope(c_left, c_right, a, torch.linalg.inv(a))


def ascend_pair(
    c_left: torch.Tensor, c_right: torch.Tensor, steps: int = 10, max_step: float = 0.1
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """``steps`` ascent steps ``A ← A exp(max_step · D / ‖D‖₂)`` from ``A = I`` (module docstring).

    Several groups of one ``d`` ascend at once from their Gram matrices stacked along leading axes, each by its
    own steps; a group whose slope ``D`` vanishes (or is not finite) stays where it is while the others go on,
    and the ascent ends early only when every group has stopped. ``D`` is symmetric, so one eigendecomposition
    ``D = V Λ Vᵀ`` gives its spectral norm ``max |λ|``, the step ``exp(X) = V e^{sΛ} Vᵀ`` and its inverse
    ``V e^{−sΛ} Vᵀ`` (``s = max_step/‖D‖₂``); ``A^{−1}`` is carried along rather than recomputed.

    Args:
        c_left: ``C_L`` of the group (``d × d``, float64), or of several groups stacked (``… × d × d``).
        c_right: ``C_R``, alike.
        steps: ascent steps.
        max_step: the spectral norm of each step's ``X``.

    Returns:
        ``(trail, values)``: ``A`` after every step (``trail[0]`` is the identity) and the objective at each
        (stacked like the arguments).
    """
    a = torch.eye(c_left.shape[-1], dtype=c_left.dtype, device=c_left.device).expand_as(c_left).clone()
    inverse = a.clone()  # A^{−1}, carried along: each step's exp(−X) comes with its exp(X)
    trail, values = [a], [_objective(c_left, c_right, a, inverse)]
    for _ in range(steps):
        d = _slope(c_left, c_right, a, inverse)
        d = (d + d.mT) / 2  # symmetric but for rounding
        finite = torch.isfinite(d).all(-1).all(-1)
        # D is symmetric: one eigendecomposition gives its spectral norm and exp(X) = V e^{Λ s} Vᵀ with its inverse
        eigenvalues, vectors = torch.linalg.eigh(torch.where(finite[..., None, None], d, torch.zeros_like(d)))
        norm = eigenvalues.abs().amax(-1)
        moving = (norm > 0) & finite
        if not bool(moving.any()):
            break
        scale = torch.where(moving, max_step / torch.where(moving, norm, torch.ones_like(norm)), torch.zeros_like(norm))
        grow = torch.exp(eigenvalues * scale[..., None])
        a = a @ (vectors * grow[..., None, :]) @ vectors.mT
        inverse = (vectors / grow[..., None, :]) @ vectors.mT @ inverse
        trail.append(a)
        values.append(_objective(c_left, c_right, a, inverse))
    return trail, values


def _objective(c_left, c_right, a, inverse):
    """:func:`pair_objective` with ``A^{−1}`` given."""
    both = inverse @ c_left @ inverse.mT + a.mT @ c_right @ a
    return both.diagonal(dim1=-2, dim2=-1).sum(-1)


def _slope(c_left, c_right, a, inverse):
    """:func:`pair_slope` with ``A^{−1}`` given."""
    return a.mT @ c_right @ a - inverse @ c_left @ inverse.mT


def _apply_blocks(
    group: PairGroup, tensors: dict[str, torch.Tensor], left: torch.Tensor, right: torch.Tensor
) -> dict[str, torch.Tensor]:
    """``tensors`` with each of the group's blocks replaced by ``M @ rows`` (``M``: ``left`` or ``right``, by side).

    New tensors for the parameters it touches, differentiable.
    """
    out = dict(tensors)
    for block in group.blocks:  # each block moves on its own: a missing one (no optimiser state yet) is skipped
        if block.param not in out:
            continue
        p = out[block.param]
        m = (left if block.side == "left" else right).to(device=p.device, dtype=p.dtype)
        rows = _rows(p, block)
        moved = (m @ rows).reshape(p[:, block.index].T.shape if block.columns else p[block.index].shape)
        p = p.clone()
        if block.columns:
            p[:, block.index] = moved.T
        else:
            p[block.index] = moved
        out[block.param] = p
    return out


def act(group: PairGroup, a: torch.Tensor, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``params`` with the group's blocks moved by ``A`` (left ``Aᵀ P``, right ``A^{−1} R``).

    New tensors for the parameters it touches, the others as they are; differentiable in ``A`` and in the
    parameters.

    Args:
        group: the pair group.
        a: the group element ``A``.
        params: the parameters (or any tensors of their shapes), by name.

    Returns:
        The moved tensors, by name.
    """
    return _apply_blocks(group, params, a.T, torch.linalg.inv(a))


def pair_gradient_norm_reference(
    loss_of: Callable[[dict[str, torch.Tensor]], torch.Tensor],
    params: dict[str, torch.Tensor],
    group: PairGroup,
    a: torch.Tensor,
    x: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``‖∇L(g_{A exp(εX)}·w)‖²`` at ``ε = 0`` and its derivative in ``ε``, by double backpropagation.

    Act on the parameters, differentiate the loss, square, and differentiate again: the definition
    :func:`pair_objective` and :func:`pair_slope` are tested against.

    Args:
        loss_of: maps a dict of all the parameters to the loss.
        params: the parameters, by name.
        group: the pair group.
        a: the group element ``A`` to start from.
        x: the direction ``X`` in the Lie algebra.

    Returns:
        ``(value, slope)``.
    """
    with torch.enable_grad():
        eps = torch.zeros((), dtype=a.dtype, requires_grad=True)
        moved = act(group, a @ torch.linalg.matrix_exp(eps * x), {n: p.detach() for n, p in params.items()})
        leaves = {n: (p if p.requires_grad else p.requires_grad_(True)) for n, p in moved.items()}
        grads = torch.autograd.grad(loss_of(leaves), list(leaves.values()), create_graph=True)
        value = sum(g.square().sum() for g in grads)
        (slope,) = torch.autograd.grad(value, eps)
    return value.detach(), slope


def act_on_gradient(group: PairGroup, a: torch.Tensor, grads: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The gradient at ``g_A·w`` from the gradient at ``w``: ``G_P ← A^{−1} G_P``, ``G_R ← Aᵀ G_R``.

    The action is linear and keeps the loss, so the gradient moves by the inverse transpose of the action on
    the weights (module docstring); no backward pass. Gradient-like optimiser state (SGD's momentum buffer,
    Adam's ``exp_avg``) moves the same way, exactly: it is a sum of past gradients.

    Args:
        group: the pair group.
        a: the group element ``A``.
        grads: every parameter's gradient at ``w`` (or any tensors of their shapes), by name.

    Returns:
        The gradients, new tensors for the parameters the group touches.
    """
    return _apply_blocks(group, grads, torch.linalg.inv(a), a.T)


def act_on_squares(group: PairGroup, a: torch.Tensor, squares: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Squared-gradient state (Adam's ``exp_avg_sq``) carried by ``A``, approximately: ``v ← (M∘M) v``.

    ``M`` is the gradient's map on the block (``A^{−1}`` left, ``Aᵀ`` right) and ``∘`` the entrywise product.
    A running mean of ``g²`` is not a function of the running mean of ``g``, so no exact transport exists
    for a non-diagonal ``A``; this is the one that is exact when the past gradients' entries were
    uncorrelated, and when ``A`` is diagonal (then it is the positive rescaling's ``e^{−2a}``). It keeps
    ``v ≥ 0``.

    Args:
        group: the pair group.
        a: the group element ``A``.
        squares: the squared-gradient state of every parameter it touches, by name.

    Returns:
        The carried state, new tensors for the parameters the group touches.
    """
    return _apply_blocks(group, squares, torch.linalg.inv(a).square(), a.T.square())
