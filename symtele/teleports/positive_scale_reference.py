"""The straightforward positive-scale teleport, by double backpropagation.

This is the definition the closed form of :mod:`symtele.teleports.positive_scale` must agree with,
written the way the original course-project code computes it: dense ``diag(d)``
matrices multiplied into the weights, ``‖∇L(g·w)‖²`` built with ``create_graph=True``
and differentiated again with respect to every ``d`` at ``d = 1``, the ascent step
clipped to ``±clamp/lr``. It costs a forward, a backward and a double-backward pass
plus ``O(width³)`` dense products per step; it is kept for tests, benchmarks and the claims about
the writeup's timings (:class:`PositiveScaleReference` runs it inside the training loop).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..history import TeleportRecord, to_list
from ..objective import grad_norm_sq
from .chains import Chain
from .positive_scale import PositiveScale


def _scaled(params, chains, ds):
    out = list(params)
    for chain, dc in zip(chains, ds):
        for k, layer in enumerate(chain):
            w = out[layer.weight]
            if k < len(chain) - 1:
                w = torch.diag_embed(1.0 / dc[k]) @ w
                if layer.bias is not None:
                    out[layer.bias] = (torch.diag_embed(1.0 / dc[k]) @ out[layer.bias].unsqueeze(-1)).squeeze(-1)
            if k > 0:
                w = w @ torch.diag_embed(dc[k - 1])
            out[layer.weight] = w
    return out


def positive_scale_teleport_reference(
    params: Sequence[torch.Tensor],
    chains: Sequence[Chain],
    loss_fn: Callable[[list[torch.Tensor]], torch.Tensor],
    **options,
) -> list[torch.Tensor]:
    """Teleported parameters after ``steps`` rounds of double-backprop ascent (no safety checks).

    ``options`` are those of :class:`~symtele.teleports.positive_scale.PositiveScale` (``lr``,
    ``steps``, ``clamp``), with its defaults.
    """
    o = PositiveScale(**options)
    lr, steps, clamp = o.lr, o.steps, o.clamp
    params = [p.detach() for p in params]
    for _ in range(steps):
        with torch.enable_grad():
            ds = [
                [torch.ones_like(params[layer.weight][..., :, 0], requires_grad=True) for layer in chain[:-1]]
                for chain in chains
            ]
            leaves = [p.detach().requires_grad_(True) for p in params]  # unscaled ones too
            moved = _scaled(leaves, chains, ds)
            loss = loss_fn(moved).sum()
            grads = torch.autograd.grad(loss, moved, create_graph=True)
            objective = sum(g.square().sum() for g in grads)
            flat = [d for dc in ds for d in dc]
            if objective.requires_grad:
                slopes = torch.autograd.grad(objective, flat, allow_unused=True)
            else:  # the gradient does not depend on the scales at all
                slopes = [None] * len(flat)
            slopes = [torch.zeros_like(d) if s is None else s for d, s in zip(flat, slopes)]
        it = iter(slopes)
        new_ds = []
        for dc in ds:
            row = []
            for _ in dc:
                s = next(it)
                if clamp is not None:
                    s = s.clamp(-clamp / lr, clamp / lr)
                row.append(1.0 + lr * s)
            new_ds.append(row)
        params = [p.detach() for p in _scaled(params, chains, new_ds)]
    return params


@dataclass(frozen=True)
class PositiveScaleReference(PositiveScale):
    """The double-backprop teleport as a training-loop teleport (``name`` ``posscale-ref``): the method the
    writeup timed. Same options and same steps as :class:`PositiveScale`; after the ascent the loss and the
    gradient are computed afresh at the new point (no safety checks: ``loss_rtol`` is not used)."""

    name = "posscale-ref"

    def __call__(self, objective, params, grads, loss):
        start = time.perf_counter()
        before = grad_norm_sq(grads, loss.dim())
        new = positive_scale_teleport_reference(
            params, objective.chains, objective.loss, lr=self.lr, steps=self.steps, clamp=self.clamp
        )
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
