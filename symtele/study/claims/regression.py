"""The claims about positive scaling and GL(n) on the course project's regression (notebook 02, REFERENCE §2–§3)."""

from __future__ import annotations

import math

import numpy as np

from .. import published
from ..settings import REGRESSION
from ..summaries import agreement, by_method, curve_stats, epochs_to_reach, final_losses
from ..summaries import number_or_diverged as shown
from .common import LABELS, after_teleport, records_of, share, verdict

STEM = "02_relu_posscale"
FOUR_DECIMALS = 5e-5  # half a unit of the fourth decimal: the references print four


def _writeup_run(results, problem):
    """The runs of 02 on ``problem``, by method; ``LookupError`` naming the cause unless they are the writeup's."""
    records = records_of(results, STEM, problem)
    epochs = len(records[0]["loss"])
    if epochs != REGRESSION.epochs:
        raise LookupError(f"{STEM} ran {epochs} epochs; the claim is about the writeup's {REGRESSION.epochs}")
    seeds = tuple(r["seed"] for r in by_method(records)["gd"])
    if seeds != REGRESSION.seeds:
        raise LookupError(f"{STEM} ran seeds {list(seeds)}; the claim is about the writeup's {list(REGRESSION.seeds)}")
    return by_method(records)


def per_seed(results):
    """The final loss of every seed and method agrees with the reference to its four printed decimals.

    Args:
        results: the loaded results, ``{notebook stem: results file}``.

    Returns:
        ``(measured, holds)``, as :mod:`~symtele.study.claims.common` says.

    Raises:
        LookupError: naming what the results lack that the claim needs.
    """
    groups = _writeup_run(results, "relu-mlp")
    agree, total, worst = 0, 0, 0.0
    for method, reference in published.RELU_FINAL.items():
        n, gap = agreement(final_losses(groups[method]), reference, FOUR_DECIMALS)
        agree, total, worst = agree + n, total + len(reference), max(worst, gap)
    return (
        f"{agree} of {total} final losses agree to the four printed decimals; largest difference {worst:.1e} "
        "(yes: all agree)",
        verdict(agree == total, agree > 0),
    )


def mean_std(results):
    """The final losses' means and standard deviations over the seeds agree with the reference's.

    Args:
        results: the loaded results, ``{notebook stem: results file}``.

    Returns:
        ``(measured, holds)``, as :mod:`~symtele.study.claims.common` says.

    Raises:
        LookupError: naming what the results lack that the claim needs.
    """
    groups = _writeup_run(results, "relu-mlp")
    text, gaps = [], []
    for method, (mean, std) in published.RELU_FINAL_MEAN_STD.items():
        finals = final_losses(groups[method])
        gaps += [abs(np.mean(finals) - mean), abs(np.std(finals) - std)]
        text.append(f"{LABELS[method]} {np.mean(finals):.4f} ± {np.std(finals):.4f}")
    return (
        "; ".join(text) + f" (standard deviations over the seeds, ddof 0, as the reference's; yes: every value within "
        f"{FOUR_DECIMALS:g} of the printed one; largest difference {max(gaps):.1e})",
        verdict(max(gaps) <= FOUR_DECIMALS),
    )


def epoch_mean(results):
    """The mean loss at the reference's epoch agrees with its three printed decimals, for each method.

    Args:
        results: the loaded results, ``{notebook stem: results file}``.

    Returns:
        ``(measured, holds)``, as :mod:`~symtele.study.claims.common` says.

    Raises:
        LookupError: naming what the results lack that the claim needs.
    """
    groups = _writeup_run(results, "relu-mlp")
    at = published.RELU_MEAN_EPOCH
    values = {m: curve_stats(groups[m])[0][at] for m in published.RELU_EPOCH_MEAN}
    gap = max(abs(values[m] - ref) for m, ref in published.RELU_EPOCH_MEAN.items())
    return (
        "; ".join(f"{LABELS[m]} {v:.3f}" for m, v in values.items())
        + f" (yes: each within 5e-4, the three printed decimals; largest difference {gap:.1e})",
        verdict(gap <= 5e-4),
    )


def epochs_to_target(results):
    """The epochs each method takes to reach GD's final mean loss equal the reference's.

    Args:
        results: the loaded results, ``{notebook stem: results file}``.

    Returns:
        ``(measured, holds)``, as :mod:`~symtele.study.claims.common` says.

    Raises:
        LookupError: naming what the results lack that the claim needs.
    """
    groups = _writeup_run(results, "relu-mlp")
    target = curve_stats(groups["gd"])[0][-1]
    epochs = {m: epochs_to_reach(curve_stats(groups[m])[0], target) for m in published.RELU_EPOCHS_TO_GD_FINAL}
    same = sum(epochs[m] == e for m, e in published.RELU_EPOCHS_TO_GD_FINAL.items())
    return (
        "; ".join(f"{LABELS[m]} {e}" for m, e in epochs.items())
        + f" (target {target:.4f}; yes: all {len(epochs)} epochs equal)",
        verdict(same == len(epochs), same > 0),
    )


def same_epochs(results):
    """“A lower loss after the same number of epochs”, with GD and with AdaGrad.

    The mean curve with the teleport lies strictly below the one without at every epoch after the teleport.

    Args:
        results: the loaded results, ``{notebook stem: results file}``.

    Returns:
        ``(measured, holds)``, as :mod:`~symtele.study.claims.common` says.

    Raises:
        LookupError: naming what the results lack that the claim needs.
    """
    groups = _writeup_run(results, "relu-mlp")
    parts, every, most = [], [], []
    for base in ("gd", "adagrad"):
        plain = {"loss": list(curve_stats(groups[base])[0])}
        tele_group = groups[base + "+posscale"]
        tele = {"loss": list(curve_stats(tele_group)[0]), "teleport_epochs": tele_group[0]["teleport_epochs"]}
        below, _ = after_teleport(plain, tele)
        parts.append(f"{LABELS[base + '+posscale']} below {LABELS[base]} in {share(below)} of the epochs after it")
        every.append(below == 1.0)
        most.append(below > 0.5)
    return (
        "mean loss over the seeds: " + "; ".join(parts) + " (yes: below at every epoch after the teleport, for both)",
        verdict(all(every), any(most)),
    )


def _leaky(results):
    records = records_of(results, STEM, "leaky-relu-mlp")
    epochs = len(records[0]["loss"])
    if epochs != REGRESSION.epochs:
        raise LookupError(f"{STEM} ran the LeakyReLU task {epochs} epochs; the original code ran {REGRESSION.epochs}")
    return by_method(records)


def gln_reproduces(results):
    """The GL(n) runs' final losses agree with the original code's (the losses after the teleport shown beside).

    Args:
        results: the loaded results, ``{notebook stem: results file}``.

    Returns:
        ``(measured, holds)``, as :mod:`~symtele.study.claims.common` says.

    Raises:
        LookupError: naming what the results lack that the claim needs.
    """
    groups = _leaky(results)
    agree, total, parts = 0, 0, []
    for method, reference in published.GLN_FINAL.items():
        n, gap = agreement(final_losses(groups[method]), reference, FOUR_DECIMALS)
        agree, total = agree + n, total + len(reference)
        parts.append(f"{method} {n}/{len(reference)} (largest difference {gap:.1e})")
    after = []
    for method, reference in published.GLN_AFTER_TELEPORT.items():
        values = [r["teleports"][0]["loss_after"] for r in groups[method]]
        after.append(max(abs(v / ref - 1) for v, ref in zip(values, reference)))
    spread = published.GLN_ROUNDING
    return (
        f"final losses agreeing to four decimals: {'; '.join(parts)}; loss right after the teleport within "
        f"{max(after):.1e} of the original's (yes: all {total} agree). The original's own float32 results move by up "
        f"to {spread['final']:.0e} (final) and {spread['after_teleport_relative']:.1e} (after the teleport) under "
        "rounding-level changes of its arithmetic; in float64 both implementations agree to 1e-7 (tests/test_gln.py)",
        verdict(agree == total, agree > 0),
    )


def _teleports(records) -> list[dict]:
    """The teleports of ``records``, each with its ``loss_change``."""
    return [{**t, "loss_change": t["loss_after"] - t["loss_before"]} for r in records for t in r["teleports"]]


def gln_not_exact(results):
    """GL(n)'s relative loss change at the teleport is at least 1000× positive scaling's.

    Args:
        results: the loaded results, ``{notebook stem: results file}``.

    Returns:
        ``(measured, holds)``, as :mod:`~symtele.study.claims.common` says.

    Raises:
        LookupError: naming what the results lack that the claim needs.
    """
    groups = _leaky(results)
    change = {
        m: np.mean(
            [abs(t["loss_after"] - t["loss_before"]) / t["loss_before"] for r in groups[m] for t in r["teleports"]]
        )
        for m in ("gd+gln", "adagrad+gln", "gd+posscale", "adagrad+posscale")
    }
    gln, pos = min(change["gd+gln"], change["adagrad+gln"]), max(change["gd+posscale"], change["adagrad+posscale"])
    return (
        "mean relative loss change at the teleport: "
        + "; ".join(f"{m} {v:.2g}" for m, v in change.items())
        + " (yes: GL(n)'s at least 1000× positive scaling's, whose change is rounding)",
        verdict(gln >= 1e3 * max(pos, 1e-12)),
    )


def _best_sweep_points(results):
    """Per group, the sweep's point with the lowest mean final loss with GD, and where its step lies in the grid."""
    sweep = results.get("06_schedule_sweep")
    if not sweep:
        return {}
    points = {}
    for r in sweep["records"]:
        if r.get("teleport_epoch") is not None and r.get("optimizer") == "gd":
            points.setdefault((r["group"], r["teleport_epoch"], r["teleport_lr"]), []).append(r["loss"][-1])
    best = {}
    for (group, epoch, lr), losses in points.items():
        if all(v is not None and math.isfinite(v) for v in losses):
            mean = float(np.mean(losses))
            if group not in best or mean < best[group][0]:
                best[group] = (mean, epoch, lr)
    grid = sweep["parameters"]["teleport_lrs"]
    out = {}
    for group, (mean, epoch, lr) in best.items():
        steps = sorted(grid[group])
        edge = "smallest" if lr == steps[0] else ("largest" if lr == steps[-1] else None)
        out[group] = (mean, epoch, lr, edge)
    return out


def posscale_beats_gln(results):
    """Positive scaling ends lower than GL(n), in the regression runs and at the sweep's best points.

    Args:
        results: the loaded results, ``{notebook stem: results file}``.

    Returns:
        ``(measured, holds)``, as :mod:`~symtele.study.claims.common` says.

    Raises:
        LookupError: naming what the results lack that the claim needs.
    """
    groups = _leaky(results)
    parts, wins = [], []
    for base in ("gd", "adagrad"):
        pos = curve_stats(groups[base + "+posscale"])[0][-1]
        gln = curve_stats(groups[base + "+gln"])[0][-1]
        parts.append(f"{base}: final mean loss, positive scale {shown(pos, '.4f')} vs GL(n) {shown(gln, '.4f')}")
        wins.append(math.isfinite(pos) and not pos >= gln)
    best = _best_sweep_points(results)
    if "posscale" in best and "gln" in best:
        for group in ("posscale", "gln"):
            mean, epoch, lr, edge = best[group]
            where = f", the {edge} step of its grid" if edge else ""
            parts.append(f"06 sweep, best {group} point with GD: {mean:.4f} (epoch {epoch}, step {lr:g}{where})")
        wins.append(best["posscale"][0] < best["gln"][0])
    return (
        "; ".join(parts) + " (yes: positive scale lower in every comparison; the sweep's tasks differ: ReLU for "
        "positive scale, LeakyReLU for GL(n))",
        verdict(all(wins), any(wins)),
    )


ROWS = [
    (
        "Final losses per seed: " + ", ".join(f"{LABELS[m]} {v[0]:.4f} …" for m, v in published.RELU_FINAL.items()),
        "REFERENCE §2",
        [STEM],
        per_seed,
    ),
    (
        "Final mean ± std: " + ", ".join(f"{m:.4f} ± {s:.4f}" for m, s in published.RELU_FINAL_MEAN_STD.values()),
        "REFERENCE §2",
        [STEM],
        mean_std,
    ),
    (
        f"Mean loss at epoch {published.RELU_MEAN_EPOCH}: "
        + ", ".join(f"{v:.3f}" for v in published.RELU_EPOCH_MEAN.values()),
        "REFERENCE §2",
        [STEM],
        epoch_mean,
    ),
    (
        "Epochs to reach GD's final mean loss: "
        + " / ".join(str(e) for e in published.RELU_EPOCHS_TO_GD_FINAL.values()),
        "REFERENCE §2",
        [STEM],
        epochs_to_target,
    ),
    (
        f"Teleporting once at epoch {REGRESSION.teleport_epoch} gives a lower loss after the same number of epochs, "
        "for GD and AdaGrad",
        "writeup §4.1.2, Fig. 4a",
        [STEM],
        same_epochs,
    ),
    (
        "The GL(n) baseline as the original code runs it: GD (1e-7 × 8 steps) and AdaGrad (1e-5 × 2 steps), "
        "per-seed final losses",
        "Zhao et al. 2022, original code (REFERENCE §3)",
        [STEM],
        gln_reproduces,
    ),
    (
        "GL(n) teleportation does not preserve the loss on the course project's task",
        "REFERENCE §3",
        [STEM],
        gln_not_exact,
    ),
    (
        "Positive scaling beats the original GL(n) teleport",
        "course-project README",
        [STEM],
        posscale_beats_gln,
    ),
]
