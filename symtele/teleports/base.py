"""What every teleport group provides to the training loop.

A teleport is a frozen dataclass of its hyper-parameters, with their defaults and their checks
(``__post_init__``: a ``ValueError``/``TypeError`` naming the bad value, before any compute). It
is the one home of those defaults: the group's function (``positive_scale_teleport(...,
**options)``) takes the same names and builds the object from them. Besides its fields it has

* ``name``: the suffix of the method name in the results (``gd+<name>``);
* ``check(objective, params)``: raise ``TypeError``/``ValueError`` before any compute if the group
  cannot act on this objective;
* ``__call__(objective, params, grads, loss) -> (params, grads, loss, record)``: the teleported
  point, the loss and gradient there, and a :class:`~symtele.history.TeleportRecord` of what it did.
"""

from __future__ import annotations


class Teleport:
    """Base class of the teleport objects (:class:`~symtele.teleports.so2.SO2`, ``PositiveScale``, ...)."""

    name = "teleport"

    def check(self, objective, params) -> None:
        """Raise ``TypeError``/``ValueError`` if this teleport cannot act on ``objective``.

        The base class accepts every objective; a group that cannot act on some overrides this.

        Args:
            objective: the objective the training loop will teleport.
            params: the parameters it will teleport.
        """

    def __call__(self, objective, params, grads, loss):
        """Teleport ``params`` along the group.

        Args:
            objective: the objective whose loss the group keeps.
            params: the current parameters.
            grads: the gradient of the loss at ``params``.
            loss: the loss at ``params``.

        Returns:
            ``(params, grads, loss, record)``: the teleported point, the gradient and loss there, and a
            :class:`~symtele.history.TeleportRecord` of what the teleport did.

        Raises:
            NotImplementedError: always, in the base class; each group overrides it.
        """
        raise NotImplementedError

    def _set(self, **values) -> None:
        """Store checked (normalised) values in a frozen dataclass, from its ``__post_init__``."""
        for key, value in values.items():
            object.__setattr__(self, key, value)
