"""The teleport groups: one module each, and what finds the positively scalable layers.

* :mod:`~symtele.teleports.so2`: rotations of a 2-D problem's hidden coordinates (SO(2));
* :mod:`~symtele.teleports.positive_scale`: positive per-unit rescaling along a network's symmetry with the
  course project's step (``lr``, ``steps``, ``clamp``), in closed form, and the same steps by double
  backpropagation (``posscale-ref``, the method the writeup timed);
* :mod:`~symtele.teleports.gln`: the GL(n) teleport of Zhao et al. (2022), the baseline;
* :mod:`~symtele.teleports.level_set`: level-set teleportation (no symmetry needed), the writeup's
  formulation; :mod:`~symtele.teleports.level_set_slp` is the formulation of Mishkin et al. (2024);
* :mod:`~symtele.teleports.discovery`: every positive rescaling of any ``nn.Module``, from its ``torch.fx``
  graph, by the rule table of :mod:`~symtele.teleports.rules` (how to add a layer is there), checked by
  :mod:`~symtele.teleports.verification`, described by :mod:`~symtele.teleports.symmetry`;
  :mod:`~symtele.teleports.rescale` teleports along them in closed form and holds the one definition of
  the teleport by double backpropagation (``gradient_norm_reference``, ``reference_teleport``); attention heads'
  GL(d) groups are found by :mod:`~symtele.teleports.heads` (in ``nn.MultiheadAttention``, ``nn.Transformer*``
  layers and hand-written attention) and ascended in closed form by :mod:`~symtele.teleports.attention`
  (all of a network's at once, stacked, by :mod:`~symtele.teleports.attention_stack`);
* :mod:`~symtele.teleports.invariance`: when an exact-symmetry teleport counts as loss-preserving;
* :mod:`~symtele.teleports.generalisation`: sharpness and curvature along the rescalings, and the teleport that
  moves them; :mod:`~symtele.teleports.data_gl` moves them by Zhao et al. (2024)'s data-dependent GL(h) action,
  exact only on its batch.

A new group is a module here with two things: a function ``<group>_teleport(...)`` that moves the
parameters and returns a :class:`~symtele.history.TeleportRecord` (loss and ‖∇L‖² before and after,
steps taken, why it stopped), and a :class:`~symtele.teleports.base.Teleport` subclass (``name``,
``check``, ``__call__``) that the training loop calls; then add it to :data:`TELEPORTS` and to the
exports below. Its tests put the loss change and the gradient's growth to the test.
"""

from __future__ import annotations

from importlib import import_module

from .. import checks
from ..lazy import exports

__getattr__, __dir__, __all__ = exports(
    __name__,
    {
        "base": ["Teleport"],
        "discovery": ["discover"],
        "symmetry": ["Block", "Dropped", "Group", "PairGroup", "Symmetry", "Term"],
        "generalisation": ["Curvature", "HessianTrace", "Sharpness", "hessian_diagonal", "teleport_objective"],
        "data_gl": ["DataGLRecord", "data_gl_teleport", "gl_act"],
        "gln": ["GLn", "gln_teleport"],
        "level_set": ["LevelSet", "level_set_teleport"],
        "null_space": ["held_out_loss_change", "null_space_basis", "null_space_teleport"],
        "level_set_slp": ["LevelSetSLP", "level_set_slp_teleport"],
        "positive_scale": ["PositiveScale", "PositiveScaleReference", "positive_scale_teleport", "teleport_sequential"],
        "rescale": ["Rescale", "gradient_norm_reference", "reference_teleport", "rescale_teleport"],
        "so2": ["SO2", "so2_teleport"],
    },
)
__all__ = [*__all__, "TELEPORTS", "make_teleport"]

#: the teleport objects by name (the method-name suffix): ``module:class`` under this package
TELEPORTS = {
    "so2": "so2:SO2",
    "posscale": "positive_scale:PositiveScale",
    "posscale-ref": "positive_scale:PositiveScaleReference",
    "gln": "gln:GLn",
    "levelset": "level_set:LevelSet",
    "levelset-slp": "level_set_slp:LevelSetSLP",
    "rescale": "rescale:Rescale",
}


def make_teleport(name: str, **options):
    """A teleport object by its name and its options.

    Args:
        name: a key of :data:`TELEPORTS` (``so2``, ``posscale``, ``gln``, ``levelset``, ...).
        **options: the teleport's hyper-parameters, passed to its class (checked there).

    Returns:
        The :class:`~symtele.teleports.base.Teleport` of that name, built from ``options``.

    Raises:
        ValueError: ``name`` is not a key of :data:`TELEPORTS`.
    """
    checks.choice("teleport", name, TELEPORTS)
    module, _, cls = TELEPORTS[name].partition(":")
    return getattr(import_module(f"{__name__}.{module}"), cls)(**options)
