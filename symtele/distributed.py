"""A teleport of the global batch under ``torch.distributed``: what each process sends and checks.

Under ``DistributedDataParallel`` every process holds the same parameters and a different minibatch; the
step all of them take is the one of the mean loss over the union of their minibatches (of equal sizes),
whose gradient is the mean of theirs, ``ḡ = (1/R) Σ_r g_r``. A teleport of that loss needs the same: the
closed form's objective ``‖∇L(g_s·w)‖² = Σ_p Σ_entries ḡ_p² e^{−2 a_p(s)}`` squares the *averaged* gradient,
which the mean of the processes' own squares is not (``(1/R) Σ_r g_r² ≠ ḡ²``), nor is any sum of per-unit
squares of the processes' own gradients: ``ḡ²`` holds the cross terms ``g_r g_q`` of every pair of processes,
so a process needs the others' gradients entry by entry. The closed form's per-unit sums, the look-ahead's
shadow step and the attention groups' planning all use ``ḡ`` itself. So each process computes its gradient
once, divided by ``R`` (the loss is, before the backward pass), the processes sum it (:func:`sum_over`: the
large gradients all-reduced where they lie, the small ones, the loss and a flag in one flat buffer, all the
all-reduces launched at once and then waited for), and each runs the same ascent on the same ``ḡ``: every
process finds and applies the same group element, and transports its (identical) optimiser state the same
way. The loss checks and the look-ahead's trial losses are means over the processes too (one all-reduce of a
scalar each), so that every process makes the same decisions. The record's ``trace["all_reduce_bytes"]`` is
what each process all-reduces of the gradient, a gradient's worth and two numbers (the Teleporter keeps the
flat buffer from one teleport to the next). Each process computes one gradient, as a single process does. A
model or loss that raises on one process only leaves the others waiting in the all-reduce, as it would in
``DistributedDataParallel``'s backward.

A teleport from the gradient in ``p.grad`` (:meth:`~symtele.teleporter.Teleporter.maybe_after_backward`) needs
none of that: ``DistributedDataParallel``'s backward pass has averaged the gradient already, so every process
holds ``ḡ``. It sends five numbers (:func:`gather_values`): its loss and flag, and the sum and a checksum of its
``p.grad``, which must agree between the processes (a model without the wrapper has each process's own
gradient there, from which the processes would teleport apart: refused).
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


#: a tensor of at least this many bytes (float32 or float64) is all-reduced where it lies, not copied to the buffer
IN_PLACE_BYTES = 1 << 20


def sum_over(
    group, tensors: list[torch.Tensor], extra: list[float], buffer: torch.Tensor | None = None
) -> tuple[list[torch.Tensor], list[float], torch.Tensor, int]:
    """The sum over the processes of ``group`` of every tensor and number, every all-reduce launched at once.

    A caller after the mean divides by the number of processes *before* (the teleport divides its loss
    before the backward pass, so its gradient comes out divided): no pass over the sums afterwards. A tensor
    of at least :data:`IN_PLACE_BYTES` in float32 or float64 is all-reduced where it lies (its sum replaces
    it; a copy only when it is not contiguous or shares its memory with another one); the others, in float32
    or wider (their widest floating dtype), and the numbers go through one flat buffer. The all-reduces are
    launched together (asynchronously) and waited for, in the same order on every process: which tensor
    goes where depends only on the tensors' sizes and dtypes, the same on every process.

    Args:
        group: the process group.
        tensors: the tensors to sum (the gradient, say), owned by the caller: the large ones are overwritten.
        extra: numbers to sum with them.
        buffer: the flat buffer of a previous call, reused when it fits (no new allocation).

    Returns:
        ``(tensors, numbers, buffer, sent)``: the sums, shaped and typed as given (the large tensors themselves,
        the others views of ``buffer`` where the type is the buffer's), the flat buffer, and the bytes
        all-reduced in all.
    """
    in_place = [
        t.dtype in (torch.float32, torch.float64) and t.numel() * t.element_size() >= IN_PLACE_BYTES for t in tensors
    ]
    packed = [t for t, big in zip(tensors, in_place) if not big]
    dtype = torch.float32
    for t in packed:
        dtype = torch.promote_types(dtype, t.dtype)
    device = tensors[0].device if tensors else torch.device("cpu")
    size = sum(t.numel() for t in packed) + len(extra)
    if buffer is None or buffer.numel() != size or buffer.dtype != dtype or buffer.device != device:
        buffer = torch.empty(size, dtype=dtype, device=device)
    numbers = torch.tensor(extra, dtype=dtype, device=device)
    flat = torch.cat([t.detach().reshape(-1).to(dtype) for t in packed] + [numbers], out=buffer)
    out, seen, start = [], set(), 0
    for t, big in zip(tensors, in_place):
        if big:  # copied first when not contiguous (expanded) or sharing its memory with another one
            t = t.detach()
            if not t.is_contiguous() or t.untyped_storage().data_ptr() in seen:
                t = t.contiguous().clone()
            seen.add(t.untyped_storage().data_ptr())
            out.append(t)
        else:
            out.append(flat[start : start + t.numel()].view(t.shape))
            start += t.numel()
    summed = [flat] + [t for t, big in zip(out, in_place) if big]  # every copy made before any sum starts
    works = [dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group, async_op=True) for t in summed]
    for work in works:
        work.wait()
    out = [s.to(t.dtype) for s, t in zip(out, tensors)]
    return out, flat[start:].tolist(), flat, sum(t.numel() * t.element_size() for t in summed)


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


def gather_values(group, values: list[float]) -> tuple[list[list[float]], int]:
    """Every process's ``values``, exactly, on every process: one ``all_reduce`` of a float64 buffer.

    Each process writes its numbers into its own slot of a zeroed buffer and the buffers are summed: adding
    zeros is exact, so every process receives every process's numbers bit for bit (a non-finite number stays
    in its slot).

    Args:
        group: the process group.
        values: this process's numbers (the same length on every process).

    Returns:
        ``(gathered, sent)``: the numbers of process ``r`` of the group at ``gathered[r]``, and the bytes this
        process all-reduced.
    """
    size, rank = group_size(group), dist.get_rank(group)
    buffer = torch.zeros(size, len(values), dtype=torch.float64)
    buffer[rank] = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(buffer, op=dist.ReduceOp.SUM, group=group)
    return buffer.tolist(), buffer.numel() * buffer.element_size()


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
