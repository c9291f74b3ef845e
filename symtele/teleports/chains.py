"""Which parameters form the positively scalable layer chains of a network.

A *chain* is a sequence of linear layers ``x ↦ W_k x + b_k`` joined by positively
homogeneous activations (ReLU, LeakyReLU, identity): ``σ(x / d) = σ(x) / d`` for
every ``d > 0``. Between layers ``k`` and ``k+1`` of a chain, each hidden unit ``a``
can be rescaled by ``d_a > 0``, row ``a`` of ``W_k`` and ``b_k[a]`` divided by ``d_a``
and column ``a`` of ``W_{k+1}`` multiplied by it, without changing the network's output.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class Layer:
    """Indices of a linear layer's weight (``out × in``) and bias (or ``None``) in the parameter list."""

    weight: int
    bias: int | None = None


Chain = tuple[Layer, ...]

#: activations through which positive scaling passes unchanged
POSITIVELY_HOMOGENEOUS = (nn.ReLU, nn.LeakyReLU, nn.Identity)


def weight_chain(n_layers: int) -> list[Chain]:
    """The layout of a bias-free list of ``n_layers`` weight matrices: one chain of them all."""
    return [tuple(Layer(k) for k in range(n_layers))]


def sequential_chains(model: nn.Module) -> list[Chain]:
    """Chains of an ``nn.Sequential`` of ``Linear`` and ReLU/LeakyReLU/Identity layers.

    Parameter indices refer to ``list(model.parameters())``. Raises ``TypeError``
    naming the first layer of any other kind.
    """
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"Invalid model: expected torch.nn.Sequential, got {type(model).__name__}")
    index = {id(p): i for i, p in enumerate(model.parameters())}
    chain: list[Layer] = []
    for position, layer in enumerate(model):
        if isinstance(layer, nn.Linear):
            bias = None if layer.bias is None else index[id(layer.bias)]
            chain.append(Layer(index[id(layer.weight)], bias))
        elif isinstance(layer, nn.LeakyReLU) and layer.negative_slope < 0:
            raise TypeError(
                f"Invalid model: layer {position} (LeakyReLU with negative_slope="
                f"{layer.negative_slope}) is not positively homogeneous"
            )
        elif not isinstance(layer, POSITIVELY_HOMOGENEOUS):
            raise TypeError(
                f"Invalid model: layer {position} ({type(layer).__name__}) is not supported by the "
                "positive-scale teleport; use Linear, ReLU, LeakyReLU or Identity"
            )
    if len(chain) < 2:
        raise ValueError(f"Invalid model: positive scaling needs at least 2 Linear layers, found {len(chain)}")
    return [tuple(chain)]


def check_shapes(params, chains, batch_ndim: int = 0) -> None:
    """Raise ``ValueError`` unless consecutive layers of each chain have matching widths and every
    weight has the same ``batch_ndim`` leading (batch) dimensions."""
    batch = None
    for chain in chains:
        for k, layer in enumerate(chain):
            w = params[layer.weight]
            if w.dim() != batch_ndim + 2:
                raise ValueError(f"Invalid params[{layer.weight}]: expected a matrix, got shape {tuple(w.shape)}")
            batch = w.shape[:batch_ndim] if batch is None else batch
            if w.shape[:batch_ndim] != batch:
                raise ValueError(
                    f"Invalid params[{layer.weight}]: batch shape {tuple(w.shape[:batch_ndim])} "
                    f"differs from the first weight's {tuple(batch)}"
                )
            if layer.bias is not None and params[layer.bias].shape[-1] != w.shape[-2]:
                raise ValueError(
                    f"Invalid params[{layer.bias}]: bias of length {params[layer.bias].shape[-1]} "
                    f"does not match weight shape {tuple(w.shape)}"
                )
            if k > 0:
                prev = params[chain[k - 1].weight]
                if prev.shape[-2] != w.shape[-1]:
                    raise ValueError(
                        f"Invalid params[{layer.weight}]: shape {tuple(w.shape)} does not follow "
                        f"params[{chain[k - 1].weight}] of shape {tuple(prev.shape)}"
                    )
