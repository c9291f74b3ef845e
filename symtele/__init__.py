"""symtele: symmetry and level-set teleportation for faster optimisation.

Teleports (move the parameters to a point of equal or lower loss with a steeper gradient):
    so2_teleport, positive_scale_teleport, teleport_sequential, gln_teleport, level_set_teleport
    and, for the training loop, the objects SO2, PositiveScale, GLn, LevelSet.
Training:  train(objective, params, optimizer=..., lr=..., epochs=..., teleport=..., schedule=...)
Problems:  QUADRATIC, BOOTH, ROSENBROCK (2-D), seed_task (the seed's ReLU regression),
           softplus_mlp, digits_mlp, ModuleObjective (any module and loss).
"""
from typing import TYPE_CHECKING

# Each public name and the module that defines it. They are imported on first use (PEP 562), so
# that `symtele.results`, `symtele.summaries` and `symtele.claims`, which need no torch, load
# without it; `from symtele import train` and `symtele.train` work as usual.
_EXPORTS = {
    "gln": ["gln_teleport"],
    "history": ["History", "TeleportRecord"],
    "levelset": ["level_set_teleport"],
    "mlp": ["SEED_DIMS", "SEEDS", "MLPRegression", "seed_task"],
    "models": ["accuracy", "digits_data", "digits_mlp", "softplus_mlp"],
    "modules": ["ModuleObjective", "teleport_sequential"],
    "objective": ["Objective", "grad_norm_sq"],
    "posscale": ["positive_scale_teleport"],
    "problems": ["BOOTH", "PROBLEMS", "QUADRATIC", "ROSENBROCK", "Problem2D", "get_problem"],
    "schedule": ["Schedule"],
    "so2": ["so2_teleport"],
    "teleports": ["GLn", "LevelSet", "PositiveScale", "SO2", "Teleport", "make_teleport"],
    "training": ["method_name", "train"],
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

if TYPE_CHECKING:  # for type checkers and editors: the same names, imported eagerly
    from .gln import gln_teleport
    from .history import History, TeleportRecord
    from .levelset import level_set_teleport
    from .mlp import SEED_DIMS, SEEDS, MLPRegression, seed_task
    from .models import accuracy, digits_data, digits_mlp, softplus_mlp
    from .modules import ModuleObjective, teleport_sequential
    from .objective import Objective, grad_norm_sq
    from .posscale import positive_scale_teleport
    from .problems import BOOTH, PROBLEMS, QUADRATIC, ROSENBROCK, Problem2D, get_problem
    from .schedule import Schedule
    from .so2 import so2_teleport
    from .teleports import GLn, LevelSet, PositiveScale, SO2, Teleport, make_teleport
    from .training import method_name, train


def __getattr__(name: str):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'symtele' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(_MODULE_OF))


__version__ = "0.1.0"

__all__ = sorted(_MODULE_OF)
