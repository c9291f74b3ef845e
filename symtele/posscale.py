"""Positive-scale teleportation in closed form, through gradient equivariance.

For a chain of linear layers joined by ReLU/LeakyReLU, rescaling hidden unit ``a`` of
layer ``k`` by ``d_a > 0`` acts as ``W_k ← D_k⁻¹ W_k D_{k−1}``, ``b_k ← D_k⁻¹ b_k``
(``D = diag(d)``, ``D_{−1} = D_n = I``) and leaves the loss unchanged. Because the
action is linear, the gradient is equivariant:

    ∇_{W_k} L(g·w) = D_k ∇_{W_k} L(w) D_{k−1}⁻¹,     ∇_{b_k} L(g·w) = D_k ∇_{b_k} L(w).

So ``‖∇L(g·w)‖²`` is an explicit function of the scales and of the current gradient
``G``. With ``C_k`` the product of all scales applied so far and ``s_k = c_k²``,

    ‖row_a ∇_{W_k}‖² = s_k[a] · Σ_b G_k[a,b]² / s_{k−1}[b] + s_k[a] · ∇_{b_k}[a]²
    ‖col_a ∇_{W_{k+1}}‖² = Σ_c s_{k+1}[c] G_{k+1}[c,a]² / s_k[a]

and the derivative of ``‖∇L‖²`` in ``d_k[a]`` at ``d = 1`` is
``2 (‖row_a ∇_{W_k}‖² − ‖col_a ∇_{W_{k+1}}‖²)``. Each ascent step sets

    d_k = 1 + lr · clip(∂‖∇L‖²/∂d_k, −clamp/lr, clamp/lr),     c_k ← c_k · d_k,

which is what double backpropagation through ``‖∇L(g·w)‖²`` computes, at the cost of
two matrix–vector products per layer instead of a forward–backward–backward pass.
A ``k``-step teleport therefore costs one gradient (given), ``O(k · #params)``
arithmetic and one forward pass to confirm the loss is unchanged.
"""
from __future__ import annotations

import time
from typing import Callable, Sequence

import numpy as np
import torch

from . import checks
from .history import TeleportRecord, to_list
from .invariance import default_rtol, preserved
from .layout import Chain, check_shapes
from .objective import grad_norm_sq


#: below this many gradient entries on the CPU, the scale arithmetic runs in NumPy, whose
#: per-operation overhead is a fraction of torch's (the arithmetic and dtype are the same)
NUMPY_BELOW = 1 << 16


class _ChainState:
    """Squared gradients of one chain and the cumulative scales ``c_k`` of its hidden layers.

    Works on torch tensors or NumPy arrays alike (``xp`` is the array module).
    """

    def __init__(self, chain: Chain, grads, xp):
        self.chain, self.xp = chain, xp
        host = (lambda t: t.cpu().numpy()) if xp is np else (lambda t: t)
        sq_w = [host(grads[l.weight].square()) for l in chain]
        n = len(chain)
        # Row sums of layer 0 (unscaled inputs) and column sums of the last layer (unscaled
        # outputs) never change; a bias adds its squared gradient to its unit's row.
        self.row_extra = [None if l.bias is None else host(grads[l.bias].square()) for l in chain]
        self.first_rows = sq_w[0].sum(-1)
        if self.row_extra[0] is not None:
            self.first_rows = self.first_rows + self.row_extra[0]
        self.last_cols = sq_w[-1].sum(-2)
        self.sq_w = sq_w
        ones = (lambda a: np.ones_like(a)) if xp is np else torch.ones_like
        self.scale = [ones(self.first_rows if k == 0 else sq_w[k][..., :, 0]) for k in range(n - 1)]

    def slopes(self) -> list:
        """``∂‖∇L(g·w)‖²/∂d_k`` at ``d = 1`` for every hidden layer ``k`` of the chain."""
        n = len(self.chain)
        sq = [c * c for c in self.scale]  # s_k
        out = []
        for k in range(n - 1):
            if k == 0:
                row = self.first_rows
            else:
                row = (self.sq_w[k] @ (1.0 / sq[k - 1])[..., None])[..., 0]
                if self.row_extra[k] is not None:
                    row = row + self.row_extra[k]
            if k + 1 == n - 1:
                col = self.last_cols
            else:
                col = (sq[k + 1][..., None, :] @ self.sq_w[k + 1])[..., 0, :]
            out.append(2.0 * (sq[k] * row - col / sq[k]))
        return out


def _ascend(states, steps, lr, bound, xp, trail, factors):
    """``steps`` rounds of ``d = 1 + lr · clip(slope)``, ``c ← c · d``; appends to ``trail`` and ``factors``."""
    for _ in range(steps):
        i = 0
        for st in states:
            new = []
            for c, slope in zip(st.scale, st.slopes()):
                if bound is not None:
                    slope = xp.clip(slope, -bound, bound)
                d = 1.0 + lr * slope
                factors[i].append(d)
                new.append(c * d)
                i += 1
            st.scale = new
        trail.append([list(st.scale) for st in states])


def _pick(trail, taken, chain_index, k):
    """Per copy, the scale of hidden layer ``k`` after ``taken`` steps."""
    stacked = torch.stack([torch.as_tensor(t[chain_index][k]) for t in trail]).to(taken.device)
    index = taken.reshape(1, *taken.shape, 1).expand(1, *stacked.shape[1:])
    return stacked.gather(0, index).squeeze(0)


def _apply_scales(params, grads, chains, scales):
    """``(params, grads)`` after the cumulative scales ``scales[chain][k]`` are applied."""
    params, grads = list(params), list(grads)
    for chain, cs in zip(chains, scales):
        for k, layer in enumerate(chain):
            left = cs[k] if k < len(chain) - 1 else None
            right = cs[k - 1] if k > 0 else None
            w, g = params[layer.weight], grads[layer.weight]
            if left is not None:
                w, g = w / left.unsqueeze(-1), g * left.unsqueeze(-1)
            if right is not None:
                w, g = w * right.unsqueeze(-2), g / right.unsqueeze(-2)
            params[layer.weight], grads[layer.weight] = w, g
            if layer.bias is not None and left is not None:
                params[layer.bias] = params[layer.bias] / left
                grads[layer.bias] = grads[layer.bias] * left
    return params, grads


def positive_scale_teleport(
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    chains: Sequence[Chain],
    loss_fn: Callable[[list[torch.Tensor]], torch.Tensor],
    *,
    lr: float = 1e-4,
    steps: int = 10,
    clamp: float | None = 0.1,
    loss_before: torch.Tensor | None = None,
    loss_rtol: float | None = None,
):
    """Gradient ascent on ``‖∇L‖²`` over positive per-unit scales, in closed form.

    ``params``/``grads``: the parameters and ``∇L`` at them (leading batch dimensions
    allowed; they index independent copies, and ``loss_fn`` returns one loss per copy).
    ``chains`` says which parameters are linear layers joined by positively homogeneous
    activations (:mod:`symtele.layout`). ``clamp`` bounds every scale to
    ``[1 − clamp, 1 + clamp]`` per step (``None``: no clipping).

    Returns ``(params, grads, loss, record)`` at the teleported point; the gradient
    is the equivariantly transformed one, no new gradient is computed. A step that
    would make a scale non-positive or non-finite is rejected for that copy, and a
    final point whose loss is not preserved within ``loss_rtol`` is walked back to
    the last step that is.
    """
    lr = checks.positive("lr", lr)
    steps = checks.count("steps", steps)
    if clamp is not None:
        clamp = checks.positive("clamp", clamp)
    params = [p.detach() for p in params]
    grads = [g.detach() for g in grads]
    if len(params) != len(grads):
        raise ValueError(f"Invalid grads: {len(grads)} tensors for {len(params)} params")
    for i, (p, g) in enumerate(zip(params, grads)):
        if p.shape != g.shape:
            raise ValueError(f"Invalid grads[{i}]: shape {tuple(g.shape)} differs from params[{i}] {tuple(p.shape)}")
    checks.finite_tensors("params", params)
    checks.finite_tensors("grads", grads)

    start = time.perf_counter()
    if loss_before is None:
        loss_before = loss_fn(params)
    loss_before = loss_before.detach()
    batch_ndim = loss_before.dim()
    check_shapes(params, chains, batch_ndim)
    rtol = default_rtol(params[0].dtype) if loss_rtol is None else checks.positive("loss_rtol", loss_rtol)
    record = TeleportRecord(method="posscale", loss_before=to_list(loss_before),
                            grad_norm_sq_before=to_list(grad_norm_sq(grads, batch_ndim)))

    small = params[0].device.type == "cpu" and sum(g.numel() for g in grads) < NUMPY_BELOW
    xp = np if small else torch
    states = [_ChainState(chain, grads, xp) for chain in chains]
    bound = None if clamp is None else clamp / lr
    trail = [[list(st.scale) for st in states]]  # trail[j]: the scales after j steps
    factors = [[] for st in states for _ in st.scale]  # per hidden layer, the factor d of each step
    with np.errstate(all="ignore"):  # overflow is detected below and the step rejected
        _ascend(states, steps, lr, bound, xp, trail, factors)

    # Validate all steps at once: a step is good for a copy when every factor is finite and
    # positive and every cumulative scale stays representable; keep each copy's good prefix.
    info = np.finfo if small else torch.finfo
    tiny, huge = info(grads[0].dtype if not small else states[0].first_rows.dtype).tiny ** 0.25, \
        info(grads[0].dtype if not small else states[0].first_rows.dtype).max ** 0.25
    batch = loss_before.shape
    taken = torch.zeros(batch, dtype=torch.long, device=loss_before.device)
    if steps:
        ok = None
        scales_by_layer = [[c for chain_scales in t for c in chain_scales] for t in trail[1:]]
        for i, ds in enumerate(factors):
            d = xp.stack(ds)
            c = xp.stack([layer_scales[i] for layer_scales in scales_by_layer])
            good = (xp.isfinite(d) & (d > 0) & (c > tiny) & (c < huge)).all(-1)
            ok = good if ok is None else ok & good
        if ok is not None:
            taken = torch.as_tensor(ok.cumprod(0).sum(0), device=loss_before.device).long()
    if small:
        def as_torch(cs):
            return [[torch.from_numpy(np.asarray(c)) for c in chain_scales] for chain_scales in cs]
        for st, cs in zip(states, as_torch(trail[-1])):
            st.scale = cs
    if bool((taken < steps).any()):
        record.stopped = "step rejected: a scale left (0, ∞) or overflowed"
        for st_index, st in enumerate(states):
            st.scale = [_pick(trail, taken, st_index, k) for k in range(len(st.scale))]

    scales = [st.scale for st in states]
    back = int(taken.max())
    while True:
        new_params, new_grads = _apply_scales(params, grads, chains, scales)
        loss_after = loss_fn(new_params).detach()
        good = preserved(loss_before, loss_after, rtol)
        for p in new_params:
            good &= torch.isfinite(p).reshape(*loss_before.shape, -1).all(-1)
        if back == 0 or bool(good.all()):
            break
        # Walk the failing copies back one step; step 0 (all scales 1) is the identity.
        back -= 1
        record.stopped = "loss not preserved: walked back to the last step that preserved it"
        taken = torch.where(good, taken, taken.clamp(max=back))
        scales = [[_pick(trail, taken, i, k) for k in range(len(cs))] for i, cs in enumerate(scales)]

    record.steps_taken = int(taken.min())
    record.loss_after = to_list(loss_after)
    record.grad_norm_sq_after = to_list(grad_norm_sq(new_grads, batch_ndim))
    record.cost_s = time.perf_counter() - start
    return new_params, new_grads, loss_after, record
