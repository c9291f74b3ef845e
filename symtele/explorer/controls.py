"""The explorer's controls as plain data: every value, what may be combined, and suggested values.

:class:`Settings` holds the value of every control; :func:`check` answers a combination that
cannot run with a message (``None`` when it can); :func:`suggest` gives the numeric values a
problem, optimiser and group start from, taken from the writeup's settings where it has them.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import checks
from ..optimizers import OPTIMIZERS, Optimizer
from ..problems import PROBLEMS_2D
from ..schedule import Schedule
from ..study.settings import (
    BOOTH_START,
    CONVEX,
    DIGITS,
    LEVEL_SET,
    QUADRATIC_START,
    REGRESSION,
    ROSENBROCK_TEXTBOOK_START,
    SEEDS,
)
from ..teleports import SO2, GLn, LevelSet, PositiveScale, Rescale

#: the problems, by the name their records carry, and how the panel labels them
PROBLEM_LABELS = {
    "quadratic": "quadratic x² + 9y²",
    "booth": "Booth",
    "rosenbrock": "Rosenbrock",
    "relu-mlp": "course project's ReLU regression",
    "leaky-relu-mlp": "its LeakyReLU(0.1) version",
    "digits": "digits MLP",
    "digits-cnn": "digits CNN (8×8 images)",
}
OPTIMIZER_LABELS = {
    "gd": "GD",
    "gd-ls": "GD + line search",
    "adagrad": "AdaGrad",
    "sgd": "torch SGD",
    "momentum": "torch SGD, momentum 0.9",
    "rmsprop": "torch RMSprop",
    "adam": "torch Adam",
    "adagrad-torch": "torch Adagrad",
}
GROUP_LABELS = {
    "none": "none",
    "so2": "SO(2)",
    "posscale": "positive scale",
    "rescale": "rescaling of any network (graph)",
    "gln": "GL(n)",
    "levelset": "level set",
}
SCHEDULES = {"at": "at epochs", "every": "every k epochs"}
MAX_EPOCHS = 100_000
#: where the panel starts each 2-D problem
EXPLORER_STARTS = {"quadratic": QUADRATIC_START, "booth": BOOTH_START, "rosenbrock": ROSENBROCK_TEXTBOOK_START}

#: suggested learning rate per problem and optimiser: the writeup's where it has one, else steady values
SUGGESTED_LR = {
    "quadratic": dict(gd=CONVEX.lr, adagrad=1.0, sgd=CONVEX.lr, momentum=0.02, rmsprop=0.1, adam=0.5),
    "booth": dict(gd=CONVEX.booth_lr, adagrad=1.0, sgd=CONVEX.booth_lr, momentum=0.01, rmsprop=0.1, adam=0.5),
    "rosenbrock": dict(gd=5e-4, adagrad=0.1, sgd=5e-4, momentum=1e-4, rmsprop=0.01, adam=0.05),
    "relu-mlp": dict(
        gd=REGRESSION.gd_lr, adagrad=REGRESSION.adagrad_lr, sgd=REGRESSION.gd_lr, momentum=1e-5, rmsprop=1e-3, adam=1e-2
    ),
    "digits": dict(
        gd=DIGITS.lrs["sgd"],
        adagrad=DIGITS.lrs["adagrad-torch"],
        sgd=DIGITS.lrs["sgd"],
        momentum=DIGITS.lrs["momentum"],
        rmsprop=DIGITS.lrs["rmsprop"],
        adam=DIGITS.lrs["adam"],
    ),
}
SUGGESTED_LR["leaky-relu-mlp"] = SUGGESTED_LR["relu-mlp"]
SUGGESTED_LR["digits-cnn"] = dict(gd=0.1, adagrad=0.05, sgd=0.1, momentum=0.02, rmsprop=1e-3, adam=1e-3)
#: suggested epochs and teleport epochs per problem
SUGGESTED_RUN = {
    "quadratic": (CONVEX.epochs, str(CONVEX.teleport_epoch)),
    "booth": (30, "3"),
    "rosenbrock": (100, "5, 50"),
    "relu-mlp": (REGRESSION.epochs, str(REGRESSION.teleport_epoch)),
    "leaky-relu-mlp": (REGRESSION.epochs, str(REGRESSION.teleport_epoch)),
    "digits": (DIGITS.epochs, ", ".join(map(str, DIGITS.teleport_epochs))),
    "digits-cnn": (DIGITS.epochs, ", ".join(map(str, DIGITS.teleport_epochs))),
}
#: suggested teleport learning rate (ρ for the level set) and steps per group: the writeup's
SUGGESTED_TELEPORT = {
    "so2": (CONVEX.teleport_lr, CONVEX.teleport_steps),
    "posscale": (REGRESSION.teleport_lr_gd, REGRESSION.teleport_steps),
    "gln": (REGRESSION.gln_lr_gd, REGRESSION.gln_steps_gd),
    "levelset": (LEVEL_SET.rho, LEVEL_SET.teleport_steps),
    "rescale": (Rescale.max_log_step, Rescale.steps),  # its "teleport lr" is the largest log-scale step
}
SUGGESTED_TELEPORT["none"] = SUGGESTED_TELEPORT["posscale"]
#: the positive-scale teleport's step on the digits MLP (the panel's own: its network is wider than 04's)
DIGITS_TELEPORT_LR = 1e-2


@dataclass(frozen=True)
class Controls:
    """The value of every control.

    The defaults are the course project's regression with one positive-scale teleport, at the writeup's
    settings.
    """

    problem: str = "relu-mlp"
    optimizer: str = "gd"
    lr: float = REGRESSION.gd_lr
    group: str = "posscale"
    schedule: str = "at"
    at: str = str(REGRESSION.teleport_epoch)
    every: int = 50
    start: int = REGRESSION.teleport_epoch
    teleport_lr: float = REGRESSION.teleport_lr_gd
    teleport_steps: int = REGRESSION.teleport_steps
    epochs: int = REGRESSION.epochs
    seeds: int = len(SEEDS)


def suggest(problem: str, optimizer: str, group: str) -> dict:
    """Suggested values of the numeric controls for a problem, optimiser and group.

    Learning rates that train steadily; the writeup's teleport steps for each group; positive
    scaling at :data:`DIGITS_TELEPORT_LR` on the digits, else at the writeup's GD teleport step
    with gd, gd-ls and sgd and at its AdaGrad one with every other optimiser (momentum included).

    Args:
        problem: a key of :data:`PROBLEM_LABELS`.
        optimizer: one of :data:`~symtele.optimizers.OPTIMIZERS`.
        group: a key of :data:`GROUP_LABELS`.

    Returns:
        ``lr``, ``teleport_lr``, ``teleport_steps``, ``epochs`` and ``at`` (the teleport epochs), by name.

    Raises:
        ValueError: an unknown ``problem``, ``optimizer`` or ``group``.
    """
    checks.choice("problem", problem, PROBLEM_LABELS)
    checks.choice("optimizer", optimizer, OPTIMIZERS)
    checks.choice("group", group, GROUP_LABELS)
    rates = SUGGESTED_LR[problem]
    lr = (
        LEVEL_SET.armijo_lr if optimizer == "gd-ls" else rates["adagrad" if optimizer == "adagrad-torch" else optimizer]
    )
    teleport_lr, steps = SUGGESTED_TELEPORT[group]
    if group == "posscale" and problem == "digits":
        teleport_lr = DIGITS_TELEPORT_LR
    elif group == "posscale" and optimizer not in ("gd", "gd-ls", "sgd"):
        teleport_lr = REGRESSION.teleport_lr_adagrad
    epochs, at = SUGGESTED_RUN[problem]
    return dict(lr=lr, teleport_lr=teleport_lr, teleport_steps=steps, epochs=epochs, at=at)


def schedule_of(settings: Controls) -> Schedule:
    """The :class:`Schedule` the schedule controls describe.

    Args:
        settings: the controls (``schedule``, with ``every`` and ``start`` or ``at``).

    Returns:
        The schedule.

    Raises:
        ValueError: ``at`` that is not a list of integers, or empty; what :class:`Schedule` raises.
    """
    if settings.schedule == "every":
        return Schedule.every_k(settings.every, settings.start)
    words = settings.at.replace(",", " ").split()
    try:
        epochs = [int(w) for w in words]
    except ValueError:
        raise ValueError(
            f"Invalid teleport epochs: {settings.at!r} (write integers separated by commas, e.g. 5 or 5, 50)"
        ) from None
    if not epochs:
        raise ValueError("Invalid teleport epochs: '' (give at least one epoch, or choose the group 'none')")
    return Schedule.at(epochs)


def teleport_of(settings: Controls):
    """The teleport object for the chosen group, or ``None``.

    ``teleport_lr`` is the group's step: SO(2)'s, positive scaling's and GL(n)'s ascent step, the rescaling's
    largest log-step, the level-set teleport's first ρ.

    Args:
        settings: the controls (``group``, ``teleport_lr``, ``teleport_steps``).

    Returns:
        The teleport, or ``None`` for the group ``none``.
    """
    lr, steps = settings.teleport_lr, settings.teleport_steps
    if settings.group == "so2":
        return SO2(lr=lr, steps=steps)
    if settings.group == "posscale":
        return PositiveScale(lr=lr, steps=steps)
    if settings.group == "rescale":
        return Rescale(max_log_step=lr, steps=steps)
    if settings.group == "gln":
        return GLn(lr=lr, steps=steps)
    if settings.group == "levelset":
        return LevelSet(rho=lr, steps=steps)
    return None


def validate(s: Controls) -> None:
    """Raise naming the first invalid control or combination.

    Args:
        s: the controls.

    Raises:
        ValueError: an invalid value, or a teleport schedule outside the run.
        TypeError: a teleport group that does not act on the problem.
    """
    checks.choice("problem", s.problem, PROBLEM_LABELS)
    checks.choice("teleport group", s.group, GROUP_LABELS)
    checks.choice("schedule", s.schedule, SCHEDULES)
    Optimizer(s.optimizer, s.lr)
    checks.count("epochs", s.epochs, minimum=1)
    if s.epochs > MAX_EPOCHS:
        raise ValueError(f"Invalid epochs: {s.epochs} (at most {MAX_EPOCHS} in the explorer)")
    if isinstance(s.seeds, bool) or not isinstance(s.seeds, int) or not 1 <= s.seeds <= len(SEEDS):
        raise ValueError(f"Invalid seeds: {s.seeds!r} (choose 1 to {len(SEEDS)})")
    if s.group == "none":
        return
    schedule_of(s).epochs_in(s.epochs)
    teleport_of(s)
    label = PROBLEM_LABELS[s.problem]
    if s.group == "so2" and s.problem not in PROBLEMS_2D:
        raise TypeError(f"Invalid teleport group: SO(2) acts on the 2-D problems only, not on the {label}")
    if s.group == "posscale" and s.problem in PROBLEMS_2D:
        raise TypeError(f"Invalid teleport group: positive scale acts on ReLU networks, not on {label}")
    if s.group == "posscale" and s.problem == "digits-cnn":
        raise TypeError(
            "Invalid teleport group: positive scale (the course project's step) is offered on the MLPs, not on "
            f"the {label} (choose '{GROUP_LABELS['rescale']}')"
        )
    if s.group == "rescale" and s.problem not in ("digits", "digits-cnn"):
        raise TypeError(
            f"Invalid teleport group: the rescaling of any network acts on torch modules (the digits MLP or CNN), "
            f"not on the {label}"
        )
    if s.group == "gln" and s.problem != "leaky-relu-mlp":
        raise TypeError(
            f"Invalid teleport group: GL(n) needs a LeakyReLU network, not the {label} "
            f"(choose the problem '{PROBLEM_LABELS['leaky-relu-mlp']}')"
        )
    if s.group == "levelset" and s.seeds > 1:
        raise ValueError(f"Invalid seeds: {s.seeds} (the level-set teleport takes one problem copy: set seeds to 1)")


def check(settings: Controls) -> str | None:
    """A message naming what is wrong with ``settings``, or ``None`` when they can run.

    Args:
        settings: the controls.

    Returns:
        The message of :func:`validate`'s error, or ``None``.
    """
    try:
        validate(settings)
    except (ValueError, TypeError) as error:
        return str(error)
    return None
