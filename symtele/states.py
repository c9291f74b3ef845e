"""What becomes of an optimiser's state at a teleport: the modes' names, defined here once (no torch).

* ``"keep"``: left as it is (what the course project does);
* ``"reset"``: cleared, so the optimiser starts afresh at the teleported point;
* ``"transport"``: moved by the teleport's group action (:class:`~symtele.teleporter.Teleporter` only,
  which knows how each ``torch.optim`` state entry transforms).
"""

from __future__ import annotations

#: every mode, as :class:`~symtele.teleporter.Teleporter` and the networks notebook's settings take them
STATES = ("keep", "reset", "transport")
#: the modes :func:`~symtele.training.train` takes: its own optimisers have no transport rule
TRAIN_STATES = ("keep", "reset")
