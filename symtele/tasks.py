"""Tasks besides the course project's regression: the writeup's Softplus MLP and an MLP on digits.

Both return a :class:`~symtele.module_objective.ModuleObjective` and its initial parameters,
drawn from a seeded generator, on the requested ``device`` (CPU by default).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from . import checks
from .module_objective import ModuleObjective


def softplus_mlp(
    seed: int = 0, *, n_samples: int = 128, n_features: int = 10, hidden: int = 50, dtype=torch.float64, device="cpu"
):
    """The writeup's 2-layer Softplus network with 50 hidden units on a synthetic regression.

    Data: ``x ~ N(0, I)`` in ``R^{n_features}``; the target is a fixed random
    two-layer tanh "teacher" plus Gaussian noise of standard deviation 0.1, so the
    best achievable mean squared error is about 0.01. Loss: mean squared error.

    Args:
        seed: the seed of the data and of the network's initial weights.
        n_samples: training points.
        n_features: input dimension.
        hidden: Softplus units.
        dtype: the arithmetic.
        device: where the tensors live.

    Returns:
        ``(objective, params)``: a :class:`~symtele.module_objective.ModuleObjective` and its initial
        parameters.

    Raises:
        ValueError: a seed or size that is not a count (sizes ``≥ 1``).
    """
    seed = checks.count("seed", seed)
    for name, v in (("n_samples", n_samples), ("n_features", n_features), ("hidden", hidden)):
        checks.count(name, v, minimum=1)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n_samples, n_features, generator=gen, dtype=torch.float64)
    teacher_in = torch.randn(n_features, 8, generator=gen, dtype=torch.float64) / n_features**0.5
    teacher_out = torch.randn(8, 1, generator=gen, dtype=torch.float64)
    y = torch.tanh(x @ teacher_in) @ teacher_out + 0.1 * torch.randn(n_samples, 1, generator=gen, dtype=torch.float64)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(n_features, hidden), nn.Softplus(), nn.Linear(hidden, 1)).to(
        dtype=dtype, device=device
    )
    objective = ModuleObjective(
        model, nn.functional.mse_loss, x.to(dtype=dtype, device=device), y.to(dtype=dtype, device=device)
    )
    return objective, objective.initial_params()


@dataclass
class DigitsData:
    """scikit-learn's bundled 8×8 digits, standardised, split into train and held-out parts.

    Attributes:
        x_train: training features (64 per image, or 1×8×8 images).
        y_train: their labels 0–9.
        x_test: held-out features.
        y_test: their labels.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


@lru_cache(maxsize=1)
def _digits_arrays():
    """The 1797 digits as ``(features, labels)`` NumPy arrays, from the file scikit-learn ships.

    Read once per process; callers copy them into tensors.

    Reading ``sklearn/datasets/data/digits.csv.gz`` directly (64 pixel columns, then the label)
    spares the import of scikit-learn, about 4 s here; ``load_digits`` is the fallback.
    """
    import importlib.util

    import numpy as np

    spec = importlib.util.find_spec("sklearn")
    if spec is not None and spec.submodule_search_locations:
        path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "digits.csv.gz"
        if path.exists():
            table = np.loadtxt(path, delimiter=",")
            return table[:, :-1], table[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits

    return load_digits(return_X_y=True)


def digits_data(seed: int = 0, *, test_fraction: float = 0.25, dtype=torch.float32, device="cpu") -> DigitsData:
    """The digits, shuffled with ``seed`` and split; features scaled by the training statistics.

    A pixel that is constant over the training images (a border pixel; 3 to 5 of them, by seed) is only
    centred: dividing by its zero standard deviation would blow up the few held-out images where it is not.

    Args:
        seed: the seed of the shuffle.
        test_fraction: the held-out share, in ``(0, 1)``.
        dtype: the features' arithmetic.
        device: where the tensors live.

    Returns:
        The split, each pixel standardised by the training part's mean and standard deviation (only centred
        where that deviation is zero).

    Raises:
        ValueError: a bad seed or ``test_fraction``.
    """
    seed = checks.count("seed", seed)
    if not 0 < test_fraction < 1:
        raise ValueError(f"Invalid test_fraction: {test_fraction!r} (must be in (0, 1))")
    x, y = _digits_arrays()
    x = torch.tensor(x, dtype=torch.float64)
    y = torch.tensor(y, dtype=torch.long)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_test = int(round(test_fraction * len(y)))
    test, train = order[:n_test], order[n_test:]
    mean, std = x[train].mean(0), x[train].std(0)
    std = torch.where(std > 0, std, torch.ones_like(std))
    x = (x - mean) / std
    to = dict(dtype=dtype, device=device)
    return DigitsData(x[train].to(**to), y[train].to(device), x[test].to(**to), y[test].to(device))


def digits_mlp(
    seed: int = 0,
    *,
    hidden=(64, 64),
    negative_slope: float = 0.0,
    data_seed: int = 0,
    dtype=torch.float32,
    device="cpu",
):
    """A ReLU (or LeakyReLU) MLP classifying the digits with cross-entropy, full batch.

    The network is an ``nn.Sequential`` of ``Linear`` and activation layers, so the positive-scale
    teleport applies (biases included).

    Args:
        seed: the seed of the initial weights.
        hidden: the hidden layers' widths.
        negative_slope: 0 for ReLU, otherwise LeakyReLU's slope.
        data_seed: the seed of the data's split (:func:`digits_data`).
        dtype: the arithmetic.
        device: where the tensors live.

    Returns:
        ``(objective, params, data)``; ``accuracy(objective, params, x, y)`` scores any split.

    Raises:
        ValueError: a seed or width that is not a count (widths ``≥ 1``).
    """
    seed = checks.count("seed", seed)
    hidden = [checks.count("hidden width", h, minimum=1) for h in hidden]
    data = digits_data(data_seed, dtype=dtype, device=device)
    widths = [data.x_train.shape[1], *hidden, 10]
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i in range(len(widths) - 1):
        layers.append(nn.Linear(widths[i], widths[i + 1]))
        if i < len(widths) - 2:
            layers.append(nn.ReLU() if negative_slope == 0 else nn.LeakyReLU(negative_slope))
    model = nn.Sequential(*layers).to(dtype=dtype, device=device)
    objective = ModuleObjective(model, nn.functional.cross_entropy, data.x_train, data.y_train)
    return objective, objective.initial_params(), data


def digits_cnn_task(seed: int = 0, *, data_seed: int = 0, dtype=torch.float32, device="cpu"):
    """The digits as 1×8×8 images and :func:`symtele.models.digits_cnn`, cross-entropy, full batch.

    The teleport that acts on it is :class:`~symtele.teleports.rescale.Rescale` (the CNN's rescalings
    found from its graph).

    Args:
        seed: the seed of the initial weights.
        data_seed: the seed of the data's split.
        dtype: the arithmetic.
        device: where the tensors live.

    Returns:
        ``(objective, params, data)``, ``data``'s inputs shaped as images.

    Raises:
        ValueError: a seed that is not a count.
    """
    from .models import digits_cnn

    seed = checks.count("seed", seed)
    flat = digits_data(data_seed, dtype=dtype, device=device)
    data = DigitsData(flat.x_train.reshape(-1, 1, 8, 8), flat.y_train, flat.x_test.reshape(-1, 1, 8, 8), flat.y_test)
    torch.manual_seed(seed)
    model = digits_cnn().to(dtype=dtype, device=device)
    objective = ModuleObjective(model, nn.functional.cross_entropy, data.x_train, data.y_train)
    return objective, objective.initial_params(), data


def accuracy(objective: ModuleObjective, params, inputs: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of ``inputs`` whose arg-max output equals ``labels``.

    Args:
        objective: the network's objective.
        params: its parameters.
        inputs: the inputs to score.
        labels: their labels.

    Returns:
        The accuracy, in ``[0, 1]``.
    """
    with torch.no_grad():
        return (objective.output(params, inputs).argmax(-1) == labels).double().mean().item()
