"""The claims about teleports in a minibatch loop (notebook 09).

Whether the runs were trained until their loss flattened, whether accepting every teleport hurts, whether the
look-ahead makes the Teleporter's defaults safe, and where teleports help.
"""

from __future__ import annotations

from ..summaries import safety_table
from .common import NO, YES, g, records_of, verdict

STEM = "09_minibatch_safety"
#: the look-ahead's criterion: the mean final training loss at most this many times the run without teleports ...
MEAN_BOUND = 1.05
#: ... and no seed's more than this many times its own run without teleports
SEED_BOUND = 1.10
#: a run has flattened when its last epoch lowers its training loss by less than this fraction
FLAT = 0.05


def _period(results) -> str:
    """How often the records' Teleporters teleported, in words."""
    every = sorted({r["every"] for r in records_of(results, STEM) if r.get("every")})
    return f"teleports every {'/'.join(str(e) for e in every)} minibatch steps" if every else "no teleports"


def last_epoch_drop(record) -> float:
    """The fraction by which a run's last epoch lowered its training loss: ``1 − L_E / L_{E−1}``.

    Args:
        record: a run's record, its ``loss`` measured at the start and after every epoch.

    Returns:
        The fraction (negative when the loss rose; ``nan`` for a run of one epoch's loss or a non-finite one).
    """
    loss = record["loss"]
    if len(loss) < 2 or not all(v == v and abs(v) != float("inf") for v in loss[-2:]) or loss[-2] == 0:
        return float("nan")
    return 1.0 - loss[-1] / loss[-2]


def flattened(results):
    """The runs without teleports were trained until their loss flattened.

    Every run without teleports lowered its training loss by less than ``FLAT`` over its last epoch.

    Args:
        results: the loaded results, ``{notebook stem: results file}``.

    Returns:
        ``(measured, holds)``, as :mod:`~symtele.study.claims.common` says.

    Raises:
        LookupError: naming what the results lack that the claim needs.
    """
    plain = [r for r in records_of(results, STEM) if r["accept"] is None]
    if not plain or len(plain[0]["loss"]) < 3:
        raise LookupError(f"{STEM} has no run without teleports of two epochs or more")
    drops = sorted(last_epoch_drop(r) for r in plain)
    steep = [d for d in drops if not d < FLAT]
    schedules = sorted({r.get("lr_schedule", "constant") for r in plain})
    return (
        f"{len(plain)} runs without teleports, learning rate {'/'.join(schedules)}: the last epoch lowered the "
        f"training loss by {g(round(100 * drops[len(drops) // 2], 1))}% (median), "
        f"{g(round(100 * max(drops), 1))}% at most; {len(steep)} by {g(100 * FLAT)}% or more "
        f"(yes: none)",
        verdict(not steep, len(steep) < len(drops)),
    )


def _rows(results, accept: str) -> list[dict]:
    rows = [row for row in safety_table(records_of(results, STEM)) if accept in row["ratio"]]
    if not rows:
        raise LookupError(f"{STEM} has no runs with accept={accept!r}")
    return rows


def _case(row) -> str:
    return f"{row['network']} with {row['optimizer']}"


def _ratio_text(ratio) -> str:
    interval = "" if ratio["low"] is None else f" [{g(round(ratio['low'], 2))}, {g(round(ratio['high'], 2))}]"
    return f"×{g(round(ratio['geometric'], 2))}{interval}"


def always_hurts(results):
    """With every teleport accepted, the mean final training loss is higher than without teleports.

    The measured text also names the cases where every teleport accepted *lowered* the final training loss (the
    interval of the per-seed ratio wholly below 1), and by how much.

    Args:
        results: the loaded results, ``{notebook stem: results file}``.

    Returns:
        ``(measured, holds)``, as :mod:`~symtele.study.claims.common` says.

    Raises:
        LookupError: naming what the results lack that the claim needs.
    """
    rows = _rows(results, "always")
    worse = [row for row in rows if row["ratio"]["always"]["mean_ratio"] > 1]
    parts = [f"{_case(row)} ×{g(round(row['ratio']['always']['mean_ratio'], 2))}" for row in worse]
    lower = [row for row in rows if (row["ratio"]["always"]["high"] or 1) < 1]
    helped = [f"{_case(row)} {_ratio_text(row['ratio']['always'])}" for row in lower]
    return (
        f"{_period(results)}: mean final training loss higher with every teleport accepted in {len(worse)} of "
        f"{len(rows)} (network, optimiser) cases{': ' + ', '.join(parts) if parts else ''} (ratio of the means)"
        + (
            f"; lower, the interval of the per-seed ratio wholly below 1, in {len(lower)}: {', '.join(helped)}"
            if lower
            else ""
        )
        + " (yes: higher in all)",
        verdict(len(worse) == len(rows), bool(worse)),
    )


def lookahead_safe(results):
    """With the look-ahead (the Teleporter's defaults), the final training loss is no worse than without teleports.

    The mean final training loss is at most ``MEAN_BOUND`` times the run without teleports in every case, and
    no seed's more than ``SEED_BOUND`` times its own.

    Args:
        results: the loaded results, ``{notebook stem: results file}``.

    Returns:
        ``(measured, holds)``, as :mod:`~symtele.study.claims.common` says.

    Raises:
        LookupError: naming what the results lack that the claim needs.
    """
    rows = _rows(results, "lookahead")
    asked = [t for r in records_of(results, STEM) if r["accept"] == "lookahead" for t in r["teleports"]]
    applied = sum(1 for t in asked if t["t"])
    text, holds = within_bounds(
        [(_case(row), row["ratio"]["lookahead"]) for row in rows], applied, len(asked), "training"
    )
    cases = f"{len(rows)} (network, optimiser) cases × {len(rows[0]['seeds'])} seeds"
    return f"{_period(results)}, over {cases}: {text}", holds


def within_bounds(cases: list[tuple[str, dict]], applied: int, asked: int, losses: str) -> tuple[str, str]:
    """Whether every case's look-ahead arm stays within ``MEAN_BOUND`` on average and ``SEED_BOUND`` per seed.

    Args:
        cases: ``(name, ratio)`` per case, ``ratio`` with the ``mean_ratio`` of the arm's mean final loss over the
            run without teleports' and its ``worst`` seed's ratio.
        applied: the look-ahead's teleports applied, over all the cases.
        asked: the teleports it was asked.
        losses: which losses the ratios are of (``"training"``, ``"validation"``).

    Returns:
        ``(measured, holds)``: the largest ratios, the teleports applied and the cases beyond the bounds; yes when
        there are none.
    """
    failed = [
        f"{name} mean ×{g(round(ratio['mean_ratio'], 3))}, worst seed ×{g(round(ratio['worst'], 3))}"
        for name, ratio in cases
        if not (ratio["mean_ratio"] <= MEAN_BOUND and ratio["worst"] <= SEED_BOUND)
    ]
    largest = max(ratio["mean_ratio"] for _, ratio in cases)
    worst = max(ratio["worst"] for _, ratio in cases)
    text = (
        f"largest ratio of the mean final {losses} losses ×{g(round(largest, 3))}, worst seed ×{g(round(worst, 3))}; "
        f"the look-ahead applied {applied} of the {asked} teleports"
        + (f"; beyond the bounds: {', '.join(failed)}" if failed else "")
        + f" (yes: every mean ≤ ×{g(MEAN_BOUND)} and every seed ≤ ×{g(SEED_BOUND)})"
    )
    return text, YES if not failed else NO


def lookahead_helps(results):
    """Where the look-ahead's teleports lower the final training loss, and by how much.

    The cases whose interval of the per-seed ratio lies wholly below 1.

    Args:
        results: the loaded results, ``{notebook stem: results file}``.

    Returns:
        ``(measured, holds)``, as :mod:`~symtele.study.claims.common` says.

    Raises:
        LookupError: naming what the results lack that the claim needs.
    """
    rows = _rows(results, "lookahead")
    if len(rows[0]["seeds"]) < 2:
        raise LookupError(f"{STEM} has one seed per case: no interval over seeds (run it with two or more)")
    lower = [
        row for row in rows if row["ratio"]["lookahead"]["high"] is not None and row["ratio"]["lookahead"]["high"] < 1
    ]
    higher = [
        row for row in rows if row["ratio"]["lookahead"]["low"] is not None and row["ratio"]["lookahead"]["low"] > 1
    ]
    confidence = rows[0]["ratio"]["lookahead"]["confidence"]
    parts = [f"{_case(row)} {_ratio_text(row['ratio']['lookahead'])}" for row in lower]
    above = [f"{_case(row)} {_ratio_text(row['ratio']['lookahead'])}" for row in higher]
    return (
        f"final training loss lower with the look-ahead's teleports, the {g(100 * confidence)}% interval of the "
        f"per-seed ratio (geometric mean over seeds) wholly below 1, in {len(lower)} of {len(rows)} cases"
        + (f": {', '.join(parts)}" if parts else "")
        + f"; wholly above 1 in {len(higher)}"
        + (f" ({', '.join(above)})" if above else "")
        + " (yes: lower in all)",
        verdict(len(lower) == len(rows), bool(lower)),
    )


ROWS = [
    (
        f"The minibatch runs are trained until their loss flattens: without teleports, the last epoch lowers the "
        f"training loss by less than {100 * FLAT:g}%",
        "this report's target for the minibatch-safety chapter",
        [STEM],
        flattened,
    ),
    (
        "Teleporting every 50 minibatch steps with every teleport accepted makes training worse (final training loss)",
        "a user's report; this report's minibatch-safety chapter",
        [STEM],
        always_hurts,
    ),
    (
        f"With the Teleporter's defaults (look-ahead acceptance) teleports do not make minibatch training worse: "
        f"mean final training loss ≤ {MEAN_BOUND:g}× the run without teleports in every case, no seed worse by "
        f"more than {100 * (SEED_BOUND - 1):.0f}%",
        "this report's target for symtele.Teleporter",
        [STEM],
        lookahead_safe,
    ),
    (
        "Teleports (with the look-ahead) speed up minibatch training: lower final training loss",
        "writeup §1; this report's minibatch-safety chapter",
        [STEM],
        lookahead_helps,
    ),
]
