"""symtele: symmetry and level-set teleportation for faster optimisation.

Teleports (move the parameters to a point of equal or lower loss with a steeper gradient):
    so2_teleport, positive_scale_teleport, teleport_sequential, gln_teleport, level_set_teleport
    and, for the training loop, the objects SO2, PositiveScale, GLn, LevelSet.
Training:  train(objective, params, optimizer=..., lr=..., epochs=..., teleport=..., schedule=...)
Problems:  QUADRATIC, BOOTH, ROSENBROCK (2-D), seed_task (the seed's ReLU regression),
           softplus_mlp, digits_mlp, ModuleObjective (any module and loss).
"""
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
from .train import method_name, train

__version__ = "0.1.0"

__all__ = [
    "BOOTH", "GLn", "History", "LevelSet", "MLPRegression", "ModuleObjective", "Objective", "PROBLEMS",
    "PositiveScale", "Problem2D", "QUADRATIC", "ROSENBROCK", "SEEDS", "SEED_DIMS", "SO2", "Schedule",
    "Teleport", "TeleportRecord", "accuracy", "digits_data", "digits_mlp", "get_problem", "gln_teleport",
    "grad_norm_sq", "level_set_teleport", "make_teleport", "method_name", "positive_scale_teleport",
    "seed_task", "so2_teleport", "softplus_mlp", "teleport_sequential", "train",
]
