"""Positive-scale teleportation in closed form, through gradient equivariance, along a :class:`Symmetry`.

A :class:`~symtele.teleports.symmetry.Symmetry` lists the positive per-unit rescalings of a network
(:func:`~symtele.teleports.discovery.discover` finds them in any ``nn.Module``;
:func:`~symtele.regression.weight_chain_symmetry` states them for a list of bias-free weights). Rescaling
unit ``u`` by ``d_u > 0`` divides the entries of the parameters that produce it by ``d_u`` and multiplies
those of the parameters that read it, ``W_k ← D_k⁻¹ W_k D_{k−1}``, ``b_k ← D_k⁻¹ b_k`` in a chain of linear
layers, and leaves the loss unchanged. Because the action is linear, the gradient is equivariant:

    ∇_{W_k} L(g·w) = D_k ∇_{W_k} L(w) D_{k−1}⁻¹,     ∇_{b_k} L(g·w) = D_k ∇_{b_k} L(w).

So ``‖∇L(g·w)‖²`` is an explicit function of the scales and of the current gradient ``G``. With ``c`` the
product of all the scales applied so far and ``s = c²``, every unit ``u`` has

    row_u = Σ_{p producing u} Σ_{entries e of p on u} G_p[e]² / s[reader of e]
    col_u = Σ_{p reading u} Σ_{entries e of p on u} G_p[e]² · s[producer of e]

(``s = 1`` where no scale acts), and the derivative of ``‖∇L‖²`` in ``d_u`` at ``d = 1`` is
``2 (s_u · row_u − col_u / s_u)``. Each ascent step sets

    d = 1 + lr · clip(∂‖∇L‖²/∂d, −clamp/lr, clamp/lr),     c ← c · d,

the course project's step, which is what double backpropagation through ``‖∇L(g·w)‖²``
(:func:`~symtele.teleports.rescale.gradient_norm_reference`) computes, at the cost of two matrix–vector
products per parameter instead of a forward–backward–backward pass. A ``k``-step teleport therefore costs
one gradient (given), ``O(k · #params)`` arithmetic and one forward pass to confirm the loss is unchanged.
The closed form handles any parameter that its producing scales act on along one axis and its reading scales
along another (``Linear`` and convolution weights, biases); the other axes are summed once. On small networks
the cost is the number of operations, not their size, so the arithmetic runs in NumPy and the input checks
are single reductions (a sum is finite only if every entry is).
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .. import checks
from ..history import TeleportRecord, to_list
from ..module_objective import ModuleObjective
from ..objective import grad_norm_sq
from .base import Teleport
from .invariance import default_rtol, preserved
from .rescale import reference_teleport
from .symmetry import Symmetry

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


@dataclass(frozen=True)
class _Axis:
    """Where a parameter's producing (or reading) scales act.

    Along ``axis`` (of the parameter's own, non-batch dimensions), entry ``j`` by scale ``units[j]`` (a long
    tensor; ``n_scales`` means none).
    """

    axis: int
    units: torch.Tensor


def _axis_of(name: str, units: torch.Tensor, shape: tuple, producer: bool) -> _Axis:
    """The one axis along which the units of a term vary.

    A term with one unit for the whole parameter acts along its first (producer) or last (reader) axis of
    size 1, else along its first or last axis. Raises ``ValueError`` if the units vary along several axes.
    """
    varying = [i for i, n in enumerate(units.shape) if n > 1]
    if len(varying) > 1:
        raise ValueError(
            f"Invalid symmetry: {name} is rescaled along {len(varying)} axes by one term; the positive-scale "
            "teleport's closed form needs one axis per term (Rescale acts on any symmetry)"
        )
    if varying:
        axis = varying[0]
    else:
        ones = [i for i, n in enumerate(shape) if n == 1] or list(range(len(shape)))
        axis = ones[0] if producer else ones[-1]
    return _Axis(axis, units.reshape(-1).expand(shape[axis]).contiguous())


@dataclass(frozen=True)
class _Acted:
    """One parameter a scale acts on.

    Its index in the parameter list, its name, the axes of its producing and reading scales (``None``: no such
    scale), and its other axes, summed once.
    """

    index: int
    name: str
    producer: _Axis | None
    reader: _Axis | None
    free: tuple[int, ...]


def _acted(symmetry: Symmetry, names: Sequence[str], shapes: Sequence[tuple]) -> tuple[list[_Acted], int]:
    """The parameters ``symmetry`` acts on, as :class:`_Acted`, and the number of their leading batch dimensions.

    The batch dimensions are the same for all the parameters; raises ``ValueError`` naming a parameter the
    terms do not fit, or one that the closed form does not handle.
    """
    position = {n: i for i, n in enumerate(names)}
    acted, batch_ndim = [], None
    for name in symmetry.params:
        if name not in position:
            raise ValueError(f"Invalid symmetry: it acts on {name!r}, which is not among the parameters {list(names)}")
        i = position[name]
        terms = [t for t in symmetry.terms if t.param == name]
        shape = shapes[i]
        ndim = terms[0].units.dim()
        own = tuple(shape[len(shape) - ndim :]) if len(shape) >= ndim else None
        if own is None or any(
            t.units.dim() != ndim or any(a not in (1, b) for a, b in zip(t.units.shape, own)) for t in terms
        ):
            raise ValueError(
                f"Invalid params[{i}] ({name}): shape {tuple(shape)} does not fit the symmetry's units of shape "
                f"{tuple(terms[0].units.shape)}"
            )
        if batch_ndim is None:
            batch_ndim = len(shape) - ndim
        elif len(shape) - ndim != batch_ndim:
            raise ValueError(
                f"Invalid params[{i}] ({name}): {len(shape) - ndim} batch dimensions, the first parameter has "
                f"{batch_ndim}"
            )
        producing = [t for t in terms if t.sign < 0]
        reading = [t for t in terms if t.sign > 0]
        if len(producing) > 1 or len(reading) > 1:
            raise ValueError(
                f"Invalid symmetry: {name} has {len(producing)} producing and {len(reading)} reading terms; the "
                "positive-scale teleport's closed form needs at most one of each (Rescale acts on any symmetry)"
            )
        producer = _axis_of(name, producing[0].units, own, True) if producing else None
        reader = _axis_of(name, reading[0].units, own, False) if reading else None
        if producer is not None and reader is not None and producer.axis == reader.axis:
            raise ValueError(
                f"Invalid symmetry: {name} is divided and multiplied along the same axis {producer.axis}; the "
                "positive-scale teleport's closed form needs two (Rescale acts on any symmetry)"
            )
        used = {a.axis for a in (producer, reader) if a is not None}
        acted.append(_Acted(i, name, producer, reader, tuple(a for a in range(ndim) if a not in used)))
    return acted, batch_ndim or 0


class _Index:
    """A parameter axis's units for the array module at hand.

    A slice when they are consecutive scales (a view, and the sums of a chain's arithmetic bit for bit), else an
    index array.
    """

    def __init__(self, units: torch.Tensor, n: int, xp, device):
        first = int(units[0]) if units.numel() else 0
        consecutive = units.numel() and int(units[-1]) < n
        consecutive = consecutive and bool((units == torch.arange(first, first + units.numel())).all())
        self.slice = slice(first, first + units.numel()) if consecutive else None
        self.array = None if consecutive else (units.cpu().numpy() if xp is np else units.to(device))

    def take(self, values, padded):
        """``values[..., units]``; ``padded`` is ``values`` with a 1 appended (the "no scale" entry)."""
        return values[..., self.slice] if self.slice is not None else padded[..., self.array]

    def add(self, total, part, xp) -> None:
        """``total[..., units] += part``, repeated units summed."""
        if self.slice is not None:
            total[..., self.slice] += part
        elif xp is np:
            np.add.at(total, (Ellipsis, self.array), part)
        else:
            total.index_add_(-1, self.array, part)


class _Plan:
    """How the symmetry acts on the parameter list, for one array module and device (see :func:`_plan`)."""

    def __init__(self, symmetry: Symmetry, acted: list[_Acted], batch_ndim: int, xp, device):
        self.n, self.acted, self.batch_ndim = symmetry.n_scales, acted, batch_ndim
        n = self.n

        def index(axis):
            return None if axis is None else _Index(axis.units, n, xp, device)

        self.indices = [(index(a.producer), index(a.reader)) for a in acted]
        self.padded = any(i is not None and i.slice is None for pair in self.indices for i in pair)


_PLANS: dict[int, dict] = {}


def _plan(symmetry: Symmetry, names, shapes, xp, device) -> _Plan:
    """:class:`_Plan` of ``symmetry`` for parameters of these names and shapes, kept while ``symmetry`` lives."""
    plans = _PLANS.get(id(symmetry))
    if plans is None:
        plans = _PLANS[id(symmetry)] = {}
        weakref.finalize(symmetry, _PLANS.pop, id(symmetry), None)
    key = (tuple(names), tuple(shapes), xp is np, str(device))
    found = plans.get(key)
    if found is None:
        acted, batch_ndim = _acted(symmetry, names, shapes)
        found = plans[key] = _Plan(symmetry, acted, batch_ndim, xp, device)
    return found


def _with_one(values, xp):
    """``values`` with a 1 appended along the last axis: the factor of "no scale"."""
    if xp is np:
        return np.concatenate([values, np.ones((*values.shape[:-1], 1), values.dtype)], -1)
    return torch.cat([values, values.new_ones(*values.shape[:-1], 1)], -1)


class _ScaleState:
    """The squared gradients the ascent needs and the cumulative scales ``c`` of every unit.

    Each acted parameter's squared gradient is summed once over its free axes and laid out as
    ``(…, producer axis, reader axis)``; the row and column sums that no scale changes (a parameter with
    only a producing or only a reading scale) are summed once into ``base_rows``/``base_cols``, so each
    ascent step is two matrix–vector products per parameter with both and a few operations on one vector
    of all the scales. Works on torch tensors or NumPy arrays alike (``xp`` is the array module).
    """

    def __init__(self, plan: _Plan, sq, xp):
        self.plan, self.xp = plan, xp
        b = plan.batch_ndim
        like = sq[plan.acted[0].index] if plan.acted else sq[0]
        shape = (*like.shape[:b], plan.n + 1)
        if xp is np:
            self.base_rows, self.base_cols = np.zeros(shape, like.dtype), np.zeros(shape, like.dtype)
        else:
            self.base_rows = torch.zeros(shape, dtype=like.dtype, device=like.device)
            self.base_cols = torch.zeros_like(self.base_rows)
        self.both = []  # (squares as (…, P, C), producer index, reader index)
        for a, (p_index, r_index) in zip(plan.acted, plan.indices):
            red = sq[a.index]
            if a.free:
                red = red.sum(tuple(b + f for f in a.free))
            if p_index is None:
                r_index.add(self.base_cols, red, xp)
            elif r_index is None:
                p_index.add(self.base_rows, red, xp)
            else:
                if a.producer.axis > a.reader.axis:
                    red = red.swapaxes(-1, -2) if xp is np else red.transpose(-1, -2)
                self.both.append((red, p_index, r_index))
        ones = (*shape[:-1], plan.n)
        self.scale = np.ones(ones, like.dtype) if xp is np else torch.ones(ones, dtype=like.dtype, device=like.device)

    def _padded(self, values):
        return _with_one(values, self.xp) if self.plan.padded else None

    def half_slopes(self):
        """``½ ∂‖∇L(g·w)‖²/∂d`` at ``d = 1``, every unit: ``s · row − col / s``, ``s = c²``."""
        n = self.plan.n
        s = self.scale * self.scale
        if not self.both:
            return s * self.base_rows[..., :n] - self.base_cols[..., :n] / s
        inv = 1.0 / s
        s_pad, inv_pad = self._padded(s), self._padded(inv)
        rows = self.base_rows.copy() if self.xp is np else self.base_rows.clone()
        cols = self.base_cols.copy() if self.xp is np else self.base_cols.clone()
        for red, p_index, r_index in self.both:
            p_index.add(rows, (red @ r_index.take(inv, inv_pad)[..., None])[..., 0], self.xp)
            r_index.add(cols, (p_index.take(s, s_pad)[..., None, :] @ red)[..., 0, :], self.xp)
        return s * rows[..., :n] - cols[..., :n] / s


def _ascend(state, steps, lr, bound, xp, trail, factors):
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
        d = 1.0 + lr2 * clip(state.half_slopes())
        factors.append(d)
        state.scale = state.scale * d
        trail.append(state.scale)


def _good_steps(trail, factors, steps, batch, xp, info, device, clamp):
    """Per copy, how many leading steps kept every factor finite and positive and every scale representable.

    When ``clamp < 1`` and ``(1 ± clamp)^steps`` stay well inside the representable
    range, every factor lies in ``[1 − clamp, 1 + clamp]`` unless it is nan, and a nan
    factor makes every later cumulative scale nan: then checking the final scales is
    the same test, at a fraction of the operations.
    """
    zeros = np.zeros if xp is np else (lambda shape, dtype: torch.zeros(shape, dtype=dtype, device=device))
    if not steps:
        return zeros(batch, dtype=np.int64 if xp is np else torch.long)
    tiny, huge = info.tiny**0.25, info.max**0.25
    if clamp is not None and clamp < 1 and (1 - clamp) ** steps > 2 * tiny and (1 + clamp) ** steps < huge / 2:
        if bool(xp.isfinite(trail[-1]).all()):
            return zeros(batch, dtype=np.int64 if xp is np else torch.long) + steps
    d = xp.stack(factors)
    c = xp.stack(trail[1:])
    ok = (xp.isfinite(d) & (d > 0) & (c > tiny) & (c < huge)).all(-1)
    taken = ok.cumprod(0).sum(0)
    return np.asarray(taken) if xp is np else taken.long()


def _pick(trail, taken, xp):
    """Per copy, the scales after ``taken`` steps."""
    stacked = xp.stack(trail)
    if xp is np:
        index = np.broadcast_to(taken[None, ..., None], (1, *stacked.shape[1:]))
        return np.take_along_axis(stacked, index, 0)[0]
    index = taken.reshape(1, *taken.shape, 1).expand(1, *stacked.shape[1:])
    return stacked.gather(0, index)[0]


def _apply_scales(params, grads, plan: _Plan, scale, xp):
    """``(params, grads)`` after the cumulative scales ``scale`` are applied (torch or NumPy).

    A parameter is divided by its producing scales and multiplied by its reading ones, its gradient the other
    way round.
    """
    params, grads = list(params), list(grads)
    padded = _with_one(scale, xp) if plan.padded else None
    b = plan.batch_ndim
    for a, (p_index, r_index) in zip(plan.acted, plan.indices):
        w, g = params[a.index], grads[a.index]
        ndim = w.ndim - b
        for axis, index, divide in ((a.producer, p_index, True), (a.reader, r_index, False)):
            if index is None:
                continue
            f = index.take(scale, padded)
            f = f.reshape(*f.shape[:-1], *(f.shape[-1] if k == axis.axis else 1 for k in range(ndim)))
            w, g = (w / f, g * f) if divide else (w * f, g / f)
        params[a.index], grads[a.index] = w, g
    return params, grads


def _checked_pairs(params, grads) -> tuple[list, list]:
    """Detached ``params`` and ``grads``, pairwise of one shape and floating point.

    Raises ``ValueError``/``TypeError`` naming any that is not, and ``ValueError`` for an empty ``params``.
    """
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
    """The parameters and gradients as the arithmetic sees them.

    NumPy views (no copies) of small CPU tensors, else the tensors themselves; ``xp`` is the array module.
    """

    xp: object
    params: list
    grads: list
    batch_ndim: int = 0

    @classmethod
    def of(cls, params, grads) -> _Arrays:
        """NumPy views when the tensors are on the CPU with fewer than :data:`NUMPY_BELOW` gradient entries.

        Args:
            params: the parameters (tensors).
            grads: their gradients (tensors).

        Returns:
            The :class:`_Arrays` (``batch_ndim`` is 0 until the caller sets it).
        """
        if params[0].device.type == "cpu" and sum(g.numel() for g in grads) < NUMPY_BELOW:
            return cls(np, [p.numpy() for p in params], [g.numpy() for g in grads])
        return cls(torch, params, grads)

    def tensors(self, arrays) -> list[torch.Tensor]:
        """``arrays`` as torch tensors (sharing memory with NumPy arrays).

        Args:
            arrays: arrays of this object's array module.

        Returns:
            The tensors.
        """
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


def _walk_back(arrays, plan, scale, trail, taken, loss_fn, loss_before, rtol, record):
    """Apply each copy's scales after ``taken`` steps, walking back where the loss is not kept.

    A copy whose loss is not preserved within ``rtol`` (or whose point is not finite) goes back one step at a
    time, down to step 0, the identity.

    Returns ``(params, grads, loss, taken)`` at the accepted points.
    """
    xp = arrays.xp
    back = int(taken.max())
    while True:
        new, new_grads = _apply_scales(arrays.params, arrays.grads, plan, scale, xp)
        new_params = arrays.tensors(new)
        loss_after = loss_fn(new_params).detach()
        good = preserved(loss_before, loss_after, rtol)
        good = (good.numpy() if xp is np else good) & arrays.finite_per_copy(new)
        if back == 0 or bool(good.all()):
            return new_params, new_grads, loss_after, taken
        back -= 1
        record.stopped = "loss not preserved: walked back to the last step that preserved it"
        taken = xp.where(good, taken, taken.clip(max=back))
        scale = _pick(trail, taken, xp)


def positive_scale_teleport(
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    symmetry: Symmetry,
    loss_fn: Callable[[list[torch.Tensor]], torch.Tensor],
    *,
    names: Sequence[str] | None = None,
    loss_before: torch.Tensor | None = None,
    **options,
):
    """Gradient ascent on ``‖∇L‖²`` over positive per-unit scales, in closed form.

    Args:
        params: the parameters; leading batch dimensions (the same for every parameter a scale acts on)
            index independent copies, each with its own scales.
        grads: ``∇L`` at ``params``, one tensor per parameter.
        symmetry: the rescalings (:func:`~symtele.teleports.rescale.symmetry_of` of a module,
            :func:`~symtele.regression.weight_chain_symmetry` of a list of weights).
        loss_fn: maps a list of parameters to the loss, one value per copy.
        names: the name of each parameter in ``symmetry``'s terms (``None``: ``"0"``, ``"1"``, … by position).
        loss_before: ``loss_fn(params)`` if already known.
        **options: the fields of :class:`PositiveScale`: ``lr``, ``steps``, ``clamp`` (every scale stays within
            ``[1 − clamp, 1 + clamp]`` per step; ``None``: no clipping) and ``loss_rtol``.

    Returns:
        ``(params, grads, loss, record)`` at the teleported point; the gradient is the equivariantly transformed
        one, no new gradient is computed. A step that would make a scale non-positive or non-finite is rejected
        for that copy, and a final point whose loss is not preserved within ``loss_rtol`` (or that is not finite)
        is walked back to the last step that is.

    Raises:
        ValueError: bad options, mismatched or non-finite ``params``/``grads``, or a ``symmetry`` that does not
            fit the parameters or that the closed form does not handle.
        TypeError: parameters that are not floating point.
    """
    o = PositiveScale(**options)
    names = [str(i) for i in range(len(params))] if names is None else list(names)
    return _teleport(params, grads, symmetry, names, loss_fn, o, loss_before)


def _teleport(params, grads, symmetry, names, loss_fn, o: PositiveScale, loss_before):
    """:func:`positive_scale_teleport` with its options checked: check, ascend, verify or walk back, record."""
    lr, steps, clamp = o.lr, o.steps, o.clamp
    params, grads = _checked_pairs(params, grads)
    if len(names) != len(params):
        raise ValueError(f"Invalid names: {len(names)} for {len(params)} params")
    arrays = _Arrays.of(params, grads)
    xp = arrays.xp

    with np.errstate(all="ignore"):  # overflow and nan are detected and handled below
        _all_finite_or_raise("params", params, arrays.params, xp)
        plan = _plan(symmetry, names, [p.shape for p in params], xp, params[0].device)
        arrays.batch_ndim = plan.batch_ndim
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

        # Ascend, keeping the scales after each step.
        state = _ScaleState(plan, sq, xp)
        trail, factors = [state.scale], []  # trail[j]: the scales after j steps; factors[j]: step j's d
        _ascend(state, steps, lr, None if clamp is None else clamp / lr, xp, trail, factors)

        # Verify all steps at once and keep each copy's good prefix of steps, then walk back if needed.
        info = (np.finfo if xp is np else torch.finfo)(sq[0].dtype)
        taken = _good_steps(trail, factors, steps, loss_before.shape, xp, info, loss_before.device, clamp)
        scale = state.scale
        if bool((taken < steps).any()):
            record.stopped = "step rejected: a scale left (0, ∞) or overflowed"
            scale = _pick(trail, taken, xp)
        new_params, new_grads, loss_after, taken = _walk_back(
            arrays, plan, scale, trail, taken, loss_fn, loss_before, rtol, record
        )
        norm_after = arrays.norm_per_copy([g * g for g in new_grads])

    record.steps_taken = int(taken.min())
    record.loss_after = loss_after.tolist()
    record.grad_norm_sq_after = norm_after.tolist()
    record.cost_s = time.perf_counter() - start
    return new_params, arrays.tensors(new_grads), loss_after, record


def _symmetry_of(objective, params) -> Symmetry:
    """The objective's rescalings (its ``symmetry(params)``); raises naming an objective that has none."""
    find = getattr(objective, "symmetry", None)
    if find is None or not hasattr(objective, "names"):
        raise TypeError(
            f"Invalid teleport: positive scaling needs a ReLU/LeakyReLU network, not {type(objective).__name__}"
        )
    symmetry = find(params)
    if symmetry.n_scales == 0:
        reasons = "; ".join(f"{symmetry.label(k)}: {v}" for k, v in symmetry.left.items()) or "no hidden layer"
        raise ValueError(f"Invalid teleport: positive scaling found no rescalable units ({reasons})")
    return symmetry


@dataclass(frozen=True)
class PositiveScale(Teleport):
    """Positive per-unit rescaling along the objective's symmetry, in closed form.

    ``steps`` ascent steps of size ``lr``, each scale kept within ``1 ± clamp`` per step, the loss kept within
    ``loss_rtol`` (``None``: the dtype's default, :mod:`symtele.teleports.invariance`).

    The objective states its rescalings: ``objective.symmetry(params)`` and ``objective.names``
    (:class:`~symtele.module_objective.ModuleObjective`: those ``discover`` finds in the module;
    :class:`~symtele.regression.MLPRegression`: its chain of weights).

    Args:
        lr: the ascent step on the scales (positive).
        steps: ascent steps (``≥ 0``).
        clamp: the largest change of a scale per step (positive; ``None``: no clipping).
        loss_rtol: the relative change of the loss a teleport may make (positive; ``None``: the dtype's default).

    Raises:
        TypeError: an option of the wrong type.
        ValueError: an option that is not finite and positive (``steps``: a negative count).
    """

    name = "posscale"
    lr: float = 1e-4
    steps: int = 10
    clamp: float | None = 0.1
    loss_rtol: float | None = None

    def __post_init__(self):
        """Check the fields and store them normalised (raising as the class docstring says)."""
        self._set(
            lr=checks.positive("lr", self.lr),
            steps=checks.count("steps", self.steps),
            clamp=None if self.clamp is None else checks.positive("clamp", self.clamp),
            loss_rtol=None if self.loss_rtol is None else checks.positive("loss_rtol", self.loss_rtol),
        )

    def log_step(self, slope: torch.Tensor) -> torch.Tensor:
        """The change of the log-scales for one ascent step, ``log(1 + lr · clip(slope, ±clamp/lr))``.

        Args:
            slope: ``∂‖∇L‖²/∂s`` at the current scales (equal to ``∂‖∇L‖²/∂d`` at ``d = 1``).

        Returns:
            ``Δs``, the shape of ``slope``.
        """
        if self.clamp is not None:
            slope = slope.clamp(-self.clamp / self.lr, self.clamp / self.lr)
        return torch.log1p(self.lr * slope)

    def check(self, objective, params):
        """Raise unless the objective states rescalings that the closed form handles for ``params``.

        Args:
            objective: an objective with ``symmetry(params)`` and ``names``.
            params: its parameters.

        Raises:
            TypeError: the objective states no rescalings (no ``symmetry`` or no ``names``).
            ValueError: it has no rescalable units (naming its layers and why), or its symmetry does not fit
                ``params`` or is one the closed form does not handle.
        """
        symmetry = _symmetry_of(objective, params)
        _plan(symmetry, objective.names, [p.shape for p in params], np, params[0].device)

    def __call__(self, objective, params, grads, loss):
        """Teleport ``params`` as :func:`positive_scale_teleport` does, along the objective's symmetry.

        Args:
            objective: an objective with ``symmetry(params)``, ``names`` and ``loss``.
            params: its parameters.
            grads: the gradient at ``params``.
            loss: the loss at ``params``, one value per copy.

        Returns:
            ``(params, grads, loss, record)``, as :func:`positive_scale_teleport`.

        Raises:
            TypeError: as :meth:`check`, or parameters that are not floating point.
            ValueError: as :meth:`check`, or mismatched or non-finite ``params``/``grads``.
        """
        symmetry = _symmetry_of(objective, params)
        return _teleport(params, grads, symmetry, objective.names, objective.loss, self, loss)


@dataclass(frozen=True)
class PositiveScaleReference(PositiveScale):
    """The positive-scale teleport by double backpropagation as a training-loop teleport.

    Its ``name`` is ``posscale-ref``: the method the writeup timed. The same options (see
    :class:`PositiveScale`) and the same steps, each slope differentiated through the network
    (:func:`~symtele.teleports.rescale.reference_teleport`); after the ascent the loss and the gradient are
    computed afresh at the new point (no safety checks: ``loss_rtol`` is not used).
    """

    name = "posscale-ref"

    def teleported(self, objective, params) -> list[torch.Tensor]:
        """The parameters after ``steps`` double-backprop ascent steps along the objective's symmetry.

        Args:
            objective: an objective with ``symmetry(params)`` and ``names`` (see :class:`PositiveScale`).
            params: its parameters (leading batch dimensions index copies, each with its own scales).

        Returns:
            The teleported parameters, in order.
        """
        symmetry = _symmetry_of(objective, params)
        names = objective.names
        plan = _plan(symmetry, names, [p.shape for p in params], np, params[0].device)
        batch = tuple(params[plan.acted[0].index].shape[: plan.batch_ndim])
        new = reference_teleport(
            lambda p: objective.loss([p[n] for n in names]),
            dict(zip(names, params)),
            symmetry,
            self.log_step,
            self.steps,
            batch_shape=batch,
        )
        return [new[n] for n in names]

    def __call__(self, objective, params, grads, loss):
        """Teleport ``params`` with :meth:`teleported`, then compute the loss and gradient afresh.

        Args:
            objective: an objective with ``symmetry(params)``, ``names`` and ``loss_and_grad``.
            params: its parameters.
            grads: the gradient at ``params`` (for the record's ``‖∇L‖²`` before).
            loss: the loss at ``params`` (for the record; its dimensions are the batch's).

        Returns:
            ``(params, grads, loss, record)`` at the new point; the record counts all ``steps`` as taken.

        Raises:
            TypeError: the objective states no rescalings.
            ValueError: it has no rescalable units, or its symmetry does not fit ``params``.
        """
        start = time.perf_counter()
        before = grad_norm_sq(grads, loss.dim())
        new = self.teleported(objective, params)
        new_loss, new_grads = objective.loss_and_grad(new)
        record = TeleportRecord(
            method=self.name,
            steps_taken=self.steps,
            loss_before=to_list(loss),
            loss_after=to_list(new_loss),
            grad_norm_sq_before=to_list(before),
            grad_norm_sq_after=to_list(grad_norm_sq(new_grads, loss.dim())),
        )
        record.cost_s = time.perf_counter() - start
        return new, new_grads, new_loss, record


def teleport_sequential(
    model: torch.nn.Module, loss_fn: Callable, inputs: torch.Tensor, targets: torch.Tensor, **options
):
    """Positive-scale teleport of a module, written back into the module.

    The module is an ``nn.Sequential`` of ``Linear`` and ReLU/LeakyReLU layers, or any module
    :func:`~symtele.teleports.discovery.discover` finds rescalings in.

    One forward and backward pass gives ``∇L``; the ``steps`` ascent steps on ``‖∇L‖²`` then cost only vector
    arithmetic (:func:`positive_scale_teleport`).

    Args:
        model: the network; its parameters are overwritten with the teleported ones.
        loss_fn: ``loss_fn(model(inputs), targets)`` is the loss.
        inputs: a batch of inputs.
        targets: their targets.
        **options: the fields of :class:`PositiveScale`.

    Returns:
        The :class:`~symtele.history.TeleportRecord`.

    Raises:
        ValueError: bad options, non-finite ``inputs``, or a model without rescalable units (the message names
            the layers and why).
        TypeError: a ``model`` that is not an ``nn.Module``, a ``loss_fn`` that is not callable, or ``inputs``
            that are not a floating-point tensor.
    """
    teleport = PositiveScale(**options)  # checks the options before any compute
    objective = ModuleObjective(model, loss_fn, inputs, targets)
    params = objective.initial_params()
    teleport.check(objective, params)  # finds the rescalings before any compute
    loss, grads = objective.loss_and_grad(params)
    new_params, _, _, record = teleport(objective, params, grads, loss)
    objective.write_back(new_params)
    return record
