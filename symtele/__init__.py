"""symtele: symmetry and level-set teleportation for faster optimisation.

The package is split by role:

* ``symtele`` (this folder): the library core. Objectives and problems (:mod:`~symtele.problems`,
  :mod:`~symtele.regression`, :mod:`~symtele.tasks`, :mod:`~symtele.module_objective`), optimisers,
  schedules, the training loop and its history, argument checks.
* :mod:`symtele.teleports`: one module per teleport group (SO(2), positive scale, GL(n), level set)
  and what finds the positively scalable layers of a network.
* :mod:`symtele.study`: the report's side: the writeup's settings and published numbers, the
  experiments, results files, summaries, claims, sweeps and benchmarks.
* :mod:`symtele.plots`: every figure function. :mod:`symtele.explorer`: the interactive panel.

The core and ``teleports`` never import from ``study``, ``plots`` or ``explorer``. The names below are
imported on first use, so ``symtele.study.claims`` loads without torch:

    train(objective, params, optimizer=..., lr=..., epochs=..., teleport=..., schedule=...)
    so2_teleport, positive_scale_teleport, teleport_sequential, gln_teleport, level_set_teleport,
    level_set_slp_teleport, and for the training loop the objects SO2, PositiveScale, GLn, LevelSet,
    LevelSetSLP and Rescale (any nn.Module, its symmetries found by discover);
    Teleporter(model, loss_fn, optimizer, every=...) for the user's own minibatch loop.
"""

from typing import TYPE_CHECKING

from .lazy import exports

_EXPORTS = {
    "history": ["History", "TeleportRecord"],
    "models_gpt": ["GPT", "GPTConfig", "next_token_loss"],
    "module_objective": ["ModuleObjective"],
    "objective": ["Objective", "grad_norm_sq"],
    "problems": ["BOOTH", "PROBLEMS_2D", "QUADRATIC", "ROSENBROCK", "Problem2D", "get_problem"],
    "regression": ["MLPRegression", "regression_task"],
    "sam": ["SAM"],
    "schedule": ["Schedule"],
    "tasks": ["accuracy", "digits_data", "digits_mlp", "softplus_mlp"],
    "tasks_generalisation": ["mnist1d", "mnist_5k"],
    "text": ["BatchSampler", "CharCorpus", "char_corpus", "shakespeare_corpus"],
    "teleports": [
        "GLn",
        "LevelSet",
        "LevelSetSLP",
        "PositiveScale",
        "Rescale",
        "SO2",
        "Symmetry",
        "Teleport",
        "data_gl_teleport",
        "gln_teleport",
        "level_set_slp_teleport",
        "level_set_teleport",
        "discover",
        "make_teleport",
        "positive_scale_teleport",
        "so2_teleport",
        "teleport_objective",
        "teleport_sequential",
    ],
    "optimizer_state": ["transport_state"],
    "teleporter": ["Teleporter", "teleport_model"],
    "training": ["method_name", "train"],
}
#: names of earlier versions, still answered with a DeprecationWarning
_RENAMED = {
    "seed_task": "symtele.study.experiments:course_regression_task",
    "SEEDS": "symtele.study.settings:SEEDS",
    "SEED_DIMS": "symtele.study.settings:REGRESSION.dims",
    "PROBLEMS": "symtele.problems:PROBLEMS_2D",
}

__getattr__, __dir__, __all__ = exports(__name__, _EXPORTS, _RENAMED)

if TYPE_CHECKING:  # for type checkers and editors: the same names, imported eagerly
    from .history import History, TeleportRecord
    from .models_gpt import GPT, GPTConfig, next_token_loss
    from .module_objective import ModuleObjective
    from .objective import Objective, grad_norm_sq
    from .optimizer_state import transport_state
    from .problems import BOOTH, PROBLEMS_2D, QUADRATIC, ROSENBROCK, Problem2D, get_problem
    from .regression import MLPRegression, regression_task
    from .schedule import Schedule
    from .tasks import accuracy, digits_data, digits_mlp, softplus_mlp
    from .tasks_generalisation import mnist1d, mnist_5k
    from .teleporter import Teleporter, teleport_model
    from .teleports import (
        SO2,
        GLn,
        LevelSet,
        LevelSetSLP,
        PositiveScale,
        Rescale,
        Symmetry,
        Teleport,
        data_gl_teleport,
        discover,
        gln_teleport,
        level_set_slp_teleport,
        level_set_teleport,
        make_teleport,
        positive_scale_teleport,
        so2_teleport,
        teleport_objective,
        teleport_sequential,
    )
    from .text import BatchSampler, CharCorpus, char_corpus, shakespeare_corpus
    from .training import method_name, train

__version__ = "0.1.0"
