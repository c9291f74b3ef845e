"""GL(n) teleportation of Zhao et al. (2022), the baseline the positive-scale teleport is compared with.

For consecutive layers ``V = W_m`` and ``U = W_{m+1}`` of a LeakyReLU MLP, with ``h``
the input of ``V`` and ``h⁺`` its pseudo-inverse, an element ``I + T`` of GL(k)
(``T`` in the Lie algebra gl(k)) acts by

    U ← U (I − T),          V ← σ⁻¹((I + T) σ(V h)) h⁺ .

The action is data dependent and only approximately loss-preserving. On the course project's task
``h`` has full column rank (4 samples, at least 5 features), so ``h⁺ h = I`` and ``V h`` is
reproduced exactly; the loss moves because ``U (I − T)`` inverts ``I + T`` only to first order:
``U (I − T)(I + T) = U (I − T²)``, and ``T`` is not small here (‖T‖ reaches about 0.5 to 1).

Each of ``steps`` ascent steps starts at ``T = 0`` for every pair ``(W_m, W_{m+1})``, ``T`` being
``k × k`` with ``k`` the rows of ``W_m``; takes the gradient of ``‖∇L‖²`` with respect to every ``T``
at once, by double backpropagation through the pairs applied in turn, first layer first (each pair
acting on the weights the previous one left); sets ``T = lr · ∂‖∇L‖²/∂T``; and applies the action,
first layer first. Which input ``h`` a pair uses when the step is applied is the ``hidden`` option:

* ``"start"`` (the default): the inputs of the weights as they were at the start of the step, as the
  original code of Zhao et al. does (``teleportation.py`` of Rose-STL-Lab/Symmetry-Teleportation);
  this is the baseline the report reproduces. For the second pair and later, ``h⁺`` then no longer
  undoes what the earlier pairs did to ``h``, which adds a first-order change of the loss.
* ``"updated"``: the inputs of the weights the earlier pairs already moved, the network's actual
  activations; the method name is then ``gln-updated``.

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


def _act_pairs(objective: MLPRegression, weights, ts, pairs, inputs=None):
    """Apply ``I + T`` to every listed pair ``(W_m, W_{m+1})``, first layer first.

    Each pair acts on the weights the previous one left; pair ``m``'s input is ``inputs[i]`` if given, else
    the activations of those weights.
    """
    out = list(weights)
    for i, (m, t) in enumerate(zip(pairs, ts)):
        h = objective.hidden(out, m) if inputs is None else inputs[i]
        eye = torch.eye(t.shape[-1], dtype=t.dtype, device=t.device)
        v, u = out[m], out[m + 1]
        out[m + 1] = u @ (eye - t)
        out[m] = objective.act_inverse((eye + t) @ objective.act(v @ h)) @ torch.linalg.pinv(h)
    return out


def gln_teleport(objective: MLPRegression, weights: Sequence[torch.Tensor], **options):
    """Teleport ``weights`` by gradient ascent on ``‖∇L‖²`` over GL(k) for each pair of layers.

    A step that produces non-finite weights (or whose pseudo-inverse fails on them) is rejected and the
    teleport stops at the last finite point.

    Args:
        objective: the LeakyReLU MLP regression (``negative_slope > 0``).
        weights: its weights ``W_0, W_1, …`` (at least two), finite.
        **options: the fields of :class:`GLn`: ``lr``, ``steps``, ``pairs`` (the indices ``m`` of the pairs
            ``(W_m, W_{m+1})`` to act on, taken modulo the number of pairs; default: all) and ``hidden``
            (``"start"`` or ``"updated"``: the inputs a pair uses when a step is applied).

    Returns:
        ``(weights, grads, loss, record)``: the teleported weights, the gradient and loss there, and the
        :class:`~symtele.history.TeleportRecord`.

    Raises:
        TypeError: ``objective`` is not an :class:`~symtele.regression.MLPRegression`, ``weights`` are not
            floating-point tensors, or an option has the wrong type.
        ValueError: an option out of range, ``negative_slope ≤ 0``, non-finite ``weights``, weights that do not
            fit the objective, or fewer than two of them.
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
        method=o.name, loss_before=to_list(loss0), grad_norm_sq_before=to_list(grad_norm_sq(grads0, batch_ndim))
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
            # ½‖Y − f‖²_F and Σ‖∇L‖²_F through Frobenius norms, the arithmetic of the original code: T
            # follows the rounding of these sums, and the runs after a large T amplify it
            loss = 0.5 * (torch.linalg.vector_norm(objective.forward(moved) - objective.Y, dim=(-2, -1)) ** 2).sum()
            grads = torch.autograd.grad(loss, moved, create_graph=True)
            objective_value = sum((torch.linalg.vector_norm(g, dim=(-2, -1)) ** 2).sum() for g in grads)
            slopes = torch.autograd.grad(objective_value, ts)
        inputs = [objective.hidden(weights, m) for m in pairs] if o.hidden == "start" else None
        try:
            candidate = _act_pairs(objective, weights, [lr * s for s in slopes], pairs, inputs)
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
    """The GL(n) teleport of Zhao et al. (2022) on LeakyReLU MLPs (approximately loss-preserving).

    ``steps`` ascent steps of size ``lr`` on every pair of layers, or on the listed ``pairs``. Its method name
    is ``gln``, or ``gln-updated``.

    Args:
        lr: the step size ``T = lr · ∂‖∇L‖²/∂T`` (positive).
        steps: the number of ascent steps (``≥ 0``).
        pairs: the indices ``m`` of the pairs ``(W_m, W_{m+1})`` to act on (non-negative integers, taken
            modulo the number of pairs); ``None`` for all.
        hidden: which inputs a pair uses when a step is applied: ``"start"`` (the original code's) or
            ``"updated"`` (see the module's docstring).

    Raises:
        TypeError: ``lr``, ``steps`` or an entry of ``pairs`` of the wrong type, or ``pairs`` not a sequence.
        ValueError: ``lr ≤ 0`` or not finite, a negative ``steps`` or entry of ``pairs``, an empty ``pairs``,
            or another ``hidden``.
    """

    lr: float = 1e-7
    steps: int = 8
    pairs: tuple | None = None
    hidden: str = "start"

    def __post_init__(self):
        """Check the fields and store them normalised (raising as the class docstring says)."""
        pairs = None if self.pairs is None else checks.sequence("pairs", list(self.pairs), checks.count)
        checks.choice("hidden", self.hidden, ("start", "updated"))
        self._set(lr=checks.positive("lr", self.lr), steps=checks.count("steps", self.steps), pairs=pairs)

    @property
    def name(self) -> str:
        """The method name: ``gln`` (``hidden="start"``) or ``gln-updated``."""
        return "gln" if self.hidden == "start" else "gln-updated"

    def check(self, objective, params):
        """Raise unless ``objective`` is a LeakyReLU MLP regression with an invertible activation.

        Args:
            objective: the objective to teleport.
            params: its weights (not inspected).

        Raises:
            TypeError: ``objective`` is not an :class:`~symtele.regression.MLPRegression`.
            ValueError: its ``negative_slope ≤ 0``.
        """
        if not isinstance(objective, MLPRegression):
            raise TypeError(f"Invalid teleport: GL(n) acts on MLPRegression only, not on {type(objective).__name__}")
        if objective.negative_slope <= 0:
            raise ValueError(
                f"Invalid teleport: GL(n) needs an invertible activation (LeakyReLU with negative_slope > 0), "
                f"got negative_slope={objective.negative_slope}"
            )

    def __call__(self, objective, params, grads, loss):
        """Teleport ``params`` with :func:`gln_teleport` and this object's options.

        Args:
            objective: the LeakyReLU MLP regression.
            params: its weights.
            grads: the gradient at ``params`` (unused: recomputed).
            loss: the loss at ``params`` (unused: recomputed).

        Returns:
            ``(params, grads, loss, record)``, as :func:`gln_teleport`.
        """
        return gln_teleport(objective, params, lr=self.lr, steps=self.steps, pairs=self.pairs, hidden=self.hidden)
