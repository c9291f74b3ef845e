"""Sharpness-aware minimisation (SAM, Foret et al., ICLR 2021) around any ``torch.optim`` optimiser.

SAM minimises the worst loss in a ball of radius ``ρ`` around the weights, ``max_{‖e‖≤ρ} L(w + e)``. To first
order the worst point is ``w + e`` with ``e = ρ g / ‖g‖``, ``g = ∇L(w)``, so one step is:

1. the ascent step ``e = ρ ∇L(w) / ‖∇L(w)‖`` (``‖·‖`` over every parameter of the optimiser's groups);
2. the gradient at the perturbed point, ``∇L(w + e)`` (a second gradient evaluation, by the closure);
3. the base optimiser's step *from* ``w`` with that gradient.

Each step costs two gradient evaluations. With ``ρ = 0`` the ascent step is zero and a step is the base
optimiser's step, bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from . import checks

__all__ = ["SAM"]


class SAM:
    """A base ``torch.optim`` optimiser whose steps use the gradient at the ascent point ``w + ρ g/‖g‖``.

    Use it as the base optimiser, with a closure that re-evaluates the loss and its gradient (the gradient at
    ``w`` is the one already in ``.grad``, from the usual ``loss.backward()`` before ``step``)::

        opt = SAM(torch.optim.SGD(model.parameters(), lr=0.1), rho=0.05)
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step(lambda: loss_fn(model(x), y).backward())

    Args:
        optimizer: the base optimiser (any ``torch.optim.Optimizer``); its parameters are the ones perturbed.
        rho: ``ρ ≥ 0``, the radius of the ascent step.

    Raises:
        TypeError: an ``optimizer`` that is not a ``torch.optim.Optimizer``.
        ValueError: a negative or non-finite ``rho``.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, rho: float = 0.05):
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"Invalid optimizer: expected a torch.optim.Optimizer, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        self.rho = checks.non_negative("rho", rho)
        #: ``‖e‖`` of the last step (``ρ``, or 0 where the gradient was zero)
        self.last_ascent_norm = 0.0

    @property
    def param_groups(self) -> list[dict]:
        """The base optimiser's parameter groups."""
        return self.optimizer.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the gradients (the base optimiser's ``zero_grad``)."""
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        """The base optimiser's state."""
        return self.optimizer.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        """Load the base optimiser's state."""
        self.optimizer.load_state_dict(state_dict)

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor]):
        """One SAM step: ascend to ``w + e``, take the gradient there, step from ``w`` with it.

        Args:
            closure: computes the loss at the current weights and calls ``backward`` on it (the gradients are
                cleared before it is called); it may return the loss.

        Returns:
            What ``closure`` returned (the loss at ``w + e``).

        Raises:
            ValueError: no ``closure``, or no parameter with a gradient (call ``backward`` before ``step``).
        """
        if not callable(closure):
            raise ValueError(f"Invalid closure: {closure!r} (SAM needs one to evaluate the gradient at w + e)")
        params = [p for group in self.param_groups for p in group["params"] if p.grad is not None]
        if not params:
            raise ValueError("Invalid state: no parameter has a gradient (compute the loss's gradient before step)")
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
        scale = self.rho / norm if float(norm) > 0 else 0.0
        ascent = [p.grad * scale for p in params]
        saved = [p.detach().clone() for p in params]  # w itself: (w + e) − e is not w in floating point
        for p, e in zip(params, ascent):
            p.add_(e)
        self.last_ascent_norm = float(
            torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(e) for e in ascent]))
        )
        self.optimizer.zero_grad(set_to_none=False)
        with torch.enable_grad():
            loss = closure()
        for p, w in zip(params, saved):
            p.copy_(w)
        self.optimizer.step()
        return loss
