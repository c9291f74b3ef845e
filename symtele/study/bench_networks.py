"""The cost of teleporting whole networks (MLP, CNN, ResNet), by the protocol of :mod:`~symtele.study.bench_protocol`.

:func:`network_teleport_cost` times, interleaved in the same rounds, one gradient of the network on
one batch (a forward and a backward pass), the closed-form teleport along every rescaling
:func:`~symtele.teleports.discovery.discover` finds (``rescale``: the ascent from the gradient at hand,
the scales applied, one forward pass to confirm the loss), and the same teleport by double
backpropagation (``rescale-ref``: a forward–backward–backward pass per step, the definition), and the
look-ahead the :class:`~symtele.teleporter.Teleporter` runs before applying a teleport (``lookahead``: the
user's optimiser step, SGD with momentum here, on copies from the original point and from the teleported
ones, one forward pass on another batch each; ``trials`` says how many points it tried, two when the first
teleported point is accepted, four when every one is declined; ``forwards`` is its time over one forward pass's, so
that ``forwards − trials`` is what the shadow steps and the state transport cost). ``grad_evals`` is the time over
the gradient's (minima over the rounds).

:func:`discovery_time` times, interleaved likewise, :func:`~symtele.teleports.discovery.discover` with its
numerical verification and with the rules alone, against one forward pass of the network.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from .. import checks
from ..lookahead import chunk_losses
from ..models import digits_cnn, digits_resnet, resnet18
from ..teleports.discovery import discover
from ..teleports.rescale import Rescale, ascent_step, reference_teleport, rescale_teleport
from . import published
from .bench_protocol import interleaved_times
from .bench_records import record


def _mlp() -> nn.Module:
    _, inputs, h1, h2, outputs = published.COST_DIMS
    return nn.Sequential(nn.Linear(inputs, h1), nn.ReLU(), nn.Linear(h1, h2), nn.ReLU(), nn.Linear(h2, outputs))


#: the networks timed: ``name: (constructor, input shape of one batch)``
MODELS = {
    "mlp": (_mlp, (published.COST_DIMS[0], published.COST_DIMS[1])),
    "digits-cnn": (digits_cnn, (64, 1, 8, 8)),
    "digits-resnet": (digits_resnet, (64, 1, 8, 8)),
    "resnet18": (resnet18, (32, 3, 32, 32)),
}
METHODS = ("rescale", "rescale-ref", "lookahead")


def _setup(name: str, dtype, dev, seed: int):
    make, shape = MODELS[name]
    torch.manual_seed(seed)
    model = make().to(device=dev, dtype=dtype).train()
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype).to(dev)
    y = torch.randint(0, 10, (shape[0],), generator=torch.Generator().manual_seed(seed + 1)).to(dev)
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    buffers = {n: b.clone() for n, b in model.named_buffers()}

    def loss_of(p):
        fresh = {n: b.clone() for n, b in buffers.items()}  # batch statistics must not accumulate
        return F.cross_entropy(torch.func.functional_call(model, {**p, **fresh}, (x,)), y)

    def grad():
        leaves = {n: p.clone().requires_grad_(True) for n, p in params.items()}
        loss = loss_of(leaves)
        return loss.detach(), dict(zip(params, torch.autograd.grad(loss, list(leaves.values()))))

    return model, x, params, loss_of, grad


def _copies(buffers: dict) -> dict:
    return {n: b.clone() for n, b in buffers.items()}


def _forward(loss_of, params) -> None:
    """One forward pass of the loss, without a graph: the unit of the look-ahead's trials."""
    with torch.no_grad():
        loss_of(params)


def _lookahead_call(net, x, params, grads, symmetry, loss_of, loss, o, seed):
    """A call that runs the Teleporter's look-ahead for the teleport ``o`` finds.

    The optimiser is SGD with momentum, one step taken so that it has state; the judging batch another draw of
    the same shape. The call returns the teleport's record, whose trace lists the points tried.
    """
    from ..teleporter import Teleporter

    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    named = dict(net.named_parameters())
    with torch.no_grad():
        for n, p in named.items():
            p.copy_(params[n])
    for n, p in named.items():
        p.grad = grads[n].clone()
    optimizer.step()  # momentum buffers exist, as after any step of training
    with torch.no_grad():
        for n, p in named.items():
            p.copy_(params[n])
    g = torch.Generator().manual_seed(seed + 2)
    judge = (
        torch.randn(x.shape, generator=g, dtype=x.dtype).to(x.device),
        torch.randint(0, 10, (x.shape[0],), generator=g).to(x.device),
    )
    teleporter = Teleporter(net, F.cross_entropy, optimizer, every=1, lookahead_batch=judge)
    _, _, factors, found = rescale_teleport(params, grads, symmetry, loss_of, loss, o)
    by_param = {named[n]: f for n, f in factors.items()}
    by_grad = {named[n]: gr for n, gr in grads.items()}
    buffers = {n: b.clone() for n, b in net.named_buffers()}

    def judged(p, data) -> list[float]:  # as the Teleporter's: per chunk, on copies of the buffers
        with torch.no_grad():
            outputs = [torch.func.functional_call(net, {**p, **_copies(buffers)}, (xb,)) for xb, _ in data]
            return chunk_losses(F.cross_entropy, [(out, yb) for out, (_, yb) in zip(outputs, data)])

    def call():
        found.forward_evals, found.trace = 0, {}
        teleporter._look_ahead(found, by_param, by_grad, [judge], judged)
        return found

    return call


def network_teleport_cost(
    model: str,
    methods=("rescale", "rescale-ref"),
    *,
    steps: int = 10,
    reps: int = 5,
    warmup: int = 1,
    min_time: float = 0.01,
    dtype=torch.float32,
    device="cpu",
    seed: int = 0,
    max_reps: dict[str, int] | None = None,
) -> list[dict]:
    """The cost of a ``steps``-step teleport of a whole network in gradient evaluations, for each of ``methods``.

    ``grad_evals = min_r t_teleport[r] / min_r t_grad[r]``, the teleport and one gradient of the network on
    one batch timed interleaved in the same rounds (:mod:`~symtele.study.bench_protocol`).

    Args:
        model: a key of :data:`MODELS`.
        methods: among :data:`METHODS`: ``rescale`` (the closed form), ``rescale-ref`` (double
            backpropagation, :func:`~symtele.teleports.rescale.reference_teleport`) and
            ``lookahead`` (the Teleporter's look-ahead for the teleport ``rescale`` finds).
        steps: ascent steps per teleport.
        reps: rounds.
        warmup: untimed calls of each function first.
        min_time: seconds a timing lasts at least (fast calls are repeated within a round).
        dtype: the arithmetic.
        device: ``"cpu"`` or ``"cuda"``.
        seed: the seed of the weights and the batch.
        max_reps: at most this many rounds for the named functions (``grad`` or a method).

    Returns:
        One ``network_teleport_cost`` record (:mod:`~symtele.study.bench_records`) per method: ``method,
        model, n_params, n_scales, batch, steps, device, dtype, grad_evals, grad_evals_rounds, teleport_s,
        grad_s, reps``, the closed form's ``steps_taken``/``stopped``, and the look-ahead's ``trials``, ``forwards``
        and ``forward_s`` (one forward pass of the loss, timed in the same rounds).

    Raises:
        ValueError: an unknown model or method, a bad count, dtype or device.
    """
    checks.choice("model", model, MODELS)
    methods = [checks.choice("method", m, METHODS) for m in methods]
    if not methods:
        raise ValueError("Invalid methods: empty")
    steps = checks.count("steps", steps, minimum=1)
    dtype, dev = checks.dtype("dtype", dtype), checks.device("device", device)
    net, x, params, loss_of, grad = _setup(model, dtype, dev, checks.count("seed", seed))
    symmetry = discover(net, x)
    o = Rescale(steps=steps)
    loss, grads = grad()
    last = {}
    calls = {
        "rescale": lambda: last.__setitem__("rescale", rescale_teleport(params, grads, symmetry, loss_of, loss, o)),
        "rescale-ref": lambda: reference_teleport(loss_of, params, symmetry, partial(ascent_step, o=o), steps),
    }
    units = {"grad": grad}
    if "lookahead" in methods:
        look = _lookahead_call(net, x, params, grads, symmetry, loss_of, loss, o, seed)
        calls["lookahead"] = lambda: last.__setitem__("lookahead", look())
        units["forward"] = partial(_forward, loss_of, params)
    fns = {**units, **{m: calls[m] for m in methods}}
    times = interleaved_times(
        fns, reps=reps, warmup=warmup, min_time=min_time, device=dev, max_reps=dict(max_reps or {})
    )
    records = []
    for m in methods:
        rounds = [t / g for t, g in zip(times[m], times["grad"])]
        taken = last["rescale"][-1] if m == "rescale" else None  # the closed form's teleport record
        trials = len(last["lookahead"].trace["lookahead"]["t"]) if m == "lookahead" else None
        records.append(
            record(
                "network_teleport_cost",
                method=m,
                model=model,
                n_params=sum(p.numel() for p in params.values()),
                n_scales=symmetry.n_scales,
                batch=list(x.shape),
                steps=steps,
                device=str(dev),
                dtype=str(dtype).replace("torch.", ""),
                grad_evals=min(times[m]) / min(times["grad"]),
                grad_evals_rounds=rounds,
                teleport_s=min(times[m]),
                grad_s=min(times["grad"]),
                reps=len(times[m]),
                steps_taken=None if taken is None else taken.steps_taken,
                stopped=None if taken is None else taken.stopped,
                **(
                    {}
                    if trials is None
                    else {
                        "trials": trials,
                        "forwards": min(times[m]) / min(times["forward"]),
                        "forward_s": min(times["forward"]),
                    }
                ),
            )
        )
    return records


def discovery_time(
    model: str, *, batch: int = 2, reps: int = 5, device="cpu", seed: int = 0, max_reps: dict[str, int] | None = None
) -> list[dict]:
    """Seconds to discover the symmetries of a network, with verification and by the rules alone.

    ``discover`` and ``discover-rules`` are timed interleaved with one forward pass (``forward``, float32,
    train mode) as the unit.

    Args:
        model: a key of :data:`MODELS`.
        batch: inputs in the example batch.
        reps: rounds.
        device: ``"cpu"`` or ``"cuda"``.
        seed: the seed of the weights and the batch.
        max_reps: at most this many rounds for the named functions.

    Returns:
        One ``discovery_time`` record per method: ``method, model, batch, device, seconds, forwards``
        (seconds over the forward's, minima over the rounds), ``seconds_rounds``, ``reps``, ``n_scales``.

    Raises:
        ValueError: an unknown model, a bad count or device.
    """
    checks.choice("model", model, MODELS)
    batch = checks.count("batch", batch, minimum=1)
    dev = checks.device("device", device)
    make, shape = MODELS[model]
    torch.manual_seed(checks.count("seed", seed))
    net = make().to(dev).train()
    x = torch.randn((batch, *shape[1:]), generator=torch.Generator().manual_seed(seed)).to(dev)
    found = {}

    def forward():
        with torch.no_grad():
            return net(x)

    fns = {
        "forward": forward,
        "discover": lambda: found.__setitem__("discover", discover(net, x)),
        "discover-rules": lambda: found.__setitem__("discover-rules", discover(net, x, verify=False)),
    }
    times = interleaved_times(fns, reps=reps, warmup=1, min_time=0.05, device=dev, max_reps=dict(max_reps or {}))
    return [
        record(
            "discovery_time",
            method=m,
            model=model,
            batch=[batch, *shape[1:]],
            device=str(dev),
            seconds=min(times[m]),
            forwards=min(times[m]) / min(times["forward"]),
            seconds_rounds=times[m],
            reps=len(times[m]),
            n_scales=found[m].n_scales,
        )
        for m in ("discover", "discover-rules")
    ]
