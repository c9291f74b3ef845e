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
        leaves, _ = tree_flatten(work(x.clone()))  # a forward may change its input in place
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

    def run(values: dict[str, torch.Tensor]) -> tuple[float, int]:
        """The worst relative change of any output, and in which mode, with the parameters ``values``.

        The parameters not in ``values`` (by name) are as they are; all are restored after.
        """
        with torch.no_grad():
            for name, value in values.items():
                by_name[name].copy_(value)
        worst = (0.0, 0)
        try:
            for k, mode in enumerate(modes):
                set_modes(work, mode)
                restore(work, buffers)
                worst = max(worst, (_change(baseline[k], _outputs(work, x, seed)), k))
        finally:
            with torch.no_grad():
                for name in values:
                    by_name[name].copy_(original[name])
        return worst

    def scaled(groups: list[int]) -> dict[str, torch.Tensor]:
        """The parameters with the random log-scales of ``groups`` applied."""
        t = torch.zeros_like(s)
        for i in groups:
            idx = list(found.groups[i].scales)
            t[idx] = s[idx]
        return {n: original[n] * torch.exp(found.log_factor(n, t, by_name[n])) for n in found.params}

    kept, failed = _drop_failing(lambda groups: run(scaled(groups)), list(range(len(found.groups))), rtol)
    records = []
    for i, (worst, k) in failed.items():
        group = found.groups[i]
        records.append(
            Dropped(
                ", ".join(group.producers),
                f"group of {', '.join(group.producers)} failed numerical verification: an output changed by "
                f"{worst:.1e} (relative) in {_mode_name(modes[k])} mode",
            )
        )
    with_scales = scaled(kept)
    result = found.keep(kept, records)
    if result.pair_groups:
        result = _verify_pairs(result, original, with_scales, run, modes, rtol, seed)
    restore(work, buffers)
    mode_names = ["train", "eval", "the model's own"][: len(modes)]
    result.verified = (
        f"verified: every output kept within {rtol:g} ({str(dtype).removeprefix('torch.')}, random log-scales in "
        f"±{VERIFY_SPREAD:g}"
        + (f"; random A = exp(X) with ‖X‖₂ = {VERIFY_SPREAD:g} per attention group" if result.pair_groups else "")
        + f") in {', '.join(mode_names)} mode"
    )
    return result


def _mode_name(mode: dict[str, bool]) -> str:
    return "train" if all(mode.values()) else "eval" if not any(mode.values()) else "the model's"


def _drop_failing(change, items: list[int], rtol: float) -> tuple[list[int], dict[int, tuple[float, int]]]:
    """Split ``items`` into those kept and those that fail, found by bisection.

    Args:
        change: ``change(subset)`` is the worst relative change of any output with the subset applied, and the
            mode it was seen in.
        items: the indices to check.
        rtol: the largest change allowed.

    Returns:
        ``(kept, failed)``: the indices kept, and each failing one with its change and mode.
    """

    def failing(subset: list[int]) -> dict[int, tuple[float, int]]:
        worst = change(subset)
        if worst[0] <= rtol:
            return {}
        if len(subset) == 1:
            return {subset[0]: worst}
        half = len(subset) // 2
        out = {**failing(subset[:half]), **failing(subset[half:])}
        return out or dict.fromkeys(subset, worst)  # each half alone keeps the outputs, together they do not

    kept, dropped = list(items), {}
    while kept:
        bad = failing(kept)
        if not bad:
            break
        dropped.update(bad)
        kept = [i for i in kept if i not in bad]
    return kept, dropped


def random_element(d: int, generator: torch.Generator, spread: float = VERIFY_SPREAD) -> torch.Tensor:
    """A random ``A = exp(X) ∈ GL(d)`` with ``‖X‖₂ = spread``, float64.

    Its condition number is at most ``e^{2·spread}``.

    Args:
        d: the dimension.
        generator: the random number generator of ``X``'s entries (standard normal before scaling).
        spread: ``‖X‖₂``.

    Returns:
        ``A`` (``d × d``).
    """
    x = torch.randn(d, d, generator=generator, dtype=torch.float64)
    return torch.linalg.matrix_exp(x * (spread / torch.linalg.matrix_norm(x, 2)))


def _verify_pairs(found: Symmetry, original, with_scales, run, modes, rtol, seed) -> Symmetry:
    """Drop the attention groups that change an output with a random group element each.

    Then all of them if they change one together with the kept positive scales (``with_scales``: the parameters
    scaled).
    """
    from .attention import act

    g = torch.Generator().manual_seed(seed + 1)
    elements = [random_element(group.d, g) for group in found.pair_groups]

    def change(subset: list[int], start: dict[str, torch.Tensor] = original) -> tuple[float, int]:
        moved = {**original, **start}
        for i in subset:
            group = found.pair_groups[i]
            moved = act(group, elements[i].to(moved[group.params[0]].dtype), moved)
        return run(moved)

    kept, failed = _drop_failing(change, list(range(len(found.pair_groups))), rtol)
    records = [
        Dropped(
            found.pair_groups[i].name,
            f"failed numerical verification: an output changed by {worst:.1e} (relative) in "
            f"{_mode_name(modes[k])} mode with a random A",
        )
        for i, (worst, k) in failed.items()
    ]
    if kept and with_scales:
        worst, k = change(kept, with_scales)
        if worst > rtol:
            records += [
                Dropped(
                    found.pair_groups[i].name,
                    f"failed numerical verification together with the positive scales: an output changed by "
                    f"{worst:.1e} (relative) in {_mode_name(modes[k])} mode",
                )
                for i in kept
            ]
            kept = []
    return found.keep_pairs(kept, records)
