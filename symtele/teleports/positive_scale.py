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
arithmetic and one forward pass to confirm the loss is unchanged. On small networks
the cost is the number of operations, not their size, so the arithmetic runs in NumPy
and the input checks are single reductions (a sum is finite only if every entry is).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .. import checks
from ..history import TeleportRecord
from ..module_objective import ModuleObjective
from .base import Teleport
from .chains import Chain, check_shapes
from .invariance import default_rtol, preserved

#: below this many gradient entries on the CPU, every step but the loss runs in NumPy on views
#: of the tensors (no copies), whose per-operation overhead is a fraction of torch's; the
#: elementwise operations and the dtype are the same, and so are the results
NUMPY_BELOW = 1 << 16


def _per_copy_sum(a, batch_ndim: int):
    """``Σ a`` over every non-batch dimension: one value per problem copy (torch or NumPy)."""
    return a.reshape(*a.shape[:batch_ndim], -1).sum(-1)


def _all_finite_or_raise(name: str, tensors, arrays, xp) -> None:
    """Raise like :func:`checks.finite_tensor` if an entry is nan or ±inf.

    One reduction per tensor: a sum is finite only if every entry is, so the exact,
    entrywise check runs only when a sum is not (an overflowing sum passes it).
    """
    for i, a in enumerate(arrays):
        if not bool(xp.isfinite(a.sum())):
            checks.finite_tensor(f"{name}[{i}]", tensors[i])


class _ChainState:
    """Squared gradients of one chain and the cumulative scales of all its hidden units.

    ``scale`` holds ``c_0, …, c_{n−2}`` side by side (``segments[k]`` is the slice of
    hidden layer ``k``), so each ascent step is a few operations on one vector whatever
    the depth. Works on torch tensors or NumPy arrays alike (``xp`` is the array module);
    ``sq`` holds the squared gradient of every parameter.
    """

    def __init__(self, chain: Chain, sq, xp):
        self.chain, self.xp = chain, xp
        sq_w = [sq[layer.weight] for layer in chain]
        # Row sums of layer 0 (unscaled inputs) and column sums of the last layer (unscaled
        # outputs) never change; a bias adds its squared gradient to its unit's row.
        self.row_extra = [None if layer.bias is None else sq[layer.bias] for layer in chain]
        self.first_rows = sq_w[0].sum(-1)
        if self.row_extra[0] is not None:
            self.first_rows = self.first_rows + self.row_extra[0]
        self.last_cols = sq_w[-1].sum(-2)
        self.sq_w = sq_w
        self.segments, start = [], 0
        for w in sq_w[:-1]:
            self.segments.append(slice(start, start + w.shape[-2]))
            start += w.shape[-2]
        shape = (*self.first_rows.shape[:-1], start)
        self.scale = (
            np.ones(shape, dtype=sq_w[0].dtype)
            if xp is np
            else torch.ones(shape, dtype=sq_w[0].dtype, device=sq_w[0].device)
        )

    def half_slopes(self):
        """``½ ∂‖∇L(g·w)‖²/∂d`` at ``d = 1``, every hidden unit: ``s · row − col / s``, ``s = c²``."""
        n = len(self.chain)
        s = self.scale * self.scale
        parts = [s[..., seg] for seg in self.segments]
        rows, cols = [self.first_rows], []
        for k in range(1, n - 1):
            row = (self.sq_w[k] @ (1.0 / parts[k - 1])[..., None])[..., 0]
            rows.append(row if self.row_extra[k] is None else row + self.row_extra[k])
        for k in range(n - 2):
            cols.append((parts[k + 1][..., None, :] @ self.sq_w[k + 1])[..., 0, :])
        cols.append(self.last_cols)
        cat = np.concatenate if self.xp is np else torch.cat
        row = rows[0] if len(rows) == 1 else cat(rows, -1)
        col = cols[0] if len(cols) == 1 else cat(cols, -1)
        return s * row - col / s

    def layer_scales(self, scale) -> list:
        """``scale`` split into the hidden layers' ``c_k``."""
        return [scale[..., seg] for seg in self.segments]


def _ascend(states, steps, lr, bound, xp, trail, factors):
    """``steps`` rounds of ``d = 1 + lr · clip(2 · half_slope, ±bound)``, ``c ← c · d``.

    Written as ``d = 1 + 2lr · clip(half_slope, ±bound/2)``: scaling by two is exact in
    binary floating point, so the factors are bit for bit those of the first form.
    Appends the scales after each step to ``trail`` and the factors to ``factors``.
    """
    half = None if bound is None else bound / 2
    if half is None:

        def clip(a):
            return a
    elif xp is np:  # np.clip's Python wrapper costs more than the two ufuncs

        def clip(a):
            return np.minimum(np.maximum(a, -half), half)
    else:

        def clip(a):
            return a.clamp(-half, half)

    lr2 = 2.0 * lr
    for _ in range(steps):
        for i, st in enumerate(states):
            d = 1.0 + lr2 * clip(st.half_slopes())
            factors[i].append(d)
            st.scale = st.scale * d
        trail.append([st.scale for st in states])


def _good_steps(trail, factors, steps, batch, xp, info, device, clamp):
    """Per copy, how many leading steps kept every factor finite and positive and every scale representable.

    When ``clamp < 1`` and ``(1 ± clamp)^steps`` stay well inside the representable
    range, every factor lies in ``[1 − clamp, 1 + clamp]`` unless it is nan, and a nan
    factor makes every later cumulative scale nan: then checking the final scales is
    the same test, at a fraction of the operations.
    """
    zeros = np.zeros if xp is np else (lambda shape, dtype: torch.zeros(shape, dtype=dtype, device=device))
    if not steps or not factors:
        return zeros(batch, dtype=np.int64 if xp is np else torch.long)
    tiny, huge = info.tiny**0.25, info.max**0.25
    if clamp is not None and clamp < 1 and (1 - clamp) ** steps > 2 * tiny and (1 + clamp) ** steps < huge / 2:
        if all(bool(xp.isfinite(c).all()) for c in trail[-1]):
            return zeros(batch, dtype=np.int64 if xp is np else torch.long) + steps
    ok = None
    for i, ds in enumerate(factors):
        d = xp.stack(ds)
        c = xp.stack([t[i] for t in trail[1:]])
        good = (xp.isfinite(d) & (d > 0) & (c > tiny) & (c < huge)).all(-1)
        ok = good if ok is None else ok & good
    taken = ok.cumprod(0).sum(0)
    return np.asarray(taken) if xp is np else taken.long()


def _pick(trail, taken, i, xp):
    """Per copy, the scales of chain ``i`` after ``taken`` steps."""
    stacked = xp.stack([t[i] for t in trail])
    if xp is np:
        index = np.broadcast_to(taken[None, ..., None], (1, *stacked.shape[1:]))
        return np.take_along_axis(stacked, index, 0)[0]
    index = taken.reshape(1, *taken.shape, 1).expand(1, *stacked.shape[1:])
    return stacked.gather(0, index)[0]


def _apply_scales(params, grads, states, scales):
    """``(params, grads)`` after each chain's cumulative scales ``scales[i]`` are applied (torch or NumPy)."""
    params, grads = list(params), list(grads)
    for st, scale in zip(states, scales):
        chain, cs = st.chain, st.layer_scales(scale)
        for k, layer in enumerate(chain):
            left = cs[k] if k < len(chain) - 1 else None
            right = cs[k - 1] if k > 0 else None
            w, g = params[layer.weight], grads[layer.weight]
            if left is not None:
                w, g = w / left[..., None], g * left[..., None]
            if right is not None:
                w, g = w * right[..., None, :], g / right[..., None, :]
            params[layer.weight], grads[layer.weight] = w, g
            if layer.bias is not None and left is not None:
                params[layer.bias] = params[layer.bias] / left
                grads[layer.bias] = grads[layer.bias] * left
    return params, grads


def _checked_pairs(params, grads) -> tuple[list, list]:
    """Detached ``params`` and ``grads``, pairwise of one shape and floating point; raises naming any that is not."""
    params = [p.detach() for p in params]
    grads = [g.detach() for g in grads]
    if len(params) != len(grads):
        raise ValueError(f"Invalid grads: {len(grads)} tensors for {len(params)} params")
    for i, (p, g) in enumerate(zip(params, grads)):
        if p.shape != g.shape:
            raise ValueError(f"Invalid grads[{i}]: shape {tuple(g.shape)} differs from params[{i}] {tuple(p.shape)}")
        if not (p.is_floating_point() and g.is_floating_point()):
            raise TypeError(f"Invalid params[{i}]/grads[{i}]: dtypes {p.dtype}, {g.dtype} (expected floating point)")
    if not params:
        raise ValueError("Invalid params: empty sequence")
    return params, grads


@dataclass
class _Arrays:
    """The parameters and gradients as the arithmetic sees them: NumPy views (no copies) of small CPU
    tensors, else the tensors themselves; ``xp`` is the array module."""

    xp: object
    params: list
    grads: list
    batch_ndim: int = 0

    @classmethod
    def of(cls, params, grads) -> _Arrays:
        if params[0].device.type == "cpu" and sum(g.numel() for g in grads) < NUMPY_BELOW:
            return cls(np, [p.numpy() for p in params], [g.numpy() for g in grads])
        return cls(torch, params, grads)

    def tensors(self, arrays) -> list[torch.Tensor]:
        return [torch.from_numpy(a) for a in arrays] if self.xp is np else arrays

    def norm_per_copy(self, squares):
        """``Σ`` of every array's entries over its non-batch dimensions, summed over the arrays."""
        total = None
        for s in squares:
            part = _per_copy_sum(s, self.batch_ndim)
            total = part if total is None else total + part
        return total

    def finite_per_copy(self, arrays):
        """Per copy, whether every entry of every array is finite (one reduction per array when all are)."""
        good = True
        for a in arrays:
            finite = self.xp.isfinite(_per_copy_sum(a, self.batch_ndim))
            if not bool(finite.all()):
                finite = self.xp.isfinite(a).reshape(*a.shape[: self.batch_ndim], -1).all(-1)
            good = good & finite
        return good


def _checked_loss(loss_fn, params, loss_before, batch_ndim: int) -> torch.Tensor:
    """``L`` at the start, computed unless given; one value per copy."""
    loss_before = (loss_fn(params) if loss_before is None else loss_before).detach()
    if loss_before.dim() != batch_ndim:
        raise ValueError(
            f"Invalid loss_before: shape {tuple(loss_before.shape)} (expected {batch_ndim} batch "
            "dimensions, one loss per copy)"
        )
    return loss_before


def _walk_back(arrays, states, trail, taken, loss_fn, loss_before, rtol, record):
    """Apply each copy's scales after ``taken`` steps; a copy whose loss is not preserved within ``rtol``
    (or whose point is not finite) goes back one step at a time, down to step 0, the identity.

    Returns ``(params, grads, loss, taken)`` at the accepted points.
    """
    xp = arrays.xp
    scales = [st.scale for st in states]
    back = int(taken.max())
    while True:
        new, new_grads = _apply_scales(arrays.params, arrays.grads, states, scales)
        new_params = arrays.tensors(new)
        loss_after = loss_fn(new_params).detach()
        good = preserved(loss_before, loss_after, rtol)
        good = (good.numpy() if xp is np else good) & arrays.finite_per_copy(new)
        if back == 0 or bool(good.all()):
            return new_params, new_grads, loss_after, taken
        back -= 1
        record.stopped = "loss not preserved: walked back to the last step that preserved it"
        taken = xp.where(good, taken, taken.clip(max=back))
        scales = [_pick(trail, taken, i, xp) for i in range(len(states))]


def positive_scale_teleport(
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    chains: Sequence[Chain],
    loss_fn: Callable[[list[torch.Tensor]], torch.Tensor],
    *,
    loss_before: torch.Tensor | None = None,
    **options,
):
    """Gradient ascent on ``‖∇L‖²`` over positive per-unit scales, in closed form.

    ``params``/``grads``: the parameters and ``∇L`` at them (leading batch dimensions
    allowed; they index independent copies, and ``loss_fn`` returns one loss per copy).
    ``chains`` says which parameters are linear layers joined by positively homogeneous
    activations (:mod:`symtele.teleports.chains`). ``options`` are the fields of
    :class:`PositiveScale` (``lr``, ``steps``, ``clamp``, ``loss_rtol``): ``clamp`` bounds every
    scale to ``[1 − clamp, 1 + clamp]`` per step (``None``: no clipping).

    Returns ``(params, grads, loss, record)`` at the teleported point; the gradient
    is the equivariantly transformed one, no new gradient is computed. A step that
    would make a scale non-positive or non-finite is rejected for that copy, and a
    final point whose loss is not preserved within ``loss_rtol`` (or that is not
    finite) is walked back to the last step that is.
    """
    return _teleport(params, grads, chains, loss_fn, PositiveScale(**options), loss_before)


def _teleport(params, grads, chains, loss_fn, o: PositiveScale, loss_before):
    """:func:`positive_scale_teleport` with its options checked: check, ascend, verify or walk back, record."""
    lr, steps, clamp = o.lr, o.steps, o.clamp
    params, grads = _checked_pairs(params, grads)
    arrays = _Arrays.of(params, grads)
    xp = arrays.xp

    with np.errstate(all="ignore"):  # overflow and nan are detected and handled below
        _all_finite_or_raise("params", params, arrays.params, xp)
        arrays.batch_ndim = params[chains[0][0].weight].dim() - 2 if chains and chains[0] else 0
        check_shapes(params, chains, arrays.batch_ndim)
        sq = [g * g for g in arrays.grads]
        norm_before = arrays.norm_per_copy(sq)
        if not bool(xp.isfinite(norm_before).all()):
            checks.finite_tensors("grads", grads)  # raises unless the squares merely overflowed

        start = time.perf_counter()
        loss_before = _checked_loss(loss_fn, params, loss_before, arrays.batch_ndim)
        rtol = default_rtol(params[0].dtype) if o.loss_rtol is None else o.loss_rtol
        record = TeleportRecord(
            method="posscale", loss_before=loss_before.tolist(), grad_norm_sq_before=norm_before.tolist()
        )

        # Ascend: every step on all chains at once, keeping the scales after each step.
        states = [_ChainState(chain, sq, xp) for chain in chains if len(chain) > 1]
        trail = [[st.scale for st in states]]  # trail[j][i]: the scales of chain i after j steps
        factors = [[] for _ in states]  # per chain, the factors d of each step
        _ascend(states, steps, lr, None if clamp is None else clamp / lr, xp, trail, factors)

        # Verify all steps at once and keep each copy's good prefix of steps, then walk back if needed.
        info = (np.finfo if xp is np else torch.finfo)(sq[0].dtype)
        taken = _good_steps(trail, factors, steps, loss_before.shape, xp, info, loss_before.device, clamp)
        if bool((taken < steps).any()):
            record.stopped = "step rejected: a scale left (0, ∞) or overflowed"
            for i, st in enumerate(states):
                st.scale = _pick(trail, taken, i, xp)
        new_params, new_grads, loss_after, taken = _walk_back(
            arrays, states, trail, taken, loss_fn, loss_before, rtol, record
        )
        norm_after = arrays.norm_per_copy([g * g for g in new_grads])

    record.steps_taken = int(taken.min())
    record.loss_after = loss_after.tolist()
    record.grad_norm_sq_after = norm_after.tolist()
    record.cost_s = time.perf_counter() - start
    return new_params, arrays.tensors(new_grads), loss_after, record


@dataclass(frozen=True)
class PositiveScale(Teleport):
    """Positive per-unit rescaling of every pair of adjacent layers, in closed form: ``steps`` ascent
    steps of size ``lr``, each scale kept within ``1 ± clamp`` per step, the loss kept within
    ``loss_rtol`` (``None``: the dtype's default, :mod:`symtele.teleports.invariance`)."""

    name = "posscale"
    lr: float = 1e-4
    steps: int = 10
    clamp: float | None = 0.1
    loss_rtol: float | None = None

    def __post_init__(self):
        self._set(
            lr=checks.positive("lr", self.lr),
            steps=checks.count("steps", self.steps),
            clamp=None if self.clamp is None else checks.positive("clamp", self.clamp),
            loss_rtol=None if self.loss_rtol is None else checks.positive("loss_rtol", self.loss_rtol),
        )

    def check(self, objective, params):
        chains = getattr(objective, "chains", None)
        if chains is None:
            raise TypeError(
                f"Invalid teleport: positive scaling needs a ReLU/LeakyReLU network, not {type(objective).__name__}"
            )
        if not any(len(chain) > 1 for chain in chains):
            raise ValueError("Invalid teleport: positive scaling needs at least 2 layers")

    def __call__(self, objective, params, grads, loss):
        return _teleport(params, grads, objective.chains, objective.loss, self, loss)


def teleport_sequential(
    model: nn.Sequential, loss_fn: Callable, inputs: torch.Tensor, targets: torch.Tensor, **options
):
    """Positive-scale teleport of an ``nn.Sequential``, written back into the module.

    One forward and backward pass gives ``∇L``; the ``steps`` ascent steps on ``‖∇L‖²`` then
    cost only vector arithmetic (:func:`positive_scale_teleport`; ``options`` are the fields of
    :class:`PositiveScale`). Returns the :class:`~symtele.history.TeleportRecord`.
    """
    teleport = PositiveScale(**options)  # checks the options before any compute
    objective = ModuleObjective(model, loss_fn, inputs, targets)
    chains = objective.chains  # validates the layers before any compute
    params = objective.initial_params()
    loss, grads = objective.loss_and_grad(params)
    new_params, _, _, record = _teleport(params, grads, chains, objective.loss, teleport, loss)
    objective.write_back(new_params)
    return record
