"""The writeup's settings, each defined once (REFERENCE §1–§4).

Every number the report's experiments take from the writeup or from the course project (the
original code the writeup was written with) lives here: starting points, learning rates, epochs,
teleport epochs, teleport steps, the GL(n) baseline's settings and the random seeds. The notebooks'
``parameters`` cells, the experiment functions' defaults, the benchmarks, the sweep and the explorer
all read them from here. A group of settings is a frozen dataclass; ``dataclasses.replace(REGRESSION,
epochs=60)`` gives a variant, and ``print(REGRESSION)`` shows every value.

Plain numbers and tuples, no torch: the build reads the notebooks' defaults from here in an instant.
Choices that are the report's own, not the writeup's, say so in their comments.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: the course project's five random seeds, n²·12345 for n = 0 … 4
SEEDS = tuple(n * n * 12345 for n in range(5))
#: the starting point on x² + 9y² (REFERENCE §1)
QUADRATIC_START = (8.0, -2.0)
#: Booth's starting point (the report's choice; the writeup gives none)
BOOTH_START = (5.0, -2.0)
#: Rosenbrock's starting point of the report's main runs (the report's choice)
ROSENBROCK_START = (-0.2, 0.0)
#: Rosenbrock's textbook starting point
ROSENBROCK_TEXTBOOK_START = (-1.2, 1.0)
#: the starting point of each 2-D problem's runs, by problem name
STARTS = {"quadratic": QUADRATIC_START, "booth": BOOTH_START, "rosenbrock": ROSENBROCK_START}


@dataclass(frozen=True)
class ConvexSettings:
    """Gradient descent with one SO(2) teleport (REFERENCE §1), and the same runs on Booth and Rosenbrock."""

    start: tuple = QUADRATIC_START
    lr: float = 0.08
    epochs: int = 10
    teleport_epoch: int = 4  # the teleport comes before this (0-based) epoch's step
    teleport_lr: float = 1e-3  # ascent step on the angle θ
    teleport_steps: int = 10
    seed: int = 0  # random seed of the initial angle θ₀ ~ U[0, π) (the report's choice)
    booth_start: tuple = BOOTH_START
    booth_lr: float = 0.05  # the report's choice
    booth_epochs: int = 10
    rosenbrock_start: tuple = ROSENBROCK_START
    rosenbrock_lr: float = 1e-3  # the report's choice
    rosenbrock_epochs: int = 1000


@dataclass(frozen=True)
class RegressionSettings:
    """The course project's ReLU regression with one positive-scale teleport (REFERENCE §2)."""

    seeds: tuple = SEEDS
    dims: tuple = (4, 5, 6, 7, 8)  # samples, then layer widths: X is 5×4, W1 6×5, W2 7×6, W3 8×7, Y 8×4
    epochs: int = 300
    gd_lr: float = 1e-4
    adagrad_lr: float = 1e-1
    teleport_epoch: int = 5
    teleport_lr_gd: float = 1e-4
    teleport_lr_adagrad: float = 1e-5
    teleport_steps: int = 10
    clamp: float = 0.1  # each teleport step keeps every scale within 1 ± clamp

    def teleport_lr(self, optimizer: str) -> float:
        """The teleport's ascent step with ``gd`` or ``adagrad``."""
        return {"gd": self.teleport_lr_gd, "adagrad": self.teleport_lr_adagrad}[optimizer]

    def lr(self, optimizer: str) -> float:
        """The optimiser's step: ``gd`` or ``adagrad``."""
        return {"gd": self.gd_lr, "adagrad": self.adagrad_lr}[optimizer]


@dataclass(frozen=True)
class GLnSettings:
    """The GL(n) teleport of Zhao et al. (2022) on the LeakyReLU version of the regression (REFERENCE §3)."""

    negative_slope: float = 0.1
    lr: float = 1e-7  # teleport step with GD
    steps: int = 8  # teleport steps with GD


@dataclass(frozen=True)
class LevelSetSettings:
    """Level-set teleportation (REFERENCE §4): the 2-D runs and the Softplus MLP."""

    booth_start: tuple = BOOTH_START
    booth_epochs: int = 10
    booth_teleport_epochs: tuple = (1,)  # teleport once on Booth
    booth_gd_lr: float = ConvexSettings.booth_lr
    rosenbrock_start: tuple = ROSENBROCK_START
    rosenbrock_epochs: int = 1000
    rosenbrock_teleport_epochs: tuple = (1, 100)  # teleport twice on Rosenbrock
    rosenbrock_other_epochs: tuple = (5, 200)  # a second pair of teleport epochs (the report's)
    rosenbrock_gd_lr: float = ConvexSettings.rosenbrock_lr
    local_start: tuple = ROSENBROCK_TEXTBOOK_START  # the short-teleport runs (the report's)
    local_epochs: int = 500
    local_teleport_epochs: tuple = (1, 100)
    local_teleport_steps: int = 1
    armijo_lr: float = 1.0  # first trial step of the Armijo line search
    rho: float = 1.0  # first step ρ of the teleport's subproblem
    teleport_steps: int = 100  # at most this many iterations per teleport
    line_search_steps: int = 50  # at most this many halvings of ρ per iteration
    eps: float = 1e-6  # KKT tolerance of the early exit
    delta: float = 1e-8  # tolerance on L − L(w_k)
    penalty: float = 3.0  # γ = penalty · ‖∇L(w_k)‖² / L(w_k) (the report's; see symtele.teleports.level_set)
    mlp_seed: int = 0
    mlp_epochs: int = 300
    mlp_lr: float = 0.02
    mlp_teleport_epochs: tuple = (5,)
    mlp_hidden: int = 50  # the writeup's 2-layer Softplus MLP
    mlp_samples: int = 128  # synthetic regression points (the report's)


@dataclass(frozen=True)
class DigitsSettings:
    """``torch.optim`` optimisers ± a positive-scale teleport on a digits MLP (the report's own experiment)."""

    seeds: tuple = (0, 1, 2)
    epochs: int = 60
    hidden: tuple = (32, 32)
    lrs: dict = field(
        default_factory=lambda: {"sgd": 0.1, "momentum": 0.02, "rmsprop": 1e-3, "adam": 1e-3, "adagrad-torch": 0.05}
    )
    teleport_epochs: tuple = (5,)
    teleport_lr: float = 100.0
    teleport_steps: int = 10
    clamp: float = RegressionSettings.clamp


CONVEX = ConvexSettings()
#: the fixed gradient-descent step on each 2-D problem, by problem name
GD_STEPS_2D = {"quadratic": CONVEX.lr, "booth": CONVEX.booth_lr, "rosenbrock": CONVEX.rosenbrock_lr}
REGRESSION = RegressionSettings()
GLN = GLnSettings()
LEVEL_SET = LevelSetSettings()
DIGITS = DigitsSettings()


@dataclass(frozen=True)
class SweepSettings:
    """The schedule sweep's default grid around the writeup's settings (the report's own experiment)."""

    optimizers: tuple = ("gd",)
    lrs: dict = field(default_factory=lambda: {"gd": REGRESSION.gd_lr, "adagrad": REGRESSION.adagrad_lr})
    seeds: tuple = SEEDS
    epochs: int = REGRESSION.epochs
    teleport_epochs: tuple = (0, 5, 20, 50)
    posscale_lrs: tuple = (1e-5, 1e-4, 1e-3)
    gln_lrs: tuple = (1e-9, 1e-8, 1e-7)
    teleport_steps: dict = field(default_factory=lambda: {"posscale": REGRESSION.teleport_steps, "gln": GLN.steps})


SWEEP = SweepSettings()
