"""Plain SGD on many networks of one architecture at once, one ``torch.func.vmap`` call per minibatch step.

Net ``i`` takes ``p ← p − lr_i ∇L_i(p)`` on its own minibatch ``orders[i][k]`` at step ``k``, exactly what
``torch.optim.SGD`` (no momentum, no weight decay) does to it alone; the nets' parameters are stacked along a
leading axis and every step computes all their minibatch gradients in one vectorised call, so a hundred small
MLPs train in about the time of a few run one after another. Only the rounding differs (batched products).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn import functional as F

from .. import checks


def sgd_together(
    models: Sequence[torch.nn.Module], lrs: Sequence[float], x: torch.Tensor, y: torch.Tensor, orders: Sequence[list]
) -> None:
    """Train every model of ``models`` by plain SGD on the cross-entropy, all at once; the models are updated in place.

    Args:
        models: networks with the same parameter names and shapes, and no buffers (a ``BatchNorm``'s running
            statistics would be updated per network: refused).
        lrs: each model's step.
        x: the training inputs.
        y: the training targets (class indices).
        orders: each model's minibatches, index tensors into ``x`` (:func:`~symtele.study.experiments.minibatch_order`),
            as many steps for every model and the same batch size at each step.

    Raises:
        ValueError: no models, ``lrs`` or ``orders`` not one per model, a step that is not positive, models with
            other parameters or with buffers, or minibatch orders that do not line up.
    """
    models = list(models)
    if not models:
        raise ValueError("Invalid models: none given")
    if len(lrs) != len(models) or len(orders) != len(models):
        raise ValueError(
            f"Invalid lrs/orders: {len(lrs)} steps and {len(orders)} minibatch orders for {len(models)} models"
        )
    lr = torch.tensor([checks.positive(f"lrs[{i}]", v) for i, v in enumerate(lrs)], dtype=torch.float64)
    shapes = [[(n, tuple(p.shape)) for n, p in m.named_parameters()] for m in models]
    if any(shape != shapes[0] for shape in shapes):
        raise ValueError("Invalid models: their parameters differ in names or shapes (one architecture needed)")
    buffered = [type(m).__name__ for m in models if any(True for _ in m.buffers())]
    if buffered:
        raise ValueError(f"Invalid models: {buffered[0]} has buffers (running statistics are not trained together)")
    sizes = [[len(b) for b in order] for order in orders]
    if any(s != sizes[0] for s in sizes):
        raise ValueError("Invalid orders: the models' minibatch orders differ in steps or batch sizes")
    base = models[0]
    names = [n for n, _ in base.named_parameters()]
    params = {n: torch.stack([dict(m.named_parameters())[n].detach() for m in models]) for n in names}
    steps = {n: lr.to(p).view(-1, *[1] * (p.dim() - 1)) for n, p in params.items()}

    def loss(p, inputs, targets):
        return F.cross_entropy(torch.func.functional_call(base, p, (inputs,)), targets)

    gradients = torch.func.vmap(torch.func.grad(loss))
    for k in range(len(sizes[0])):
        index = torch.stack([order[k] for order in orders])
        grads = gradients(params, x[index], y[index])
        params = {n: p - steps[n] * grads[n] for n, p in params.items()}
    with torch.no_grad():
        for i, m in enumerate(models):
            for n, p in m.named_parameters():
                p.copy_(params[n][i])
