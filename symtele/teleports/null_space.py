"""Teleportation by null-space gradient projection (Wu, Dong, Aloui and Tarokh 2025), the data-dependent baseline.

Z. Wu, J. Dong, A. Aloui, V. Tarokh, "Teleportation With Null Space Gradient Projection for Optimization
Acceleration", arXiv:2502.11362 (2025). Implemented here from the paper's description (it has no public code).

The teleport ascends ``½‖∇L‖²`` (``L`` the loss on the teleport batch, the norm over every trainable
parameter) in the weights of the network's ``nn.Linear`` layers only, each update projected so that the
layer's output on the batch does not move. For a Linear layer with weight ``W`` and bias ``b`` write
``W̃ = [W | b]`` and stack its inputs on the batch (every sample and position) with a column of ones as the
rows of ``X̃`` (``n × (d_in + 1)``; without a bias, no ones and ``W̃ = W``). A change ``Δ`` of ``W̃`` leaves the
layer's pre-activations ``X̃ W̃ᵀ`` unchanged exactly when ``X̃ Δᵀ = 0``, i.e. when the rows of ``Δ`` lie in the
null space of ``X̃``. With the singular values ``s₁ ≥ s₂ ≥ …`` of ``X̃`` and its right singular vectors
``v₁, v₂, …`` (the eigenvectors of ``X̃ᵀ X̃``), keep the fewest ``k`` leading ones that hold ``1 − ε`` of the
energy, ``Σ_{i>k} s_i² ≤ ε Σ_i s_i²``, as ``V_k``, and project

    Δ ← Δ (I − V_k V_kᵀ),      so that      ‖X̃ Δᵀ‖_F ≤ ‖Δ‖₂ (Σ_{i>k} s_i²)^{1/2} ≤ ‖Δ‖₂ √ε ‖X̃‖_F .

With ``ε = 0`` and fewer independent inputs than ``d_in + 1`` the projection is exact and, every layer's
pre-activations being unchanged, so is every output on the batch, whatever the step; when the inputs span
the whole space (``n ≥ d_in + 1`` rows in general position, as a transformer's ``B·T`` tokens do) only
``ε > 0`` leaves a direction to move in, and the loss on the batch changes by an amount the record reports;
a step that changes it by more than ``max_loss_change`` (relative) is undone and ends the teleport. Off the
batch nothing is kept: :func:`held_out_loss_change` measures the loss change on other batches.

A layer's move in its null space changes ``‖∇L‖²`` only through the backward signal ``δ W`` it sends to the
layers below it; the first Linear layer of an MLP (no trainable parameter below it) therefore never moves.

Each of ``steps`` steps computes the gradient ``g = ∇L`` with its graph, then the ascent direction
``∇(½‖g‖²) = H g`` (one Hessian-vector product by double backpropagation) in the Linear weights, projects it
layer by layer and moves ``W̃ ← W̃ + lr · Δ``. The null spaces come from the inputs at the start (the first
step's forward); as the projection keeps every layer's inputs on the batch (exactly for ``ε = 0``), they
stay valid. Attention by ``F.scaled_dot_product_attention`` runs in its composite form here, the one with a
second derivative. A Linear layer whose weight is also used elsewhere (an ``lm_head`` tied to the token
embedding) or frozen is left out, and the record says so.

Cost: ``steps`` gradients with their graph and ``steps`` Hessian-vector products, one plain gradient at the
teleported point (the record's values after), and one eigendecomposition of ``X̃ᵀ X̃`` per layer; the record
also gives the whole teleport's time in units of that plain gradient's (one measurement, not a benchmark).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel

from .. import checks
from ..history import TeleportRecord


def null_space_teleport(
    model: nn.Module,
    loss_fn: Callable,
    inputs,
    targets,
    *,
    steps: int = 10,
    lr: float = 1e-2,
    epsilon: float = 1e-3,
    max_loss_change: float | None = 1e-3,
    layers: Sequence[str] | None = None,
) -> tuple[dict[str, torch.Tensor], TeleportRecord]:
    """Teleport ``model``'s Linear weights by ascent on ``½‖∇L‖²`` projected onto their inputs' null spaces.

    The model itself is not changed: the teleported point is returned (load it with
    ``model.load_state_dict(params, strict=False)``). The model is run in the mode it is in (``train``/``eval``).

    Args:
        model: the network; its ``nn.Linear`` submodules are moved.
        loss_fn: ``loss_fn(model(inputs), targets)`` is the scalar loss on the teleport batch.
        inputs: the teleport batch's inputs (any tensor the model takes, token ids included).
        targets: the teleport batch's targets.
        steps: ascent steps (``≥ 1``).
        lr: the ascent's step size (``> 0``): ``W̃ ← W̃ + lr · Δ``.
        epsilon: the fraction ``ε`` of each layer's input energy left out of the kept subspace, in ``[0, 1)``;
            ``0`` keeps the layer's outputs on the batch exactly (up to rounding).
        max_loss_change: the largest relative change of the loss on the teleport batch a step may make; the
            first step that makes more is undone and the teleport stops there (``None``: no limit, the paper's
            plain ascent).
        layers: the names of the Linear submodules to move (``model.named_modules()`` names); all of them if
            ``None``.

    Returns:
        ``(params, record)``: every trainable parameter by name (the moved ones teleported, the others
        copies), and a :class:`~symtele.history.TeleportRecord` with the loss and ``‖∇L‖²`` on the batch
        before and after, ``grad_evals``/``hvp_evals``, ``cost_s``, and in ``trace``: ``loss`` and
        ``grad_norm_sq`` at every step's start, ``layers`` (the moved layers), ``free_dims`` (the dimension
        of each one's update space, ``d_in + 1 − k``), ``dropped`` (layers left out and why),
        ``gradient_s`` (the time of one plain gradient) and ``cost_in_gradients`` (``cost_s / gradient_s``).

    Raises:
        TypeError: ``model`` is not an ``nn.Module``, ``loss_fn`` is not callable, or it does not return a
            scalar tensor.
        ValueError: a bad ``steps``, ``lr``, ``epsilon``, ``max_loss_change`` or ``layers`` (a name that is not
            a Linear submodule, or no Linear layer left to move), or a loss or ``‖∇L‖²`` on the teleport batch
            that is not finite at the start.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"Invalid model: expected an nn.Module, got {type(model).__name__}")
    if not callable(loss_fn):
        raise TypeError(f"Invalid loss_fn: {loss_fn!r} is not callable")
    steps = checks.count("steps", steps, minimum=1)
    lr = checks.positive("lr", lr)
    epsilon = checks.non_negative("epsilon", epsilon)
    if epsilon >= 1:
        raise ValueError(f"Invalid epsilon: {epsilon!r} (must be in [0, 1))")
    if max_loss_change is not None:
        max_loss_change = checks.non_negative("max_loss_change", max_loss_change)
    moved, dropped = _movable_layers(model, layers)
    start = time.perf_counter()

    params = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    names = list(params)
    activations: dict[str, list[torch.Tensor]] = {name: [] for name in moved}
    hooks = [
        model.get_submodule(name).register_forward_hook(_recorder(activations[name]), always_call=True)
        for name in moved
    ]
    trace: dict[str, list] = {"loss": [], "grad_norm_sq": [], "dropped": dropped}
    bases: dict[str, torch.Tensor] = {}
    stopped, grad_evals, hvp_evals, forward_evals, gradient_s, previous = None, 0, 0, 0, None, params
    last = steps  # the last step only evaluates the gradient at the teleported point (a plain one: it is timed)
    try:
        for step in range(steps + 1):
            tick = time.perf_counter()
            current = {n: t.detach().requires_grad_(True) for n, t in params.items()}
            loss = _loss(model, loss_fn, current, inputs, targets)
            value = float(loss.detach())
            if step == 0:
                if not math.isfinite(value):
                    raise ValueError(f"Invalid inputs: the loss on the teleport batch is not finite ({value})")
                moved, bases = _null_spaces(model, moved, activations, hooks, dropped, epsilon)
                if all(b.shape[1] == b.shape[0] for b in bases.values()):
                    stopped = f"no moved layer has a null space on this batch at epsilon={epsilon:g}: nothing moved"
                    last = 0
            else:
                change = abs(value - trace["loss"][0]) / max(abs(trace["loss"][0]), 1e-30)
                if not math.isfinite(value) or (max_loss_change is not None and change > max_loss_change):
                    stopped = (
                        f"step {step} changed the loss on the teleport batch by {change:.3g} relative, more than "
                        f"max_loss_change={max_loss_change}: the point before it is kept"
                    )
                    params, forward_evals = previous, forward_evals + 1
                    break
            grads = torch.autograd.grad(loss, [current[n] for n in names], create_graph=step < last)
            grad_norm_sq = sum(g.pow(2).sum() for g in grads)
            grad_evals += 1
            if not math.isfinite(float(grad_norm_sq.detach())):
                if step == 0:
                    raise ValueError("Invalid inputs: ‖∇L‖² on the teleport batch is not finite")
                stopped = f"‖∇L‖² is not finite after step {step}: the point before it is kept"
                params = previous
                break
            trace["loss"].append(value)
            trace["grad_norm_sq"].append(float(grad_norm_sq.detach()))
            if step == last:
                gradient_s = time.perf_counter() - tick
                break
            ascent = iter(torch.autograd.grad(0.5 * grad_norm_sq, [current[n] for n in _moved_names(model, moved)]))
            hvp_evals += 1
            previous = params
            params = {n: t.detach() for n, t in current.items()}
            with torch.no_grad():
                for name in moved:
                    linear = model.get_submodule(name)
                    update = lr * _projected([next(ascent) for _ in _kinds(model, name)], bases[name])
                    weight = update[:, : linear.in_features].to(linear.weight.dtype)
                    params[f"{name}.weight"] = params[f"{name}.weight"] + weight
                    if linear.bias is not None:
                        params[f"{name}.bias"] = params[f"{name}.bias"] + update[:, -1].to(linear.bias.dtype)
    finally:
        for h in hooks:
            h.remove()
    if gradient_s is None:  # stopped early: time one plain gradient at the point returned, for the cost's unit
        tick = time.perf_counter()
        current = {n: t.detach().requires_grad_(True) for n, t in params.items()}
        torch.autograd.grad(_loss(model, loss_fn, current, inputs, targets), [current[n] for n in names])
        gradient_s, grad_evals = time.perf_counter() - tick, grad_evals + 1
    end = time.perf_counter()
    steps_taken = len(trace["loss"]) - 1
    trace["layers"] = list(moved)
    trace["free_dims"] = [int(b.shape[0] - b.shape[1]) for b in bases.values()]
    trace["gradient_s"] = gradient_s
    trace["cost_in_gradients"] = (end - start) / max(gradient_s, 1e-12)
    record = TeleportRecord(
        method="nullspace",
        steps_taken=steps_taken,
        cost_s=end - start,
        loss_before=trace["loss"][0],
        loss_after=trace["loss"][-1],
        grad_norm_sq_before=trace["grad_norm_sq"][0],
        grad_norm_sq_after=trace["grad_norm_sq"][-1],
        stopped=stopped,
        trace=trace,
        grad_evals=grad_evals,
        hvp_evals=hvp_evals,
        forward_evals=forward_evals,
    )
    return {n: t.detach() for n, t in params.items()}, record


def held_out_loss_change(
    model: nn.Module, loss_fn: Callable, params: dict[str, torch.Tensor], batches: Iterable
) -> dict[str, list[float]]:
    """The loss on other batches at ``model``'s own parameters and at ``params`` (a teleported point).

    Args:
        model: the network, at the point before the teleport.
        loss_fn: ``loss_fn(model(x), y)`` is the scalar loss.
        params: parameters by name (as :func:`null_space_teleport` returns); names it lacks keep the model's.
        batches: ``(x, y)`` pairs (a list, or any iterable).

    Returns:
        ``{"loss_before": [...], "loss_after": [...], "relative_change": [...]}``, one entry per batch;
        ``relative_change = (after − before) / |before|``.

    Raises:
        TypeError: ``params`` is not a dict of tensors, or ``loss_fn`` is not callable.
        ValueError: ``params`` names a parameter the model does not have, or ``batches`` is empty.
    """
    if not callable(loss_fn):
        raise TypeError(f"Invalid loss_fn: {loss_fn!r} is not callable")
    if not isinstance(params, dict) or not all(isinstance(t, torch.Tensor) for t in params.values()):
        raise TypeError("Invalid params: expected a dict of tensors by parameter name")
    known = dict(model.named_parameters())
    unknown = sorted(set(params) - known.keys())
    if unknown:
        raise ValueError(f"Invalid params: {unknown} are not parameters of the model")
    before, after = [], []
    with torch.no_grad():
        for x, y in batches:
            before.append(float(loss_fn(model(x), y)))
            after.append(float(loss_fn(functional_call(model, params, (x,)), y)))
    if not before:
        raise ValueError("Invalid batches: no batch given")
    relative = [(a - b) / max(abs(b), 1e-30) for b, a in zip(before, after)]
    return {"loss_before": before, "loss_after": after, "relative_change": relative}


def null_space_basis(inputs: torch.Tensor, epsilon: float, *, bias: bool = True) -> torch.Tensor:
    """The orthonormal directions ``V_k`` a Linear layer's update must avoid to keep its outputs on ``inputs``.

    Args:
        inputs: the layer's inputs, ``(…, d_in)``; every leading index is a row of ``X``.
        epsilon: the fraction of the energy ``‖X̃‖_F²`` allowed outside the kept directions, in ``[0, 1)``.
        bias: whether to append the column of ones (a layer with a bias).

    Returns:
        ``V_k`` (float64, ``(d_in + bias) × k``): the leading right singular vectors of ``X̃``, the fewest that
        leave ``Σ_{i>k} s_i² ≤ ε ‖X̃‖_F²`` (to rounding: ``+ (d_in + 1) · 2⁻⁵² · s₁²``). An update ``Δ`` projected
        as ``Δ − (Δ V_k) V_kᵀ`` changes the outputs on ``inputs`` by at most ``‖Δ‖₂ √ε ‖X̃‖_F``.

    Raises:
        ValueError: ``epsilon`` outside ``[0, 1)`` or ``inputs`` not finite.
    """
    epsilon = checks.non_negative("epsilon", epsilon)
    if epsilon >= 1:
        raise ValueError(f"Invalid epsilon: {epsilon!r} (must be in [0, 1))")
    checks.finite_tensor("inputs", inputs)
    x = inputs.detach().reshape(-1, inputs.shape[-1]).to(torch.float64)
    if bias:
        x = torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype, device=x.device)], dim=1)
    energy, vectors = torch.linalg.eigh(x.T @ x)  # ascending
    energy = energy.clamp_min(0).flip(0)
    vectors = vectors.flip(1)
    total = float(energy.sum())
    rounding = x.shape[1] * torch.finfo(torch.float64).eps * float(energy[0]) if total else 0.0
    tail = torch.cat([energy.flip(0).cumsum(0).flip(0), energy.new_zeros(1)])  # tail[k] = Σ_{i≥k} s_i²
    k = int((tail > epsilon * total + rounding).sum())
    return vectors[:, :k]


def _movable_layers(model: nn.Module, layers) -> tuple[list[str], list[dict]]:
    """The Linear layers to move, and those left out (with the reason)."""
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if layers is None:
        chosen = linears
    else:
        if isinstance(layers, str) or not isinstance(layers, Sequence):
            raise TypeError(f"Invalid layers: {layers!r} (expected a list of Linear submodule names)")
        if not layers:
            raise ValueError("Invalid layers: [] (name at least one nn.Linear submodule, or pass None for all)")
        missing = [name for name in layers if name not in linears]
        if missing:
            raise ValueError(f"Invalid layers: {missing} are not nn.Linear submodules (the model has {linears})")
        chosen = list(dict.fromkeys(layers))
    owners: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        owners.setdefault(id(p), []).append(name)
    moved, dropped = [], []
    for name in chosen:
        linear = model.get_submodule(name)
        reason = None
        for kind in _kinds(model, name):
            p = getattr(linear, kind)
            others = [o for o in owners[id(p)] if o != f"{name}.{kind}"]
            if others:
                reason = f"its {kind} is shared with {others[0]}, which the projection does not keep"
            elif not p.requires_grad:
                reason = f"its {kind} is frozen (requires_grad=False)"
            elif not p.is_floating_point():
                reason = f"its {kind} is not floating point"
        if reason:
            dropped.append({"layer": name, "reason": reason})
        else:
            moved.append(name)
    if not moved:
        raise ValueError(
            f"Invalid model: no nn.Linear layer to move ({'; '.join(d['layer'] + ': ' + d['reason'] for d in dropped)})"
            if dropped
            else "Invalid model: it has no nn.Linear layer"
        )
    return moved, dropped


def _kinds(model: nn.Module, name: str) -> tuple[str, ...]:
    """The parameter names of a Linear layer: ``("weight", "bias")`` or ``("weight",)``."""
    return ("weight",) if model.get_submodule(name).bias is None else ("weight", "bias")


def _moved_names(model: nn.Module, moved: list[str]) -> list[str]:
    """The parameter names of the moved layers, in order: each layer's weight, then its bias if it has one."""
    return [f"{name}.{kind}" for name in moved for kind in _kinds(model, name)]


def _recorder(store: list):
    """A forward hook that keeps the layer's input."""

    def hook(module, args, output):
        store.append(args[0].detach())

    return hook


def _null_spaces(model, moved, activations, hooks, dropped, epsilon):
    """After the first forward: the layers that saw an input, and the kept basis of each (the hooks removed)."""
    for h in hooks:
        h.remove()
    for name in moved:
        if not activations[name]:
            dropped.append({"layer": name, "reason": "it is not called in the forward"})
    moved = [name for name in moved if activations[name]]
    if not moved:
        raise ValueError("Invalid model: none of the layers to move is called in its forward")
    bases = {name: _kept_basis(activations.pop(name), model.get_submodule(name), epsilon) for name in moved}
    return moved, bases


def _kept_basis(inputs: list[torch.Tensor], linear: nn.Linear, epsilon: float) -> torch.Tensor:
    """:func:`null_space_basis` of every input the layer saw in the forward (a layer called twice: both)."""
    x = torch.cat([t.reshape(-1, linear.in_features) for t in inputs], dim=0)
    return null_space_basis(x, epsilon, bias=linear.bias is not None)


def _projected(parts: list[torch.Tensor], basis: torch.Tensor) -> torch.Tensor:
    """``[ΔW | Δb]`` (float64) with the kept directions ``basis`` projected out of its rows."""
    update = torch.cat([parts[0].to(torch.float64), *(p.to(torch.float64).unsqueeze(1) for p in parts[1:])], dim=1)
    return update - (update @ basis) @ basis.T


def _loss(model, loss_fn, params, inputs, targets) -> torch.Tensor:
    """``loss_fn(model(inputs), targets)`` at ``params``, checked to be a scalar tensor.

    ``F.scaled_dot_product_attention`` runs its composite (math) form, which has a second derivative (the
    fused CPU and CUDA kernels have none).
    """
    with sdpa_kernel(SDPBackend.MATH):
        loss = loss_fn(functional_call(model, params, (inputs,)), targets)
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
        shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise TypeError(f"Invalid loss_fn: returned {shape}, expected a scalar loss tensor")
    return loss
