"""GL(n) teleportation of Zhao et al. (2022), the baseline the positive-scale teleport is compared with.

For consecutive layers ``V = W_m`` and ``U = W_{m+1}`` of a LeakyReLU MLP, with ``h``
the input of ``V`` and ``h⁺`` its pseudo-inverse, an element ``I + T`` of GL(k)
(``T`` in the Lie algebra gl(k)) acts by

    U ← U (I − T),          V ← σ⁻¹((I + T) σ(V h)) h⁺ .

The action is data dependent and only approximately loss-preserving: ``U (I − T)``
inverts ``I + T`` to first order only, and ``V h`` is reproduced only when ``h⁺ h = I``.
Each of ``steps`` rounds starts at ``T = 0`` for every pair, takes the gradient of
``‖∇L‖²`` with respect to every ``T`` by double backpropagation, sets
``T = lr · ∂‖∇L‖²/∂T`` and applies the action pair by pair, first layer first.
The loss may change; the record says by how much.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .. import checks
from ..history import TeleportRecord, to_list
from ..objective import grad_norm_sq
from ..regression import MLPRegression
from .base import Teleport


def _act_pairs(objective: MLPRegression, weights, ts, pairs):
    """Apply ``I + T`` to every listed pair ``(W_m, W_{m+1})``, first layer first."""
    out = list(weights)
    for m, t in zip(pairs, ts):
        h = objective.hidden(out, m)
        eye = torch.eye(t.shape[-1], dtype=t.dtype, device=t.device)
        v, u = out[m], out[m + 1]
        out[m + 1] = u @ (eye - t)
        out[m] = objective.act_inverse((eye + t) @ objective.act(v @ h)) @ torch.linalg.pinv(h)
    return out


def gln_teleport(objective: MLPRegression, weights: Sequence[torch.Tensor], **options):
    """Teleport ``weights`` by gradient ascent on ``‖∇L‖²`` over GL(k) for each pair of layers.

    ``options`` are the fields of :class:`GLn`: ``lr``, ``steps`` and ``pairs``, the indices ``m`` of
    the pairs ``(W_m, W_{m+1})`` to act on (default: all). Returns ``(weights, grads, loss, record)``.
    A step that produces non-finite weights is rejected and the teleport stops at the last finite point.
    """
    o = GLn(**options)
    o.check(objective, weights)
    lr, steps = o.lr, o.steps
    weights = [w.detach() for w in checks.finite_tensors("weights", weights)]
    objective.check_params(weights)
    n = len(weights)
    if n < 2:
        raise ValueError(f"Invalid weights: GL(n) teleport needs at least 2 layers, got {n}")
    pairs = list(range(n - 1)) if o.pairs is None else [m % (n - 1) for m in o.pairs]

    start = time.perf_counter()
    loss0, grads0 = objective.loss_and_grad(weights)
    batch_ndim = loss0.dim()
    record = TeleportRecord(
        method="gln", loss_before=to_list(loss0), grad_norm_sq_before=to_list(grad_norm_sq(grads0, batch_ndim))
    )
    for _ in range(steps):
        with torch.enable_grad():
            ts = [
                torch.zeros(
                    weights[m].shape[:-2] + (weights[m].shape[-2],) * 2,
                    dtype=weights[m].dtype,
                    device=weights[m].device,
                    requires_grad=True,
                )
                for m in pairs
            ]
            moved = _act_pairs(objective, weights, ts, pairs)
            loss = objective.loss(moved).sum()
            grads = torch.autograd.grad(loss, moved, create_graph=True)
            objective_value = sum(g.square().sum() for g in grads)
            slopes = torch.autograd.grad(objective_value, ts)
        try:
            candidate = _act_pairs(objective, weights, [lr * s for s in slopes], pairs)
        except torch.linalg.LinAlgError:  # a pseudo-inverse of non-finite activations
            candidate = None
        if candidate is None or not all(bool(torch.isfinite(w).all()) for w in candidate):
            record.stopped = "step rejected: non-finite weights"
            break
        weights = [w.detach() for w in candidate]
        record.steps_taken += 1
    loss, grads = objective.loss_and_grad(weights)
    record.loss_after = to_list(loss)
    record.grad_norm_sq_after = to_list(grad_norm_sq(grads, batch_ndim))
    record.cost_s = time.perf_counter() - start
    return weights, grads, loss, record


@dataclass(frozen=True)
class GLn(Teleport):
    """The GL(n) teleport of Zhao et al. (2022) on LeakyReLU MLPs (approximately loss-preserving):
    ``steps`` ascent steps of size ``lr`` on every pair of layers, or on the listed ``pairs``."""

    name = "gln"
    lr: float = 1e-7
    steps: int = 8
    pairs: tuple | None = None

    def __post_init__(self):
        pairs = None if self.pairs is None else checks.sequence("pairs", list(self.pairs), checks.count)
        self._set(lr=checks.positive("lr", self.lr), steps=checks.count("steps", self.steps), pairs=pairs)

    def check(self, objective, params):
        if not isinstance(objective, MLPRegression):
            raise TypeError(f"Invalid teleport: GL(n) acts on MLPRegression only, not on {type(objective).__name__}")
        if objective.negative_slope <= 0:
            raise ValueError(
                f"Invalid teleport: GL(n) needs an invertible activation (LeakyReLU with negative_slope > 0), "
                f"got negative_slope={objective.negative_slope}"
            )

    def __call__(self, objective, params, grads, loss):
        return gln_teleport(objective, params, lr=self.lr, steps=self.steps, pairs=self.pairs)
