"""Wall-clock time of work that may run on a GPU.

CUDA kernels run asynchronously: the clock is read only after the device has finished the work
queued so far, so that a time covers the work done, not just its launch.
"""

from __future__ import annotations

import time

import torch


def clock(device: torch.device) -> float:
    """``time.perf_counter()`` once every kernel queued on ``device`` has finished.

    Args:
        device: the device whose queued work must be done (CUDA is synchronised; the CPU has no queue).

    Returns:
        Seconds of ``time.perf_counter``.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()
