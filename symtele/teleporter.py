"""Teleport a network inside the user's own minibatch loop, with any ``torch.optim`` optimiser.

    teleporter = symtele.Teleporter(model, loss_fn, optimizer, every=100)
    for step, (x, y) in enumerate(loader):
        teleporter.maybe(step, x, y)          # teleports when the schedule says so and the look-ahead agrees
        optimizer.zero_grad()
        loss_fn(model(x), y).backward()
        optimizer.step()

or, from the gradient the backward pass computed (no gradient of its own):

    for step, (x, y) in enumerate(loader):
        optimizer.zero_grad()
        loss_fn(model(x), y).backward()
        teleporter.maybe_after_backward(step, x, y)  # teleports from p.grad and rewrites it to the new point's
        optimizer.step()

A teleport takes one gradient on the batch it is given (the current minibatch: the one the next step is
computed on; it computes it, or, after the backward pass, finds it in ``p.grad``), finds the steepest point
along the network's positive rescalings in closed form (:class:`~symtele.teleports.rescale.Rescale`), and,
by default, applies it only as far as the user's next
optimiser step goes further from there than from where it stands, consistently over the chunks of another
batch (a paired test: :mod:`~symtele.lookahead`). It rescales the parameters in place, under
``torch.no_grad``. BatchNorm running statistics are left exactly as they were (the teleport's forward passes
run on copies of them), and so is the global random number generator: every forward pass of a teleport draws
the same dropout masks from a forked generator, so the loss checks compare like with like, and a run whose
teleports are all declined is the run without teleports, bit for bit.

**From the gradient at hand.** :meth:`Teleporter.maybe_after_backward` takes the gradient of the loss at ``w``
from ``p.grad`` (the user's backward pass computed it) instead of computing one. The group acts linearly and
keeps the loss, ``L(M_g w) = L(w)``, so the gradient at the teleported point is ``∇L(M_g w) = M_g^{-T} ∇L(w)``:
``p.grad / f`` for a parameter scaled by ``f``, the attention groups' gradient map for theirs. The teleport
rewrites ``p.grad`` to it, in place, and the user's optimiser step is the step from the teleported point. It
shares everything else with :meth:`Teleporter.maybe`: one extra forward pass measures the loss at ``w``. The
running statistics the user's forward pass updated at ``w`` stay valid at ``g·w``: a normaliser's input is
never rescaled (:mod:`~symtele.teleports.discovery`).

**Attention.** A transformer's heads have GL(d) groups (:mod:`~symtele.teleports.attention`), found by the same
discovery. They move after the positive scales, on the same path (at a fraction ``t`` of it each group stands at
the step of its ascent nearest ``t`` of the way), judged by the same look-ahead. Their optimiser state is carried
exactly where it is gradient-like (SGD's momentum, Adam's ``exp_avg``) and approximately where it is a mean of
squares (``exp_avg_sq``: :func:`~symtele.teleports.attention.act_on_squares`); SGD's momentum with a coupled weight
decay and other optimisers' state are not carried for them, and with ``state="transport"`` the groups are then
left as they are (the record's ``trace["attention"]`` says why).

**Optimiser state** at a teleport, ``state=`` (:mod:`~symtele.optimizer_state`): ``"transport"`` (moved by the
same group action as the gradient: the state the same run would have had in the teleported coordinates),
``"keep"`` (left as it is, what the course project does) or ``"reset"`` (cleared).

**Training setups.** ``model`` may be wrapped by ``DistributedDataParallel`` (``model.module`` is teleported)
and compiled by ``torch.compile`` (``model._orig_mod``: the compiled module shares its parameters, which the
teleport rescales in place, without a recompile). Under ``torch.distributed`` a teleport is one teleport of
the global batch (:mod:`~symtele.distributed`): every process must call :meth:`Teleporter.maybe` at every step,
as it calls the model (from ``p.grad``: the gradient ``DistributedDataParallel`` averaged, no gradient sent).
Under ``torch.autocast`` the teleport's own forward and backward passes run with autocast disabled, in the
parameters' precision (float32 for a float32 model trained in bf16 or fp16): its gradient and closed-form sums
are float32 or wider, and the loss checks compare float32 losses. A ``GradScaler``'s scale plays no part in
:meth:`Teleporter.maybe`, which computes its own, unscaled, gradient; :meth:`Teleporter.maybe_after_backward`
needs ``scaler.unscale_(optimizer)`` first (and checks it when given ``scaler=``). With gradient accumulation,
pass the micro-batches of the step as lists, ``maybe(step, [x1, x2], [y1, y2])``: the teleport's loss is their
mean, ``(1/K) Σ_k loss_fn(model(x_k), y_k)``, and its gradient the mean of theirs, as in a loop that divides
each micro-batch's loss by ``K`` before ``backward()``.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import nn
from torch.amp.grad_scaler import OptState
from torch.nn.parallel import DistributedDataParallel

from . import checks, distributed
from .history import TeleportRecord
from .lookahead import GIVE_UP, HORIZON, TRIALS, Z, chunk_losses, paired_z, shadow_step
from .objective import grad_norm_sq
from .optimizer_state import (
    TRANSPORT,
    DecayPart,
    check_holds,
    check_optimizer,
    l2_penalty,
    transport_state,
    transported,
)
from .schedule import Schedule
from .states import STATES
from .teleports.attention_stack import PairPath, plan_pairs, stack_of
from .teleports.invariance import default_rtol, preserved
from .teleports.rescale import Rescale, rescale_teleport, scale_derivatives, symmetry_of

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
    """``(inputs, targets)`` checked (inputs: a tensor or a list of micro-batches' inputs); ``None`` stays."""
    if batch is None:
        return None
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise TypeError(f"Invalid {name}: expected a pair (inputs, targets), got {type(batch).__name__}")
    _micro_batches(name, *batch)
    return tuple(batch)


def _micro_batches(name: str, inputs, targets) -> list[tuple[torch.Tensor, object]]:
    """``[(inputs, targets)]``, or the micro-batches ``[(x1, y1), …]`` (gradient accumulation), checked.

    ``inputs`` and ``targets`` are either one batch's, or lists of the same length of the micro-batches'.
    """
    if isinstance(inputs, (list, tuple)):
        if not isinstance(targets, (list, tuple)) or len(targets) != len(inputs) or not inputs:
            given = f"{len(targets)} targets" if isinstance(targets, (list, tuple)) else type(targets).__name__
            raise ValueError(
                f"Invalid {name}: {len(inputs)} micro-batches of inputs but {given}; give lists of the same "
                "non-zero length"
            )
        return [(_inputs(f"{name}[{k}]", x), y) for k, (x, y) in enumerate(zip(inputs, targets))]
    return [(_inputs(name, inputs), targets)]


def _inputs(name: str, inputs: torch.Tensor) -> torch.Tensor:
    if not isinstance(inputs, torch.Tensor):
        raise TypeError(f"Invalid {name}: expected a torch.Tensor, got {type(inputs).__name__}")
    if inputs.dim() and not inputs.shape[0]:
        raise ValueError(f"Invalid {name}: an empty batch (shape {tuple(inputs.shape)}); give at least one example")
    if inputs.is_floating_point():
        checks.finite_tensor(name, inputs)
    return inputs


#: the integer type of each element width, to read a tensor's bits as integers
_SAME_WIDTH = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _checksum(tensors: list[torch.Tensor]) -> list[float]:
    """A checksum of the tensors' bits, as two float64 numbers (32 bits each, so exactly representable).

    The sum of the bit patterns read as integers, modulo ``2**64``: exact, whatever the order of summation, so
    equal tensors give equal checksums on every process whatever its threads or hardware.
    """
    total = 0
    for t in tensors:
        bits = t.detach().reshape(-1).view(_SAME_WIDTH[t.element_size()])  # 0-dim and 1-byte dtypes too
        total += int(bits.sum(dtype=torch.int64))  # wraps modulo 2**64 at worst: still exact modulo 2**64
    total %= 2**64
    return [float(total >> 32), float(total & 0xFFFFFFFF)]


#: how far from zero, relative to the terms it sums, a float32 ``p.grad``'s derivative along a log-scale may be: a
#: backward pass in float32 leaves about 2e-7, one under bf16 / fp16 autocast up to 4e-3 / 5e-4 (digits MLP, CNN,
#: ResNet, ResNet-18); a penalty ``1e-2·‖w‖²`` in the loss gives 0.46 to 0.69
KEPT_RTOL = 0.02


def _not_kept_by(symmetry, params: dict, grads: dict) -> str | None:
    """Why ``grads`` is not the gradient of a loss the rescalings keep, or ``None`` when it may be.

    Such a gradient has a zero derivative along every log-scale (:func:`~symtele.teleports.rescale.
    scale_derivatives`) and along every attention group (``M`` of
    :meth:`~symtele.teleports.attention_stack.HeadStack.derivatives`). Each scale's derivative must be at most
    :data:`KEPT_RTOL` of the terms it sums (``1e-8`` for a float64 gradient), and each group's largest entry of
    ``|M|`` that much of its largest sum of terms (entry by entry, an entry whose terms nearly cancel would be
    all rounding: under fp16 autocast without a loss scale a GPT's reached 0.018, the groups' 0.011, against 2e-7
    in float32; a penalty ``λ‖W‖²`` on one ``nn.MultiheadAttention``'s ``in_proj_weight`` gives 0.088 with
    ``λ = 1e-3``, 0.009 with ``1e-4``).
    """
    dtype = next(iter(grads.values())).dtype
    tolerance = 1e-8 if dtype == torch.float64 else KEPT_RTOL
    if symmetry.n_scales:
        derivatives, magnitudes = scale_derivatives(symmetry, params, grads)
        excess = derivatives.abs() - tolerance * magnitudes
        k = int(excess.argmax())
        if excess[k] > 0:
            group, where = next((g for g in symmetry.groups if k in g.scales), None), "a scale"
            if group is not None:
                where += f" of {', '.join(group.producers)} → {', '.join(group.consumers) or 'the output'}"
            return _not_kept_why(where, derivatives[k], magnitudes[k], tolerance, dtype)
    for d in dict.fromkeys(g.d for g in symmetry.pair_groups):
        groups = [g for g in symmetry.pair_groups if g.d == d]
        slope, terms = stack_of(groups).derivatives(params, grads)
        slope, terms = slope.abs().flatten(1).amax(1), terms.flatten(1).amax(1)  # each group's largest
        k = int((slope - tolerance * terms).argmax())
        if slope[k] > tolerance * terms[k]:
            return _not_kept_why(f"the attention group {groups[k].name}", slope[k], terms[k], tolerance, dtype)
    return None


def _not_kept_why(where: str, derivative, terms, tolerance: float, dtype) -> str:
    """The record's reason for :func:`_not_kept_by`."""
    return (
        f"not teleported: p.grad is not the gradient of a loss the rescalings keep: its derivative along {where} is "
        f"{float(derivative):.3g}, {float(derivative.abs() / terms):.3g} of the terms it sums "
        f"(at most {tolerance:g} for {dtype}); a penalty such as λ‖w‖² in the loss, or a gradient changed entry by "
        "entry (clipped per parameter, noise added), breaks the closed form: call maybe() before the backward pass "
        "instead"
    )


def _detached_copy(value):
    if isinstance(value, (list, tuple)):
        return [_detached_copy(v) for v in value]
    return value.detach().clone() if isinstance(value, torch.Tensor) else value


def unwrap(model: nn.Module) -> tuple[nn.Module, object]:
    """The module a teleport acts on, and the process group of its ``DistributedDataParallel`` wrapper.

    The wrappers are taken off in turn: ``DistributedDataParallel`` (``.module``) and ``torch.compile``
    (``._orig_mod``, which shares its parameters with the compiled module).

    Args:
        model: the network as the user trains it, wrapped or not.

    Returns:
        ``(module, group)``: the unwrapped module, and the ``DistributedDataParallel`` wrapper's process
        group (``None`` without one).
    """
    group = None
    while True:
        if isinstance(model, DistributedDataParallel):
            group, model = model.process_group, model.module
            continue
        eval_frame = sys.modules.get("torch._dynamo.eval_frame")  # not imported: nothing is compiled
        if eval_frame is not None and isinstance(model, eval_frame.OptimizedModule):
            model = model._orig_mod
            continue
        return model, group


def _full_precision(params) -> contextlib.ExitStack:
    """Autocast disabled on the parameters' devices: the teleport's passes run in the parameters' dtype."""
    stack = contextlib.ExitStack()
    for kind in sorted({p.device.type for p in params} | {"cpu"}):
        stack.enter_context(torch.autocast(device_type=kind, enabled=False))
    return stack


class Teleporter:
    """Teleports ``model`` in place on a schedule, inside the user's training loop (module docstring).

    Args:
        model: the network being trained (any ``nn.Module`` that ``torch.fx`` can trace), also wrapped by
            ``DistributedDataParallel`` or compiled by ``torch.compile``.
        loss_fn: ``loss_fn(model(inputs), targets)`` is the scalar loss the user trains on.
        optimizer: the ``torch.optim`` optimiser training ``model``; needed unless ``state="keep"`` and
            ``accept="always"``.
        every: teleport every that many steps, from step ``start``.
        start: the first step of ``every``; by default ``every`` (no teleport at step 0).
        schedule: instead of ``every``: a :class:`~symtele.schedule.Schedule`, a step, or a list of steps.
        teleport: the :class:`~symtele.teleports.rescale.Rescale` to use (its scale-free defaults by default).
        state: the optimiser's state at a teleport: ``"transport"`` (default), ``"keep"`` or ``"reset"``.
        accept: ``"lookahead"`` (default): teleport only as far along the found path as the user's next
            step goes further, consistently over the judging batch's chunks (:mod:`~symtele.lookahead`);
            ``"always"``: apply the found point.
        lookahead_batch: ``(inputs, targets)`` to judge the next step on; by default the minibatch given to
            :meth:`maybe` (or :meth:`maybe_after_backward`) at the step before the teleport.
        horizon: the look-ahead's step is the optimiser's with its learning rate times ``horizon`` (10): where
            about the next ``horizon`` steps lead (:mod:`~symtele.lookahead`); 1 tries the next step alone.
        process_group: the ``torch.distributed`` process group whose global batch a teleport is of
            (:mod:`~symtele.distributed`); by default the ``DistributedDataParallel`` wrapper's, else the
            default group when ``torch.distributed`` is initialised, else none (one process). A group of one
            process teleports on that process's batch alone.

    Raises:
        TypeError: a model, loss, optimiser or teleport of the wrong kind; an optimiser whose state cannot be
            treated as ``state`` says (L-BFGS; ``transport`` of an unknown optimiser or of coupled weight decay
            in Adam, RMSprop, Adagrad).
        ValueError: no schedule or two; a missing optimiser, or one that holds none of the model's trainable
            parameters; an unknown ``state`` or ``accept``; under
            ``torch.distributed``, settings that differ between the processes (at the first call of
            :meth:`maybe`, :meth:`maybe_after_backward` or :meth:`teleport`, on every process).

    Attributes:
        records: one :class:`~symtele.history.TeleportRecord` per teleport (``epoch`` is the step).
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
        process_group=None,
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
        if process_group is not None and not isinstance(process_group, dist.ProcessGroup):
            raise TypeError(
                f"Invalid process_group: expected a torch.distributed.ProcessGroup, got {type(process_group).__name__}"
            )
        self.lookahead_batch = _batch("lookahead_batch", lookahead_batch)
        self.horizon = checks.positive("horizon", horizon)
        self.module, wrapper_group = unwrap(model)
        check_holds(optimizer, self.module)
        self.group = distributed.default_group(wrapper_group, process_group)
        self.model, self.loss_fn, self.optimizer, self.teleport_ = model, loss_fn, optimizer, teleport
        self.decay = DecayPart(optimizer) if state == "transport" else None
        self.records: list[TeleportRecord] = []
        self._previous = None  # the minibatch before a teleport's: what the look-ahead judges on
        self._checked = distributed.group_size(self.group) == 1  # the settings agree between the processes
        self._buffer = None  # under torch.distributed: the flat buffer all-reduced, kept for the next teleport

    def _check_processes(self) -> None:
        """Once, under ``torch.distributed``: the same settings on every process (one small all-gather)."""
        if self._checked:
            return
        optimizer = self.optimizer
        groups = (
            None
            if optimizer is None
            else [{k: repr(v) for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
        )
        settings = {
            "schedule": repr(self.schedule),
            "teleport": repr(self.teleport_),
            "state": self.state,
            "accept": self.accept,
            "horizon": self.horizon,
            "lookahead_batch": self.lookahead_batch is not None,
            "optimizer": None if optimizer is None else type(optimizer).__name__,
            "optimizer groups": groups,
            "parameters": [(n, tuple(p.shape)) for n, p in self.module.named_parameters()],
        }
        distributed.check_same_settings(self.group, settings)
        self._checked = True

    def maybe(self, step: int, inputs, targets) -> TeleportRecord | None:
        """Teleport on ``(inputs, targets)`` if ``step`` is on the schedule, computing the gradient itself.

        Call it at every step, before the forward and backward passes of the step, with that step's
        minibatch: the minibatch of the step before a teleport is kept (a copy) to judge the teleport on.
        :meth:`maybe_after_backward` does the same from the gradient the backward pass leaves in ``p.grad``.

        Args:
            step: the step about to be taken (0-based).
            inputs: the minibatch's inputs, or a list of the inputs of the step's micro-batches (gradient
                accumulation: the teleport's loss is their mean).
            targets: its targets, or a list of the micro-batches' targets.

        Returns:
            The teleport's record, or ``None`` when ``step`` is not on the schedule.

        Raises:
            TypeError: a ``step`` that is not an integer.
            ValueError: a negative ``step``.
            Exception: the errors of :meth:`teleport`, at a step on the schedule.
        """
        return self._maybe(step, inputs, targets)

    def maybe_after_backward(self, step: int, inputs, targets, *, scaler=None) -> TeleportRecord | None:
        """Teleport if ``step`` is on the schedule, from the gradient already in ``p.grad``; rewrite it.

        Call it at every step between ``loss.backward()`` and ``optimizer.step()``, with the minibatch that
        gradient is of. The teleport computes no gradient: the symmetry acts linearly and keeps the loss, so
        the gradient at the teleported point ``g·w`` is ``∇L(g·w) = M_g^{-T} ∇L(w)`` (a parameter scaled by
        ``f`` has the gradient ``p.grad / f``; an attention head's pair its gradient map), and the teleport
        writes it into ``p.grad`` in place: the user's ``optimizer.step()`` then steps from the teleported
        point as if its gradient had been computed there. Its cost is the forward passes of the loss at the
        start, of the loss checks and of the look-ahead; under ``torch.distributed`` the gradient is
        ``DistributedDataParallel``'s, averaged already, and a teleport all-reduces a few numbers only (the
        processes' ``p.grad`` are checked to agree by a checksum of their bits).

        ``p.grad`` must be the gradient of the loss the teleport measures on ``(inputs, targets)``: the mean
        of the micro-batches' losses with gradient accumulation (each divided by their number before
        ``backward()``), unscaled with a ``GradScaler`` (``scaler.unscale_(optimizer)`` first). A ``p.grad``
        that is ``None`` is a zero gradient (an unused parameter), left ``None``. A gradient that is not finite
        anywhere (on any process) is not teleported from: the record says so, and nothing changes.

        Args:
            step: the step being taken (0-based).
            inputs: the minibatch's inputs, or a list of the inputs of the step's micro-batches.
            targets: its targets, or a list of the micro-batches' targets.
            scaler: the ``torch.amp.GradScaler`` of a mixed-precision loop, if any: checked to have unscaled
                the optimiser's gradients (``scaler.unscale_(optimizer)``) this step.

        Returns:
            The teleport's record, or ``None`` when ``step`` is not on the schedule.

        Raises:
            TypeError: a ``step`` that is not an integer; a ``scaler`` that is not a ``GradScaler``.
            ValueError: a negative ``step``; at a step on the schedule, gradients still scaled by ``scaler``,
                ``p.grad`` ``None`` for every parameter (no backward pass yet), ``p.grad`` that differs between
                the processes, and the errors of :meth:`teleport`.
        """
        return self._maybe(step, inputs, targets, after_backward=True, scaler=scaler)

    def _maybe(self, step: int, inputs, targets, **options) -> TeleportRecord | None:
        """:meth:`maybe` and :meth:`maybe_after_backward`: ``options`` go to :meth:`teleport`."""
        checks.count("step", step)
        scaler = options.get("scaler")
        if scaler is not None and not isinstance(scaler, torch.amp.GradScaler):  # at every step, not only teleports
            raise TypeError(f"Invalid scaler: expected a torch.amp.GradScaler, got {type(scaler).__name__}")
        self._check_processes()
        record = self.teleport(inputs, targets, step=step, **options) if self.schedule.due(step) else None
        if self.accept == "lookahead" and self.lookahead_batch is None and self.schedule.due(step + 1):
            self._previous = _detached_copy(inputs), _detached_copy(targets)  # checked when it is used
        return record

    def teleport(
        self, inputs, targets, *, step: int | None = None, lookahead_batch=None, after_backward=False, scaler=None
    ):
        """Teleport now, on the batch ``(inputs, targets)``.

        The gradient (computed, one backward pass; or, ``after_backward``, the one in ``p.grad``), the
        closed-form ascent, the look-ahead (unless ``accept="always"``), the parameters rescaled in place, the
        optimiser's state treated, and, ``after_backward``, ``p.grad`` rewritten to the gradient at the new
        point (:meth:`maybe_after_backward`).

        Args:
            inputs: the teleport batch's inputs (the batch the next optimiser step is computed on), or a list
                of its micro-batches' inputs.
            targets: its targets, or a list of the micro-batches' targets.
            step: the step, for the record.
            lookahead_batch: ``(inputs, targets)`` to judge the next step on, for this teleport only.
            after_backward: teleport from the gradient in ``p.grad`` and rewrite it, instead of computing one.
            scaler: with ``after_backward``, the ``GradScaler`` whose unscaling of the gradients is checked.

        Returns:
            The :class:`~symtele.history.TeleportRecord`.

        Raises:
            TypeError: inputs that are not tensors, a ``lookahead_batch`` that is not a pair, a ``scaler`` that
                is not a ``GradScaler``.
            ValueError: micro-batch lists of different lengths, empty or non-finite inputs, a batch that does not run
                through the model, a loss that is not a scalar or not finite, a model without rescalable units;
                ``after_backward``: gradients still scaled, no ``p.grad`` at all, or ``p.grad`` differing
                between the processes (all before anything changes).
            Exception: what the model or the loss function raised on the teleport batch, with that context.
        """
        began = time.perf_counter()
        batches = _micro_batches("inputs", inputs, targets)
        judge, source = _batch("lookahead_batch", lookahead_batch) or self.lookahead_batch, "lookahead_batch"
        judged_on = "the look-ahead's judging batch (lookahead_batch)"
        if judge is None and self._previous is not None:  # the minibatch given at the step before this one
            judge, source = self._previous, "previous step's batch (the look-ahead's judging batch)"
            judged_on = f"the {source}"
        judge = None if judge is None else _micro_batches(source, *judge)
        if after_backward:
            self._check_unscaled(scaler)
        elif scaler is not None:
            raise ValueError("Invalid scaler: only with after_backward=True (a computed gradient is never scaled)")
        self._check_processes()
        model = self.module
        symmetry = symmetry_of(model, batches[0][0])
        named = dict(model.named_parameters())
        saved = {n: b.clone() for n, b in model.named_buffers()}
        cuda = sorted({p.device.index or 0 for p in named.values() if p.is_cuda})
        with torch.random.fork_rng(devices=cuda), _full_precision(named.values()):  # the user's stream is kept
            seed = int(torch.randint(0, 2**62, ()))

            def outputs(params, data):  # the same dropout masks every time, on copies of the running statistics
                torch.manual_seed(seed)  # and of the inputs (a forward may change its input in place)
                buffers = {n: b.clone() for n, b in saved.items()}
                for x, y in data:
                    yield torch.func.functional_call(model, {**params, **buffers}, (x.clone(),)), y

            def own_loss(params, data) -> float:  # the mean over the micro-batches of this process's batch
                with torch.no_grad():
                    return float(sum(self._scalar_loss(out, y) for out, y in outputs(params, data)) / len(data))

            def mean_loss(params, data) -> float:  # the mean over the micro-batches and over the processes
                value = own_loss(params, data)
                return value if self.group is None else distributed.mean_value(self.group, value)

            def losses_by_chunk(params, data) -> list[float]:  # the mean loss of each chunk of the batch
                try:
                    with torch.no_grad():
                        values = chunk_losses(self.loss_fn, list(outputs(params, data)))
                except Exception as error:  # noqa: BLE001 (on copies: nothing has changed yet)
                    raise _with_context(error, f"the model or the loss function raised on {judged_on}") from error
                return values if self.group is None else distributed.mean_values(self.group, values)

            def loss_of(params):
                return torch.tensor(mean_loss(params, batches), dtype=torch.float64)

            try:
                if after_backward:
                    loss, grads, sent, judged, why_not = self._gradient_at_hand(
                        named, lambda: own_loss({n: p.detach() for n, p in named.items()}, batches), judge is not None
                    )
                    stepless = {n for n, p in named.items() if p.grad is None}
                else:
                    loss, grads, sent, judged, stepless = self._gradient(outputs, named, batches, judge is not None)
                    why_not = None
                params = {n: p.detach() for n, p in named.items()}
                if after_backward and why_not is None:
                    why_not = _not_kept_by(symmetry, params, grads)
                if why_not is None:
                    _, _, factors, record = rescale_teleport(params, grads, symmetry, loss_of, loss, self.teleport_)
                    record.forward_evals += after_backward  # and the loss at the start, with the gradient at hand
                else:
                    factors, record = {}, TeleportRecord(method=self.teleport_.name, loss_before=float(loss))
                    record.stopped, record.forward_evals, record.grad_norm_sq_before = why_not, 1, float("nan")
                record.grad_evals = 0 if after_backward else 1
                if self.group is not None:
                    record.trace["all_reduce_bytes"] = sent
                diagonal = why_not is None and record.grad_norm_sq_after > record.grad_norm_sq_before
                full = factors if diagonal else {}
                path, pair_rows, why = PairPath([]), [], None
                if symmetry.pair_groups and why_not is None:
                    why = self._pairs_refused(len(symmetry.pair_groups))
                    if why is None:  # each head's group ascends from the gradient at the rescaled point
                        at_full = {n: g / full[n] if n in full else g for n, g in grads.items()}
                        o = self.teleport_
                        path, pair_rows = plan_pairs(
                            at_full, symmetry.pair_groups, steps=o.steps, max_step=o.max_log_step
                        )
                t = 1.0 if diagonal or path else 0.0
                if self.accept == "lookahead" and t:
                    t = self._look_ahead(
                        record,
                        {named[n]: f for n, f in full.items()},
                        {named[n]: g for n, g in grads.items()},
                        judge if judged else None,
                        losses_by_chunk,
                        path,
                        {named[n] for n in stepless},
                    )
                if t and (t < 1 or path):  # a point the closed form's own check did not see
                    at_t = {n: f**t for n, f in full.items()}
                    point = path.apply(t, {n: p * at_t[n] if n in at_t else p for n, p in params.items()})
                    record.loss_after = mean_loss(point, batches)
                    record.forward_evals += 1
                    at_point = path.apply(t, {n: g / at_t[n] if n in at_t else g for n, g in grads.items()}, 1)
                    record.grad_norm_sq_after = float(grad_norm_sq(list(at_point.values())))
                    rtol = self.teleport_.loss_rtol or default_rtol(next(iter(params.values())).dtype)
                    if path and not bool(preserved(loss, torch.tensor(record.loss_after, dtype=loss.dtype), rtol)):
                        why = (
                            f"not applied: with the attention groups the loss went from {float(loss):.8g} to "
                            f"{record.loss_after:.8g} (beyond rtol {rtol:g})"
                        )
                        path, t = PairPath([]), (t if diagonal else 0.0)
                        if t:
                            at_t = {n: f**t for n, f in full.items()}
                            point = {n: p * at_t[n] if n in at_t else p for n, p in params.items()}
                            record.loss_after = mean_loss(point, batches)
                            record.forward_evals += 1
                            record.grad_norm_sq_after = float(
                                grad_norm_sq([g / at_t[n] if n in at_t else g for n, g in grads.items()])
                            )
                by_param = {named[n]: f**t for n, f in full.items()} if t else {}
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
            record.log_scales = [t * v for v in record.log_scales] if diagonal else None
            with _full_precision(named.values()):  # the move in the parameters' precision, the one checked above
                self._apply(record, by_param, path, t, grads if after_backward else None)
        if symmetry.pair_groups:
            moved = len(path.elements(t))
            record.trace["attention"] = {"groups": pair_rows or len(symmetry.pair_groups), "moved": moved}
            if why or not moved:
                record.trace["attention"]["why"] = why or "no attention group's step was applied"
            if moved and record.stopped and record.stopped.startswith("moved nothing"):
                record.stopped = f"positive scales {record.stopped}; {moved} attention head groups moved"
        if record.state is None:
            record.state = "untouched (not teleported)"
        record.epoch = step
        record.cost_s = time.perf_counter() - began  # the whole call: gradient, ascents, look-ahead, the move
        self.records.append(record)
        return record

    def _gradient(self, outputs, named, batches, judged: bool):
        """The mean loss, its gradient, the bytes all-reduced, the judging flag, and the parameters without p.grad.

        The last are the names of the parameters that the user's backward pass leaves without ``p.grad`` (frozen;
        with one process, also those the loss does not reach).

        The loss is the mean over the micro-batches (and the processes), its gradient is taken in every
        parameter (zero where the loss does not reach it); errors of the user's model and loss are re-raised saying
        where they came from, before anything changes.
        """
        grads = dict.fromkeys(named)  # the first micro-batch's gradient as it comes, the others added to it
        total, processes = 0.0, distributed.group_size(self.group)  # each gradient divided by the processes: summed
        with torch.enable_grad():
            leaves = {n: p.detach().requires_grad_(True) for n, p in named.items()}
            batch_outputs = outputs(leaves, batches)
            for _ in batches:
                try:
                    out, y = next(batch_outputs)
                except Exception as error:  # noqa: BLE001
                    raise _with_context(error, "the model raised on the teleport batch's inputs") from error
                loss = self._scalar_loss(out, y)
                parts = torch.autograd.grad(loss / (len(batches) * processes), list(leaves.values()), allow_unused=True)
                for n, g in zip(named, parts):
                    if g is not None:
                        grads[n] = g if grads[n] is None else grads[n].add_(g)
                total += float(loss.detach()) / len(batches)
        # no p.grad in the user's step: frozen, or (one process) not reached by the loss
        stepless = {n for n, g in grads.items() if not named[n].requires_grad or (g is None and processes == 1)}
        grads = {n: torch.zeros_like(named[n]) if g is None else g for n, g in grads.items()}
        sent, judging = 0, float(judged)
        if self.group is not None:
            names = list(grads)
            reduced, (total, judging), self._buffer, sent = distributed.sum_over(
                self.group, list(grads.values()), [total / processes, judging], self._buffer
            )
            grads, judging = dict(zip(names, reduced)), judging / processes  # the processes with a judging batch
        self._check_agreed(total, judging, "maybe")
        return torch.tensor(total, dtype=torch.float64), grads, sent, judging == 1, stepless

    def _scalar_loss(self, out, y) -> torch.Tensor:
        """``loss_fn(out, y)``, checked to be a scalar tensor; what it raises is re-raised saying where it came from."""
        try:
            loss = self.loss_fn(out, y)
        except Exception as error:  # noqa: BLE001
            raise _with_context(
                error, "the loss function raised on (model(inputs), targets) of the teleport batch"
            ) from error
        if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
            shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
            raise ValueError(f"Invalid loss_fn: returned {shape}, expected a scalar loss tensor")
        return loss

    def _check_agreed(self, loss: float, judging: float, call: str) -> None:
        """Raise, before anything changes, on a loss that is not finite or on a look-ahead batch some processes lack.

        ``judging`` is the fraction of the processes that have a batch to judge the look-ahead on; ``call`` the
        method the message tells the user to call at every step.
        """
        if not math.isfinite(loss):
            where = "on the teleport batch" if self.group is None else "on the global teleport batch"
            raise ValueError(f"Invalid loss: {loss} {where} (not finite); nothing was changed")
        if 0 < judging < 1:
            raise ValueError(
                "Invalid lookahead_batch: some processes have a batch to judge the look-ahead on and others not; "
                f"call {call}() at every step on every process, or pass lookahead_batch= on all of them"
            )

    def _check_unscaled(self, scaler) -> None:
        """Raise unless ``scaler`` (if any, and enabled) has unscaled the optimiser's gradients this step."""
        if scaler is None:
            return
        if not isinstance(scaler, torch.amp.GradScaler):
            raise TypeError(f"Invalid scaler: expected a torch.amp.GradScaler, got {type(scaler).__name__}")
        if not scaler.is_enabled():
            return
        if self.optimizer is None:
            raise ValueError(
                "Invalid scaler: a GradScaler is given but no optimizer, whose unscaling it would be checked for; "
                "pass the Teleporter the optimizer"
            )
        stage = scaler._per_optimizer_states.get(id(self.optimizer), {}).get("stage")
        if stage is not OptState.UNSCALED:
            raise ValueError(
                f"Invalid scaler: the gradients in p.grad are still multiplied by its scale {scaler.get_scale():g}; "
                "call scaler.unscale_(optimizer) before maybe_after_backward (scaler.step(optimizer) then uses them "
                "as they are)"
            )

    def _gradient_at_hand(self, named, own_loss: Callable[[], float], judged: bool):
        """The loss and the gradient in ``p.grad``, the bytes all-reduced, the judging flag, and why not to teleport.

        The last is ``None``, or the reason: a gradient that is not finite. ``own_loss()`` is this process's mean
        loss (one forward pass). Under ``torch.distributed`` the gradient is not sent: each process sends five
        numbers (:func:`~symtele.distributed.gather_values`), its loss, its flag, the sum of its ``p.grad`` and a
        checksum of its bits in two parts (:func:`_checksum`), which must be the same on every process (the
        gradient ``DistributedDataParallel`` averaged), else every process raises before anything changes.
        """
        if all(p.grad is None for p in named.values()):
            raise ValueError(
                "Invalid gradient: p.grad is None for every parameter; call maybe_after_backward after "
                "loss.backward() and before optimizer.zero_grad()"
            )
        grads = {n: torch.zeros_like(p) if p.grad is None else p.grad.detach() for n, p in named.items()}
        present = [g for g in grads.values() if g.numel()]
        # finite iff every entry is (a float64 sum of float32 or narrower entries cannot overflow)
        total = float(torch.stack([g.sum(dtype=torch.float64) for g in present]).sum()) if present else 0.0
        values = [own_loss(), float(judged), total]
        sent = 0
        if self.group is None:
            gathered = [values]
        else:
            gathered, sent = distributed.gather_values(self.group, values + _checksum(present))
        loss = torch.tensor(sum(row[0] for row in gathered) / len(gathered), dtype=torch.float64)
        finite = [math.isfinite(row[2]) for row in gathered]
        if not all(finite):
            where = "" if self.group is None else f" on process {finite.index(False)} of the group"
            total = gathered[finite.index(False)][2]
            why = f"not teleported: the gradient in p.grad is not finite{where} (its sum is {total})"
            return loss, grads, sent, False, why
        if any(row[3:] != gathered[0][3:] for row in gathered):
            raise ValueError(
                "Invalid gradient: p.grad differs between the processes (checksums of its bits "
                + ", ".join(f"process {r} {int(row[3]) << 32 | int(row[4]):#x}" for r, row in enumerate(gathered))
                + "); wrap the model in DistributedDataParallel, or average the gradients over the process group "
                "before maybe_after_backward; nothing was changed"
            )
        judging = sum(row[1] for row in gathered) / len(gathered)
        self._check_agreed(float(loss), judging, "maybe_after_backward")
        return loss, grads, sent, judging == 1, None

    def _look_ahead(
        self, record, factors, grads, judge, losses_by_chunk, path: PairPath | None = None, stepless=frozenset()
    ) -> float:
        """How far along the found path to go: a ``t`` of :data:`~symtele.lookahead.TRIALS`, or 0.

        See :mod:`~symtele.lookahead`; the trials, their mean losses and paired statistics go to
        ``record.trace["lookahead"]``. ``path``: the attention groups' part of the path, if any. ``stepless``: the
        parameters that have no ``p.grad`` in the user's step (frozen, or not reached by the loss), which the
        optimiser does not move, so neither does the look-ahead's step (a zero gradient would move them under
        momentum, Adam, or weight decay).
        """
        path = PairPath([]) if path is None else path
        if judge is None:
            record.stopped = (
                "not teleported: no batch other than the teleport batch to judge the next step on "
                "(call maybe() or maybe_after_backward() at every step, or pass lookahead_batch=)"
            )
            return 0.0
        named = dict(self.module.named_parameters())
        name_of = {p: n for n, p in named.items()}
        own = {p: self.optimizer.state.get(p, {}) for p in named.values()}

        scratch = {}  # the trials' working copies, one per parameter and role, reused by every trial

        def into(key, like: torch.Tensor) -> torch.Tensor:
            if key not in scratch:
                scratch[key] = torch.empty_like(like)
            return scratch[key]

        def after_step(t: float) -> list[float]:  # copies throughout: the shadow step may change them in place
            f = {p: v**t for p, v in factors.items()} if t else {}
            values, step_grads = {}, {}
            for p in named.values():
                value, grad = p.detach(), grads[p]
                if p in f:
                    values[p] = torch.mul(value, f[p], out=into((p, "value"), value))
                else:
                    values[p] = into((p, "value"), value).copy_(value)
                if p in stepless:  # no p.grad in the user's step: the optimiser leaves it (and its state) as it is
                    continue
                if p in f:
                    step_grads[p] = torch.div(grad, f[p], out=into((p, "grad"), grad))
                else:
                    step_grads[p] = into((p, "grad"), grad).copy_(grad)
            if t and self.state == "reset":
                states = {p: {} for p in named.values()}
            else:
                moved = transported(self.optimizer, f, self.decay)[0] if t and self.state == "transport" else {}
                states = {
                    p: moved[p]
                    if p in moved
                    else {k: into((p, k), v).copy_(v) if isinstance(v, torch.Tensor) else v for k, v in own[p].items()}
                    for p in named.values()
                }
            if t and path:  # the attention groups after the positive scales
                values = {
                    p: v for p, v in zip(values, path.apply(t, {name_of[p]: v for p, v in values.items()}).values())
                }
                carried = path.apply(t, {name_of[p]: g for p, g in step_grads.items()}, 1)
                step_grads = {p: carried[name_of[p]] for p in step_grads}
                if self.state == "transport":
                    self._pair_states(states, path, t, name_of)
            new = shadow_step(self.optimizer, values, step_grads, states, self.horizon, owned=True)
            values = losses_by_chunk({name_of[p]: v for p, v in new.items()}, judge)
            record.forward_evals += 1
            return [v if v == v else float("inf") for v in values]  # nan: no better than anything

        base = after_step(0.0)
        tried, losses, zs = [0.0], [sum(base) / len(base)], [0.0]
        chosen = 0.0
        for t in TRIALS:
            trial = after_step(t)
            tried.append(t)
            losses.append(sum(trial) / len(trial))
            zs.append(paired_z(trial, base))
            if zs[-1] < -Z if len(base) > 1 else losses[-1] < losses[0]:
                chosen = t
                break
            if t == 1 and len(base) > 1 and zs[-1] >= GIVE_UP:  # consistently higher: the shorter steps are not tried
                break
        record.trace["lookahead"] = {"t": tried, "loss": losses, "z": zs, "chunks": len(base)}
        if chosen == 0:
            best = min(losses[1:], default=float("inf"))
            record.stopped = (
                f"declined by the look-ahead: a step {self.horizon:g}× the optimiser's ends at {best:.6g} or "
                f"higher from the teleported points (t = {', '.join(f'{t:g}' for t in tried[1:])}), at {losses[0]:.6g} "
                + (
                    f"from where it is, and no point's chunks of the judging batch are lower by z < -{Z:g} "
                    f"(best z = {min(zs[1:], default=0.0):.3g})"
                    if len(base) > 1
                    else "from where it is"
                )
            )
        return chosen

    def _pairs_refused(self, count: int) -> str | None:
        """Why the attention groups are left as they are under this ``state`` and optimiser, or ``None``.

        Their optimiser-state transport (:mod:`~symtele.teleports.attention`) is exact for SGD's momentum and
        Adam's ``exp_avg``, approximate for ``exp_avg_sq``; SGD's momentum with a coupled weight decay (whose
        decay part moves like the weights) and the other optimisers are not carried.
        """
        if self.state != "transport":
            return None
        optimizer = self.optimizer
        if isinstance(optimizer, torch.optim.SGD):
            if self.decay is not None and self.decay.coupled:
                return (
                    f"{count} attention head groups left as they are: SGD's momentum with a coupled weight decay is "
                    "not transported for them (its decay part moves like the weights); state='keep' or 'reset' "
                    "moves them"
                )
            return None
        if type(optimizer) in (torch.optim.Adam, torch.optim.AdamW):
            return None
        return (
            f"{count} attention head groups left as they are: state='transport' carries SGD, Adam and AdamW for "
            f"them, not {type(optimizer).__name__}; state='keep' or 'reset' moves them"
        )

    def _pair_states(self, states: dict, path: PairPath, t: float, name_of: dict) -> None:
        """Carry the optimiser states of the parameters the attention groups touch, in place in ``states``.

        ``states`` holds new tensors per parameter, owned by the caller; ``path`` at ``t`` is the groups' move.
        """
        rules = TRANSPORT[type(self.optimizer)]
        touched = [p for p in states if name_of[p] in path.params()]
        keys = {k for p in touched for k, v in states[p].items() if isinstance(v, torch.Tensor) and v.shape == p.shape}
        for key in keys:
            have = {name_of[p]: states[p][key] for p in touched if key in states[p]}
            carried = path.apply(t, have, rules.get(key, 0))
            for p in touched:
                if key in states[p]:
                    states[p][key] = carried[name_of[p]]

    def _apply(self, record, factors, path: PairPath, t: float, grads: dict | None = None) -> None:
        """Rescale the parameters in place, move the attention groups, treat the optimiser's state (and ``p.grad``).

        ``p.grad`` is rewritten to the gradient at the new point if ``grads`` (the gradient at the old one, by name)
        is given. ``factors`` are the positive scales' (by parameter) and ``path`` at ``t`` the attention groups';
        the record says what happened. The gradient at the new point is ``M^{-T}`` of the old one: ``grad / f`` for
        a scale ``f``, the gradient map for the attention groups; a ``p.grad`` that is ``None`` stays ``None``.
        """
        named = dict(self.module.named_parameters())
        name_of = {p: n for n, p in named.items()}
        values = {n: p.detach() * factors[p] if p in factors else p.detach() for n, p in named.items()}
        values = path.apply(t, values)
        at_point = {}  # the attention groups' gradients at the new point (the scales' are divided in place below)
        if grads is not None and path.elements(t):  # computed before anything moves: grads are views of p.grad
            by_name = {n: g / factors[named[n]] if named[n] in factors else g for n, g in grads.items()}
            at_point = {n: g for n, g in path.apply(t, by_name, 1).items() if n in path.params()}
        before = l2_penalty(self.optimizer)  # 0 without a coupled weight decay (or an optimiser)
        if before:
            record.trace["l2_penalty"] = [before, l2_penalty(self.optimizer, {named[n]: v for n, v in values.items()})]
        if self.state == "transport":
            moved = transport_state(self.optimizer, factors, self.decay)
            if path.elements(t):
                touched = {p: dict(self.optimizer.state.get(p, {})) for n, p in named.items() if n in path.params()}
                self._pair_states(touched, path, t, name_of)
                with torch.no_grad():
                    for p, state in touched.items():
                        for key, value in state.items():
                            old = self.optimizer.state[p][key]
                            if isinstance(old, torch.Tensor) and old.shape == p.shape:
                                old.copy_(value)
                if any(touched.values()):
                    moved = [*moved, "attention groups: gradient-like state by A's gradient map, squared by (M∘M)"]
            record.state = "transported: " + (", ".join(moved) or "no state yet")
        with torch.no_grad():
            for n, p in named.items():
                if p in factors or n in path.params():
                    p.copy_(values[n])
                    if grads is not None and p.grad is not None:
                        if n in at_point:
                            p.grad.copy_(at_point[n])
                        elif p in factors:
                            p.grad.div_(factors[p])
        if self.state == "reset":
            for p in self.module.parameters():
                self.optimizer.state.pop(p, None)
            record.state = "reset"
        elif self.state == "keep":
            record.state = "kept"


def teleport_model(model: nn.Module, loss_fn: Callable, inputs: torch.Tensor, targets, **options) -> TeleportRecord:
    """Teleport ``model`` once, in place, on the batch ``(inputs, targets)``, to the point the ascent finds.

    No optimiser and no look-ahead: ``Teleporter(..., state="keep", accept="always").teleport(inputs, targets)``.

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
