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
    """``L(θ) = loss_fn(model_θ(inputs), targets)`` over the module's parameters.

    Args:
        model: the network; its parameters, in the order of ``model.parameters()``, are ``θ``. It is evaluated
            at the given parameters without being mutated (:meth:`write_back` copies them in).
        loss_fn: called as ``loss_fn(outputs, targets)``.
        inputs: the inputs the loss is evaluated on (finite floating-point).
        targets: the targets given to ``loss_fn`` (checked finite when floating-point).

    Raises:
        TypeError: ``model`` is not an ``nn.Module``, ``loss_fn`` is not callable, or ``inputs`` (or floating-point
            ``targets``) is not a floating-point tensor.
        ValueError: ``inputs`` or floating-point ``targets`` has a nan or inf entry.
    """

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
        """The module's positive rescalings, found once per model and input shape.

        Found by :func:`~symtele.teleports.rescale.symmetry_of`; terms name parameters as :attr:`names` does.

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
        """The module's current parameters, detached copies in the order of ``model.parameters()``.

        Returns:
            One tensor per parameter.
        """
        return [p.detach().clone() for p in self.model.parameters()]

    def check_params(self, params) -> None:
        """Raise unless ``params`` has one tensor of the right shape per parameter of the module.

        Args:
            params: the parameter tensors, in the order of ``model.parameters()``.

        Raises:
            ValueError: the number of tensors differs from the module's, or a shape differs (naming the parameter).
        """
        own = list(self.model.parameters())
        if len(params) != len(own):
            raise ValueError(f"Invalid params: {len(params)} tensors for a model with {len(own)} parameters")
        for name, p, q in zip(self.names, params, own):
            if p.shape != q.shape:
                raise ValueError(f"Invalid params for {name}: shape {tuple(p.shape)}, the model has {tuple(q.shape)}")

    def output(self, params, inputs=None) -> torch.Tensor:
        """The module's output at ``params``, without mutating it.

        Args:
            params: the parameter tensors, in the order of ``model.parameters()``.
            inputs: the inputs; ``None`` for the objective's own.

        Returns:
            ``model_θ(inputs)``.
        """
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
        """``loss_fn(model_θ(inputs), targets)`` at ``params``.

        Args:
            params: the parameter tensors, in the order of ``model.parameters()``.

        Returns:
            The loss, as ``loss_fn`` returns it.
        """
        return self.loss_fn(self.output(params), self.targets)

    def write_back(self, params) -> None:
        """Copy ``params`` into the module's parameters in place.

        Args:
            params: the parameter tensors, in the order of ``model.parameters()``.
        """
        with torch.no_grad():
            for p, new in zip(self.model.parameters(), params):
                p.copy_(new)


def _linear_sequence(model: nn.Module) -> list[nn.Module] | None:
    """The layers of ``model`` if it can be evaluated layer by layer with ``F.linear``, else ``None``.

    That is an ``nn.Sequential`` in which only plain ``nn.Linear`` layers hold parameters or buffers (weight
    before bias, the order of ``parameters()``); ``None`` for any other module.
    """
    if type(model) is not nn.Sequential:
        return None
    layers = list(model)
    for layer in layers:
        if type(layer) is nn.Linear:
            continue
        if any(True for _ in layer.parameters()) or any(True for _ in layer.buffers()):
            return None
    return layers
