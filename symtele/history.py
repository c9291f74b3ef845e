"""Records of a training run and of each teleport, as plain data a user can load into pandas."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class TeleportRecord:
    """What one teleport did.

    ``method``: the teleport's name in the results (``"rescale"`` for the Teleporter's). ``epoch``: the epoch (the
    Teleporter's: the step) it came before, ``None`` off a schedule. ``steps_taken``: the ascent steps of the
    point it found (kept whatever ``t`` says of how far it went).
    ``loss_before/after`` and ``grad_norm_sq_before/after`` are floats, or lists with
    one value per problem copy for batched runs. ``stopped`` is ``None`` when every
    requested step was taken, else the reason the teleport stopped early (a rejected
    step, a failed line search, a satisfied KKT test); a teleport that returns its starting
    point says so there. ``trace`` holds per-step diagnostics (level-set teleport: objective,
    constraint gap, KKT residual, step size). ``grad_evals`` and ``hvp_evals`` count the loss
    gradients and Hessian-vector products the teleport computed (``None`` where not counted).
    ``forward_evals`` counts its forward passes without a gradient (loss checks, look-ahead trials). ``cost_s``:
    its wall-clock seconds (for the Teleporter's, the whole call: gradient, ascents, look-ahead and the move).
    ``t`` (the in-loop :class:`~symtele.teleporter.Teleporter`): how far along the path the ascent found the
    teleport went, 1 the whole way, 0 not at all (the look-ahead declined it). ``log_scales`` (rescaling
    teleports): the log-scale of every unit that was applied. ``state`` (the Teleporter): what happened to
    the optimiser's state. ``str(record)`` is one line.
    ``newton_angle_deg`` (level-set teleports): the angle between ``∇L`` and ``∇²L ∇L`` at the
    returned point, 0 when the gradient is an eigenvector of the Hessian, as at a KKT point of
    the teleport's problem (then a gradient step is a Newton step along that eigenvector).
    """

    method: str
    epoch: int | None = None
    steps_taken: int = 0
    cost_s: float = 0.0
    loss_before: Any = None
    loss_after: Any = None
    grad_norm_sq_before: Any = None
    grad_norm_sq_after: Any = None
    stopped: str | None = None
    trace: dict[str, list] = field(default_factory=dict)
    grad_evals: int | None = None
    hvp_evals: int | None = None
    newton_angle_deg: float | None = None
    forward_evals: int | None = None
    t: float | None = None
    log_scales: list | None = None
    state: str | None = None

    def __str__(self) -> str:
        """The record in one line.

        When, how far along the found path (``t``), ``‖∇L‖²`` and the loss before and after, the cost and what
        happened to the optimiser's state: only the fields that were filled in.
        """
        parts = []
        if self.epoch is not None:
            parts.append(f"step={self.epoch}")
        if self.t is not None:
            parts.append(f"t={self.t:g}")
        if (
            _is_number(self.grad_norm_sq_before)
            and _is_number(self.grad_norm_sq_after)
            and not (
                math.isnan(self.grad_norm_sq_before) and math.isnan(self.grad_norm_sq_after)  # nan: not computed
            )
        ):
            parts.append(f"‖∇L‖² {self.grad_norm_sq_before:.4g} → {self.grad_norm_sq_after:.4g}")
        if _is_number(self.loss_before) and _is_number(self.loss_after):
            kept = self.loss_after == self.loss_before or abs(self.loss_after - self.loss_before) <= 1e-5 * max(
                abs(self.loss_before), 1e-30
            )
            parts.append(
                f"loss kept {self.loss_after:.5g}" if kept else f"loss {self.loss_before:.5g} → {self.loss_after:.5g}"
            )
        cost = []
        if self.grad_evals is not None:
            cost.append(f"{self.grad_evals} grad eval{'s' if self.grad_evals != 1 else ''}")
        if self.hvp_evals:
            cost.append(f"{self.hvp_evals} HVPs")
        if self.forward_evals:
            cost.append(f"{self.forward_evals} forward{'s' if self.forward_evals != 1 else ''}")
        if cost:
            parts.append("cost " + " + ".join(cost))
        if self.state is not None:
            parts.append(f"state {self.state}")
        if self.stopped:
            parts.append(f"stopped: {self.stopped}")
        return f"TeleportRecord({', '.join(parts) or self.method})"

    __repr__ = __str__

    @property
    def loss_change(self):
        """``loss_after − loss_before`` (per copy for batched runs)."""
        if isinstance(self.loss_before, list):
            return [a - b for a, b in zip(self.loss_after, self.loss_before)]
        return self.loss_after - self.loss_before

    def to_dict(self) -> dict:
        """The record as plain data (JSON-ready, a row for pandas)."""
        return asdict(self)


@dataclass
class History:
    """Per-epoch record of one run: the loss and ‖∇L‖² at the point each step starts from.

    ``time_s[k]`` is the wall-clock time from the start of the run until ``loss[k]``
    was known, teleport costs included. For a batched run (several seeds as one
    computation) ``loss`` and ``grad_norm_sq`` hold one list per epoch with a value
    per copy; :meth:`split` turns it into one history per copy.

    ``path`` (filled only by ``train(..., keep_path=True)``) lists every point the run
    visited as ``(epoch, params)`` pairs, in order: the start of each epoch, a second
    entry for the same epoch after a teleport, and the final point as epoch ``epochs``.
    """

    method: str
    loss: list = field(default_factory=list)
    grad_norm_sq: list = field(default_factory=list)
    time_s: list[float] = field(default_factory=list)
    step_size: list = field(default_factory=list)
    teleports: list[TeleportRecord] = field(default_factory=list)
    path: list = field(default_factory=list)

    @property
    def teleport_epochs(self) -> list[int]:
        """The epochs at which the run teleported."""
        return [t.epoch for t in self.teleports]

    @property
    def teleport_cost_s(self) -> float:
        """The seconds its teleports took, together."""
        return float(sum(t.cost_s for t in self.teleports))

    def to_dict(self) -> dict:
        """The history as plain data, with ``teleport_epochs``."""
        d = asdict(self)
        d["teleport_epochs"] = self.teleport_epochs
        return d

    def split(self) -> list[History]:
        """One history per problem copy of a batched run (a one-element list otherwise)."""
        if not self.loss or not isinstance(self.loss[0], list):
            return [self]
        n = len(self.loss[0])

        def pick(value, i):
            return value[i] if isinstance(value, list) else value

        out = []
        for i in range(n):
            teleports = [
                TeleportRecord(
                    method=t.method,
                    epoch=t.epoch,
                    steps_taken=t.steps_taken,
                    cost_s=t.cost_s,
                    loss_before=pick(t.loss_before, i),
                    loss_after=pick(t.loss_after, i),
                    grad_norm_sq_before=pick(t.grad_norm_sq_before, i),
                    grad_norm_sq_after=pick(t.grad_norm_sq_after, i),
                    stopped=t.stopped,
                    trace=t.trace,
                )
                for t in self.teleports
            ]
            out.append(
                History(
                    method=self.method,
                    loss=[row[i] for row in self.loss],
                    grad_norm_sq=[row[i] for row in self.grad_norm_sq],
                    time_s=list(self.time_s),
                    step_size=[pick(s, i) for s in self.step_size],
                    teleports=teleports,
                    path=[(epoch, [p[i] for p in params]) for epoch, params in self.path],
                )
            )
        return out


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def to_list(t) -> Any:
    """A tensor as a float (scalar) or a list of floats (batched)."""
    t = t.detach().cpu()
    return t.item() if t.dim() == 0 else t.tolist()
