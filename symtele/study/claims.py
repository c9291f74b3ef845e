"""Each claim of the writeup and of the course project's README, checked against this build's results files.

:func:`check_claims` takes the loaded results of the report's notebooks, by notebook
stem (``None`` for a file that is missing), and returns one row per claim:
``claim``, ``source``, ``measured`` (what this build found, in words and numbers) and
``holds``: ``yes``, ``partly``, ``no``, or ``not measured`` when a results file the
claim needs is missing. Every criterion is stated in the row's ``measured`` text.
"""

from __future__ import annotations

import math

import numpy as np

from . import published
from .settings import CONVEX, REGRESSION
from .summaries import below_and_above, by_method, curve_stats, epochs_to_reach
from .summaries import number_or_diverged as shown

NOT_MEASURED = "not measured"
#: how the claims name the course project's four runs
LABELS = {"gd": "GD", "gd+posscale": "GD + teleport", "adagrad": "AdaGrad", "adagrad+posscale": "AdaGrad + teleport"}


def _g(value) -> str:
    """A number as the writeup prints it (shortest form, Unicode minus)."""
    return f"{value:g}".replace("-", "−")


def _point(point) -> str:
    return "(" + ", ".join(_g(v) for v in point) + ")"


def _records(results, stem, problem=None):
    return [r for r in results[stem]["records"] if problem is None or r["problem"] == problem]


def _one(records, method):
    return by_method(records)[method][0]


def _verdict(all_ok: bool, any_ok: bool = False) -> str:
    return "yes" if all_ok else ("partly" if any_ok else "no")


def _rel_gap(values, reference) -> float:
    return max(abs(a / b - 1) for a, b in zip(values, reference))


# ---- 01: SO(2) on the quadratic, Booth, Rosenbrock -------------------------------------------


def quadratic_gd(results):
    gap = _rel_gap(_one(_records(results, "01_convex_so2", "quadratic"), "gd")["loss"], published.QUADRATIC_GD)
    return f"largest relative difference {gap:.1e} over 10 epochs (criterion ≤ 1e-4)", _verdict(gap <= 1e-4)


def quadratic_so2(results):
    record = _one(_records(results, "01_convex_so2", "quadratic"), "gd+so2")
    gap = _rel_gap(record["loss"], published.QUADRATIC_SO2)
    return f"largest relative difference {gap:.1e} over 10 epochs (criterion ≤ 1e-4)", _verdict(gap <= 1e-4)


def steepest_point(results):
    jump = _one(_records(results, "01_convex_so2", "quadratic"), "gd+so2")["teleports"][0]
    most = 2 * published.QUADRATIC_CURVATURE  # on the level set f = c, ‖∇f‖² is at most 36c
    ratio = jump["grad_norm_sq_after"] / (most * jump["loss_after"])
    return (
        f"‖∇f‖² after the teleport is {ratio:.6f} × {most}f, the level set's maximum (criterion within 1e-6)",
        _verdict(abs(ratio - 1) <= 1e-6),
    )


def contraction(results):
    record = _one(_records(results, "01_convex_so2", "quadratic"), "gd+so2")
    start = record["teleport_epochs"][0]
    ratios = [b / a for a, b in zip(record["loss"][start:], record["loss"][start + 1 :])]
    gap = max(abs(r / published.QUADRATIC_RATE - 1) for r in ratios)
    return (
        f"loss ratios after the teleport {min(ratios):.5f}–{max(ratios):.5f} "
        f"(criterion within 1e-4 of {published.QUADRATIC_RATE:.4f})",
        _verdict(gap <= 1e-4),
    )


def so2_other_problems(results):
    parts, wins = [], []
    for problem in ("booth", "rosenbrock"):
        records = _records(results, "01_convex_so2", problem)
        plain, tele = _one(records, "gd")["loss"][-1], _one(records, "gd+so2")["loss"][-1]
        parts.append(f"{problem}: final loss {shown(tele)} with teleport vs {shown(plain)} without")
        wins.append(tele < plain)
    return "; ".join(parts), _verdict(all(wins), any(wins))


# ---- 02: positive scale on the regression, GL(n) ------------------------------------------------


def _regression(results):
    """The course project's four runs of 02, by method; refused unless they ran the writeup's epochs."""
    records = _records(results, "02_relu_posscale", "relu-mlp")
    if len(records[0]["loss"]) != REGRESSION.epochs:
        raise LookupError(f"the regression ran {len(records[0]['loss'])} epochs, not the writeup's {REGRESSION.epochs}")
    return by_method(records)


def relu_per_seed(results):
    groups = _regression(results)
    gap = max(
        abs(r["loss"][-1] - ref)
        for method, refs in published.RELU_FINAL.items()
        for r, ref in zip(groups[method], refs)
    )
    return f"largest per-seed difference {gap:.1e} over 4 methods × 5 seeds (criterion ≤ 5e-5)", _verdict(gap <= 5e-5)


def relu_mean_std(results):
    groups = _regression(results)
    gaps, text = [], []
    for method, (mean, std) in published.RELU_FINAL_MEAN_STD.items():
        finals = [r["loss"][-1] for r in groups[method]]
        gaps += [abs(np.mean(finals) - mean), abs(np.std(finals) - std)]
        text.append(f"{method} {np.mean(finals):.4f} ± {np.std(finals):.4f}")
    return "; ".join(text) + " (criterion: within 5e-5)", _verdict(max(gaps) <= 5e-5)


def relu_epoch50(results):
    groups = _regression(results)
    values = {m: curve_stats(groups[m])[0][published.RELU_MEAN_EPOCH] for m in published.RELU_EPOCH_MEAN}
    gap = max(abs(values[m] - ref) for m, ref in published.RELU_EPOCH_MEAN.items())
    return "; ".join(f"{m} {v:.3f}" for m, v in values.items()) + " (criterion: within 5e-4)", _verdict(gap <= 5e-4)


def relu_epochs_to_target(results):
    groups = _regression(results)
    target = curve_stats(groups["gd"])[0][-1]
    epochs = {m: epochs_to_reach(curve_stats(groups[m])[0], target) for m in published.RELU_EPOCHS_TO_GD_FINAL}
    return (
        "; ".join(f"{m} {e}" for m, e in epochs.items()) + f" (target {target:.4f})",
        _verdict(epochs == published.RELU_EPOCHS_TO_GD_FINAL),
    )


def relu_same_epochs(results):
    groups = _regression(results)
    parts, wins = [], []
    for base in ("gd", "adagrad"):
        plain, tele = curve_stats(groups[base])[0][-1], curve_stats(groups[base + "+posscale"])[0][-1]
        parts.append(f"{base}: {tele:.4f} with teleport vs {plain:.4f}")
        wins.append(tele < plain)
    return "final mean loss " + "; ".join(parts), _verdict(all(wins), any(wins))


def _loss_at_time(record_group, t):
    mean, _ = curve_stats(record_group)
    clock, _ = curve_stats(record_group, "time_s")
    index = np.flatnonzero(clock <= t)
    return float(mean[index[-1]]) if index.size else math.nan


def relu_same_time(results):
    groups = _regression(results)
    parts, wins = [], []
    for base in ("gd", "adagrad"):
        plain, tele = groups[base], groups[base + "+posscale"]
        budget = min(curve_stats(plain, "time_s")[0][-1], curve_stats(tele, "time_s")[0][-1])
        a, b = _loss_at_time(plain, budget), _loss_at_time(tele, budget)
        parts.append(f"{base}: {b:.4f} with teleport vs {a:.4f} after {1e3 * budget:.0f} ms")
        wins.append(b < a)
    return "mean loss at the shorter run's end: " + "; ".join(parts), _verdict(all(wins), any(wins))


def relu_speedup(results):
    groups = _regression(results)
    target = curve_stats(groups["gd"])[0][-1]
    times = {}
    for method in ("gd", "gd+posscale"):
        mean, _ = curve_stats(groups[method])
        epoch = epochs_to_reach(mean, target)
        times[method] = None if epoch is None else curve_stats(groups[method], "time_s")[0][epoch]
    if times["gd+posscale"] is None:
        return "GD + teleport never reaches GD's final loss", "no"
    ratio = times["gd"] / times["gd+posscale"]
    return (
        f"{1e3 * times['gd']:.1f} ms vs {1e3 * times['gd+posscale']:.1f} ms: {ratio:.1f}× "
        f"(yes if ≥ {published.RELU_SPEEDUP}×, partly if > 1×)",
        _verdict(ratio >= published.RELU_SPEEDUP, ratio > 1),
    )


def _cost_records(results):
    """05_performance's teleport-cost records: ``teleport``, ``dims``, ``wall_s["grad_evals"]``."""
    cost = results.get("05_performance") or {}
    return [r for r in cost.get("records", []) if r.get("kind") == "teleport_cost"]


def negligible_overhead(results):
    groups = by_method(_records(results, "02_relu_posscale", "relu-mlp"))
    shares = {
        m: np.mean([sum(t["cost_s"] for t in r["teleports"]) / r["time_s"][-1] for r in groups[m]])
        for m in ("gd+posscale", "adagrad+posscale")
    }
    text = "; ".join(f"{m}: teleport {100 * s:.1f}% of the run's time" for m, s in shares.items())
    evals = [r for r in _cost_records(results) if r["teleport"] == "posscale" and not r.get("sweep")]
    if evals:
        text += "; 05: one teleport costs " + ", ".join(
            f"{r['wall_s']['grad_evals']:.2g} gradient evaluations at {r['dims']}" for r in evals
        )
    return text + " (criterion: < 5% of the run)", _verdict(max(shares.values()) < 0.05)


def closed_form_cost(results):
    """At [256, 784, 512, 512, 10] when `make bench` ran, else at the largest network measured."""
    both = {}
    for r in _cost_records(results):
        both.setdefault(tuple(r["dims"]), {})[r["teleport"]] = r["wall_s"].get("grad_evals")
    both = {dims: by for dims, by in both.items() if by.get("posscale") and by.get("posscale-ref")}
    if not both:
        raise LookupError("no network with both closed-form and reference cost records")
    wanted = published.COST_DIMS
    dims = wanted if wanted in both else max(both, key=lambda d: sum(a * b for a, b in zip(d[1:], d[2:])))
    by = both[dims]
    return (
        f"at {list(dims)}: closed form {by['posscale']:.2g} vs double backprop {by['posscale-ref']:.3g} "
        "gradient evaluations (yes if the closed form is at least 10× cheaper)",
        _verdict(by["posscale-ref"] >= 10 * by["posscale"]),
    )


def posscale_beats_gln(results):
    groups = by_method(_records(results, "02_relu_posscale", "leaky-relu-mlp"))
    gln, pos = curve_stats(groups["gd+gln"])[0][-1], curve_stats(groups["gd+posscale"])[0][-1]
    text = f"LeakyReLU task, final mean loss: positive scale {pos:.4f} vs GL(n) {gln:.4f}"
    wins = [pos < gln]
    sweep = results.get("06_schedule_sweep")
    if sweep:
        best = {}
        for r in sweep["records"]:
            if (
                r.get("teleport_epoch") is not None
                and r.get("group") in ("posscale", "gln")
                and r.get("optimizer") == "gd"
            ):
                key = (r["group"], r["teleport_epoch"], r["teleport_lr"])
                best.setdefault(key, []).append(r["loss"][-1])
        means = {}
        for (group, _, _), losses in best.items():
            if all(v is not None for v in losses):
                means[group] = min(means.get(group, math.inf), float(np.mean(losses)))
        if "posscale" in means and "gln" in means:
            text += f"; 06 sweep, best GD point: positive scale {means['posscale']:.4f} vs GL(n) {means['gln']:.4f}"
            wins.append(means["posscale"] < means["gln"])
    return text, _verdict(all(wins), any(wins))


def gln_not_exact(results):
    groups = by_method(_records(results, "02_relu_posscale", "leaky-relu-mlp"))
    change = {
        m: np.mean([abs(t["loss_after"] - t["loss_before"]) for r in groups[m] for t in r["teleports"]])
        for m in ("gd+gln", "gd+posscale")
    }
    return (
        f"mean |loss change| at the teleport: GL(n) {change['gd+gln']:.4g}, positive scale {change['gd+posscale']:.2g}",
        _verdict(change["gd+gln"] > 1e3 * max(change["gd+posscale"], 1e-12)),
    )


# ---- 03: level-set teleportation --------------------------------------------------------------


def _pair(results, problem, optimizer):
    records = _records(results, "03_level_set", problem)
    return _one(records, optimizer), _one(records, optimizer + "+levelset")


def _final(record, key="loss") -> float:
    """The last value of a curve; a diverged run (stored as null) counts as nan."""
    value = record[key][-1]
    return float("nan") if value is None else float(value)


def level_set_loss(results):
    parts, verdicts = [], []
    for problem in ("booth", "rosenbrock"):
        plain, tele = _pair(results, problem, "gd-ls")
        below, _ = below_and_above(plain, tele)
        final_ok = _final(tele) < _final(plain)
        parts.append(
            f"{problem}: below GD in {100 * below:.0f}% of epochs after the teleport, final "
            f"{shown(_final(tele))} vs {shown(_final(plain))}"
        )
        verdicts.append((below >= 0.5 and final_ok, below >= 0.5 or final_ok))
    return (
        "; ".join(parts) + " (yes: most epochs below and a lower final loss)",
        _verdict(all(v[0] for v in verdicts), any(v[1] for v in verdicts)),
    )


def level_set_gradient(results):
    parts, verdicts = [], []
    for problem in ("booth", "rosenbrock"):
        plain, tele = _pair(results, problem, "gd-ls")
        _, above = below_and_above(plain, tele, "grad_norm_sq")
        raised = all(t["grad_norm_sq_after"] > t["grad_norm_sq_before"] for t in tele["teleports"])
        parts.append(
            f"{problem}: ‖∇L‖² above GD's in {100 * above:.0f}% of epochs after the teleport, "
            f"every teleport raised it: {'yes' if raised else 'no'}"
        )
        verdicts.append((above >= 0.5 and raised, above >= 0.5 or raised))
    return "; ".join(parts), _verdict(all(v[0] for v in verdicts), any(v[1] for v in verdicts))


def level_set_fixed_step(results):
    """Judged on the main Rosenbrock runs (the writeup's teleport of up to 100 iterations); the
    short-teleport runs from the textbook start are reported beside them when present."""
    plain, tele = _pair(results, "rosenbrock", "gd")
    below, _ = below_and_above(plain, tele)
    final_ok = _final(tele) < _final(plain)
    text = (
        f"Rosenbrock, fixed step: below GD in {100 * below:.0f}% of epochs, final {shown(_final(tele))} vs "
        f"{shown(_final(plain))}"
    )
    short = _records(results, "03_level_set", "rosenbrock-textbook-start")
    if len(short) == 2:
        plain_s, tele_s = _one(short, "gd"), _one(short, "gd+levelset")
        below_s, _ = below_and_above(plain_s, tele_s)
        _, grad_above = below_and_above(plain_s, tele_s, "grad_norm_sq")
        text += (
            f"; from {tuple(plain_s['start'])} with {tele_s['teleport_steps']}-iteration teleports: below GD "
            f"in {100 * below_s:.0f}% of epochs, ‖∇L‖² above in {100 * grad_above:.0f}%, final "
            f"{shown(_final(tele_s))} vs {shown(_final(plain_s))}"
        )
    return text, _verdict(below >= 0.5 and final_ok, below >= 0.5 or final_ok)


def level_set_guarantee(results):
    teleports = [t for r in results["03_level_set"]["records"] for t in r["teleports"]]
    kept = sum(t["loss_after"] <= t["loss_before"] + 1e-8 for t in teleports)
    lower = sum(t["loss_after"] < t["loss_before"] for t in teleports)
    steeper = sum(t["grad_norm_sq_after"] > t["grad_norm_sq_before"] for t in teleports)
    n = len(teleports)
    return (
        f"of {n} teleports: {kept} kept L ≤ L(w_k) + 1e-8, {lower} lowered the loss, {steeper} raised ‖∇L‖²",
        _verdict(kept == n and steeper == n, kept == n),
    )


def level_set_mlp(results):
    records = _records(results, "03_level_set", "softplus-mlp")
    plain, tele = _one(records, "gd"), _one(records, "gd+levelset")
    epoch = epochs_to_reach(tele["loss"], plain["loss"][-1])
    n = len(plain["loss"])
    text = (
        f"GD + teleport reaches GD's final loss {plain['loss'][-1]:.4f} at epoch {epoch} of {n}"
        if epoch is not None
        else f"GD + teleport never reaches GD's final loss {plain['loss'][-1]:.4f}"
    )
    return text + " (yes if in at most half the epochs)", _verdict(
        epoch is not None and epoch <= n // 2, epoch is not None
    )


# ---- 04 and 06 ----------------------------------------------------------------------------------


def other_optimizers(results):
    groups = by_method(_records(results, "04_beyond_optimizers"))
    bases = [m for m in groups if "+" not in m]
    better = [m for m in bases if curve_stats(groups[m + "+posscale"])[0][-1] < curve_stats(groups[m])[0][-1]]
    return (
        f"lower final training loss with the teleport for {len(better)} of {len(bases)} optimisers "
        f"({', '.join(better) or 'none'})",
        _verdict(len(better) == len(bases), bool(better)),
    )


def single_teleport(results):
    rows = {}
    for r in results["06_schedule_sweep"]["records"]:
        if r.get("group") == "posscale":
            key = (r["optimizer"], r["teleport_epoch"], r["teleport_lr"])
            rows.setdefault(key, []).append(r["loss"][-1])
    base = {o: np.mean(v) for (o, e, _), v in rows.items() if e is None}
    points = [(o, np.mean(v)) for (o, e, _), v in rows.items() if e is not None and o in base]
    if not points:
        raise LookupError("no positive-scale points in the sweep")
    better = sum(loss < base[o] for o, loss in points)
    return (
        f"{better} of {len(points)} single-teleport points of the sweep end below their no-teleport baseline",
        _verdict(better == len(points), better > 0),
    )


Q_GD, Q_SO2, RELU = published.QUADRATIC_GD, published.QUADRATIC_SO2, published.RELU_FINAL
CLAIMS = [
    (
        f"GD on x² + 9y² from {_point(CONVEX.start)}, step {_g(CONVEX.lr)}: losses {_g(Q_GD[0])}, {_g(Q_GD[1])}, …, "
        f"{_g(Q_GD[-1])}",
        "REFERENCE §1",
        ["01_convex_so2"],
        quadratic_gd,
    ),
    (
        f"GD + SO(2) teleport at epoch {CONVEX.teleport_epoch}: losses …, {_g(Q_SO2[CONVEX.teleport_epoch + 1])}, …, "
        f"{_g(Q_SO2[-1])}",
        "REFERENCE §1",
        ["01_convex_so2"],
        quadratic_so2,
    ),
    (
        "The teleport lands on the steepest point of the level set",
        "REFERENCE §1; writeup §4.1.1",
        ["01_convex_so2"],
        steepest_point,
    ),
    (
        f"After the teleport each step multiplies the loss by (1 − {_g(CONVEX.lr)}·{published.QUADRATIC_CURVATURE})² = "
        f"{published.QUADRATIC_RATE:.4f}",
        "REFERENCE §1",
        ["01_convex_so2"],
        contraction,
    ),
    (
        "The SO(2) teleport also speeds up GD on Booth and Rosenbrock",
        "REFERENCE §1 (Zhao et al. 2022); writeup §4.2.1",
        ["01_convex_so2"],
        so2_other_problems,
    ),
    (
        "Final losses per seed: " + ", ".join(f"{LABELS[m]} {v[0]:.4f} …" for m, v in RELU.items()),
        "REFERENCE §2",
        ["02_relu_posscale"],
        relu_per_seed,
    ),
    (
        "Final mean ± std: " + ", ".join(f"{m:.4f} ± {s:.4f}" for m, s in published.RELU_FINAL_MEAN_STD.values()),
        "REFERENCE §2",
        ["02_relu_posscale"],
        relu_mean_std,
    ),
    (
        f"Mean loss at epoch {published.RELU_MEAN_EPOCH}: "
        + ", ".join(f"{v:.3f}" for v in published.RELU_EPOCH_MEAN.values()),
        "REFERENCE §2",
        ["02_relu_posscale"],
        relu_epoch50,
    ),
    (
        "Epochs to reach GD's final mean loss: "
        + " / ".join(str(e) for e in published.RELU_EPOCHS_TO_GD_FINAL.values()),
        "REFERENCE §2",
        ["02_relu_posscale"],
        relu_epochs_to_target,
    ),
    (
        f"Teleporting once at epoch {REGRESSION.teleport_epoch} gives a lower loss after the same number of epochs, "
        "for GD and AdaGrad",
        "writeup §4.1.2, Fig. 4a",
        ["02_relu_posscale"],
        relu_same_epochs,
    ),
    (
        "Teleporting gives a lower loss within the same training time",
        "writeup §4.1.2, Fig. 4b",
        ["02_relu_posscale"],
        relu_same_time,
    ),
    (
        f"GD + teleport reaches GD's final loss {_g(published.RELU_SPEEDUP)}× sooner in wall-clock time "
        f"({published.RELU_WALL_CLOCK_MS['gd']} ms vs {published.RELU_WALL_CLOCK_MS['gd+posscale']} ms)",
        "REFERENCE §2",
        ["02_relu_posscale"],
        relu_speedup,
    ),
    (
        "One teleport adds negligible computational overhead",
        "writeup §3.1, §4.1.2",
        ["02_relu_posscale"],
        negligible_overhead,
    ),
    (
        f"The closed-form positive-scale teleport costs ~{_g(published.COST_GRAD_EVALS['posscale'])} gradient "
        f"evaluations against {_g(published.COST_GRAD_EVALS['posscale-ref'])} by double backprop",
        "REFERENCE §2",
        ["05_performance"],
        closed_form_cost,
    ),
    (
        "Positive scaling beats the original GL(n) teleport",
        "course-project README",
        ["02_relu_posscale"],
        posscale_beats_gln,
    ),
    (
        "GL(n) teleportation does not preserve the loss on the course project's task",
        "REFERENCE §3",
        ["02_relu_posscale"],
        gln_not_exact,
    ),
    (
        "Level-set teleport curves lie below GD in loss (Booth once, Rosenbrock twice)",
        "writeup §4.2.1, Figs. 5–7",
        ["03_level_set"],
        level_set_loss,
    ),
    ("…and above GD in gradient norm", "writeup §4.2.1, Figs. 5–6", ["03_level_set"], level_set_gradient),
    (
        "Without line search, level-set teleportation still beats GD on Rosenbrock",
        "writeup App. B.5, Fig. 9",
        ["03_level_set"],
        level_set_fixed_step,
    ),
    (
        "Level-set teleports never raise the loss and always steepen the gradient",
        "writeup abstract, §2.2",
        ["03_level_set"],
        level_set_guarantee,
    ),
    (
        "Level-set teleportation greatly accelerates training of the 2-layer Softplus MLP",
        "writeup §4.2.2, Fig. 8",
        ["03_level_set"],
        level_set_mlp,
    ),
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


#: claims measured from wall-clock time; ``strip_timing`` leaves their verdicts out of comparisons
TIMED = {relu_same_time, relu_speedup, negligible_overhead, closed_form_cost}


def check_claims(results: dict) -> list[dict]:
    """One row per entry of :data:`CLAIMS`: ``claim``, ``source``, ``measured``, ``holds``
    (and ``timing: True`` for the claims measured from wall-clock time).

    ``results`` maps a notebook stem to its loaded results file, or to ``None`` when missing;
    a claim whose file is missing, or lacks what it needs, is marked ``not measured``.
    """
    if not isinstance(results, dict):
        raise TypeError(f"Invalid results: expected a dict of notebook stem → results, got {type(results).__name__}")
    rows = []
    for claim, source, needs, check in CLAIMS:
        if any(results.get(stem) is None for stem in needs):
            missing = ", ".join(s for s in needs if results.get(s) is None)
            measured, holds = f"results of {missing} missing", NOT_MEASURED
        else:
            try:
                measured, holds = check(results)
            except (KeyError, IndexError, LookupError) as error:
                measured, holds = f"results lack what this claim needs ({error})", NOT_MEASURED
        row = {"claim": claim, "source": source, "measured": measured, "holds": holds}
        if check in TIMED:
            row["timing"] = True  # measured from wall-clock time: varies between builds
        rows.append(row)
    return rows
