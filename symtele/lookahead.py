"""Look-ahead acceptance: would the user's next optimiser step go further from the teleported point?

A teleport raises ``‖∇L‖²`` on the batch it is fitted to, and keeps the loss; but a steeper point is also
a sharper one, and with the user's learning rate the next steps can overshoot. Before a teleport is
applied, the :class:`~symtele.teleporter.Teleporter` compares where the user's own next step would lead
from the original point and from points along the path the ascent found, ``w_t = g_{t·s}·w`` for
``t = 1, ½, ¼`` (``s`` the log-scales found, ``t = 0`` the original point):

    ℓ(t) = L_J( step_{h·η}(w_t, ∇L_B(w_t), state_t) ),

where ``B`` is the teleport batch (the one the step is computed on), ``J`` a *different* batch (the
previous minibatch, or a held-out batch the user passes), ``state_t`` the optimiser's state treated as
the user asked (kept, reset, or transported by ``g_{t·s}``), and ``step`` the user's optimiser itself,
run on copies (:func:`shadow_step`) with its learning rate ``η`` multiplied by the *horizon* ``h`` (10 by
default): to first order, where the next ``h`` steps lead rather than the next one. That margin matters. A
rescaling teleport changes the step every later iteration takes (for SGD it is exactly a preconditioner:
``p ← p·e^{a}`` turns each later step into ``−η e^{−2a} ∇L`` in the old coordinates), and a sharper point
whose first step still goes further can overshoot a few steps later, above all with momentum; asking the
teleported point to go further under the long step too is a margin against that (measured in the report's
chapter on minibatch training, not proved). ``h = 1`` is the plain one-step look-ahead. The gradient at
``w_t`` costs nothing: the action is linear and keeps the loss, so ``∇L_B(w_t) = e^{−t·a} ∇L_B(w)`` entry
by entry. Each ``ℓ(t)`` is one forward pass.

One judging batch is one noisy sample, and near a minimum the two steps end at losses that differ by less
than the batch's own noise: a plain ``ℓ(t) < ℓ(0)`` then accepts about half of the teleports by chance, and
each accepted one changes every later step. So the judging batch is split into ``k`` chunks
(:data:`CHUNKS`, consecutive slices of the same forward pass: no extra cost), each chunk's loss is
measured at both ends, and a point is accepted only when its chunks are lower *consistently*: the paired
statistic of the differences ``d_c = ℓ_c(t) − ℓ_c(0)``,

    z = d̄ / (s_d / √k),

is below ``−Z`` (:data:`Z`, 2: about a one-sided 5 % test with ``k = 8``). The teleport goes to the
largest ``t`` of ``1, ½, ¼`` that passes, trying them in that order and stopping at the first; if none
passes, it does not teleport (``t = 0``). A full step whose chunks are higher by a paired ``z`` of at
least :data:`GIVE_UP` (1) ends the search there: the shorter steps lie between it and the original point, and in
the report's minibatch runs (chapter 09, both learning-rate schedules) one passed after such a full step in
1 of 310 teleports, while trying them costs two more forward passes. Outputs that cannot be sliced along
the batch (a tuple, a dict, a single sample) give one chunk, and the plain comparison of the means decides
(the record's ``trace["lookahead"]["chunks"]`` says which).

The step judged is the optimiser's on ``∇L_B``: a change the user's loop makes to ``p.grad`` between the backward
pass and ``optimizer.step()`` (clipping the global norm, added noise), or a hook registered on the optimiser
(``register_step_pre_hook``), is not in it.
Under clipping the judged step from the teleported point, whose gradient is larger, is longer than the real one.
"""

from __future__ import annotations

import copy
import math
from collections import OrderedDict, defaultdict

import torch
from torch import nn

#: the fractions of the found path that are tried, in order (``t = 0``, no teleport, is always measured)
TRIALS = (1.0, 0.5, 0.25)
#: a full step (``t = 1``) with a paired ``z`` at least this declines without trying the shorter steps
GIVE_UP = 1.0
#: the default horizon: the look-ahead's step is the optimiser's with its learning rate times this
HORIZON = 10.0
#: the judging batch is split into this many chunks (fewer when it has fewer samples), each a loss of its own
CHUNKS = 8
#: a point is accepted when its chunk losses are lower than the original point's with a paired z below ``-Z``
Z = 2.0


def chunk_losses(loss_fn, batches: list[tuple[object, object]], chunks: int = CHUNKS) -> list[float]:
    """The mean loss of each of ``chunks`` consecutive slices of a batch given as micro-batches.

    The samples of the micro-batches, in order, are cut into ``chunks`` slices of (nearly) equal size, and each
    slice's loss is the size-weighted mean of ``loss_fn`` on its pieces in the micro-batches: for a loss that
    is a mean over samples, the slice's own mean loss, whether the batch comes whole or in micro-batches.

    Args:
        loss_fn: ``loss_fn(outputs, targets)`` is a scalar loss.
        batches: ``(outputs, targets)`` of each micro-batch (one pair for a whole batch).
        chunks: how many slices, at most (one per sample when the batch has fewer).

    Returns:
        One loss per slice, in the order of the samples; the mean of ``loss_fn`` over the micro-batches alone
        (one value) when they cannot be sliced (outputs or targets that are not tensors of the same length along
        dimension 0) or hold a single sample.
    """
    sizes = []
    for outputs, targets in batches:
        n = outputs.shape[0] if isinstance(outputs, torch.Tensor) and outputs.dim() else 0
        sliced = isinstance(targets, torch.Tensor) and targets.dim() and targets.shape[0] == n
        sizes.append(n if sliced else 0)
    total = sum(sizes)
    if 0 in sizes or total < 2:
        return [sum(float(loss_fn(o, t)) for o, t in batches) / len(batches)]
    ends = [int(part[-1]) + 1 for part in torch.arange(total).tensor_split(min(chunks, total))]
    sums, counts = [0.0] * len(ends), [0] * len(ends)
    offset = 0
    for (outputs, targets), n in zip(batches, sizes):
        start = offset
        for c, end in enumerate(ends):
            stop = min(end, offset + n)
            if stop > start:
                piece = slice(start - offset, stop - offset)
                sums[c] += float(loss_fn(outputs[piece], targets[piece])) * (stop - start)
                counts[c] += stop - start
                start = stop
        offset += n
    return [v / k for v, k in zip(sums, counts)]


def paired_z(trial: list[float], base: list[float]) -> float:
    """The paired statistic of the chunks' differences ``d = trial − base``: ``d̄ / (s_d / √k)``.

    Args:
        trial: the chunk losses after the step from a teleported point.
        base: the chunk losses after the step from the original point, in the same order.

    Returns:
        ``z`` (``s_d`` the sample standard deviation of the ``k`` differences); ``−inf`` / ``inf`` when every
        difference is equal and negative / positive, or when only ``trial`` / ``base`` is finite throughout.
    """
    finite = all(math.isfinite(v) for v in trial), all(math.isfinite(v) for v in base)
    if finite != (True, True):
        return -math.inf if finite == (True, False) else math.inf
    d = [a - b for a, b in zip(trial, base)]
    mean = sum(d) / len(d)
    spread = math.sqrt(sum((v - mean) ** 2 for v in d) / (len(d) - 1)) if len(d) > 1 else 0.0
    if spread == 0:
        return -math.inf if mean < 0 else (math.inf if mean > 0 else 0.0)
    return mean / (spread / math.sqrt(len(d)))


def shadow_step(
    optimizer: torch.optim.Optimizer,
    values: dict[nn.Parameter, torch.Tensor],
    grads: dict[nn.Parameter, torch.Tensor],
    states: dict[nn.Parameter, dict],
    lr_scale: float = 1.0,
    *,
    owned: bool = False,
) -> dict[nn.Parameter, torch.Tensor]:
    """One step of ``optimizer`` from other parameter values, gradients and state, on copies.

    The step is the optimiser's own (its class's ``step``, with the hyper-parameters its groups have now,
    learning-rate schedules included, and the optimiser's other attributes); neither the optimiser, its hooks, nor
    the parameters are touched. Its groups and state are copies; any other attribute is the optimiser's own object,
    which a ``step`` that changes it in place (none of ``torch.optim``'s does) would change. Hooks registered for
    every optimiser (``torch.optim.optimizer.register_optimizer_step_pre_hook``) run on the copy too.

    Args:
        optimizer: the user's optimiser.
        values: the point to step from, per parameter (parameters not given step from their own values).
        grads: the gradient at that point, per parameter (parameters not given have none and do not move).
        states: the optimiser state to step with, per parameter (missing: no state yet).
        lr_scale: every group's learning rate is multiplied by this for the step (the look-ahead's horizon).
        owned: ``values``, ``grads`` and ``states`` hold tensors made for this step, which it may change in place
            (no copies; a parameter missing from ``values`` is still copied). Otherwise they are copied: some steps
            write into the gradient (SGD with Nesterov momentum, on its ``foreach`` path).

    Returns:
        The parameters' values after the step, per parameter of ``values`` (a parameter the optimiser does not
        hold keeps its value in ``values``: it does not step).
    """
    copies = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            q = values[p] if owned and p in values else values.get(p, p).detach().clone()
            g = grads.get(p)
            if g is not None and not (owned and g.dtype == q.dtype):  # the step may change its gradient in place
                g = g.detach().to(q.dtype, copy=True)
            q.grad = None if g is None else g.detach()
            copies[p] = q
    shadow = object.__new__(type(optimizer))  # not copy.copy: Optimizer.__getstate__ drops a subclass's attributes
    shadow.__dict__.update(optimizer.__dict__)
    shadow.param_groups = [
        {**g, "params": [copies[p] for p in g["params"]], "lr": g["lr"] * lr_scale} for g in optimizer.param_groups
    ]
    shadow.state = defaultdict(dict)
    for p, state in states.items():
        if p in copies and state:
            shadow.state[copies[p]] = (
                dict(state)
                if owned
                else {k: v.clone() if isinstance(v, torch.Tensor) else copy.copy(v) for k, v in state.items()}
            )
    shadow._optimizer_step_pre_hooks = OrderedDict()
    shadow._optimizer_step_post_hooks = OrderedDict()
    type(optimizer).step(shadow)  # the class's step: an instance attribute may be a scheduler's wrapper
    return {p: copies[p].detach() if p in copies else values[p] for p in values}  # not the optimiser's: no step
