"""Check a discovered symmetry numerically, and drop the groups that fail.

The rules of :mod:`~symtele.teleports.rules` are not trusted alone: :func:`verify` applies random log-scales
(uniform in ``[−VERIFY_SPREAD, VERIFY_SPREAD]``) to a float64 copy of the model and compares every output
(all of a tuple, a dict, a nested structure) on the example batch, in train and in eval mode (and in the
model's own mixed modes, if any), with the random number generator seeded alike for both runs so that
dropout draws the same mask. Groups whose scales change an output by more than :data:`VERIFY_RTOL` of its
largest entry are found by bisection (applying halves of the failing set) and dropped, each with the change
measured and the mode it was seen in. A model whose forward fixes its own dtype (``x.float()``) is checked in
that dtype instead, at a tolerance above its rounding (:data:`VERIFY_RTOL_OTHER`).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils._pytree import tree_flatten

from .symmetry import Dropped, Symmetry

#: the relative change of an output beyond which a group fails verification (float64)
VERIFY_RTOL = 1e-9
#: the same for a model whose forward fixes its own dtype, so that it only runs in it
VERIFY_RTOL_OTHER = {torch.float32: 1e-4}
#: ... and for any other dtype (half precision)
VERIFY_RTOL_LOW = 1e-2
#: log-scales of the verification are drawn uniformly from [−VERIFY_SPREAD, VERIFY_SPREAD]
VERIFY_SPREAD = 0.5


def set_modes(model: nn.Module, modes: dict[str, bool]) -> None:
    """Set every module's ``training`` flag from ``modes`` (by module name)."""
    for name, m in model.named_modules():
        m.training = modes[name]


def restore(work: nn.Module, buffers: dict[str, torch.Tensor]) -> None:
    """Copy ``buffers`` (by name) back into ``work``'s (a forward in train mode moves running statistics)."""
    with torch.no_grad():
        for name, b in work.named_buffers():
            b.copy_(buffers[name])


# ---- verification ---------------------------------------------------------------------------------------
def _outputs(work, x, seed) -> list:
    torch.manual_seed(seed)
    with torch.no_grad():
        leaves, _ = tree_flatten(work(x))
    return leaves


def _change(before: list, after: list) -> float:
    """The largest change of any output, relative to that output's largest finite entry.

    ``inf`` if an output is not comparable: another shape or type, a non-finite entry that moved, an integer
    that changed.
    """
    if len(before) != len(after):
        return math.inf
    worst = 0.0
    for b, a in zip(before, after):
        if not isinstance(b, torch.Tensor):
            if b != a:
                return math.inf
            continue
        if not isinstance(a, torch.Tensor) or a.shape != b.shape or a.dtype != b.dtype:
            return math.inf
        if not b.is_floating_point() and not b.is_complex():
            if not torch.equal(a, b):
                return math.inf
            continue
        finite = torch.isfinite(b)
        if not torch.equal(finite, torch.isfinite(a)) or not torch.equal(
            b[~finite].nan_to_num(), a[~finite].nan_to_num()
        ):
            return math.inf
        if bool(finite.any()):
            size = float(b[finite].abs().max())
            worst = max(worst, float((a[finite] - b[finite]).abs().max()) / max(size, 1e-300))
    return worst


def verify(
    found: Symmetry,
    work: nn.Module,
    x: torch.Tensor,
    modes: list[dict[str, bool]],
    buffers: dict[str, torch.Tensor],
    names: dict[int, str],
    seed: int,
) -> Symmetry:
    """Check ``found`` on ``work`` and drop the groups that change an output (see the module's docstring).

    Args:
        found: the symmetry the rules found.
        work: the model's copy to run (float64 unless its forward fixes its dtype); its parameters are restored.
        x: the example batch, in ``work``'s dtype.
        modes: the modes to check, each a module name → ``training`` flag.
        buffers: ``work``'s buffers as they were, restored before every run.
        names: ``id`` of each of ``work``'s parameters → its name in ``found``'s terms.
        seed: the seed of the random log-scales and of every run's random number generator.

    Returns:
        ``found`` without the groups that failed, each recorded in ``dropped`` with the change measured, and with
        ``verified`` saying what was checked.
    """
    by_name = {names[id(p)]: p for p in work.parameters()}
    dtype = next((p.dtype for p in by_name.values() if p.is_floating_point()), torch.float64)
    rtol = VERIFY_RTOL if dtype == torch.float64 else VERIFY_RTOL_OTHER.get(dtype, VERIFY_RTOL_LOW)
    original = {n: p.detach().clone() for n, p in by_name.items()}
    g = torch.Generator().manual_seed(seed)
    s = (torch.rand(found.n_scales, generator=g, dtype=torch.float64) * 2 - 1) * VERIFY_SPREAD
    baseline = []
    for mode in modes:
        set_modes(work, mode)
        restore(work, buffers)
        baseline.append(_outputs(work, x, seed))

    def change(groups: list[int]) -> tuple[float, int]:
        """The worst relative change of any output with the scales of ``groups`` applied, and in which mode."""
        t = torch.zeros_like(s)
        for i in groups:
            idx = list(found.groups[i].scales)
            t[idx] = s[idx]
        with torch.no_grad():
            for name in found.params:
                p = by_name[name]
                p.copy_(original[name] * torch.exp(found.log_factor(name, t, p)))
        worst = (0.0, 0)
        try:
            for k, mode in enumerate(modes):
                set_modes(work, mode)
                restore(work, buffers)
                worst = max(worst, (_change(baseline[k], _outputs(work, x, seed)), k))
        finally:
            with torch.no_grad():
                for name in found.params:
                    by_name[name].copy_(original[name])
        return worst

    def failing(groups: list[int]) -> dict[int, tuple[float, int]]:
        worst = change(groups)
        if worst[0] <= rtol:
            return {}
        if len(groups) == 1:
            return {groups[0]: worst}
        half = len(groups) // 2
        out = {**failing(groups[:half]), **failing(groups[half:])}
        return out or dict.fromkeys(groups, worst)  # each half alone keeps the outputs, together they do not

    kept, dropped = list(range(len(found.groups))), []
    while kept:
        bad = failing(kept)
        if not bad:
            break
        for i, (worst, k) in bad.items():
            group = found.groups[i]
            mode = "train" if all(modes[k].values()) else "eval" if not any(modes[k].values()) else "the model's"
            dropped.append(
                Dropped(
                    ", ".join(group.producers),
                    f"group of {', '.join(group.producers)} failed numerical verification: an output changed by "
                    f"{worst:.1e} (relative) in {mode} mode",
                )
            )
        kept = [i for i in kept if i not in bad]
    restore(work, buffers)
    result = found.keep(kept, dropped)
    mode_names = ["train", "eval", "the model's own"][: len(modes)]
    result.verified = (
        f"verified: every output kept within {rtol:g} ({str(dtype).removeprefix('torch.')}, random log-scales in "
        f"±{VERIFY_SPREAD:g}) "
        f"in {', '.join(mode_names)} mode"
    )
    return result
