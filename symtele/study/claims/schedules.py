"""The claims about other optimisers (notebook 04) and single teleports (the sweep, notebook 06)."""

from __future__ import annotations

import math

import numpy as np

from ..summaries import by_method, curve_stats
from .common import records_of, verdict


def other_optimizers(results):
    """Every torch optimiser ends at a lower final mean training loss with the teleport.

    Args:
        results: the loaded results, ``{notebook stem: results file}``.

    Returns:
        ``(measured, holds)``, as :mod:`~symtele.study.claims.common` says.

    Raises:
        LookupError: naming what the results lack that the claim needs.
    """
    groups = by_method(records_of(results, "04_beyond_optimizers"))
    bases = [m for m in groups if "+" not in m]
    better = [m for m in bases if curve_stats(groups[m + "+posscale"])[0][-1] < curve_stats(groups[m])[0][-1]]
    return (
        f"lower final mean training loss with the teleport for {len(better)} of {len(bases)} optimisers "
        f"({', '.join(better) or 'none'}; yes: all)",
        verdict(len(better) == len(bases), bool(better)),
    )


def single_teleport(results):
    """Every positive-scale point of the sweep ends below its no-teleport baseline.

    Args:
        results: the loaded results, ``{notebook stem: results file}``.

    Returns:
        ``(measured, holds)``, as :mod:`~symtele.study.claims.common` says.

    Raises:
        LookupError: naming what the results lack that the claim needs.
    """
    points = {}
    for r in records_of(results, "06_schedule_sweep"):
        if r.get("group") == "posscale":
            points.setdefault((r["optimizer"], r["teleport_epoch"], r["teleport_lr"]), []).append(r["loss"][-1])
    finite = {k: v for k, v in points.items() if all(x is not None and math.isfinite(x) for x in v)}
    base = {o: np.mean(v) for (o, e, _), v in finite.items() if e is None}
    tried = [key for key in points if key[1] is not None and key[0] in base]
    if not tried:
        raise LookupError("the sweep has no positive-scale points with a baseline")
    better = sum(key in finite and np.mean(finite[key]) < base[key[0]] for key in tried)
    return (
        f"{better} of {len(tried)} single-teleport points of the sweep end below their no-teleport baseline (yes: all)",
        verdict(better == len(tried), better > 0),
    )


ROWS = [
    (
        "Teleportation can be added to existing optimisers and speeds them up",
        "writeup §1",
        ["04_beyond_optimizers"],
        other_optimizers,
    ),
    (
        "A single teleport (|T| = 1) is enough to accelerate optimisation",
        "writeup §3.1",
        ["06_schedule_sweep"],
        single_teleport,
    ),
]
