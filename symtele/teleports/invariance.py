"""When does an exact-symmetry teleport count as loss-preserving?

A group action leaves the loss unchanged in exact arithmetic; in floating point the
teleported loss differs by rounding only. A step is accepted when
``|L(g·w) − L(w)| ≤ rtol · max(|L(w)|, tiny)``, with ``rtol`` a small multiple of
the dtype's precision unless the caller chooses one.
"""

from __future__ import annotations

import torch

DEFAULT_RTOL = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 5e-2}


def default_rtol(dtype: torch.dtype) -> float:
    """The relative tolerance on the loss change that a step in ``dtype`` is accepted with.

    Args:
        dtype: the dtype of the loss.

    Returns:
        The entry of :data:`DEFAULT_RTOL` for ``dtype``, ``1e-4`` for a dtype not listed.
    """
    return DEFAULT_RTOL.get(dtype, 1e-4)


def preserved(before: torch.Tensor, after: torch.Tensor, rtol: float) -> torch.Tensor:
    """Whether each loss was kept: ``after`` is finite and ``|after − before| ≤ rtol · max(|before|, tiny)``.

    Args:
        before: the loss before the teleport, one entry per problem copy.
        after: the loss after it, of the same shape.
        rtol: the relative tolerance (see :func:`default_rtol`).

    Returns:
        A boolean tensor, one entry per problem copy.
    """
    tiny = torch.finfo(before.dtype).tiny
    scale = before.abs().clamp_min(tiny)
    return torch.isfinite(after) & ((after - before).abs() <= rtol * scale)
