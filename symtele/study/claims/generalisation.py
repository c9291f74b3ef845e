"""The claims of Zhao et al. (2024) about teleporting for generalisation, and the report's beyond them (notebook 10).

That teleporting to a flatter or more curved point lowers the validation loss (their Fig. 4, on their MLPs and
on the report's digits CNN and ResNet), and that sharpness goes with a higher and curvature with a lower validation loss
over many trained nets (their Table 1); that SAM lowers it, and whether a teleport to lower sharpness does as
well at equal compute; and whether adaptive sharpness, invariant under the rescalings, tells the validation
loss beyond the training loss. Each is judged on this build's scaled-down runs, with intervals over seeds or
bootstrap resamples.
"""

from __future__ import annotations

from functools import partial

from ..summaries import correlation_table, generalisation_table, sam_table
from .common import NO, YES, g, records_of, verdict

STEM = "10_generalisation"
#: the networks beyond the MLPs whose teleports are judged, as the claims name them
NETWORKS = {"digits-cnn": "digits CNN", "digits-resnet": "digits ResNet"}
#: the relative change of the training loss a teleport may make (the exact group's promise in float32)
LOSS_RTOL = 1e-5


def _of(results, experiment: str) -> list[dict]:
    found = [r for r in records_of(results, STEM) if r.get("experiment") == experiment]
    if not found:
        raise LookupError(f"{STEM} has no records of its {experiment} experiment")
    return found


def _interval(d) -> str:
    return f"{g(round(d['mean'], 4))} [{g(round(d['low'], 4))}, {g(round(d['high'], 4))}]"


def arm_lowers(results, arm: str, model: str = "leaky-mlp"):
    """Whether teleporting to ``arm`` lowers the mean validation loss after the teleport, per data set.

    Args:
        results: the loaded results, ``{notebook stem: results file}``.
        arm: the teleported arm (``"sharpness-decrease"``, ``"curvature-increase"``, …).
        model: the network whose runs are judged (``"leaky-mlp"``, ``"digits-cnn"``, ``"digits-resnet"``).

    Returns:
        ``(measured, holds)``, as :mod:`~symtele.study.claims.common` says.

    Raises:
        LookupError: naming what the results lack that the claim needs.
    """
    runs = [r for r in _of(results, "teleport") if r.get("model", "leaky-mlp") == model]
    rows = [row for row in generalisation_table(runs) if row["arm"] == arm]
    if not rows:
        raise LookupError(f"{STEM} has no runs of the {model} teleported to {arm.replace('-', ' ')}")
    return validation_lowered(
        rows, "validation loss after the teleport minus without it", lambda row: f"objective {objective_range(row)}"
    )


def objective_range(row: dict) -> str:
    """``×low–×high``: the range over seeds of a table row's objective after over before."""
    return f"×{g(round(min(row['objective_ratio']), 3))}–×{g(round(max(row['objective_ratio']), 3))}"


def validation_lowered(rows: list[dict], difference: str, detail) -> tuple[str, str]:
    """Yes when the validation loss after the teleport is lower than without it in every data set, beyond seeds.

    Args:
        rows: rows of :func:`~symtele.study.summaries.generalisation_table` (or ``gl_table``), one per data set.
        difference: what ``test_loss_after`` is the difference of, for the measured text.
        detail: ``row → str``, said of each data set in parentheses after its interval.

    Returns:
        ``(measured, holds)``, as :mod:`~symtele.study.claims.common` says.

    Raises:
        LookupError: a data set with one seed or a diverged run (no interval over seeds).
    """
    if any(row["test_loss_after"]["low"] is None for row in rows):
        raise LookupError(f"{STEM} has one seed per data set or a diverged run: no interval over seeds")
    lower = [row for row in rows if row["test_loss_after"]["high"] < 0]
    higher = [row for row in rows if row["test_loss_after"]["low"] > 0]
    parts = [f"{row['problem']} {_interval(row['test_loss_after'])} ({detail(row)})" for row in rows]
    return (
        f"{difference} (mean over the epochs after, {len(rows[0]['seeds'])} seeds, 95% interval): "
        f"{'; '.join(parts)}; wholly below 0 in {len(lower)} of {len(rows)} data sets, wholly above in "
        f"{len(higher)} (yes: below in all)",
        verdict(len(lower) == len(rows), bool(lower)),
    )


def teleports_keep_the_loss(results):
    """Every rescaling teleport of the chapter (MLPs, CNN, ResNet) changes the training loss by < ``LOSS_RTOL``.

    Args:
        results: the loaded results, ``{notebook stem: results file}``.

    Returns:
        ``(measured, holds)``, as :mod:`~symtele.study.claims.common` says.

    Raises:
        LookupError: naming what the results lack that the claim needs.
    """
    teleports = [t for r in records_of(results, STEM) for t in r.get("teleports", []) if t.get("group") != "gl-data"]
    if not teleports:
        raise LookupError(f"{STEM} has no teleported runs")
    worst = max(t["loss_change"] for t in teleports)
    return (
        f"largest relative change of the training loss over {len(teleports)} teleports: {worst:.2g} "
        f"(yes: below {LOSS_RTOL:g})",
        YES if worst < LOSS_RTOL else NO,
    )


def correlates(results, measure: str, sign: int):
    """Whether ``measure`` correlates with the validation loss over the trained nets with the sign ``sign``.

    Args:
        results: the loaded results, ``{notebook stem: results file}``.
        measure: ``"sharpness"``, ``"adaptive_sharpness"`` or ``"curvature"``.
        sign: ``+1`` (positively) or ``-1`` (negatively).

    Returns:
        ``(measured, holds)``, as :mod:`~symtele.study.claims.common` says.

    Raises:
        LookupError: naming what the results lack that the claim needs.
    """
    nets = _of(results, "correlation")
    rows = {row["measure"]: row for row in correlation_table(nets)}
    r, confound = rows[measure]["test_loss"], rows[measure]["loss"]
    inside = r["low"] > 0 if sign > 0 else r["high"] < 0
    return (
        f"{len(nets)} MLPs on {nets[0]['problem']}: Pearson r with the validation loss {g(round(r['r'], 3))} "
        f"[{g(round(r['low'], 3))}, {g(round(r['high'], 3))}] (95% bootstrap); with the training loss "
        f"{g(round(confound['r'], 3))} [{g(round(confound['low'], 3))}, {g(round(confound['high'], 3))}] "
        f"(yes: the interval wholly {'above' if sign > 0 else 'below'} 0)",
        YES if inside else NO,
    )


def correlates_beyond_fit(results, measure: str, sign: int):
    """Whether ``measure`` correlates with the validation loss with the sign ``sign`` at a fixed training loss.

    The partial correlation over the trained nets, given their training loss.

    Args:
        results: the loaded results, ``{notebook stem: results file}``.
        measure: ``"sharpness"``, ``"adaptive_sharpness"`` or ``"curvature"``.
        sign: ``+1`` (positively) or ``-1`` (negatively).

    Returns:
        ``(measured, holds)``, as :mod:`~symtele.study.claims.common` says.

    Raises:
        LookupError: naming what the results lack that the claim needs.
    """
    nets = _of(results, "correlation")
    row = {row["measure"]: row for row in correlation_table(nets)}[measure]
    r, partial = row["test_loss"], row["test_loss_given_loss"]
    inside = partial["low"] > 0 if sign > 0 else partial["high"] < 0
    return (
        f"{len(nets)} MLPs on {nets[0]['problem']}: partial r with the validation loss given the training loss "
        f"{g(round(partial['r'], 3))} [{g(round(partial['low'], 3))}, {g(round(partial['high'], 3))}] (95% "
        f"bootstrap; r without holding it fixed {g(round(r['r'], 3))}) (yes: the interval wholly "
        f"{'above' if sign > 0 else 'below'} 0)",
        YES if inside else NO,
    )


def _sam_rows(results, arm: str, reference: str) -> list[dict]:
    rows = [row for row in sam_table(_of(results, "teleport") + _of(results, "sam")) if row["arm"] == arm]
    rows = [row for row in rows if row["reference"] == reference]
    if not rows:
        raise LookupError(f"{STEM} has no comparison of {arm} with {reference}")
    if any(row["test_loss_after"]["low"] is None for row in rows):
        raise LookupError(f"{STEM} has one seed or a diverged run in its SAM comparison: no interval over seeds")
    return rows


def sam_lowers(results):
    """Whether SAM, from the teleport epoch on, lowers the mean validation loss after it against SGD.

    Args:
        results: the loaded results, ``{notebook stem: results file}``.

    Returns:
        ``(measured, holds)``, as :mod:`~symtele.study.claims.common` says.

    Raises:
        LookupError: naming what the results lack that the claim needs.
    """
    rows = _sam_rows(results, "sam", "none")
    below = [row for row in rows if row["test_loss_after"]["high"] < 0]
    parts = [
        f"{row['problem']} {_interval(row['test_loss_after'])} (compute ×{g(round(max(row['compute']), 3))} of SGD's, "
        f"ρ = {g(_of(results, 'sam')[0]['rho'])})"
        for row in rows
    ]
    return (
        f"validation loss with SAM minus with SGD (mean over the epochs after the teleport epoch, "
        f"{len(rows[0]['seeds'])} seeds, 95% interval): {'; '.join(parts)} (yes: wholly below 0 in every data set)",
        verdict(len(below) == len(rows), bool(below)),
    )


def teleport_matches_sam(results):
    """Whether a teleport to lower sharpness, with SAM's extra compute, gives a validation loss no higher than SAM's.

    Args:
        results: the loaded results, ``{notebook stem: results file}``.

    Returns:
        ``(measured, holds)``, as :mod:`~symtele.study.claims.common` says: yes when the interval of the
        difference (teleport minus SAM) is not wholly above 0 in any data set.

    Raises:
        LookupError: naming what the results lack that the claim needs.
    """
    rows = _sam_rows(results, "sharpness-decrease", "sam")
    higher = [row for row in rows if row["test_loss_after"]["low"] > 0]
    parts = [
        f"{row['problem']} {_interval(row['test_loss_after'])} (compute ×{g(round(min(row['compute']), 3))}–"
        f"×{g(round(max(row['compute']), 3))} of SAM's)"
        for row in rows
    ]
    return (
        f"validation loss after a teleport to lower φ minus with SAM (mean over the epochs after, "
        f"{len(rows[0]['seeds'])} seeds, 95% interval): {'; '.join(parts)} (yes: not wholly above 0 in any data "
        "set)",
        verdict(not higher, len(higher) < len(rows)),
    )


ROWS = [
    (
        "Teleporting to lower sharpness lowers the validation loss",
        "Zhao et al. 2024, Fig. 4; this report's generalisation chapter (scaled down)",
        [STEM],
        partial(arm_lowers, arm="sharpness-decrease"),
    ),
    (
        "Teleporting to higher curvature lowers the validation loss",
        "Zhao et al. 2024, Fig. 4; this report's generalisation chapter (scaled down)",
        [STEM],
        partial(arm_lowers, arm="curvature-increase"),
    ),
    (
        f"Teleports along the positive rescalings that move sharpness or curvature change the training loss by "
        f"less than {LOSS_RTOL:g} (relative)",
        "this report's target for symtele's generalisation teleports",
        [STEM],
        teleports_keep_the_loss,
    ),
    (
        "Sharpness correlates positively with the validation loss",
        "Zhao et al. 2024, Table 1",
        [STEM],
        partial(correlates, measure="sharpness", sign=+1),
    ),
    (
        "Curvature correlates negatively with the validation loss",
        "Zhao et al. 2024, Table 1",
        [STEM],
        partial(correlates, measure="curvature", sign=-1),
    ),
    (
        "Adaptive sharpness, invariant under the rescalings, correlates positively with the validation loss",
        "this report's generalisation chapter",
        [STEM],
        partial(correlates, measure="adaptive_sharpness", sign=+1),
    ),
    (
        "Adaptive sharpness correlates positively with the validation loss beyond what the training loss tells "
        "(partial correlation)",
        "this report's generalisation chapter",
        [STEM],
        partial(correlates_beyond_fit, measure="adaptive_sharpness", sign=+1),
    ),
    *(
        (
            f"On the {network}, teleporting to {aim} lowers the validation loss",
            "Zhao et al. 2024's Fig. 4 protocol beyond their MLPs; this report's generalisation chapter",
            [STEM],
            partial(arm_lowers, arm=arm, model=model),
        )
        for model, network in NETWORKS.items()
        for arm, aim in (("sharpness-decrease", "lower sharpness"), ("curvature-increase", "higher curvature"))
    ),
    (
        "SAM lowers the validation loss against SGD",
        "Foret et al. 2021; this report's generalisation chapter",
        [STEM],
        sam_lowers,
    ),
    (
        "At SAM's compute, teleporting to lower sharpness gives a validation loss no higher than SAM's",
        "this report's generalisation chapter",
        [STEM],
        teleport_matches_sam,
    ),
]
