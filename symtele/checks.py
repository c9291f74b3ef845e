"""Argument checks shared by the package.

Every public entry point validates its arguments here before any compute, and
raises a ``ValueError`` or ``TypeError`` whose message names the argument and
the offending value (the style of ``torch.optim``: "Invalid learning rate: -1").
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import torch


def positive(name: str, value) -> float:
    """Return ``value`` as a float, or raise if it is not a finite number > 0."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"Invalid {name}: {value!r} (expected a positive number)")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"Invalid {name}: {value!r} (must be finite and > 0)")
    return float(value)


def non_negative(name: str, value) -> float:
    """Return ``value`` as a float, or raise if it is not a finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"Invalid {name}: {value!r} (expected a number >= 0)")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"Invalid {name}: {value!r} (must be finite and >= 0)")
    return float(value)


def count(name: str, value, minimum: int = 0) -> int:
    """Return ``value`` as an int, or raise if it is not an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"Invalid {name}: {value!r} (expected an integer >= {minimum})")
    if value < minimum:
        raise ValueError(f"Invalid {name}: {value!r} (must be >= {minimum})")
    return int(value)


def finite_tensor(name: str, tensor) -> torch.Tensor:
    """Raise unless ``tensor`` is a floating-point tensor with only finite entries."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"Invalid {name}: expected a torch.Tensor, got {type(tensor).__name__}")
    if not tensor.is_floating_point():
        raise TypeError(f"Invalid {name}: expected a floating-point tensor, got dtype {tensor.dtype}")
    if not bool(torch.isfinite(tensor).all()):
        bad = int((~torch.isfinite(tensor)).sum())
        raise ValueError(f"Invalid {name}: contains {bad} non-finite value(s) (nan or inf)")
    return tensor


def finite_tensors(name: str, tensors) -> list[torch.Tensor]:
    """Check every tensor of a sequence; the message names the index that fails."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError(f"Invalid {name}: empty sequence")
    for i, t in enumerate(tensors):
        finite_tensor(f"{name}[{i}]", t)
    return tensors


def choice(name: str, value, options) -> str:
    """Raise unless ``value`` is one of ``options``."""
    if value not in options:
        raise ValueError(f"Invalid {name}: {value!r} (choose one of {sorted(options)})")
    return value


def device(name: str, value) -> torch.device:
    """``value`` as a ``torch.device``; raises ``ValueError`` for an unknown device or CUDA on a machine without it."""
    try:
        dev = torch.device(value)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"Invalid {name}: {value!r} ({err})") from None
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"Invalid {name}: {value!r} (use 'cpu' or 'cuda')")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"Invalid {name}: {value!r} (CUDA is not available on this machine)")
    return dev


#: the floating-point types a measurement may ask for, by name
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def dtype(name: str, value) -> torch.dtype:
    """``value`` given as ``torch.float32``/``float64`` or their names."""
    if isinstance(value, str) and value in DTYPES:
        return DTYPES[value]
    if value in DTYPES.values():
        return value
    raise ValueError(f"Invalid {name}: {value!r} (use float32 or float64)")
