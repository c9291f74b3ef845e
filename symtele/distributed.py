"""A teleport of the global batch under ``torch.distributed``: what each process sends and checks.

Under ``DistributedDataParallel`` every process holds the same parameters and a different minibatch; the
step all of them take is the one of the mean loss over the union of their minibatches (of equal sizes),
whose gradient is the mean of theirs, ``ḡ = (1/R) Σ_r g_r``. A teleport of that loss needs the same: the
closed form's objective ``‖∇L(g_s·w)‖² = Σ_p Σ_entries ḡ_p² e^{−2 a_p(s)}`` squares the *averaged* gradient,
which the mean of the processes' own squares is not (``(1/R) Σ_r g_r² ≠ ḡ²``). So each process computes
its gradient once, the processes all-reduce one flat buffer (every gradient, then the loss: one
``all_reduce`` per teleport), and each runs the same ascent on the same ``ḡ``: every process finds and
applies the same group element, and transports its (identical) optimiser state the same way. The loss
checks and the look-ahead's trial losses are means over the processes too (one all-reduce of a scalar
each), so that every process makes the same decisions. The record's ``trace["all_reduce_bytes"]`` is the
size of the buffer (the Teleporter keeps it from one teleport to the next). Each process computes one
gradient, as a single process does. A model or loss that raises on one process only leaves the others
waiting in the all-reduce, as it would in ``DistributedDataParallel``'s backward.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def group_size(group) -> int:
    """The number of processes in ``group``.

    Args:
        group: a ``torch.distributed`` process group, or ``None`` (no process group: one process).

    Returns:
        The group's world size; 1 for ``None``.
    """
    return 1 if group is None else dist.get_world_size(group)


def default_group(wrapper_group, process_group):
    """The process group a teleport averages over.

    Args:
        wrapper_group: the ``DistributedDataParallel`` wrapper's process group, or ``None``.
        process_group: the group the user gave, or ``None``.

    Returns:
        ``process_group`` if given, else ``wrapper_group``, else the default group when ``torch.distributed``
        is initialised; ``None`` when that is none or a group of one process (nothing to send).
    """
    group = process_group if process_group is not None else wrapper_group
    if group is None and dist.is_available() and dist.is_initialized():
        group = dist.group.WORLD
    return None if group is None or dist.get_world_size(group) == 1 else group


def mean_over(
    group, tensors: list[torch.Tensor], extra: list[float], buffer: torch.Tensor | None = None
) -> tuple[list[torch.Tensor], list[float], torch.Tensor]:
    """The mean over the processes of ``group`` of every tensor and number, by one ``all_reduce``.

    The all-reduce is a sum of one flat buffer, in float32 or wider (the tensors' widest floating dtype),
    divided by the number of processes.

    Args:
        group: the process group.
        tensors: the tensors to average (the gradient, say).
        extra: numbers to average with them.
        buffer: the flat buffer of a previous call, reused when it fits (no new allocation).

    Returns:
        ``(tensors, numbers, buffer)``: the means, shaped and typed as given (views of ``buffer`` where the type
        is the buffer's), and the buffer sent.
    """
    dtype = torch.float32
    for t in tensors:
        dtype = torch.promote_types(dtype, t.dtype)
    device = tensors[0].device if tensors else torch.device("cpu")
    numbers = torch.tensor(extra, dtype=dtype, device=device)
    size = sum(t.numel() for t in tensors) + len(extra)
    if buffer is None or buffer.numel() != size or buffer.dtype != dtype or buffer.device != device:
        buffer = torch.empty(size, dtype=dtype, device=device)
    flat = torch.cat([t.detach().reshape(-1).to(dtype) for t in tensors] + [numbers], out=buffer)
    dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
    flat /= group_size(group)
    out, start = [], 0
    for t in tensors:
        out.append(flat[start : start + t.numel()].view(t.shape).to(t.dtype))
        start += t.numel()
    return out, flat[start:].tolist(), flat


def mean_value(group, value: float) -> float:
    """The mean of a number over the processes of ``group`` (float64: every process gets the same).

    Args:
        group: the process group.
        value: this process's number.

    Returns:
        The mean of the processes' numbers.
    """
    buffer = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(buffer, op=dist.ReduceOp.SUM, group=group)
    return float(buffer[0] / group_size(group))


def mean_values(group, values: list[float]) -> list[float]:
    """The mean of each number of ``values`` over the processes of ``group`` (one ``all_reduce``, float64).

    Args:
        group: the process group.
        values: this process's numbers (the same length on every process).

    Returns:
        The means, in the order of ``values``.
    """
    buffer = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(buffer, op=dist.ReduceOp.SUM, group=group)
    return (buffer / group_size(group)).tolist()


def check_same_settings(group, settings: dict) -> None:
    """Raise on every process unless all processes of ``group`` have the same ``settings``.

    One ``all_gather_object`` of the settings.

    Args:
        group: the process group.
        settings: this process's settings, by name (values compared with ``==``).

    Raises:
        ValueError: naming every setting that differs and its value on each process.
    """
    gathered: list = [None] * group_size(group)
    dist.all_gather_object(gathered, settings, group=group)
    differ = [
        f"{key}: " + ", ".join(f"process {r} {s.get(key)!r}" for r, s in enumerate(gathered))
        for key in settings
        if any(s.get(key) != gathered[0].get(key) for s in gathered)
    ]
    if differ:
        raise ValueError(
            "Invalid Teleporter settings: they differ between the processes, whose replicas would drift apart; "
            + "; ".join(differ)
        )
