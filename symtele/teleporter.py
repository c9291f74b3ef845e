"""Teleport a network inside the user's own minibatch loop, with any ``torch.optim`` optimiser.

    teleporter = symtele.Teleporter(model, loss_fn, optimizer, every=100)
    for step, (x, y) in enumerate(loader):
        teleporter.maybe(step, x, y)          # teleports when the schedule says so and the look-ahead agrees
        optimizer.zero_grad()
        loss_fn(model(x), y).backward()
        optimizer.step()

A teleport computes one gradient on the batch it is given (the current minibatch: the one the next step
is computed on), finds the steepest point along the network's positive rescalings in closed form
(:class:`~symtele.teleports.rescale.Rescale`), and, by default, applies it only as far as the user's next
optimiser step goes further from there than from where it stands, judged on another batch
(:mod:`~symtele.lookahead`). It rescales the parameters in place, under ``torch.no_grad``. BatchNorm running
statistics are left exactly as they were (the teleport's forward passes run on copies of them), and so is
the global random number generator: every forward pass of a teleport draws the same dropout masks from a
forked generator, so the loss checks compare like with like, and a run whose teleports are all declined is
the run without teleports, bit for bit.

**Optimiser state** at a teleport, ``state=`` (:mod:`~symtele.optimizer_state`): ``"transport"`` (moved by the
same group action as the gradient: the state the same run would have had in the teleported coordinates),
``"keep"`` (left as it is, what the course project does) or ``"reset"`` (cleared).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from . import checks
from .history import TeleportRecord
from .lookahead import HORIZON, TRIALS, shadow_step
from .objective import grad_norm_sq
from .optimizer_state import STATES, DecayPart, check_optimizer, l2_penalty, transport_state, transported
from .schedule import Schedule
from .teleports.rescale import Rescale, rescale_teleport, symmetry_of

#: how a teleport is accepted: after the look-ahead agrees, or always (the writeup's experiments)
ACCEPT = ("lookahead", "always")


def _with_context(error: Exception, context: str) -> Exception:
    """``error`` again, its message prefixed with ``context`` (same type where it can be rebuilt)."""
    message = f"{context}: {type(error).__name__}: {error}"
    try:
        new = type(error)(message)
    except Exception:  # noqa: BLE001 (an exception type with another constructor)
        new = RuntimeError(message)
    return new


def _batch(name: str, batch):
    """``(inputs, targets)`` checked; ``None`` stays ``None``."""
    if batch is None:
        return None
    if not isinstance(batch, (tuple, list)) or len(batch) != 2 or not isinstance(batch[0], torch.Tensor):
        raise TypeError(f"Invalid {name}: expected a pair (inputs, targets) of tensors, got {type(batch).__name__}")
    _inputs(name, batch[0])
    return tuple(batch)


def _inputs(name: str, inputs: torch.Tensor) -> torch.Tensor:
    if not isinstance(inputs, torch.Tensor):
        raise TypeError(f"Invalid {name}: expected a torch.Tensor, got {type(inputs).__name__}")
    if inputs.is_floating_point():
        checks.finite_tensor(name, inputs)
    return inputs


def _detached_copy(value):
    return value.detach().clone() if isinstance(value, torch.Tensor) else value


class Teleporter:
    """Teleports ``model`` in place on a schedule, inside the user's training loop (module docstring).

    Args:
        model: the network being trained (any ``nn.Module`` that ``torch.fx`` can trace).
        loss_fn: ``loss_fn(model(inputs), targets)`` is the scalar loss the user trains on.
        optimizer: the ``torch.optim`` optimiser training ``model``; needed unless ``state="keep"`` and
            ``accept="always"``.
        every: teleport every that many steps, from step ``start``.
        start: the first step of ``every``; by default ``every`` (no teleport at step 0).
        schedule: instead of ``every``: a :class:`~symtele.schedule.Schedule`, a step, or a list of steps.
        teleport: the :class:`~symtele.teleports.rescale.Rescale` to use (its scale-free defaults by default).
        state: the optimiser's state at a teleport: ``"transport"`` (default), ``"keep"`` or ``"reset"``.
        accept: ``"lookahead"`` (default): teleport only as far along the found path as the user's next
            step goes further (:mod:`~symtele.lookahead`); ``"always"``: apply the found point.
        lookahead_batch: ``(inputs, targets)`` to judge the next step on; by default the minibatch given to
            :meth:`maybe` at the step before the teleport.
        horizon: the look-ahead's step is the optimiser's with its learning rate times ``horizon`` (10): where
            about the next ``horizon`` steps lead (:mod:`~symtele.lookahead`); 1 tries the next step alone.

    Raises:
        TypeError: a model, loss, optimiser or teleport of the wrong kind; an optimiser whose state cannot be
            treated as ``state`` says (L-BFGS; ``transport`` of an unknown optimiser or of coupled weight decay
            in Adam, RMSprop, Adagrad).
        ValueError: no schedule or two; a missing optimiser; an unknown ``state`` or ``accept``.

    ``records`` keeps one :class:`~symtele.history.TeleportRecord` per teleport (``epoch`` is the step).
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable,
        optimizer: torch.optim.Optimizer | None = None,
        *,
        every: int | None = None,
        start: int | None = None,
        schedule=None,
        teleport: Rescale | None = None,
        state: str = "transport",
        accept: str = "lookahead",
        lookahead_batch=None,
        horizon: float = HORIZON,
    ):
        if not isinstance(model, nn.Module):
            raise TypeError(f"Invalid model: expected a torch.nn.Module, got {type(model).__name__}")
        if not callable(loss_fn):
            raise TypeError(f"Invalid loss_fn: {loss_fn!r} is not callable")
        self.state = checks.choice("state", state, STATES)
        self.accept = checks.choice("accept", accept, ACCEPT)
        check_optimizer(optimizer, state)
        if accept == "lookahead":
            if optimizer is None:
                raise ValueError(
                    "Invalid optimizer: None, but accept='lookahead' tries the optimizer's next step; "
                    "pass the optimizer, or accept='always'"
                )
            if isinstance(optimizer, torch.optim.LBFGS):
                raise TypeError(
                    "Invalid optimizer: LBFGS steps through a closure, which the look-ahead cannot call; "
                    "use accept='always'"
                )
        if (every is None) == (schedule is None):
            raise ValueError("Invalid schedule: give exactly one of every= and schedule=")
        if schedule is None:
            self.schedule = Schedule.every_k(every, every if start is None else start)
        else:
            if start is not None:
                raise ValueError(f"Invalid start: {start!r} (only with every=; a schedule lists its own steps)")
            self.schedule = schedule if isinstance(schedule, Schedule) else Schedule.at(schedule)
        if teleport is None:
            teleport = Rescale()
        if not isinstance(teleport, Rescale):
            raise TypeError(f"Invalid teleport: expected a symtele.Rescale, got {type(teleport).__name__}")
        self.lookahead_batch = _batch("lookahead_batch", lookahead_batch)
        self.horizon = checks.positive("horizon", horizon)
        self.model, self.loss_fn, self.optimizer, self.teleport_ = model, loss_fn, optimizer, teleport
        self.decay = DecayPart(optimizer) if state == "transport" else None
        self.records: list[TeleportRecord] = []
        self._previous = None  # the minibatch before a teleport's: what the look-ahead judges on

    def maybe(self, step: int, inputs: torch.Tensor, targets) -> TeleportRecord | None:
        """Teleport on ``(inputs, targets)`` if ``step`` is on the schedule.

        Call it at every step, before the optimiser's step, with that step's minibatch: the minibatch of the
        step before a teleport is kept (a copy) to judge the teleport on.

        Args:
            step: the step about to be taken (0-based).
            inputs: the minibatch's inputs.
            targets: its targets.

        Returns:
            The teleport's record, or ``None`` when ``step`` is not on the schedule.
        """
        checks.count("step", step)
        record = self.teleport(inputs, targets, step=step) if self.schedule.due(step) else None
        if self.accept == "lookahead" and self.lookahead_batch is None and self.schedule.due(step + 1):
            self._previous = (_detached_copy(inputs), _detached_copy(targets))
        return record

    def teleport(self, inputs: torch.Tensor, targets, *, step: int | None = None, lookahead_batch=None):
        """Teleport now, on the batch ``(inputs, targets)``: one gradient, the closed-form ascent, the look-ahead
        (unless ``accept="always"``), the parameters rescaled in place, the optimiser's state treated.

        Args:
            inputs: the teleport batch's inputs (the batch the next optimiser step is computed on).
            targets: its targets.
            step: the step, for the record.
            lookahead_batch: ``(inputs, targets)`` to judge the next step on, for this teleport only.

        Returns:
            The :class:`~symtele.history.TeleportRecord`.

        Raises:
            ValueError: a batch that does not run through the model, a loss that is not a scalar, a model
                without rescalable units (before anything changes).
            Exception: what the model or the loss function raised on the teleport batch, with that context.
        """
        _inputs("inputs", inputs)
        judge = _batch("lookahead_batch", lookahead_batch) or self.lookahead_batch or self._previous
        model = self.model
        symmetry = symmetry_of(model, inputs)
        named = dict(model.named_parameters())
        saved = {n: b.clone() for n, b in model.named_buffers()}
        cuda = sorted({p.device.index or 0 for p in named.values() if p.is_cuda})
        with torch.random.fork_rng(devices=cuda):  # the user's random stream is left as it was
            seed = int(torch.randint(0, 2**62, ()))

            def output(params, x):  # the same dropout masks every time, on copies of the running statistics
                torch.manual_seed(seed)
                buffers = {n: b.clone() for n, b in saved.items()}
                return torch.func.functional_call(model, {**params, **buffers}, (x,))

            def loss_of(params):
                return self.loss_fn(output(params, inputs), targets)

            try:
                loss, grads = self._gradient(output, named, inputs, targets)
                params = {n: p.detach() for n, p in named.items()}
                _, _, factors, record = rescale_teleport(params, grads, symmetry, loss_of, loss, self.teleport_)
                record.grad_evals, record.forward_evals = 1, 1
                by_param = {named[n]: f for n, f in factors.items()}
                t = 1.0 if record.grad_norm_sq_after > record.grad_norm_sq_before else 0.0
                if self.accept == "lookahead" and t:
                    t = self._look_ahead(record, by_param, {named[n]: g for n, g in grads.items()}, judge, output)
                if 0 < t < 1:
                    by_param = {p: f**t for p, f in by_param.items()}
                    moved = {n: p * by_param[named[n]] if named[n] in by_param else p for n, p in params.items()}
                    with torch.no_grad():
                        record.loss_after = float(loss_of(moved))
                    record.forward_evals += 1
                    record.grad_norm_sq_after = float(
                        grad_norm_sq([g / by_param[named[n]] if named[n] in by_param else g for n, g in grads.items()])
                    )
            finally:
                with torch.no_grad():  # the teleport's forward passes must not move the running statistics
                    for n, b in model.named_buffers():
                        b.copy_(saved[n])
        record.t = t
        if t == 0:
            record.loss_after, record.grad_norm_sq_after, record.log_scales = (
                record.loss_before,
                record.grad_norm_sq_before,
                None,
            )
        else:
            record.log_scales = [t * v for v in record.log_scales]
            self._apply(record, by_param)
        if record.state is None:
            record.state = "untouched (not teleported)"
        record.epoch = step
        self.records.append(record)
        return record

    def _gradient(self, output, named, inputs, targets):
        """The loss on the teleport batch and its gradient in every parameter; errors of the user's model and
        loss are re-raised saying where they came from, before anything changes."""
        with torch.enable_grad():
            leaves = {n: p.detach().requires_grad_(True) for n, p in named.items()}
            try:
                out = output(leaves, inputs)
            except Exception as error:  # noqa: BLE001
                raise _with_context(error, "the model raised on the teleport batch's inputs") from error
            try:
                loss = self.loss_fn(out, targets)
            except Exception as error:  # noqa: BLE001
                raise _with_context(
                    error, "the loss function raised on (model(inputs), targets) of the teleport batch"
                ) from error
            if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
                shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
                raise ValueError(f"Invalid loss_fn: returned {shape}, expected a scalar loss tensor")
            if not bool(torch.isfinite(loss)):
                value = float(loss.detach())
                raise ValueError(f"Invalid loss: {value} on the teleport batch (not finite); nothing was changed")
            grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
        grads = {n: torch.zeros_like(named[n]) if g is None else g for n, g in zip(named, grads)}
        return loss.detach(), grads

    def _look_ahead(self, record, factors, grads, judge, output) -> float:
        """How far along the found path to go: ``t`` of :data:`~symtele.lookahead.TRIALS` or 0
        (:mod:`~symtele.lookahead`); the trials go to ``record.trace["lookahead"]``."""
        if judge is None:
            record.stopped = (
                "not teleported: no batch other than the teleport batch to judge the next step on "
                "(call maybe() at every step, or pass lookahead_batch=)"
            )
            return 0.0
        x, y = judge
        named = dict(self.model.named_parameters())
        name_of = {p: n for n, p in named.items()}
        own = {p: self.optimizer.state.get(p, {}) for p in named.values()}

        def after_step(t: float) -> float:
            f = {p: v**t for p, v in factors.items()} if t else {}
            values = {p: p.detach() * f[p] if p in f else p.detach() for p in named.values()}
            step_grads = {p: grads[p] / f[p] if p in f else grads[p] for p in named.values()}
            states, owned = own, False
            if t and self.state == "reset":
                states = {p: {} for p in named.values()}
            elif t and self.state == "transport":  # new tensors for every scaled parameter; the others' own
                moved = transported(self.optimizer, f, self.decay)[0]
                states = {p: moved[p] if p in moved else own[p] for p in named.values()}
                unscaled = {
                    p: {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in s.items()}
                    for p, s in states.items()
                    if p not in moved
                }
                states, owned = {**states, **unscaled}, True
            new = shadow_step(self.optimizer, values, step_grads, states, self.horizon, owned=owned)
            with torch.no_grad():
                value = float(self.loss_fn(output({name_of[p]: v for p, v in new.items()}, x), y))
            record.forward_evals += 1
            return value if value == value else float("inf")  # nan: no better than anything

        tried, losses = [0.0], [after_step(0.0)]
        chosen = 0.0
        for t in TRIALS:
            tried.append(t)
            losses.append(after_step(t))
            if losses[-1] < losses[0]:
                chosen = t
                break
        record.trace["lookahead"] = {"t": tried, "loss": losses}
        if chosen == 0:
            best = min(losses[1:], default=float("inf"))
            record.stopped = (
                f"declined by the look-ahead: a step {self.horizon:g}× the optimiser's ends at {best:.6g} "
                f"or higher from the teleported points (t = {', '.join(f'{t:g}' for t in TRIALS)}), at "
                f"{losses[0]:.6g} from where it is"
            )
        return chosen

    def _apply(self, record, factors) -> None:
        """Rescale the parameters in place and treat the optimiser's state; the record says what happened."""
        if self.optimizer is not None and l2_penalty(self.optimizer):
            before = l2_penalty(self.optimizer)
            after = l2_penalty(self.optimizer, {p: p.detach() * f for p, f in factors.items()})
            record.trace["l2_penalty"] = [before, after]
        if self.state == "transport":
            moved = transport_state(self.optimizer, factors, self.decay)
            record.state = "transported: " + (", ".join(moved) or "no state yet")
        with torch.no_grad():
            for p, f in factors.items():
                p.mul_(f)
        if self.state == "reset":
            for p in self.model.parameters():
                self.optimizer.state.pop(p, None)
            record.state = "reset"
        elif self.state == "keep":
            record.state = "kept"


def teleport_model(model: nn.Module, loss_fn: Callable, inputs: torch.Tensor, targets, **options) -> TeleportRecord:
    """Teleport ``model`` once, in place, on the batch ``(inputs, targets)``, to the point the ascent finds
    (no optimiser, no look-ahead).

    Args:
        model: the network.
        loss_fn: ``loss_fn(model(inputs), targets)`` is the loss.
        inputs: the batch's inputs.
        targets: its targets.
        **options: the fields of :class:`~symtele.teleports.rescale.Rescale`.

    Returns:
        The record (``print(symtele.discover(model, inputs))`` shows which layers it rescaled).
    """
    teleporter = Teleporter(model, loss_fn, schedule=[0], teleport=Rescale(**options), state="keep", accept="always")
    return teleporter.teleport(inputs, targets)
