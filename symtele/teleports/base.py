"""What every teleport group provides to the training loop.

A teleport is an object holding its hyper-parameters (checked on construction) with

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
        """Raise ``TypeError``/``ValueError`` if this teleport cannot act on ``objective``."""

    def __call__(self, objective, params, grads, loss):
        raise NotImplementedError

    def __repr__(self):
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"
