"""The course project's regression task: a bias-free ReLU (or LeakyReLU) MLP fitted to random data.

With weights ``W_1 … W_n`` and activation σ,

    L(W) = ½ ‖Y − W_n σ(W_{n−1} ⋯ σ(W_1 X))‖²_F .

``dims = [m, d_0, d_1, …, d_n]`` means ``X`` is ``d_0 × m`` (``m`` samples as columns),
``W_k`` is ``d_k × d_{k−1}`` and ``Y`` is ``d_n × m``. For each random seed ``s`` the task is
drawn as the course project drew it: ``torch.manual_seed(s)``, then ``torch.rand`` for
``W_1, …, W_n, X, Y`` in that order (float32). The writeup's dims and seeds are in
:mod:`symtele.study.settings`.

Several seeds can be stacked along a leading dimension and trained as one batched
computation; the gradient is computed by hand-written backpropagation (one forward
and one backward pass of matrix products, no autograd bookkeeping).

Its positive rescalings (:func:`weight_chain_symmetry`) are those of every hidden unit: dividing row ``a``
of ``W_k`` by ``d > 0`` and multiplying column ``a`` of ``W_{k+1}`` by it leaves the output unchanged, because
``σ(x / d) = σ(x) / d`` for ReLU and LeakyReLU.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import torch

from . import checks
from .objective import Objective
from .teleports.symmetry import Group, Symmetry, Term


@lru_cache(maxsize=64)
def weight_chain_symmetry(widths: tuple[int, ...]) -> Symmetry:
    """The positive rescalings of a bias-free chain of weight matrices ``W_1, …, W_n``.

    The matrices are named ``"0"``, …, ``"n−1"`` by position; each hidden layer is one group of scales,
    ``W_k``'s rows divided and ``W_{k+1}``'s columns multiplied. The terms act on the matrices' last two
    dimensions, so a parameter list with leading (seed) dimensions takes the same symmetry, each copy its
    own scales.

    The same data :func:`~symtele.teleports.discovery.discover` finds in an ``nn.Sequential`` of bias-free
    ``Linear`` and ReLU layers. Cached: the same widths give the same (unmodified) object.

    Args:
        widths: the hidden layers' widths ``d_1, …, d_{n−1}`` (empty for a single matrix: no scales).

    Returns:
        The :class:`~symtele.teleports.symmetry.Symmetry`.

    Raises:
        ValueError: a width that is not a count ``≥ 1``.
    """
    terms, groups, start = [], [], 0
    for k, width in enumerate(widths):
        checks.count(f"widths[{k}]", width, minimum=1)
        units = torch.arange(start, start + width)
        terms += [Term(str(k), units[:, None], -1), Term(str(k + 1), units[None, :], 1)]
        groups.append(Group(width, (str(k),), (str(k + 1),), tuple(range(start, start + width))))
        start += width
    kinds = {str(k): "weight" for k in range(len(widths) + 1)}
    return Symmetry(start, terms, groups, kinds=kinds, verified="exact: ReLU and LeakyReLU are positively homogeneous")


class MLPRegression(Objective):
    """``L(W) = ½‖Y − W_n σ(… σ(W_1 X))‖²_F`` for a list of weight matrices.

    Leading dimensions of ``X`` and ``Y`` index independent copies (seeds).

    Args:
        X: the inputs, ``(..., d_0, m)``.
        Y: the targets, ``(..., d_n, m)``.
        n_layers: the number of weight matrices ``n``.
        negative_slope: ``σ``'s slope below zero: 0 is ReLU, otherwise LeakyReLU.

    Raises:
        ValueError: non-finite ``X`` or ``Y``, ``n_layers < 1`` or a negative ``negative_slope``.
    """

    def __init__(self, X: torch.Tensor, Y: torch.Tensor, n_layers: int, negative_slope: float = 0.0):
        checks.finite_tensor("X", X)
        checks.finite_tensor("Y", Y)
        self.X, self.Y = X, Y
        self.n_layers = checks.count("n_layers", n_layers, minimum=1)
        self.negative_slope = checks.non_negative("negative_slope", negative_slope)
        self.names = [str(k) for k in range(self.n_layers)]

    def symmetry(self, params: Sequence[torch.Tensor]) -> Symmetry:
        """The positive rescalings of the weights' hidden units (:func:`weight_chain_symmetry`).

        Args:
            params: the weight matrices (their shapes give the hidden widths).

        Returns:
            The :class:`~symtele.teleports.symmetry.Symmetry`; its terms name ``W_k`` by its position, as
            :attr:`names` does.
        """
        return weight_chain_symmetry(tuple(int(w.shape[-2]) for w in params[:-1]))

    def check_params(self, params: Sequence[torch.Tensor]) -> None:
        """Check that the weights chain from ``X`` to ``Y``.

        Args:
            params: the weight matrices, ``W_1`` first.

        Raises:
            ValueError: naming the first weight whose shape does not fit ``X``, ``Y`` and its neighbours.
        """
        if len(params) != self.n_layers:
            raise ValueError(f"Invalid weights: expected {self.n_layers} matrices, got {len(params)}")
        rows = self.X.shape[-2]
        for k, w in enumerate(params):
            if w.shape[-1] != rows or w.shape[:-2] != self.X.shape[:-2]:
                raise ValueError(
                    f"Invalid weights[{k}]: shape {tuple(w.shape)} does not take an input of "
                    f"{rows} rows (batch {tuple(self.X.shape[:-2])})"
                )
            rows = w.shape[-2]
        if rows != self.Y.shape[-2]:
            raise ValueError(f"Invalid weights[{self.n_layers - 1}]: {rows} outputs but Y has {self.Y.shape[-2]} rows")

    def act(self, z):
        """``σ(z)``: ReLU, or LeakyReLU of slope ``negative_slope``.

        Args:
            z: pre-activations.

        Returns:
            ``σ(z)``, elementwise.
        """
        if self.negative_slope == 0.0:
            return torch.relu(z)
        return torch.nn.functional.leaky_relu(z, self.negative_slope)

    def act_inverse(self, h):
        """σ⁻¹ for LeakyReLU (slope > 0): itself a LeakyReLU, of slope ``1 / negative_slope``.

        Args:
            h: activations.

        Returns:
            ``σ⁻¹(h)``, elementwise.
        """
        return torch.nn.functional.leaky_relu(h, 1.0 / self.negative_slope)

    def hidden(self, params, upto: int) -> torch.Tensor:
        """The input of layer ``upto``.

        Args:
            params: the weight matrices.
            upto: the layer (0-based).

        Returns:
            ``h_upto = σ(W_upto … σ(W_1 X))``; ``X`` for layer 0.
        """
        h = self.X
        for w in params[:upto]:
            h = self.act(w @ h)
        return h

    def forward(self, params) -> torch.Tensor:
        """The network's output ``W_n σ(… σ(W_1 X))``, linear in its last layer.

        Args:
            params: the weight matrices.

        Returns:
            The output, ``(..., d_n, m)``.
        """
        h = self.hidden(params, len(params) - 1)
        return params[-1] @ h

    def loss(self, params) -> torch.Tensor:
        """``½‖Y − W_n σ(… σ(W_1 X))‖²_F`` per copy.

        Args:
            params: the weight matrices.

        Returns:
            The loss, one value per leading batch index.
        """
        r = self.forward(params) - self.Y
        return 0.5 * r.square().sum((-2, -1))

    def loss_and_grad(self, params):
        """One forward and one backward pass by hand: ``G_k = δ_k h_kᵀ``, ``δ_{k−1} = (W_kᵀ δ_k) ⊙ σ'(z_{k−1})``.

        Args:
            params: the weight matrices.

        Returns:
            ``(loss, grads)``: the loss per copy and one gradient per weight matrix.
        """
        hs, zs = [self.X], []
        for w in params[:-1]:
            z = w @ hs[-1]
            zs.append(z)
            hs.append(self.act(z))
        delta = params[-1] @ hs[-1] - self.Y
        loss = 0.5 * delta.square().sum((-2, -1))
        grads = [None] * len(params)
        for k in range(len(params) - 1, -1, -1):
            grads[k] = delta @ hs[k].mT
            if k > 0:
                back = params[k].mT @ delta
                z = zs[k - 1]
                if self.negative_slope == 0.0:
                    delta = back * (z > 0)
                else:
                    delta = torch.where(z > 0, back, back * self.negative_slope)
        return loss, grads


def regression_task(
    seeds: Sequence[int] | int, dims: Sequence[int], *, negative_slope: float = 0.0, dtype=torch.float32, device="cpu"
):
    """The course project's regression task for one random seed, or for several stacked on a leading dimension.

    Draws exactly as the course project does (``torch.rand`` weights, then ``X``, then ``Y``), on the CPU in
    float32, then converts to ``dtype`` and moves to ``device``.

    Args:
        seeds: one seed (an int), or several.
        dims: the number of samples ``m``, then the layer widths ``d_0, …, d_n``.
        negative_slope: 0 for ReLU, otherwise LeakyReLU's slope.
        dtype: the arithmetic.
        device: where the tensors live.

    Returns:
        ``(objective, weights)``: an :class:`MLPRegression` and its starting weight matrices.

    Raises:
        ValueError: bad ``dims``, no seeds, or a seed that is not a count ``≥ 0``.
    """
    dims = checks.dims("dims", dims)
    single = isinstance(seeds, int)
    seed_list = [seeds] if single else list(seeds)
    if not seed_list:
        raise ValueError("Invalid seeds: empty")
    for s in seed_list:
        checks.count("seed", s)
    m, sizes = dims[0], dims[1:]
    per_seed = []
    for s in seed_list:
        torch.manual_seed(s)
        ws = [torch.rand(sizes[k + 1], sizes[k]) for k in range(len(sizes) - 1)]
        X = torch.rand(sizes[0], m)
        Y = torch.rand(sizes[-1], m)
        per_seed.append((ws, X, Y))
    to = dict(dtype=dtype, device=device)
    if single:
        ws, X, Y = per_seed[0]
        weights = [w.to(**to) for w in ws]
        X, Y = X.to(**to), Y.to(**to)
    else:
        weights = [torch.stack([p[0][k] for p in per_seed]).to(**to) for k in range(len(sizes) - 1)]
        X = torch.stack([p[1] for p in per_seed]).to(**to)
        Y = torch.stack([p[2] for p in per_seed]).to(**to)
    objective = MLPRegression(X, Y, n_layers=len(weights), negative_slope=negative_slope)
    return objective, weights
