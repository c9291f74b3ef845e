"""The claims about level-set teleportation (notebook 03, REFERENCE §4; writeup §2.2–2.3, §4.2)."""

from __future__ import annotations

import math

import numpy as np

from .. import published
from ..settings import LEVEL_SET
from ..summaries import by_method, curve_stats, epochs_to_reach
from ..summaries import number_or_diverged as shown
from .common import after_teleport, g, one, records_of, share, verdict

STEM = "03_level_set"


def _final(record, key="loss") -> float:
    """The last value of a curve; a diverged run (stored as null) counts as nan."""
    value = record[key][-1]
    return math.nan if value is None else float(value)


def _figure_runs(results):
    """The Rosenbrock runs of writeup Figs. 6 and 9; ``LookupError`` naming the cause unless they are."""
    records = records_of(results, STEM, "rosenbrock")
    r = one(records, "gd-ls")
    wanted = (list(LEVEL_SET.rosenbrock_start), LEVEL_SET.rosenbrock_epochs, LEVEL_SET.rosenbrock_dtype)
    found = (r.get("start"), len(r["loss"]), r.get("dtype"))
    if found != wanted:
        raise LookupError(
            f"{STEM}'s Rosenbrock runs start at {found[0]}, run {found[1]} epochs in {found[2]}; "
            f"writeup Fig. 6 starts at {wanted[0]}, runs {wanted[1]} epochs in {wanted[2]}"
        )
    return records


def figure_gd_curve(results):
    """GD's loss on Rosenbrock matches the values read off writeup Fig. 6, within the reading error.

    Args:
        results: the loaded results, ``{notebook stem: results file}``.

    Returns:
        ``(measured, holds)``, as :mod:`~symtele.study.claims.common` says.

    Raises:
        LookupError: naming what the results lack that the claim needs.
    """
    loss = one(_figure_runs(results), "gd-ls")["loss"]
    gaps = {k: abs(loss[k] / v - 1) for k, v in published.ROSENBROCK_FIGURE_GD.items()}
    worst = max(gaps.values())
    tol = published.ROSENBROCK_FIGURE_READING
    return (
        f"loss at epochs {', '.join(map(str, gaps))} within {worst:.1e} of the values read off the figure "
        f"(at epoch 1000: {loss[1000]:.4g} against {published.ROSENBROCK_FIGURE_GD[1000]:.4g}; yes: every "
        f"one within {tol:g}, the figure's reading error)",
        verdict(worst <= tol, sum(v <= tol for v in gaps.values()) > len(gaps) // 2),
    )


def _pair(records, optimizer, teleport="levelset"):
    return one(records, optimizer), one(records, f"{optimizer}+{teleport}")


def below_gd(results):
    """“The curves lie below GD's”: the teleported loss strictly below at every epoch after the first teleport.

    Args:
        results: the loaded results, ``{notebook stem: results file}``.

    Returns:
        ``(measured, holds)``, as :mod:`~symtele.study.claims.common` says.

    Raises:
        LookupError: naming what the results lack that the claim needs.
    """
    parts, every, most = [], [], []
    for problem in ("booth", "rosenbrock"):
        records = _figure_runs(results) if problem == "rosenbrock" else records_of(results, STEM, problem)
        plain, tele = _pair(records, "gd-ls")
        below, _ = after_teleport(plain, tele)
        parts.append(
            f"{problem}: below in {share(below)} of the epochs after the first teleport, final "
            f"{shown(_final(tele))} vs {shown(_final(plain))}"
        )
        every.append(below == 1.0)
        most.append(below > 0.5)
    return (
        "; ".join(parts) + " (yes: below at every epoch after the first teleport, on both)",
        verdict(all(every), any(most)),
    )


def above_gd_gradient(results):
    """The teleported run's ‖∇L‖² lies above GD's at every epoch after the first teleport.

    Args:
        results: the loaded results, ``{notebook stem: results file}``.

    Returns:
        ``(measured, holds)``, as :mod:`~symtele.study.claims.common` says.

    Raises:
        LookupError: naming what the results lack that the claim needs.
    """
    parts, every, most = [], [], []
    for problem in ("booth", "rosenbrock"):
        records = _figure_runs(results) if problem == "rosenbrock" else records_of(results, STEM, problem)
        plain, tele = _pair(records, "gd-ls")
        _, above = after_teleport(plain, tele, "grad_norm_sq")
        raised = sum(t["grad_norm_sq_after"] > t["grad_norm_sq_before"] for t in tele["teleports"])
        parts.append(
            f"{problem}: ‖∇L‖² above GD's in {share(above)} of the epochs after the first teleport; "
            f"{raised} of {len(tele['teleports'])} teleports raised it"
        )
        every.append(above == 1.0)
        most.append(above > 0.5 or raised > 0)
    return (
        "; ".join(parts) + " (yes: above at every epoch after the first teleport, on both)",
        verdict(all(every), any(most)),
    )


def figure_teleported_run(results):
    """The teleported run of writeup Fig. 6 falls below 1e-8 by the epoch the figure's does.

    Args:
        results: the loaded results, ``{notebook stem: results file}``.

    Returns:
        ``(measured, holds)``, as :mod:`~symtele.study.claims.common` says.

    Raises:
        LookupError: naming what the results lack that the claim needs.
    """
    tele = one(_figure_runs(results), "gd-ls+levelset")
    end = epochs_to_reach(tele["loss"], 1e-8)
    jumps = "; ".join(
        f"epoch {t['epoch']}: loss {t['loss_before']:.4g} → {t['loss_after']:.4g}, "
        f"‖∇L‖ {math.sqrt(t['grad_norm_sq_before']):.3g} → {math.sqrt(t['grad_norm_sq_after']):.3g}"
        for t in tele["teleports"]
    )
    (e1, (_, f1)), (e2, (_, f2)) = published.ROSENBROCK_FIGURE_TELEPORTS.items()
    reached = end is not None and end <= published.ROSENBROCK_FIGURE_END
    return (
        f"{jumps}; below 1e-8 from epoch {end if end is not None else 'never'} (the figure: loss right after the "
        f"teleports {f1:g} and {f2:g}, below 1e-8 by epoch {published.ROSENBROCK_FIGURE_END}; yes: below 1e-8 by "
        "then too; the figure's first teleport raised the loss by 9.6%, which this teleport never does)",
        verdict(reached, end is not None),
    )


def fixed_step(results):
    """With GD's fixed step on Rosenbrock, the teleported loss lies below GD's after the first teleport.

    Args:
        results: the loaded results, ``{notebook stem: results file}``.

    Returns:
        ``(measured, holds)``, as :mod:`~symtele.study.claims.common` says.

    Raises:
        LookupError: naming what the results lack that the claim needs.
    """
    plain, tele = _pair(_figure_runs(results), "gd")
    below, _ = after_teleport(plain, tele)
    final_ok = _final(tele) < _final(plain)
    return (
        f"Rosenbrock, step {g(plain['lr'])}, teleports at {tele['teleport_epochs']}: below GD in {share(below)} of the "
        f"epochs after the first teleport, final {shown(_final(tele))} vs {shown(_final(plain))} (yes: below at every "
        "epoch after it)",
        verdict(below == 1.0, final_ok or below > 0.5),
    )


def guarantee(results):
    """“Never raise the loss and always steepen”: every level-set teleport kept the loss and raised ‖∇L‖².

    Kept means ``L ≤ L(w_k) + delta``: the loss stayed or was lowered.

    Args:
        results: the loaded results, ``{notebook stem: results file}``.

    Returns:
        ``(measured, holds)``, as :mod:`~symtele.study.claims.common` says.

    Raises:
        LookupError: naming what the results lack that the claim needs.
    """
    teleports = [t for r in results[STEM]["records"] if r["method"].endswith("+levelset") for t in r["teleports"]]
    if not teleports:
        raise LookupError(f"{STEM} has no level-set teleports")
    delta = results[STEM]["parameters"].get("delta", LEVEL_SET.delta)
    kept = sum(t["loss_after"] <= t["loss_before"] + delta for t in teleports)
    lower = sum(t["loss_after"] < t["loss_before"] for t in teleports)
    steeper = sum(t["grad_norm_sq_after"] > t["grad_norm_sq_before"] for t in teleports)
    n = len(teleports)
    return (
        f"of {n} teleports: {kept} kept L ≤ L(w_k) + {g(delta)} ({lower} lowered it), {steeper} raised ‖∇L‖². "
        "Keeping the loss holds by construction: the teleport only returns points of the sub-level set. "
        "Yes: every teleport both kept the loss and steepened",
        verdict(kept == n and steeper == n, kept == n and steeper > 0),
    )


def newton(results):
    """Writeup §2.3: at a KKT point of the teleport, ∇²L ∇L = λ ∇L; measured as the angle between them.

    Args:
        results: the loaded results, ``{notebook stem: results file}``.

    Returns:
        ``(measured, holds)``, as :mod:`~symtele.study.claims.common` says.

    Raises:
        LookupError: naming what the results lack that the claim needs.
    """
    rows = {}
    for r in results[STEM]["records"]:
        if r["method"].endswith("+levelset"):
            for t in r["teleports"]:
                if t.get("newton_angle_deg") is not None:
                    converged = t["stopped"] is not None and not t["stopped"].startswith("moved nothing")
                    rows.setdefault(r["problem"], []).append((t["newton_angle_deg"], converged))
    if not rows:
        raise LookupError(f"{STEM} records no angle between ∇L and ∇²L∇L")
    stopped = [a for v in rows.values() for a, c in v if c]
    parts = [
        f"{p}: {max(a for a, _ in v):.2g}° at most ({sum(c for _, c in v)} of {len(v)} stopped early)"
        for p, v in rows.items()
    ]
    return (
        "angle between ∇L and ∇²L∇L at the teleported point: "
        + "; ".join(parts)
        + " (yes: under 1° at every teleport that stopped before its step limit; one that used all its steps has not "
        "converged)",
        verdict(bool(stopped) and max(stopped) < 1.0, any(a < 1.0 for a in stopped)),
    )


def same_budget(results):
    """The teleported run's loss against GD's after as many gradients and Hessian-vector products.

    At every budget the teleported run has spent since its first teleport.

    Args:
        results: the loaded results, ``{notebook stem: results file}``.

    Returns:
        ``(measured, holds)``, as :mod:`~symtele.study.claims.common` says.

    Raises:
        LookupError: naming what the results lack that the claim needs.
    """
    records = records_of(results, STEM, "rosenbrock-same-budget")
    plain, tele = one(records, "gd-ls"), one(records, "gd-ls+levelset")
    spent, first = plain["evaluations"], tele["teleport_epochs"][0]
    below = []
    for k in range(first + 1, len(tele["loss"])):
        at = max(i for i, e in enumerate(spent) if e <= tele["evaluations"][k])
        below.append(tele["loss"][k] < plain["loss"][at])
    budget = tele["evaluations"][-1]
    at = max(i for i, e in enumerate(spent) if e <= budget)
    fraction = sum(below) / len(below)
    return (
        f"Rosenbrock from the Fig. 6 start: with teleports the loss is below GD's at the same number of gradients and "
        f"Hessian-vector products at {share(fraction)} of the epochs after the first teleport; at the teleported "
        f"run's total, {budget}, {shown(_final(tele))} against GD's {shown(plain['loss'][at])} (yes: below at every "
        "budget)",
        verdict(fraction == 1.0, fraction > 0.5),
    )


def comparable_to_symmetry(results):
    """“Comparable performance with symmetry teleportation”: final losses within a factor of 10, both below GD's.

    On the same problem, start and schedule, the level-set run's final loss within a factor of 10 of the
    SO(2) run's.

    Args:
        results: the loaded results, ``{notebook stem: results file}``.

    Returns:
        ``(measured, holds)``, as :mod:`~symtele.study.claims.common` says.

    Raises:
        LookupError: naming what the results lack that the claim needs.
    """
    parts, ok = [], []
    for problem in ("booth", "rosenbrock"):
        records = records_of(results, STEM, problem)
        plain, level, so2 = (one(records, m) for m in ("gd-ls", "gd-ls+levelset", "gd-ls+so2"))
        a, b, c = _final(plain), _final(level), _final(so2)
        ratio = max(b, c) / max(min(b, c), 1e-300)
        parts.append(f"{problem}: final loss level set {shown(b)}, SO(2) {shown(c)}, GD {shown(a)}")
        ok.append(b < a and c < a and ratio <= 10)
    return (
        "; ".join(parts) + " (same start, schedule and Armijo steps; yes: both below GD and within a factor of 10)",
        verdict(all(ok), any(ok)),
    )


def _mlp(results):
    groups = by_method(records_of(results, STEM, "softplus-mlp"))
    plain, tele = groups["gd"], groups["gd+levelset"]
    return plain, tele


def mlp_accelerates(results):
    """On the Softplus MLP, GD + teleport reaches GD's final loss within half the epochs, every seed.

    Args:
        results: the loaded results, ``{notebook stem: results file}``.

    Returns:
        ``(measured, holds)``, as :mod:`~symtele.study.claims.common` says.

    Raises:
        LookupError: naming what the results lack that the claim needs.
    """
    plain, tele = _mlp(results)
    n = len(plain[0]["loss"])
    epochs = [epochs_to_reach(t["loss"], p["loss"][-1]) for p, t in zip(plain, tele)]
    fast = sum(e is not None and e <= n // 2 for e in epochs)
    return (
        f"over {len(plain)} seeds, GD + teleport reaches GD's final loss at epochs "
        f"{', '.join('never' if e is None else str(e) for e in epochs)} of {n} (yes: every seed within half the "
        "epochs; 'greatly')",
        verdict(fast == len(epochs), any(e is not None for e in epochs)),
    )


def mlp_gradient(results):
    """On the Softplus MLP, every teleport raised ‖∇L‖² and the mean ‖∇L‖² stays above GD's after it.

    Args:
        results: the loaded results, ``{notebook stem: results file}``.

    Returns:
        ``(measured, holds)``, as :mod:`~symtele.study.claims.common` says.

    Raises:
        LookupError: naming what the results lack that the claim needs.
    """
    plain, tele = _mlp(results)
    mean_plain = {"grad_norm_sq": list(curve_stats(plain, "grad_norm_sq")[0])}
    mean_tele = {
        "grad_norm_sq": list(curve_stats(tele, "grad_norm_sq")[0]),
        "teleport_epochs": tele[0]["teleport_epochs"],
    }
    _, above = after_teleport(mean_plain, mean_tele, "grad_norm_sq")
    raised = sum(t["grad_norm_sq_after"] > t["grad_norm_sq_before"] for r in tele for t in r["teleports"])
    growth = np.mean([t["grad_norm_sq_after"] / t["grad_norm_sq_before"] for r in tele for t in r["teleports"]])
    return (
        f"over {len(tele)} seeds: {raised} of {len(tele)} teleports raised ‖∇L‖² (×{growth:.3g} on average); the mean "
        f"‖∇L‖² lies above GD's in {share(above)} of the epochs after the teleport (yes: every epoch)",
        verdict(above == 1.0 and raised == len(tele), raised > 0),
    )


ROWS = [
    (
        "Rosenbrock from (−1, −1), GD with Armijo steps: the loss curve of Fig. 6",
        "writeup Fig. 6",
        [STEM],
        figure_gd_curve,
    ),
    (
        "Level-set teleport curves lie below GD in loss (Booth once, Rosenbrock twice)",
        "writeup §4.2.1, Figs. 5–7",
        [STEM],
        below_gd,
    ),
    ("…and above GD in gradient norm", "writeup §4.2.1, Figs. 5–6", [STEM], above_gd_gradient),
    (
        "Rosenbrock with teleports at epochs 50 and 250: below 1e-8 by about epoch 400",
        "writeup Fig. 6",
        [STEM],
        figure_teleported_run,
    ),
    (
        "Without line search, level-set teleportation still beats GD on Rosenbrock",
        "writeup App. B.5, Fig. 9",
        [STEM],
        fixed_step,
    ),
    (
        "Level-set teleports never raise the loss and always steepen the gradient",
        "writeup abstract, §2.2",
        [STEM],
        guarantee,
    ),
    (
        "At a converged teleport ∇L is an eigenvector of the Hessian, so the next GD step is a Newton step",
        "writeup §2.3",
        [STEM],
        newton,
    ),
    (
        "Level-set teleportation gives comparable performance with symmetry teleportation",
        "writeup §4.2.1",
        [STEM],
        comparable_to_symmetry,
    ),
    (
        "Teleportation is better also at an equivalent computational budget",
        "writeup §1",
        [STEM],
        same_budget,
    ),
    (
        "Level-set teleportation greatly accelerates training of the 2-layer Softplus MLP",
        "writeup §4.2.2, Fig. 8a",
        [STEM],
        mlp_accelerates,
    ),
    (
        "…and the teleported MLP's gradient norm stays above GD's",
        "writeup Fig. 8b",
        [STEM],
        mlp_gradient,
    ),
]
