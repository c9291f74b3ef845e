"""The claims about SO(2) teleportation on the quadratic, Booth and Rosenbrock (notebook 01, REFERENCE §1)."""

from __future__ import annotations

from .. import published
from ..settings import CONVEX
from ..summaries import number_or_diverged as shown
from .common import g, one, point, records_of, verdict

STEM = "01_convex_so2"


def _agreement(losses, printed) -> tuple[int, float]:
    """How many values print as the reference does, and the largest relative difference.

    A value agrees when it lies within half a unit of the printed value's last digit.
    """
    agree = sum(abs(v - float(p)) <= published.tolerance(p) for v, p in zip(losses, printed))
    return agree, max(abs(v / float(p) - 1) for v, p in zip(losses, printed))


def _reproduces(method: str, printed):
    def check(results):
        losses = one(records_of(results, STEM, "quadratic"), method)["loss"]
        agree, gap = _agreement(losses, printed)
        return (
            f"{agree} of {len(printed)} losses agree with the reference to every printed digit; the largest "
            f"relative difference is {gap:.1e} (yes: every value to its printed digits)",
            verdict(agree == len(printed), agree >= len(printed) // 2),
        )

    return check


def steepest_point(results):
    """The teleport lands where ‖∇f‖² is largest on the quadratic's level set: ``36 f``.

    Args:
        results: the loaded results, ``{notebook stem: results file}``.

    Returns:
        ``(measured, holds)``, as :mod:`~symtele.study.claims.common` says.

    Raises:
        LookupError: naming what the results lack that the claim needs.
    """
    jump = one(records_of(results, STEM, "quadratic"), "gd+so2")["teleports"][0]
    most = 2 * published.QUADRATIC_CURVATURE  # on the level set f = c, ‖∇f‖² is at most 36c
    ratio = jump["grad_norm_sq_after"] / (most * jump["loss_after"])
    return (
        f"‖∇f‖² after the teleport is {ratio:.6f} × {most}f, the level set's maximum (criterion within 1e-6)",
        verdict(abs(ratio - 1) <= 1e-6),
    )


def contraction(results):
    """After the teleport each GD step multiplies the quadratic's loss by the published rate.

    Args:
        results: the loaded results, ``{notebook stem: results file}``.

    Returns:
        ``(measured, holds)``, as :mod:`~symtele.study.claims.common` says.

    Raises:
        LookupError: naming what the results lack that the claim needs.
    """
    record = one(records_of(results, STEM, "quadratic"), "gd+so2")
    start = record["teleport_epochs"][0]
    ratios = [b / a for a, b in zip(record["loss"][start:], record["loss"][start + 1 :])]
    gap = max(abs(r / published.QUADRATIC_RATE - 1) for r in ratios)
    return (
        f"loss ratios after the teleport {min(ratios):.5f}–{max(ratios):.5f} "
        f"(criterion within 1e-4 of {published.QUADRATIC_RATE:.4f})",
        verdict(gap <= 1e-4),
    )


def other_problems(results):
    """The SO(2) teleport ends GD at a lower final loss on Booth and on Rosenbrock.

    Args:
        results: the loaded results, ``{notebook stem: results file}``.

    Returns:
        ``(measured, holds)``, as :mod:`~symtele.study.claims.common` says.

    Raises:
        LookupError: naming what the results lack that the claim needs.
    """
    parts, wins = [], []
    for problem in ("booth", "rosenbrock"):
        records = records_of(results, STEM, problem)
        plain, tele = one(records, "gd")["loss"][-1], one(records, "gd+so2")["loss"][-1]
        parts.append(f"{problem}: final loss {shown(tele)} with teleport vs {shown(plain)} without")
        wins.append(tele is not None and plain is not None and tele < plain)
    return "; ".join(parts) + " (yes: lower on both)", verdict(all(wins), any(wins))


Q_GD, Q_SO2 = published.QUADRATIC_GD_PRINTED, published.QUADRATIC_SO2_PRINTED
ROWS = [
    (
        f"GD on x² + 9y² from {point(CONVEX.start)}, step {g(CONVEX.lr)}: losses {Q_GD[0]}, {Q_GD[1]}, …, {Q_GD[-1]}",
        "REFERENCE §1",
        [STEM],
        _reproduces("gd", Q_GD),
    ),
    (
        f"GD + SO(2) teleport at epoch {CONVEX.teleport_epoch}: losses …, {Q_SO2[CONVEX.teleport_epoch + 1]}, …, "
        f"{Q_SO2[-1]}",
        "REFERENCE §1",
        [STEM],
        _reproduces("gd+so2", Q_SO2),
    ),
    (
        "The teleport lands on the steepest point of the level set",
        "REFERENCE §1; writeup §4.1.1",
        [STEM],
        steepest_point,
    ),
    (
        f"After the teleport each step multiplies the loss by (1 − {g(CONVEX.lr)}·{published.QUADRATIC_CURVATURE})² = "
        f"{published.QUADRATIC_RATE:.4f}",
        "REFERENCE §1",
        [STEM],
        contraction,
    ),
    (
        "The SO(2) teleport also speeds up GD on Booth and Rosenbrock",
        "REFERENCE §1 (Zhao et al. 2022); writeup §4.2.1",
        [STEM],
        other_problems,
    ),
]
