"""Teleports as objects the training loop can call: SO(2), positive scale, GL(n), level set.

Each holds its hyper-parameters, checks on entry that it fits the objective
(``check``), and maps ``(objective, params, grads, loss)`` to the teleported
``(params, grads, loss, record)``.
"""
from __future__ import annotations

import torch

from . import checks
from .gln import gln_teleport
from .levelset import level_set_teleport
from .mlp import MLPRegression
from .posscale import positive_scale_teleport
from .problems import Problem2D
from .so2 import so2_teleport


class Teleport:
    name = "teleport"

    def check(self, objective, params) -> None:
        """Raise ``TypeError``/``ValueError`` if this teleport cannot act on ``objective``."""

    def __call__(self, objective, params, grads, loss):
        raise NotImplementedError

    def __repr__(self):
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


class SO2(Teleport):
    """Rotation of ``φ(w)`` for a 2-D problem; θ₀ ~ U[0, π) from a generator seeded with ``seed``."""

    name = "so2"

    def __init__(self, lr: float = 1e-3, steps: int = 10, seed: int = 0):
        self.lr = checks.positive("lr", lr)
        self.steps = checks.count("steps", steps)
        self.seed = checks.count("seed", seed)
        self._generator = torch.Generator().manual_seed(self.seed)

    def check(self, objective, params):
        if not isinstance(objective, Problem2D):
            raise TypeError(f"Invalid teleport: SO(2) acts on 2-D problems only, not on {type(objective).__name__}")

    def __call__(self, objective, params, grads, loss):
        w, record = so2_teleport(objective, params[0], lr=self.lr, steps=self.steps, generator=self._generator)
        loss, grads = objective.loss_and_grad([w])
        return [w], grads, loss, record


class PositiveScale(Teleport):
    """Positive per-unit rescaling of every pair of adjacent layers, in closed form."""

    name = "posscale"

    def __init__(self, lr: float = 1e-4, steps: int = 10, clamp: float | None = 0.1, loss_rtol: float | None = None):
        self.lr = checks.positive("lr", lr)
        self.steps = checks.count("steps", steps)
        self.clamp = None if clamp is None else checks.positive("clamp", clamp)
        self.loss_rtol = None if loss_rtol is None else checks.positive("loss_rtol", loss_rtol)

    def check(self, objective, params):
        chains = getattr(objective, "chains", None)
        if chains is None:
            raise TypeError(
                f"Invalid teleport: positive scaling needs a ReLU/LeakyReLU network, not {type(objective).__name__}")
        if isinstance(objective, MLPRegression) and objective.n_layers < 2:
            raise ValueError("Invalid teleport: positive scaling needs at least 2 layers")

    def __call__(self, objective, params, grads, loss):
        return positive_scale_teleport(params, grads, objective.chains, objective.loss, lr=self.lr,
                                       steps=self.steps, clamp=self.clamp, loss_before=loss,
                                       loss_rtol=self.loss_rtol)


class GLn(Teleport):
    """The GL(n) teleport of Zhao et al. (2022) on LeakyReLU MLPs (approximately loss-preserving)."""

    name = "gln"

    def __init__(self, lr: float = 1e-7, steps: int = 8, pairs=None):
        self.lr = checks.positive("lr", lr)
        self.steps = checks.count("steps", steps)
        self.pairs = None if pairs is None else [int(p) for p in pairs]

    def check(self, objective, params):
        if not isinstance(objective, MLPRegression):
            raise TypeError(f"Invalid teleport: GL(n) acts on MLPRegression only, not on {type(objective).__name__}")
        if objective.negative_slope <= 0:
            raise ValueError(
                f"Invalid teleport: GL(n) needs LeakyReLU (negative_slope > 0), got {objective.negative_slope}")

    def __call__(self, objective, params, grads, loss):
        return gln_teleport(objective, params, lr=self.lr, steps=self.steps, pairs=self.pairs)


def flatten(params) -> torch.Tensor:
    return torch.cat([p.reshape(-1) for p in params])


def unflatten(vector: torch.Tensor, like) -> list[torch.Tensor]:
    out, i = [], 0
    for p in like:
        out.append(vector[i:i + p.numel()].view_as(p))
        i += p.numel()
    return out


class LevelSet(Teleport):
    """Level-set teleport on the flattened parameters (any twice-differentiable objective)."""

    name = "levelset"

    def __init__(self, rho: float = 1.0, steps: int = 100, line_search_steps: int = 50,
                 eps: float = 1e-6, delta: float = 1e-8, penalty: float = 3.0):
        self.rho = checks.positive("rho", rho)
        self.steps = checks.count("steps", steps)
        self.line_search_steps = checks.count("line_search_steps", line_search_steps, minimum=1)
        self.eps = checks.non_negative("eps", eps)
        self.delta = checks.non_negative("delta", delta)
        self.penalty = checks.positive("penalty", penalty)

    def check(self, objective, params):
        loss = objective.loss(params)
        if loss.dim() != 0:
            raise ValueError(f"Invalid objective: level-set teleport takes one problem copy, got batch {tuple(loss.shape)}")

    def __call__(self, objective, params, grads, loss):
        like = [p.detach() for p in params]
        w, record = level_set_teleport(lambda v: objective.loss(unflatten(v, like)), flatten(like),
                                       rho=self.rho, steps=self.steps, line_search_steps=self.line_search_steps,
                                       eps=self.eps, delta=self.delta, penalty=self.penalty)
        params = [p.clone() for p in unflatten(w, like)]
        loss, grads = objective.loss_and_grad(params)
        return params, grads, loss, record


TELEPORTS = {"so2": SO2, "posscale": PositiveScale, "gln": GLn, "levelset": LevelSet}


def make_teleport(name: str, **options) -> Teleport:
    """A teleport by its method-name suffix: ``so2``, ``posscale``, ``gln`` or ``levelset``."""
    checks.choice("teleport", name, TELEPORTS)
    return TELEPORTS[name](**options)
