"""The cost of teleporting whole networks (MLP, CNN, ResNet), by the protocol of :mod:`~symtele.study.bench`.

:func:`network_teleport_cost` times, interleaved in the same rounds, one gradient of the network on
one batch (a forward and a backward pass), the closed-form teleport along every rescaling
:func:`~symtele.teleports.discovery.discover` finds (``rescale``: the ascent from the gradient at hand,
the scales applied, one forward pass to confirm the loss), and the same teleport by double
backpropagation (``rescale-ref``: a forward–backward–backward pass per step, the definition).
``grad_evals`` is the teleport's time over the gradient's (minima over the rounds).

:func:`discovery_time` times, interleaved likewise, :func:`~symtele.teleports.discovery.discover` with its
numerical verification and with the rules alone, against one forward pass of the network.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import checks
from ..models import digits_cnn, digits_resnet, resnet18
from ..teleports.discovery import discover
from ..teleports.rescale import Rescale, ascent_step, gradient_norm_reference, rescale_teleport, scale_factors
from . import published
from .bench import interleaved_times


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
METHODS = ("rescale", "rescale-ref")


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


def _reference(loss_of, params, symmetry, o: Rescale):
    """The teleport by double backpropagation: each step differentiates ``‖∇L(g_s·w)‖²`` through the network."""
    s = torch.zeros(symmetry.n_scales, dtype=torch.float64, device=next(iter(params.values())).device)
    for _ in range(o.steps):
        _, slope = gradient_norm_reference(loss_of, params, symmetry, s)
        s = s + ascent_step(slope, o)
    factors = scale_factors(symmetry, s, params)
    return {n: p * factors[n] if n in factors else p for n, p in params.items()}


def network_teleport_cost(
    model: str,
    methods=METHODS,
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
    """The cost of a ``steps``-step teleport of the network ``model`` (a key of :data:`MODELS`) in gradient
    evaluations, for each of ``methods``. Returns one record per method: ``method, model, n_params,
    n_scales, batch, steps, device, dtype, grad_evals, grad_evals_rounds, teleport_s, grad_s, reps``
    and the closed form's ``steps_taken``/``stopped``."""
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
        "rescale-ref": lambda: _reference(loss_of, params, symmetry, o),
    }
    fns = {"grad": grad, **{m: calls[m] for m in methods}}
    times = interleaved_times(
        fns, reps=reps, warmup=warmup, min_time=min_time, device=dev, max_reps=dict(max_reps or {})
    )
    records = []
    for m in methods:
        rounds = [t / g for t, g in zip(times[m], times["grad"])]
        record = last["rescale"][-1] if m == "rescale" else None
        records.append(
            {
                "method": m,
                "model": model,
                "n_params": sum(p.numel() for p in params.values()),
                "n_scales": symmetry.n_scales,
                "batch": list(x.shape),
                "steps": steps,
                "device": str(dev),
                "dtype": str(dtype).replace("torch.", ""),
                "grad_evals": min(times[m]) / min(times["grad"]),
                "grad_evals_rounds": rounds,
                "teleport_s": min(times[m]),
                "grad_s": min(times["grad"]),
                "reps": len(times[m]),
                "steps_taken": None if record is None else record.steps_taken,
                "stopped": None if record is None else record.stopped,
            }
        )
    return records


def discovery_time(
    model: str, *, batch: int = 2, reps: int = 5, device="cpu", seed: int = 0, max_reps: dict[str, int] | None = None
) -> list[dict]:
    """Seconds to discover the symmetries of the network ``model`` (a key of :data:`MODELS`) on an example batch
    of ``batch`` inputs, with verification (``discover``) and by the rules alone (``discover-rules``), interleaved
    with one forward pass (``forward``, float32, train mode) as the unit. Returns one record per method:
    ``method, model, batch, device, seconds, forwards`` (seconds over the forward's, minima over the rounds),
    ``seconds_rounds``, ``reps`` and the ``n_scales`` found."""
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
        {
            "method": m,
            "model": model,
            "batch": [batch, *shape[1:]],
            "device": str(dev),
            "seconds": min(times[m]),
            "forwards": min(times[m]) / min(times["forward"]),
            "seconds_rounds": times[m],
            "reps": len(times[m]),
            "n_scales": found[m].n_scales,
        }
        for m in ("discover", "discover-rules")
    ]
