"""Argument checks shared by the package.

Every public entry point validates its arguments here before any compute, and raises a
``ValueError`` or ``TypeError`` whose message names the argument and the offending value (the
style of ``torch.optim``: "Invalid learning rate: -1"). The checks of numbers, names and lists
need no torch, so the writeup's settings (:mod:`symtele.study.settings`) use them without
loading it; the tensor and device checks import it when called.
"""

from __future__ import annotations

import math
import re
from numbers import Integral, Real
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def positive(name: str, value) -> float:
    """Return ``value`` as a float, or raise if it is not a finite number > 0.

    Args:
        name: the argument's name, for the error message.
        value: the value given.

    Returns:
        ``value`` as a float.

    Raises:
        TypeError: not a real number (a bool is not one).
        ValueError: not finite, or ``≤ 0``.
    """
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"Invalid {name}: {value!r} (expected a positive number)")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"Invalid {name}: {value!r} (must be finite and > 0)")
    return float(value)


def non_negative(name: str, value) -> float:
    """Return ``value`` as a float, or raise if it is not a finite number >= 0.

    Args:
        name: the argument's name, for the error message.
        value: the value given.

    Returns:
        ``value`` as a float.

    Raises:
        TypeError: not a real number (a bool is not one).
        ValueError: not finite, or negative.
    """
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"Invalid {name}: {value!r} (expected a number >= 0)")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"Invalid {name}: {value!r} (must be finite and >= 0)")
    return float(value)


def count(name: str, value, minimum: int = 0) -> int:
    """Return ``value`` as an int, or raise if it is not an integer >= ``minimum``.

    Args:
        name: the argument's name, for the error message.
        value: the value given.
        minimum: the smallest value allowed.

    Returns:
        ``value`` as an int.

    Raises:
        TypeError: not an integer (a bool is not one).
        ValueError: below ``minimum``.
    """
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"Invalid {name}: {value!r} (expected an integer >= {minimum})")
    if value < minimum:
        raise ValueError(f"Invalid {name}: {value!r} (must be >= {minimum})")
    return int(value)


def choice(name: str, value, options) -> str:
    """Raise unless ``value`` is one of ``options``.

    Args:
        name: the argument's name, for the error message.
        value: the value given.
        options: the values allowed.

    Returns:
        ``value``.

    Raises:
        ValueError: not one of ``options`` (the message lists them).
    """
    if value not in options:
        raise ValueError(f"Invalid {name}: {value!r} (choose one of {sorted(options)})")
    return value


def sequence(name: str, values, check, *, minimum_length: int = 1, distinct: bool = False) -> tuple:
    """``values`` (a list or tuple, not a string) as a tuple, each entry passed through ``check(label, entry)``.

    Args:
        name: the argument's name, for the error message.
        values: the list given.
        check: ``check(label, entry)`` returns the entry checked (``label`` is ``name[i]``).
        minimum_length: the fewest entries allowed.
        distinct: refuse repeated entries.

    Returns:
        The checked entries, as a tuple.

    Raises:
        TypeError: not a list or tuple.
        ValueError: too few entries, or repeated ones with ``distinct``; what ``check`` raises.
    """
    if isinstance(values, (str, bytes)) or not isinstance(values, (list, tuple)):
        raise TypeError(f"Invalid {name}: {values!r} (expected a list)")
    if len(values) < minimum_length:
        raise ValueError(f"Invalid {name}: {list(values)!r} (needs at least {minimum_length} entries)")
    values = tuple(check(f"{name}[{i}]", v) for i, v in enumerate(values))
    if distinct and len(set(values)) != len(values):
        raise ValueError(f"Invalid {name}: {list(values)!r} (values repeat)")
    return values


def point(name: str, value) -> tuple[float, float]:
    """A 2-D point ``(x, y)`` of finite numbers, as a tuple of floats.

    Args:
        name: the argument's name, for the error message.
        value: the point given (a list or tuple).

    Returns:
        ``(x, y)`` as floats.

    Raises:
        ValueError: not two finite numbers.
    """
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ValueError(f"Invalid {name}: {value!r} (expected two coordinates x, y)")
    for v in value:
        if isinstance(v, bool) or not isinstance(v, Real) or not math.isfinite(v):
            raise ValueError(f"Invalid {name}: {value!r} (coordinates must be finite numbers)")
    return float(value[0]), float(value[1])


def epoch_of_run(name: str, value, epochs: int) -> int:
    """An epoch of a run of ``epochs`` epochs: an integer in ``0 … epochs − 1``.

    Args:
        name: the argument's name, for the error message.
        value: the epoch given.
        epochs: the run's number of epochs.

    Returns:
        ``value`` as an int.

    Raises:
        TypeError: not an integer.
        ValueError: outside ``0 … epochs − 1``.
    """
    value = count(name, value)
    if value >= epochs:
        raise ValueError(f"Invalid {name}: {value} (the run has epochs 0..{epochs - 1})")
    return value


def epochs_of_run(name: str, values, epochs: int) -> tuple[int, ...]:
    """A non-empty list of epochs of a run of ``epochs`` epochs (a single int is a list of one).

    Args:
        name: the argument's name, for the error message.
        values: the epochs given, or one epoch.
        epochs: the run's number of epochs.

    Returns:
        The epochs, as a tuple of ints.

    Raises:
        TypeError: not a list of integers.
        ValueError: an empty list, or an epoch outside the run.
    """
    if isinstance(values, Integral) and not isinstance(values, bool):
        values = [values]
    return sequence(name, values, lambda label, v: epoch_of_run(label, v, epochs))


def dims(name: str, value) -> tuple[int, ...]:
    """Layer widths ``[samples, input, ..., output]``: at least three positive integers.

    Args:
        name: the argument's name, for the error message.
        value: the widths given.

    Returns:
        The widths, as a tuple of ints.

    Raises:
        ValueError: fewer than three entries, or one that is not a positive integer.
    """
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) or len(value) < 3:
        raise ValueError(f"Invalid {name}: {value!r} (need [samples, input, ..., output], all positive integers)")
    if any(isinstance(d, bool) or not isinstance(d, Integral) or d < 1 for d in value):
        raise ValueError(f"Invalid {name}: {value!r} (need [samples, input, ..., output], all positive integers)")
    return tuple(int(d) for d in value)


def finite_tensor(name: str, tensor) -> torch.Tensor:
    """Raise unless ``tensor`` is a floating-point tensor with only finite entries.

    Args:
        name: the argument's name, for the error message.
        tensor: the tensor given.

    Returns:
        ``tensor``.

    Raises:
        TypeError: not a tensor, or not floating-point.
        ValueError: a nan or inf entry (the message counts them).
    """
    import torch

    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"Invalid {name}: expected a torch.Tensor, got {type(tensor).__name__}")
    if not tensor.is_floating_point():
        raise TypeError(f"Invalid {name}: expected a floating-point tensor, got dtype {tensor.dtype}")
    if not bool(torch.isfinite(tensor).all()):
        bad = int((~torch.isfinite(tensor)).sum())
        raise ValueError(f"Invalid {name}: contains {bad} non-finite value(s) (nan or inf)")
    return tensor


def finite_vector(name: str, tensor) -> torch.Tensor:
    """:func:`finite_tensor`, and 1-D (a flat parameter vector).

    Args:
        name: the argument's name, for the error message.
        tensor: the tensor given.

    Returns:
        ``tensor``.

    Raises:
        TypeError: as :func:`finite_tensor`.
        ValueError: as :func:`finite_tensor`, or not 1-D.
    """
    finite_tensor(name, tensor)
    if tensor.dim() != 1:
        raise ValueError(f"Invalid {name}: expected a 1-D parameter vector, got shape {tuple(tensor.shape)}")
    return tensor


def finite_tensors(name: str, tensors) -> list[torch.Tensor]:
    """Check every tensor of a sequence with :func:`finite_tensor`; the message names the index that fails.

    Args:
        name: the argument's name, for the error message.
        tensors: the tensors given.

    Returns:
        The tensors, as a list.

    Raises:
        TypeError: as :func:`finite_tensor`.
        ValueError: an empty sequence; as :func:`finite_tensor`.
    """
    tensors = list(tensors)
    if not tensors:
        raise ValueError(f"Invalid {name}: empty sequence")
    for i, t in enumerate(tensors):
        finite_tensor(f"{name}[{i}]", t)
    return tensors


def device_name(name: str, value) -> str:
    """A device's name: ``"cpu"``, or ``"cuda"``/``"cuda:<n>"`` on a machine with CUDA (only then is torch loaded).

    Args:
        name: the argument's name, for the error message.
        value: the name given.

    Returns:
        ``value``.

    Raises:
        ValueError: another name, or CUDA on a machine without it.
    """
    if not isinstance(value, str) or not re.fullmatch(r"cpu|cuda(:\d+)?", value):
        raise ValueError(f"Invalid {name}: {value!r} (use 'cpu', 'cuda' or 'cuda:<n>')")
    if value != "cpu":
        device(name, value)
    return value


def device(name: str, value) -> torch.device:
    """``value`` as a ``torch.device``.

    Args:
        name: the argument's name, for the error message.
        value: the device or its name.

    Returns:
        The device.

    Raises:
        ValueError: a device torch cannot read, another type than CPU or CUDA, or CUDA on a machine without it.
    """
    import torch

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
DTYPES = ("float32", "float64")


def dtype(name: str, value) -> torch.dtype:
    """``value``, given as ``torch.float32``/``float64`` or their names, as a ``torch.dtype``.

    Args:
        name: the argument's name, for the error message.
        value: the dtype or its name.

    Returns:
        The dtype.

    Raises:
        ValueError: another dtype.
    """
    import torch

    if isinstance(value, str) and value in DTYPES:
        return getattr(torch, value)
    if value in (torch.float32, torch.float64):
        return value
    raise ValueError(f"Invalid {name}: {value!r} (use float32 or float64)")
