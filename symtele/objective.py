"""The interface every optimisation problem in ``symtele`` implements.

An *objective* is a differentiable loss ``L(params)`` of a list of tensors.
Leading dimensions shared by all parameters (``batch_shape``) index independent
copies of the problem, for example five random seeds trained as one batched
computation: ``loss`` then returns one value per copy, and the gradient of the
summed loss is the list of per-copy gradients.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class Objective:
    """Base class: subclasses implement :meth:`loss` and may override :meth:`loss_and_grad`.

    Attributes:
        takes_batches: whether :meth:`loss` also accepts parameters with one more leading dimension and
            returns one loss per index, each computed exactly as alone (the Armijo search then tries
            several steps per evaluation).
    """

    takes_batches = False

    def loss(self, params: Sequence[torch.Tensor]) -> torch.Tensor:
        """Loss of each copy.

        Args:
            params: the parameter tensors, with the problem copies' leading batch dimensions if any.

        Returns:
            A scalar, or one value per leading batch index.

        Raises:
            NotImplementedError: in the base class.
        """
        raise NotImplementedError

    def loss_and_grad(self, params: Sequence[torch.Tensor]):
        """The loss per copy and ``∇L`` for every parameter.

        The default uses autograd on the summed loss (so each copy's gradient is its own); subclasses with a
        cheaper closed form override it.

        Args:
            params: the parameter tensors.

        Returns:
            ``(loss, grads)``: the detached loss per copy and one detached gradient per parameter.
        """
        with torch.enable_grad():
            leaves = [p.detach().requires_grad_(True) for p in params]
            loss = self.loss(leaves)
            grads = torch.autograd.grad(loss.sum(), leaves)
        return loss.detach(), [g.detach() for g in grads]


def grad_norm_sq(grads: Sequence[torch.Tensor], batch_ndim: int = 0) -> torch.Tensor:
    """‖∇L‖² per problem copy: the sum of squares over every non-batch dimension.

    Args:
        grads: one gradient per parameter.
        batch_ndim: how many leading dimensions index problem copies.

    Returns:
        A tensor of the batch shape (a scalar when ``batch_ndim`` is 0).
    """
    total = None
    for g in grads:
        s = g.square().flatten(batch_ndim).sum(-1) if g.dim() > batch_ndim else g.square()
        total = s if total is None else total + s
    return total
