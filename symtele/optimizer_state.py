"""What a teleport does to a ``torch.optim`` optimiser's state, and which optimisers it can do it for.

A rescaling teleport acts on each parameter by ``p ← p·e^{a}`` (``a`` per entry, broadcast). The loss is
invariant, so every gradient the run has seen becomes ``g·e^{−a}`` in the new coordinates (at every point of
the past trajectory, mapped by the same action). Hence, under ``state="transport"``:

* gradient-like state is multiplied by ``e^{−a}``: SGD's ``momentum_buffer``, Adam's and AdamW's
  ``exp_avg``, RMSprop's centred ``grad_avg``;
* squared-gradient state by ``e^{−2a}``: Adam's ``exp_avg_sq`` and ``max_exp_avg_sq``, Adagrad's ``sum``,
  RMSprop's ``square_avg``;
* RMSprop's momentum buffer accumulates ``g / (√v + ε)``, which the action leaves unchanged up to ε (in the new
  coordinates it is ``g / (√v + e^{a}ε)``, which no function of the buffer gives): it is kept, exact only as
  ``ε/√v → 0``.

A state entry that starts at a constant of its parameter group (Adagrad's ``sum`` starts at
``initial_accumulator_value``) moves only past that constant: ``sum ← (sum − c)·e^{−2a} + c``.

**Weight decay.** A coupled L2 penalty ``λ/2 ‖p‖²`` is *not* invariant under rescaling: the teleport
changes it (the record says by how much, :func:`l2_penalty`), and the penalty's gradient ``λp`` scales as
``e^{+a}``, not ``e^{−a}``. SGD's momentum buffer is ``m_t = μ m_{t−1} + (1 − τ)(g_t + λ p_t)`` (``m_1 =
g_1 + λ p_1``), the sum of a gradient part ``G`` and a decay part ``P`` with ``P_1 = λ p_1``, ``P_t = μ
P_{t−1} + (1 − τ) λ p_t``; :class:`DecayPart` follows ``P`` step by step (a hook on the optimiser), and the
exact transport is ``m ← (m − P)·e^{−a} + P·e^{a}``. Adam, RMSprop and Adagrad mix ``g + λp`` inside their
moments (squares and all), which no transport can undo: with coupled ``weight_decay > 0`` they are refused
for ``"transport"``. AdamW's decoupled decay ``p ← p − η λ p`` commutes with the rescaling and never enters
the loss or the moments: transport is exact.

:func:`check_optimizer` refuses, before any compute, an optimiser whose state cannot be treated as asked:
L-BFGS (a history of directions in the old coordinates, and a closure that no look-ahead can call) for
``keep``/``transport``, and any optimiser or state entry whose transformation is not known for ``transport``.
"""

from __future__ import annotations

import torch
from torch import nn

#: how each optimiser state entry transforms under ``p ← p·e^{a}``: the power of ``e^{−a}`` it takes
TRANSPORT = {
    torch.optim.SGD: {"momentum_buffer": 1},
    torch.optim.Adam: {"exp_avg": 1, "exp_avg_sq": 2, "max_exp_avg_sq": 2},
    torch.optim.AdamW: {"exp_avg": 1, "exp_avg_sq": 2, "max_exp_avg_sq": 2},
    torch.optim.Adagrad: {"sum": 2},
    torch.optim.RMSprop: {"square_avg": 2, "grad_avg": 1, "momentum_buffer": 0},
}
#: state entries that start at a constant of the parameter group (named here), which the action does not scale
START = {torch.optim.Adagrad: {"sum": "initial_accumulator_value"}}
#: state entries that are not tensors of the parameter's shape (step counters)
COUNTERS = {"step"}


def _known() -> str:
    return ", ".join(c.__name__ for c in TRANSPORT)


def coupled_decay(optimizer: torch.optim.Optimizer, group: dict) -> float:
    """The coupled L2 weight decay λ of one of ``optimizer``'s parameter groups (0 for AdamW's decoupled decay)."""
    if isinstance(optimizer, torch.optim.AdamW) or group.get("decoupled_weight_decay", False):
        return 0.0
    return float(group.get("weight_decay", 0) or 0)


def check_optimizer(optimizer: torch.optim.Optimizer | None, state: str) -> None:
    """Raise unless a teleport can treat ``optimizer``'s state as ``state`` says.

    Args:
        optimizer: the user's optimiser (``None`` only with ``state="keep"``).
        state: ``"keep"``, ``"reset"`` or ``"transport"``.

    Raises:
        ValueError: ``optimizer`` is ``None`` but ``state`` needs it.
        TypeError: L-BFGS with ``keep``/``transport``; an optimiser ``transport`` does not know; Adam, RMSprop
            or Adagrad with a coupled ``weight_decay`` under ``transport``.
    """
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"Invalid optimizer: expected a torch.optim.Optimizer, got {type(optimizer).__name__}")
    if optimizer is None:
        if state != "keep":
            raise ValueError(f"Invalid optimizer: None, but state={state!r} needs the optimizer whose state it moves")
        return
    name = type(optimizer).__name__
    if isinstance(optimizer, torch.optim.LBFGS) and state != "reset":
        raise TypeError(
            f"Invalid optimizer: {name} with state={state!r}: L-BFGS keeps a history of steps in the old "
            "coordinates, which neither 'keep' nor 'transport' can carry over; use state='reset'"
        )
    if state != "transport":
        return
    if type(optimizer) not in TRANSPORT:
        raise TypeError(f"Invalid optimizer: state='transport' knows {_known()}, not {name}; use 'keep' or 'reset'")
    if not isinstance(optimizer, torch.optim.SGD):
        for group in optimizer.param_groups:
            if coupled_decay(optimizer, group) > 0:
                raise TypeError(
                    f"Invalid optimizer: {name} with weight_decay={group['weight_decay']} (a coupled L2 penalty) "
                    "mixes the penalty's gradient into its moments, which no transport can separate; use AdamW "
                    "(decoupled decay, transported exactly) or state='reset'"
                )


def check_holds(optimizer: torch.optim.Optimizer | None, module: nn.Module) -> None:
    """Raise unless ``optimizer`` trains at least one of ``module``'s trainable parameters.

    An optimiser built on another network's parameters (a copy, a re-created model) would leave the look-ahead
    comparing steps that move nothing and the transport moving nothing; it is refused before any compute. An
    optimiser that holds only some of them is allowed: the others are rescaled and do not step.

    Args:
        optimizer: the user's optimiser (``None``: nothing to check).
        module: the network the teleports move (unwrapped).

    Raises:
        ValueError: ``module`` has trainable parameters and ``optimizer`` holds none of them.
    """
    if optimizer is None:
        return
    trainable = [p for p in module.parameters() if p.requires_grad]
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    if trainable and not any(id(p) in held for p in trainable):
        raise ValueError(
            f"Invalid optimizer: {type(optimizer).__name__} holds none of the model's {len(trainable)} trainable "
            "parameters (was it built on another copy of the network?); pass the optimiser that trains this model"
        )


class DecayPart:
    """Follows the weight-decay part ``P`` of SGD's momentum buffers (module docstring).

    :func:`transport_state` moves the buffer exactly with it. For SGD with momentum it registers a step pre-hook
    (``P`` updated before the step adds ``λp`` to the buffer) and a post-hook (the buffer each step leaves); for
    any other optimiser it does nothing. A buffer it has not followed from its first step (one loaded by
    ``optimizer.load_state_dict``) in a group with weight decay has an unknown part: ``unknown`` holds its
    parameter, and its transport is refused (:func:`transported`).

    Args:
        optimizer: the user's optimiser.

    Raises:
        TypeError: momentum buffers with weight decay exist already: their decay part is unknown.
    """

    def __init__(self, optimizer: torch.optim.Optimizer):
        self.part: dict[nn.Parameter, torch.Tensor] = {}
        self.followed: dict[nn.Parameter, torch.Tensor] = {}  # the buffer each parameter's last step left
        self.unknown: set[nn.Parameter] = set()
        self.handles = []
        sgd = isinstance(optimizer, torch.optim.SGD)
        #: whether some group has momentum and a coupled weight decay (then the buffers have a decay part)
        self.coupled = sgd and any(g.get("momentum", 0) and coupled_decay(optimizer, g) for g in optimizer.param_groups)
        if not sgd or not any(g.get("momentum", 0) for g in optimizer.param_groups):
            return
        for g in optimizer.param_groups:
            if g.get("momentum", 0) and coupled_decay(optimizer, g) > 0:
                if any(optimizer.state.get(p, {}).get("momentum_buffer") is not None for p in g["params"]):
                    raise TypeError(
                        "Invalid optimizer: SGD with momentum and weight_decay already has momentum buffers, whose "
                        "weight-decay part cannot be separated for an exact transport; make the Teleporter before "
                        "the first step, or use state='reset'"
                    )
        for p, state in optimizer.state.items():
            if state.get("momentum_buffer") is not None:  # without decay so far: a gradient part only
                self.followed[p] = state["momentum_buffer"]
        self.handles = [
            optimizer.register_step_pre_hook(self._before_step),
            optimizer.register_step_post_hook(self._after_step),
        ]

    def _before_step(self, optimizer, args, kwargs) -> None:
        with torch.no_grad():
            for g in optimizer.param_groups:
                decay, momentum, dampening = coupled_decay(optimizer, g), g.get("momentum", 0), g.get("dampening", 0)
                if not momentum:
                    continue
                for p in g["params"]:
                    if p.grad is None:  # SGD leaves it (and its buffer) as it is
                        continue
                    buffer = optimizer.state.get(p, {}).get("momentum_buffer")
                    if buffer is None:  # this step makes it: m_1 = g_1 + λ p_1
                        self.unknown.discard(p)
                        if decay:
                            self.part[p] = decay * p.detach().clone()
                        else:
                            self.part.pop(p, None)
                    elif self.followed.get(p) is not buffer:
                        self.part.pop(p, None)
                        if decay:
                            self.unknown.add(p)
                    elif p in self.part or decay:
                        part = self.part.setdefault(p, torch.zeros_like(p.detach()))
                        part.mul_(momentum).add_(p.detach(), alpha=(1 - dampening) * decay)

    def follows(self, p: nn.Parameter, buffer: torch.Tensor, decay: float) -> bool:
        """Whether the weight-decay part of ``p``'s momentum ``buffer`` is known (``decay``: its group's λ).

        It is when this object followed the buffer from its first step, or when neither the buffer's past nor its
        group has weight decay (a buffer it did not follow, in a group without decay, is taken as a gradient part).
        """
        if p in self.unknown:
            return False
        return self.followed.get(p) is buffer or not decay

    def _after_step(self, optimizer, args, kwargs) -> None:
        for g in optimizer.param_groups:
            if g.get("momentum", 0):
                for p in g["params"]:
                    buffer = optimizer.state.get(p, {}).get("momentum_buffer")
                    if buffer is not None:
                        self.followed[p] = buffer


def transported(
    optimizer: torch.optim.Optimizer, factors: dict[nn.Parameter, torch.Tensor], decay: DecayPart | None = None
) -> tuple[dict[nn.Parameter, dict], list[str]]:
    """The state each parameter of ``factors`` would have after ``p ← p·factor`` (module docstring).

    The state is returned as new tensors (the optimiser is not touched), with the entries moved, as
    ``"<key> ×e^(-ka)"`` strings.

    Args:
        optimizer: an optimiser :func:`check_optimizer` accepts for ``"transport"``.
        factors: ``e^{a}`` per parameter, broadcastable to it.
        decay: the weight-decay parts of SGD's momentum buffers (:class:`DecayPart`), if any.

    Returns:
        ``(states, moved)``: per parameter its new state dict; the names of the entries that moved.
    """
    rules, starts = TRANSPORT[type(optimizer)], START.get(type(optimizer), {})
    group_of = {p: g for g in optimizer.param_groups for p in g["params"]}
    states, moved = {}, set()
    for p, factor in factors.items():
        new = {}
        for key, value in optimizer.state.get(p, {}).items():
            power = rules.get(key)
            if key not in rules and key not in COUNTERS:
                raise TypeError(
                    f"Invalid optimizer state: {type(optimizer).__name__} entry {key!r} has no known transport"
                )
            if power and isinstance(value, torch.Tensor) and value.shape == p.shape:
                followed = decay is None or decay.follows(p, value, coupled_decay(optimizer, group_of[p]))
                if key == "momentum_buffer" and not followed:
                    raise TypeError(
                        "Invalid optimizer state: SGD's momentum buffer of a parameter with weight decay was not "
                        "followed from its first step (loaded by load_state_dict?), so its weight-decay part is "
                        "unknown and no exact transport exists; use state='reset' or 'keep'"
                    )
                part = None if decay is None else decay.part.get(p)
                if key == "momentum_buffer" and part is not None:
                    value = (value - part) / factor + part * factor
                    moved.add(f"{key} ×e^(-a) (its weight-decay part ×e^(a))")
                else:
                    start = float(group_of[p].get(starts[key], 0) or 0) if key in starts else 0.0
                    value = (value - start) / factor**power + start if start else value / factor**power
                    moved.add(
                        (f"{key} ×e^(-{power}a)" if power > 1 else f"{key} ×e^(-a)")
                        + (f" (past its start {start:g})" if start else "")
                    )
            elif isinstance(value, torch.Tensor):
                value = value.clone()
            new[key] = value
        states[p] = new
    return states, sorted(moved)


def transport_state(
    optimizer: torch.optim.Optimizer, factors: dict[nn.Parameter, torch.Tensor], decay: DecayPart | None = None
) -> list[str]:
    """Move ``optimizer``'s state in place by the action ``p ← p·factor`` (module docstring).

    Args:
        optimizer: the optimiser whose state moves.
        factors: ``e^{a}`` per parameter, broadcastable to it.
        decay: the weight-decay parts of SGD's momentum buffers (:class:`DecayPart`), if any; they move too.

    Returns:
        The entries moved, as ``"<key> ×e^(-ka)"`` strings.

    Raises:
        TypeError: an optimiser or a state entry whose transformation is not known, before changing anything.
    """
    check_optimizer(optimizer, "transport")
    states, moved = transported(optimizer, factors, decay)
    with torch.no_grad():
        for p, new in states.items():
            for key, value in new.items():
                old = optimizer.state[p][key]
                if isinstance(old, torch.Tensor) and old.shape == value.shape:
                    old.copy_(value)
            if decay is not None and p in decay.part:
                decay.part[p].mul_(factors[p])
    return moved


def l2_penalty(optimizer: torch.optim.Optimizer | None, params=None) -> float:
    """``Σ_groups λ/2 Σ_p ‖p‖²`` over the groups with a coupled weight decay λ (0 without any).

    Args:
        optimizer: the user's optimiser, or ``None``.
        params: values to use instead of the parameters' own, by parameter (optional).

    Returns:
        The penalty the optimiser adds to the loss, as a float.
    """
    if optimizer is None:
        return 0.0
    total = 0.0
    for g in optimizer.param_groups:
        decay = coupled_decay(optimizer, g)
        if decay:
            values = [p if params is None else params.get(p, p) for p in g["params"]]
            total += 0.5 * decay * sum(float(v.detach().double().square().sum()) for v in values)
    return total
