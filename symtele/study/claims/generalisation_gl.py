"""The claims about Zhao et al. (2024)'s own group, the data-dependent GL(h) action, in their Fig. 4 protocol (10).

Judged on the chapter's ``teleport-gl`` runs (:mod:`symtele.study.generalisation_gl`) beside its runs along the
positive rescalings, with intervals over seeds as the chapter's other claims.
"""

from __future__ import annotations

import math
from functools import partial
from statistics import median

from ..summaries import GL_EXPERIMENT as EXPERIMENT
from ..summaries import gl_table
from .common import NO, YES, g, verdict
from .generalisation import LOSS_RTOL, STEM, _of, objective_range, validation_lowered

#: what each arm asks of its objective: +1 up, −1 down
SIGN = {"decrease": -1, "increase": +1}


def _rows(results) -> list[dict]:
    return gl_table(_of(results, "teleport"), _of(results, EXPERIMENT))


def gl_arm_lowers(results, arm: str):
    """Whether teleporting by the GL(h) action to ``arm`` lowers the mean validation loss after it, per data set.

    Args:
        results: the loaded results, ``{notebook stem: results file}``.
        arm: ``"sharpness-decrease"``, ``"curvature-increase"``, …

    Returns:
        ``(measured, holds)``, as :mod:`~symtele.study.claims.common` says.

    Raises:
        LookupError: naming what the results lack that the claim needs.
    """
    rows = [row for row in _rows(results) if row["arm"] == arm and row["group"] == "gl-data"]
    if not rows:
        raise LookupError(f"{STEM} has no runs teleported by the GL(h) action to {arm.replace('-', ' ')}")
    return validation_lowered(
        rows,
        "validation loss after the GL(h) teleport minus without a teleport",
        lambda row: (
            f"objective on the chapter's teleport batch {objective_range(row)}; validation loss right after the "
            f"teleport {_percent(min(row['validation_loss_change']))} to {_percent(max(row['validation_loss_change']))}"
        ),
    )


def _percent(x: float) -> str:
    return f"{g(round(100 * x, 3 if abs(x) < 0.01 else 1))}%"


def gl_keeps_held_out_loss(results):
    """Whether every GL(h) teleport keeps the training loss off its batch within ``LOSS_RTOL``, as it does on it.

    Args:
        results: the loaded results, ``{notebook stem: results file}``.

    Returns:
        ``(measured, holds)``, as :mod:`~symtele.study.claims.common` says.

    Raises:
        LookupError: naming what the results lack that the claim needs.
    """
    teleports = [t for r in _of(results, EXPERIMENT) for t in r["teleports"] if t["steps_taken"] > 0]
    if not teleports:
        raise LookupError(f"{STEM} has no GL(h) teleport that took a step")
    held = [abs(t["held_out_loss_change"]) for t in teleports]
    on_batch = max(t["loss_change"] for t in teleports)
    return (
        f"over {len(teleports)} GL(h) teleports that moved: the largest relative change of the training loss on "
        f"the teleport's own batch {on_batch:.2g}; on the rest of the teleport batch (held out) from "
        f"{min(held):.2g} to {max(held):.2g} (yes: every held-out change below {LOSS_RTOL:g})",
        YES if max(held) < LOSS_RTOL else NO,
    )


def gl_moves_further(results):
    """Whether the GL(h) action moves each objective further the asked way than the positive rescalings do.

    Per data set and arm, the median over seeds of ``log(after / before)`` (the objective on the chapter's
    teleport batch) times the arm's sign, of each group, on the seeds of the GL runs.

    Args:
        results: the loaded results, ``{notebook stem: results file}``.

    Returns:
        ``(measured, holds)``, as :mod:`~symtele.study.claims.common` says: yes when the GL action's is the larger
        in every (data set, arm), partly in some.

    Raises:
        LookupError: naming what the results lack that the claim needs.
    """
    rows = {(row["problem"], row["arm"], row["group"]): row for row in _rows(results)}
    pairs = [(p, a) for p, a, group in rows if group == "gl-data" and (p, a, "rescale") in rows]
    if not pairs:
        raise LookupError(f"{STEM} has no arm run with both groups")

    def ratio(row) -> float:
        return math.exp(median(math.log(q) for q in row["objective_ratio"]))

    def moved(row) -> float:
        return SIGN[row["arm"].split("-")[1]] * math.log(ratio(row))

    further = [(p, a) for p, a in pairs if moved(rows[(p, a, "gl-data")]) > moved(rows[(p, a, "rescale")])]
    parts = [
        f"{p} {a.replace('-', ' ')}: ×{g(round(ratio(rows[(p, a, 'gl-data')]), 3))} against "
        f"×{g(round(ratio(rows[(p, a, 'rescale')]), 3))}"
        for p, a in pairs
    ]
    return (
        "median objective after over before on the chapter's teleport batch, GL(h) action against positive "
        f"rescalings: {'; '.join(parts)}; the GL action further the asked way in {len(further)} of {len(pairs)} "
        "(yes: in all)",
        verdict(len(further) == len(pairs), bool(further)),
    )


ROWS = [
    (
        "Teleporting by their data-dependent GL(h) action to lower sharpness lowers the validation loss",
        "Zhao et al. 2024, Fig. 4 (their group); this report's generalisation chapter (scaled down)",
        [STEM],
        partial(gl_arm_lowers, arm="sharpness-decrease"),
    ),
    (
        "Teleporting by their data-dependent GL(h) action to higher curvature lowers the validation loss",
        "Zhao et al. 2024, Fig. 4 (their group); this report's generalisation chapter (scaled down)",
        [STEM],
        partial(gl_arm_lowers, arm="curvature-increase"),
    ),
    (
        "The data-dependent GL(h) action moves sharpness and curvature further than the positive rescalings",
        "this report's generalisation chapter",
        [STEM],
        gl_moves_further,
    ),
    (
        f"The data-dependent GL(h) action keeps the training loss off its teleport batch as well as on it (relative "
        f"change below {LOSS_RTOL:g})",
        "Zhao et al. 2024 (a symmetry of the loss on the teleport's batch); this report's generalisation chapter",
        [STEM],
        gl_keeps_held_out_loss,
    ),
]
