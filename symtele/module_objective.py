"""Objectives built from a ``torch.nn.Module`` and a loss function.

``ModuleObjective(model, loss_fn, inputs, targets)`` is ``L(θ) = loss_fn(model_θ(inputs), targets)``
as a function of the list ``θ = list(model.parameters())``, evaluated with
``torch.func.functional_call`` so the module itself is never mutated during a run (an ``nn.Sequential``
whose only parameters are those of its ``nn.Linear`` layers is evaluated layer by layer instead, with
``F.linear`` on the given tensors: the same arithmetic, without functional_call's parameter swapping).
It also knows the module's positive rescalings (:meth:`ModuleObjective.symmetry`, found by
:func:`~symtele.teleports.discovery.discover`), so the positive-scale teleport applies.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from . import checks
from .objective import Objective
from .teleports.rescale import symmetry_of
from .teleports.symmetry import Symmetry


class ModuleObjective(Objective):
    """``L(θ) = loss_fn(model_θ(inputs), targets)`` over the module's parameters."""

    def __init__(self, model: nn.Module, loss_fn: Callable, inputs: torch.Tensor, targets: torch.Tensor):
        if not isinstance(model, nn.Module):
            raise TypeError(f"Invalid model: expected a torch.nn.Module, got {type(model).__name__}")
        if not callable(loss_fn):
            raise TypeError(f"Invalid loss_fn: {loss_fn!r} is not callable")
        checks.finite_tensor("inputs", inputs)
        if targets.is_floating_point():
            checks.finite_tensor("targets", targets)
        self.model, self.loss_fn = model, loss_fn
        self.inputs, self.targets = inputs, targets
        self.names = [name for name, _ in model.named_parameters()]
        self.layers = _linear_sequence(model)

    def symmetry(self, params=None) -> Symmetry:
        """The module's positive rescalings, found once per model and input shape
        (:func:`~symtele.teleports.rescale.symmetry_of`); terms name parameters as :attr:`names` does.

        Args:
            params: unused (the module states its structure); accepted so that every objective with a
                symmetry is asked alike.

        Returns:
            The :class:`~symtele.teleports.symmetry.Symmetry`; layers it leaves out are in its ``dropped``.

        Raises:
            ValueError: the module has no rescalable units (naming its layers and why).
        """
        return symmetry_of(self.model, self.inputs)

    def initial_params(self) -> list[torch.Tensor]:
        return [p.detach().clone() for p in self.model.parameters()]

    def check_params(self, params) -> None:
        own = list(self.model.parameters())
        if len(params) != len(own):
            raise ValueError(f"Invalid params: {len(params)} tensors for a model with {len(own)} parameters")
        for name, p, q in zip(self.names, params, own):
            if p.shape != q.shape:
                raise ValueError(f"Invalid params for {name}: shape {tuple(p.shape)}, the model has {tuple(q.shape)}")

    def output(self, params, inputs=None) -> torch.Tensor:
        inputs = self.inputs if inputs is None else inputs
        if self.layers is None:
            return torch.func.functional_call(self.model, dict(zip(self.names, params)), (inputs,))
        h, given = inputs, iter(params)
        for layer in self.layers:
            if type(layer) is nn.Linear:
                h = nn.functional.linear(h, next(given), None if layer.bias is None else next(given))
            else:
                h = layer(h)
        return h

    def loss(self, params) -> torch.Tensor:
        return self.loss_fn(self.output(params), self.targets)

    def write_back(self, params) -> None:
        """Copy ``params`` into the module's parameters in place."""
        with torch.no_grad():
            for p, new in zip(self.model.parameters(), params):
                p.copy_(new)


def _linear_sequence(model: nn.Module) -> list[nn.Module] | None:
    """The layers of an ``nn.Sequential`` in which only plain ``nn.Linear`` layers hold parameters or
    buffers (weight before bias, the order of ``parameters()``); ``None`` for any other module."""
    if type(model) is not nn.Sequential:
        return None
    layers = list(model)
    for layer in layers:
        if type(layer) is nn.Linear:
            continue
        if any(True for _ in layer.parameters()) or any(True for _ in layer.buffers()):
            return None
    return layers
