"""Optimisers as a small functional core (one ``step`` per epoch) with their state.

* ``gd``:      ``w ← w − η ∇L``
* ``gd-ls``:   ``w ← w − η ∇L`` with ``η = max{η₀ 2⁻ʲ : L(w − η∇L) ≤ L(w) − η/2 ‖∇L‖²}``
  (Armijo backtracking from ``η₀ = lr``, at most ``max_halvings`` halvings, per problem copy; with
  ``trials=k`` on an objective whose loss takes a leading batch dimension, k successive halvings are
  tried in one evaluation, which picks the same ``η`` and the same point, bit for bit)
* ``adagrad``: ``G ← G + (∇L)²``, ``w ← w − η ∇L / (√G + 10⁻¹⁰)`` (the course project's AdaGrad)
* ``sgd``, ``momentum``, ``rmsprop``, ``adam``, ``adagrad-torch``: the ``torch.optim``
  optimiser of that name (``momentum`` is SGD with momentum 0.9), fed the full gradient.

State at a teleport: ``state="keep"`` (default) leaves the optimiser's state (AdaGrad's
``G``, momentum buffers, Adam's moments) as it is, which is what the course project does;
``state="reset"`` clears it so the run continues as if it started at the teleported point.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from . import checks

TORCH_OPTIMIZERS = {
    "sgd": lambda ps, lr: torch.optim.SGD(ps, lr=lr),
    "momentum": lambda ps, lr: torch.optim.SGD(ps, lr=lr, momentum=0.9),
    "rmsprop": lambda ps, lr: torch.optim.RMSprop(ps, lr=lr),
    "adam": lambda ps, lr: torch.optim.Adam(ps, lr=lr),
    "adagrad-torch": lambda ps, lr: torch.optim.Adagrad(ps, lr=lr),
}
OPTIMIZERS = ("gd", "gd-ls", "adagrad", *TORCH_OPTIMIZERS)


def _expand(t, like):
    return t.reshape(t.shape + (1,) * (like.dim() - t.dim()))


class Optimizer:
    """A stateful optimiser over a list of tensors; ``step`` returns the new parameters.

    Args:
        name: one of :data:`OPTIMIZERS`.
        lr: the step (``gd-ls``: the first step the Armijo search tries).
        max_halvings: the most halvings of the Armijo search.
        eps: AdaGrad's term added to the root of the summed squares.
        trials: Armijo steps tried per evaluation of the loss (for objectives that take batches of points).

    Raises:
        ValueError: an unknown ``name``; a ``lr`` or ``eps`` not > 0; ``max_halvings`` < 0 or ``trials`` < 1.
        TypeError: counts that are not integers, numbers that are not real.
    """

    def __init__(self, name: str, lr: float, *, max_halvings: int = 50, eps: float = 1e-10, trials: int = 1):
        self.name = checks.choice("optimizer", name, OPTIMIZERS)
        self.lr = checks.positive("lr", lr)
        self.max_halvings = checks.count("max_halvings", max_halvings)
        self.eps = checks.positive("eps", eps)
        self.trials = checks.count("trials", trials, minimum=1)
        self.reset()

    def reset(self) -> None:
        """Forget all state (accumulators, momentum, moments)."""
        self.sum_sq = None
        self.torch_opt = None
        self.leaves = None

    def step(self, params, grads, loss, loss_fn: Callable | None = None):
        """One update from ``params`` with gradient ``grads``.

        Args:
            params: the current point, a list of tensors.
            grads: the gradient at ``params``, one tensor per parameter.
            loss: the loss at ``params`` (one value per copy of a batched problem).
            loss_fn: the loss of a list of parameters; the Armijo search (``gd-ls``) evaluates it.

        Returns:
            ``(params, step_size)``: the new point, and the step taken (per copy for a batched Armijo search).
        """
        if self.name == "gd":
            return [p - self.lr * g for p, g in zip(params, grads)], self.lr
        if self.name == "gd-ls":
            return self._armijo(params, grads, loss, loss_fn)
        if self.name == "adagrad":
            if self.sum_sq is None:
                self.sum_sq = [torch.zeros_like(g) for g in grads]
            self.sum_sq = [s + g * g for s, g in zip(self.sum_sq, grads)]
            return [p - self.lr * g / (s.sqrt() + self.eps) for p, g, s in zip(params, grads, self.sum_sq)], self.lr
        return self._torch_step(params, grads), self.lr

    def _armijo(self, params, grads, loss, loss_fn):
        gsq = sum(g.square().reshape(*loss.shape, -1).sum(-1) for g in grads)
        if loss.dim() == 0 and self.trials > 1:
            return self._armijo_in_batches(params, grads, loss, loss_fn, gsq)
        if loss.dim() == 0:  # one problem: the same arithmetic with η a Python float (halving is exact)
            eta = self.lr
            for _ in range(self.max_halvings + 1):
                trial = [p - eta * g for p, g in zip(params, grads)]
                if bool(loss_fn(trial) <= loss - (eta / 2) * gsq):
                    return trial, eta
                eta /= 2
            return [p - eta * g for p, g in zip(params, grads)], eta
        eta = torch.full_like(loss, self.lr)
        done = torch.zeros_like(loss, dtype=torch.bool)
        for _ in range(self.max_halvings + 1):
            trial = [p - _expand(eta, p) * g for p, g in zip(params, grads)]
            ok = loss_fn(trial) <= loss - eta / 2 * gsq
            done = done | ok
            if bool(done.all()):
                break
            eta = torch.where(done, eta, eta / 2)
        trial = [p - _expand(eta, p) * g for p, g in zip(params, grads)]
        return trial, eta.tolist()

    def _armijo_in_batches(self, params, grads, loss, loss_fn, gsq):
        """The one-problem Armijo search with ``trials`` halvings per evaluation of ``loss_fn``.

        The trial points are stacked along a new leading dimension; the first that passes is the one the
        sequential search accepts, with the same arithmetic: each η (a power of two times ``lr``) is rounded
        to the parameters' type once, as the sequential search's Python float is.
        """
        halvings = [self.lr * 0.5**j for j in range(self.max_halvings + 2)]
        for first in range(0, self.max_halvings + 1, self.trials):
            etas = halvings[first : min(first + self.trials, self.max_halvings + 1)]
            eta = torch.tensor(etas, dtype=loss.dtype, device=loss.device)
            trial = [p.unsqueeze(0) - _expand(eta, p.unsqueeze(0)) * g.unsqueeze(0) for p, g in zip(params, grads)]
            passed = (loss_fn(trial) <= loss - eta / 2 * gsq).nonzero()
            if len(passed):
                j = int(passed[0, 0])
                return [t[j].clone() for t in trial], etas[j]
        eta = halvings[-1]
        return [p - eta * g for p, g in zip(params, grads)], eta

    def _torch_step(self, params, grads):
        if self.torch_opt is None:
            self.leaves = [p.detach().clone().requires_grad_(True) for p in params]
            self.torch_opt = TORCH_OPTIMIZERS[self.name](self.leaves, self.lr)
        with torch.no_grad():
            for leaf, p, g in zip(self.leaves, params, grads):
                leaf.copy_(p)
                leaf.grad = g.clone()
        self.torch_opt.step()
        return [leaf.detach().clone() for leaf in self.leaves]
