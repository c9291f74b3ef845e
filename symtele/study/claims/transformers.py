"""The claims about teleporting a small GPT, and about the null-space baseline beside it (notebook 11).

Whether the Teleporter's teleports (positive scales and the attention heads' GL(d) groups) make a GPT's training
faster or worse, whether the exact symmetry keeps the loss off the teleport batch, and what the null-space
projection of Wu et al. (2025) keeps and costs on the same models and batches.
"""

from __future__ import annotations

from functools import partial

from ..summaries import comparison_table, transformer_table
from .common import NO, YES, g, records_of, verdict
from .safety import MEAN_BOUND, SEED_BOUND, within_bounds

STEM = "11_transformers"
#: the largest relative change of the loss an exact symmetry may make (float32 rounding over a GPT's forward)
LOSS_RTOL = 1e-5
#: how the claims name the arms' acceptance
ACCEPT_WORDS = {"lookahead": "with the look-ahead", "always": "every teleport applied"}


def _runs(results) -> list[dict]:
    return [r for r in records_of(results, STEM) if "kind" not in r]


def _rows(results, accept: str) -> list[dict]:
    rows = [row for row in transformer_table(_runs(results)) if row["accept"] == accept]
    if not rows:
        raise LookupError(f"{STEM} has no teleported runs with accept={accept!r}")
    return rows


def _comparisons(results) -> dict[str, list[dict]]:
    found = [r for r in records_of(results, STEM) if r.get("kind") == "teleport_comparison"]
    by_method = {m: [r for r in found if r["method"] == m] for m in ("symmetry", "nullspace")}
    if not all(by_method.values()):
        raise LookupError(f"{STEM} has no comparison of the symmetry and null-space teleports")
    return by_method


def _case(row) -> str:
    return f"{row['optimizer']} with state={row['state']}"


def _short(value: float) -> str:
    """A small number to two significant digits, as the writeup prints numbers."""
    return g(float(f"{value:.2g}"))


def _ratio_text(ratio) -> str:
    interval = "" if ratio["low"] is None else f" [{g(round(ratio['low'], 3))}, {g(round(ratio['high'], 3))}]"
    return f"×{g(round(ratio['geometric'], 3))}{interval}"


def lookahead_safe(results):
    """With the look-ahead (the Teleporter's defaults), the final validation loss is no worse than without teleports.

    The mean final validation loss is at most ``MEAN_BOUND`` times the run without teleports in every case, and no
    seed's more than ``SEED_BOUND`` times its own (the bounds of the minibatch-safety chapter).

    Args:
        results: the loaded results, ``{notebook stem: results file}``.

    Returns:
        ``(measured, holds)``, as :mod:`~symtele.study.claims.common` says.

    Raises:
        LookupError: naming what the results lack that the claim needs.
    """
    rows = _rows(results, "lookahead")
    asked = sum(row["teleports"]["count"] for row in rows)
    applied = sum(row["teleports"]["applied"] for row in rows)
    text, holds = within_bounds([(_case(row), row["ratio"]) for row in rows], applied, asked, "validation")
    return f"over {len(rows)} (optimiser, state) cases × {len(rows[0]['seeds'])} seeds: {text}", holds


def teleports_lower(results, accept: str):
    """Where the teleported runs with ``accept`` end at a lower validation loss than without teleports.

    The cases whose 95% interval of the per-seed ratio of the final validation losses lies wholly below 1.

    Args:
        results: the loaded results, ``{notebook stem: results file}``.
        accept: ``"lookahead"`` or ``"always"``.

    Returns:
        ``(measured, holds)``, as :mod:`~symtele.study.claims.common` says.

    Raises:
        LookupError: naming what the results lack that the claim needs.
    """
    rows = _rows(results, accept)
    if len(rows[0]["seeds"]) < 2:
        raise LookupError(f"{STEM} has one seed per case: no interval over seeds (run it with two or more)")
    lower = [row for row in rows if row["ratio"]["high"] is not None and row["ratio"]["high"] < 1]
    higher = [row for row in rows if row["ratio"]["low"] is not None and row["ratio"]["low"] > 1]
    diverged = [f"{_case(row)} (seeds {row['diverged']})" for row in rows if row["diverged"]]
    applied = sum(row["teleports"]["applied"] for row in rows)
    asked = sum(row["teleports"]["count"] for row in rows)
    parts = [f"{_case(row)} {_ratio_text(row['ratio'])}" for row in rows]
    return (
        f"{ACCEPT_WORDS[accept]} ({applied} of {asked} teleports applied), final validation loss over the run "
        f"without teleports (geometric mean of the per-seed ratios, {len(rows[0]['seeds'])} seeds, 95% interval): "
        f"{'; '.join(parts)}; wholly below 1 in {len(lower)} of {len(rows)} cases, wholly above in {len(higher)}"
        + (f"; diverged: {', '.join(diverged)}" if diverged else "")
        + " (yes: below in all)",
        verdict(len(lower) == len(rows), bool(lower)),
    )


def exact_keeps_held_out(results):
    """The exact symmetry's teleport keeps the loss on held-out batches, to float32 rounding.

    Args:
        results: the loaded results, ``{notebook stem: results file}``.

    Returns:
        ``(measured, holds)``, as :mod:`~symtele.study.claims.common` says.

    Raises:
        LookupError: naming what the results lack that the claim needs.
    """
    by_method = _comparisons(results)
    rows = {row["method"]: row for row in comparison_table([r for v in by_method.values() for r in v])}
    exact, projected = rows["symmetry"], rows["nullspace"]
    return (
        f"largest relative change of the loss on the held-out batches, teleported at {exact['points']} points: "
        f"{_short(exact['held_out_change'])} (its ‖∇L‖² ×{g(round(exact['gain']['median'], 2))} "
        f"median); the null-space teleport's at the same points: {_short(projected['held_out_change'])} "
        f"(yes: every change ≤ {g(LOSS_RTOL)})",
        verdict(exact["held_out_change"] <= LOSS_RTOL),
    )


def null_space_keeps(results):
    """Null-space gradient projection raises ``‖∇L‖²`` while keeping the loss, on its batch and off it.

    Kept means within the teleport's own bound ``max_loss_change`` (relative) on the teleport batch and on the
    held-out batches.

    Args:
        results: the loaded results, ``{notebook stem: results file}``.

    Returns:
        ``(measured, holds)``, as :mod:`~symtele.study.claims.common` says.

    Raises:
        LookupError: naming what the results lack that the claim needs.
    """
    projected = _comparisons(results)["nullspace"]
    bound = results[STEM]["parameters"]["max_loss_change"]
    row = comparison_table(projected)[0]
    raised = sum(r["gain"] > 1 for r in projected)
    kept_batch = row["batch_change"] <= bound
    kept_held = row["held_out_change"] <= bound
    return (
        f"‖∇L‖² raised at {raised} of {row['points']} points (×{g(round(row['gain']['min'], 3))} to "
        f"×{g(round(row['gain']['max'], 3))}); largest relative loss change on the teleport batch "
        f"{_short(row['batch_change'])}, on the held-out batches {_short(row['held_out_change'])} "
        f"(yes: raised everywhere, both changes ≤ max_loss_change = {g(bound)}; partly: raised somewhere and kept on "
        "the batch)",
        YES if raised == row["points"] and kept_batch and kept_held else ("partly" if raised and kept_batch else NO),
    )


def cheaper_and_steeper(results):
    """The exact symmetry's closed-form teleport costs less time than the null-space teleport and gains more.

    Judged point by point (the same model and minibatch): the teleport's time in plain gradients lower, and its
    gain in ``‖∇L‖²`` higher. Measured from wall-clock time: ``sure`` says at how many points the verdict held.

    Args:
        results: the loaded results, ``{notebook stem: results file}``.

    Returns:
        ``(measured, holds, extra)``, as :mod:`~symtele.study.claims.common` says.

    Raises:
        LookupError: naming what the results lack that the claim needs.
    """
    by_method = _comparisons(results)
    key = {m: {(r["seed"], r["step"]): r for r in rs} for m, rs in by_method.items()}
    points = sorted(key["symmetry"].keys() & key["nullspace"].keys())
    if not points:
        raise LookupError(f"{STEM} has no point where both teleports were compared")
    pairs = [(key["symmetry"][p], key["nullspace"][p]) for p in points]
    wins = [a["wall_ratios"]["grad_evals"] < b["wall_ratios"]["grad_evals"] and a["gain"] > b["gain"] for a, b in pairs]
    rows = {row["method"]: row for row in comparison_table([r for pair in pairs for r in pair])}
    holds = verdict(all(wins), any(wins))
    a, b = rows["symmetry"], rows["nullspace"]
    return (
        f"median time of a teleport in plain gradients: exact symmetry {g(round(a['grad_evals']['median'], 1))}, "
        f"null space {g(round(b['grad_evals']['median'], 1))}; median gain in ‖∇L‖² "
        f"×{g(round(a['gain']['median'], 3))} and ×{g(round(b['gain']['median'], 3))}; both cheaper and steeper at "
        f"{sum(wins)} of {len(wins)} points (yes: at all)",
        holds,
        {"timing": True, "sure": f"{sum(wins)} of {len(wins)} points"},
    )


ROWS = [
    (
        f"With the Teleporter's defaults (look-ahead acceptance) teleports do not make a small GPT's training worse: "
        f"mean final validation loss ≤ {MEAN_BOUND:g}× the run without teleports in every case, no seed worse by "
        f"more than {100 * (SEED_BOUND - 1):.0f}%",
        "this report's target for symtele.Teleporter",
        [STEM],
        lookahead_safe,
    ),
    (
        "Teleports along a GPT's symmetries (positive scales and the attention heads' GL(d) groups, with the "
        "look-ahead) speed up its training: lower final validation loss",
        "writeup §1 (for ReLU networks); this report's transformer chapter",
        [STEM],
        partial(teleports_lower, accept="lookahead"),
    ),
    (
        "Teleports along a GPT's symmetries applied every k steps as found speed up its training: lower final "
        "validation loss",
        "writeup §1 (for ReLU networks); this report's transformer chapter",
        [STEM],
        partial(teleports_lower, accept="always"),
    ),
    (
        "A teleport along an exact symmetry of a GPT keeps the loss on every batch, not only on its own",
        "this report's transformer chapter (symtele.discover)",
        [STEM],
        exact_keeps_held_out,
    ),
    (
        "Teleportation by null-space gradient projection raises ‖∇L‖² while keeping the loss",
        "Wu, Dong, Aloui and Tarokh 2025 (arXiv:2502.11362)",
        [STEM],
        null_space_keeps,
    ),
    (
        "On a GPT the exact symmetry's closed-form teleport costs less than the null-space projection teleport and "
        "raises ‖∇L‖² more",
        "this report's transformer chapter",
        [STEM],
        cheaper_and_steeper,
    ),
]
