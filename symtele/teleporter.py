"""Teleport a network inside the user's own minibatch loop, with any ``torch.optim`` optimiser.

    teleporter = symtele.Teleporter(model, loss_fn, optimizer, every=100, state="transport")
    for step, (x, y) in enumerate(loader):
        teleporter.maybe(step, x, y)          # teleports when the schedule says so, in place
        optimizer.zero_grad()
        loss_fn(model(x), y).backward()
        optimizer.step()
        scheduler.step()

A teleport computes one gradient on the batch it is given (the current one, or a larger teleport
batch), finds the steepest point along the network's positive rescalings in closed form
(:class:`~symtele.teleports.rescale.Rescale`), and rescales the parameters in place, under
``torch.no_grad``. BatchNorm running statistics are left exactly as they were: the forward passes of a
teleport run on a copy of them.

**Optimiser state** at a teleport, ``state=``:

* ``"keep"``: left as it is (what the course project does);
* ``"reset"``: cleared, so the optimiser starts afresh at the new point (Zhao et al. 2024 rebuild it);
* ``"transport"``: moved by the same group action as the gradient. Under ``p ← p·e^{a}`` every gradient
  the run has seen becomes ``g·e^{−a}`` in the new coordinates (the loss is invariant, so this holds at
  every point of the past trajectory), hence gradient-like state is multiplied by ``e^{−a}`` (SGD's
  momentum buffer, Adam's and AdamW's ``exp_avg``, RMSprop's centred ``grad_avg``) and squared-gradient
  state by ``e^{−2a}`` (Adam's ``exp_avg_sq`` and ``max_exp_avg_sq``, Adagrad's ``sum``, RMSprop's
  ``square_avg``). RMSprop's momentum buffer accumulates ``g / √v``, which the action leaves unchanged.
  The transported state is the state the same run would have had in the teleported coordinates.
  State this does not know (another optimiser) makes the teleport raise ``TypeError``, never guess.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from . import checks
from .history import TeleportRecord
from .schedule import Schedule
from .teleports.rescale import Rescale, rescale_teleport, symmetry_of

STATES = ("keep", "reset", "transport")
#: how each optimiser state entry transforms under ``p ← p·e^{a}``: the power of ``e^{−a}`` it takes
TRANSPORT = {
    torch.optim.SGD: {"momentum_buffer": 1},
    torch.optim.Adam: {"exp_avg": 1, "exp_avg_sq": 2, "max_exp_avg_sq": 2},
    torch.optim.AdamW: {"exp_avg": 1, "exp_avg_sq": 2, "max_exp_avg_sq": 2},
    torch.optim.Adagrad: {"sum": 2},
    torch.optim.RMSprop: {"square_avg": 2, "grad_avg": 1, "momentum_buffer": 0},
}
#: state entries that are not tensors of the parameter's shape (step counters)
COUNTERS = {"step"}


def transport_state(optimizer: torch.optim.Optimizer, factors: dict[nn.Parameter, torch.Tensor]) -> list[str]:
    """Move ``optimizer``'s state by the action ``p ← p·factor`` (see the module's docstring); returns the
    entries moved, as ``"<key> ×e^{-ka}"`` strings. Raises ``TypeError`` for an optimiser or a state entry
    whose transformation is not known, before changing anything."""
    rules = next((r for cls, r in TRANSPORT.items() if type(optimizer) is cls), None)
    if rules is None:
        raise TypeError(
            f"Invalid optimizer: state='transport' knows {', '.join(c.__name__ for c in TRANSPORT)}, "
            f"not {type(optimizer).__name__}; use state='keep' or 'reset'"
        )
    for p in factors:
        for key in optimizer.state.get(p, {}):
            if key not in rules and key not in COUNTERS:
                raise TypeError(
                    f"Invalid optimizer state: {type(optimizer).__name__} entry {key!r} has no known transport"
                )
    moved = set()
    with torch.no_grad():
        for p, factor in factors.items():
            for key, value in optimizer.state.get(p, {}).items():
                power = rules.get(key)
                if power and isinstance(value, torch.Tensor) and value.shape == p.shape:
                    value.div_(factor**power)
                    moved.add(f"{key} ×e^(-{power}a)" if power > 1 else f"{key} ×e^(-a)")
    return sorted(moved)


class Teleporter:
    """Teleports ``model`` in place on a schedule, inside the user's training loop (module docstring).

    ``loss_fn(model(inputs), targets)`` is the loss; ``optimizer`` (optional with ``state="keep"``) is
    the one training ``model``; ``every`` (teleport every that many steps, from step ``start``) or
    ``schedule`` (a :class:`~symtele.schedule.Schedule`, a step or a list of steps) says when;
    ``teleport`` is the :class:`~symtele.teleports.rescale.Rescale` to use (its scale-free defaults by
    default). ``records`` keeps one :class:`~symtele.history.TeleportRecord` per teleport, with
    ``epoch`` set to the step and ``trace["state"]`` saying what happened to the optimiser's state.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable,
        optimizer: torch.optim.Optimizer | None = None,
        *,
        every: int | None = None,
        start: int = 0,
        schedule=None,
        teleport: Rescale | None = None,
        state: str = "transport",
    ):
        if not isinstance(model, nn.Module):
            raise TypeError(f"Invalid model: expected a torch.nn.Module, got {type(model).__name__}")
        if not callable(loss_fn):
            raise TypeError(f"Invalid loss_fn: {loss_fn!r} is not callable")
        self.state = checks.choice("state", state, STATES)
        if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"Invalid optimizer: expected a torch.optim.Optimizer, got {type(optimizer).__name__}")
        if optimizer is None and state != "keep":
            raise ValueError(f"Invalid optimizer: None, but state={state!r} needs the optimizer whose state it moves")
        if state == "transport" and type(optimizer) not in TRANSPORT:
            raise TypeError(
                f"Invalid optimizer: state='transport' knows {', '.join(c.__name__ for c in TRANSPORT)}, "
                f"not {type(optimizer).__name__}; use state='keep' or 'reset'"
            )
        if (every is None) == (schedule is None):
            raise ValueError("Invalid schedule: give exactly one of every= and schedule=")
        if schedule is None:
            self.schedule = Schedule.every_k(every, start)
        else:
            self.schedule = schedule if isinstance(schedule, Schedule) else Schedule.at(schedule)
        if teleport is None:
            teleport = Rescale()
        if not isinstance(teleport, Rescale):
            raise TypeError(f"Invalid teleport: expected a symtele.Rescale, got {type(teleport).__name__}")
        self.model, self.loss_fn, self.optimizer, self.teleport_ = model, loss_fn, optimizer, teleport
        self.records: list[TeleportRecord] = []

    def maybe(self, step: int, inputs: torch.Tensor, targets) -> TeleportRecord | None:
        """Teleport on ``(inputs, targets)`` if ``step`` is on the schedule; the record, or ``None``."""
        checks.count("step", step)
        if not self.schedule.due(step):
            return None
        return self.teleport(inputs, targets, step=step)

    def teleport(self, inputs: torch.Tensor, targets, *, step: int | None = None) -> TeleportRecord:
        """Teleport now, on the batch ``(inputs, targets)``: one gradient, the closed-form ascent, the
        parameters rescaled in place, the optimiser's state kept, reset or transported."""
        checks.finite_tensor("inputs", inputs)
        model = self.model
        symmetry = symmetry_of(model, inputs)
        named = dict(model.named_parameters())
        saved = {n: b.clone() for n, b in model.named_buffers()}

        def loss_of(params):  # on copies of the buffers: a forward in train mode updates BatchNorm's statistics
            buffers = {n: b.clone() for n, b in saved.items()}
            return self.loss_fn(torch.func.functional_call(model, {**params, **buffers}, (inputs,)), targets)

        try:
            with torch.enable_grad():
                leaves = {n: p.detach().requires_grad_(True) for n, p in named.items()}
                loss = loss_of(leaves)
                if loss.dim() != 0:
                    raise ValueError(f"Invalid loss_fn: returned shape {tuple(loss.shape)}, expected a scalar loss")
                grads = dict(zip(named, torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)))
            grads = {n: torch.zeros_like(named[n]) if g is None else g for n, g in grads.items()}
            params = {n: p.detach() for n, p in named.items()}
            _, _, factors, record = rescale_teleport(params, grads, symmetry, loss_of, loss.detach(), self.teleport_)
        finally:
            with torch.no_grad():  # the teleport's forward passes must not move the running statistics
                for n, b in model.named_buffers():
                    b.copy_(saved[n])
        by_param = {named[n]: f for n, f in factors.items()}
        if self.state == "transport":
            moved = transport_state(self.optimizer, by_param)
        with torch.no_grad():
            for p, f in by_param.items():
                p.mul_(f)
        if self.state == "reset":
            for p in named.values():
                self.optimizer.state.pop(p, None)
            record.trace["state"] = "reset"
        elif self.state == "transport":
            record.trace["state"] = "transported: " + (", ".join(moved) or "no state yet")
        else:
            record.trace["state"] = "kept"
        record.epoch = step
        self.records.append(record)
        return record


def teleport_model(model: nn.Module, loss_fn: Callable, inputs: torch.Tensor, targets, **options) -> TeleportRecord:
    """Teleport ``model`` once, in place, on the batch ``(inputs, targets)``; ``options`` are the fields of
    :class:`~symtele.teleports.rescale.Rescale`. Returns the record (``print(symtele.discover(model,
    inputs))`` shows which layers it rescaled)."""
    return Teleporter(model, loss_fn, schedule=[0], teleport=Rescale(**options), state="keep").teleport(inputs, targets)
