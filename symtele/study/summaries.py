"""Reductions of result records to the numbers the report quotes.

Records are those of :mod:`symtele.study.results` (one per run and seed). Over seeds, a
curve is summarised by its mean and its population standard deviation (``ddof = 0``,
as in REFERENCE §2); "epochs to reach a loss" is the first epoch at which the mean
curve is at or below it (:func:`epochs_to_reach`, the one definition of it in the package).
"""

from __future__ import annotations

import math

import numpy as np


def by_method(records, problem: str | None = None) -> dict[str, list[dict]]:
    """Records grouped by ``method``, in order of first appearance.

    Args:
        records: results records.
        problem: keep only this problem's records (``None``: all).

    Returns:
        ``{method: [records]}``.
    """
    groups: dict[str, list[dict]] = {}
    for r in records:
        if problem is None or r["problem"] == problem:
            groups.setdefault(r["method"], []).append(r)
    return groups


def _as_float(values) -> np.ndarray:
    return np.array([math.nan if v is None or isinstance(v, str) else v for v in values], dtype=float)


def curve_stats(records, key: str = "loss") -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation (``ddof = 0``) over records of the per-epoch list ``key``.

    A missing (``None``) or diverged value counts as NaN.

    Args:
        records: records of one method (one per seed).
        key: the per-epoch field, ``loss`` by default.

    Returns:
        ``(mean, std)``, one value per epoch each.

    Raises:
        ValueError: no records.
    """
    if not records:
        raise ValueError("Invalid records: empty")
    curves = np.stack([_as_float(r[key]) for r in records])
    with np.errstate(invalid="ignore", over="ignore"):  # a diverged run (inf) gives NaN, not a warning
        return curves.mean(0), curves.std(0)


def number_or_diverged(value, spec: str = ".3g") -> str:
    """``value`` formatted with ``spec``, or ``"diverged"`` when it is missing (``None``), infinite or NaN.

    Args:
        value: a number, ``None`` or a string (a non-finite value as written to JSON).
        spec: a format specification.

    Returns:
        The text.
    """
    if value is None or isinstance(value, str) or not math.isfinite(value):
        return "diverged"
    return format(value, spec)


def epochs_to_reach(curve, target: float | None) -> int | None:
    """First epoch ``k`` with ``curve[k] ≤ target``.

    Missing (``None``) and non-finite entries never count as reached, and neither does a missing
    or NaN ``target`` (a diverged baseline).

    Args:
        curve: one value per epoch.
        target: the value to reach.

    Returns:
        The epoch, or ``None`` if the curve never gets there.
    """
    if target is None:
        return None
    with np.errstate(invalid="ignore"):
        hits = np.flatnonzero(_as_float(curve) <= target)
    return int(hits[0]) if hits.size else None


def below_and_above(plain, tele, key: str = "loss") -> tuple[float, float]:
    """Fractions of epochs, from ``tele``'s first teleport on, where its ``key`` is below and above ``plain``'s.

    Args:
        plain: a run without teleport.
        tele: the same run with teleports, of the same length.
        key: the per-epoch field compared.

    Returns:
        ``(strictly below, strictly above)``, fractions of those epochs.
    """
    start = tele["teleport_epochs"][0]
    a, b = _as_float(plain[key][start:]), _as_float(tele[key][start:])
    return float(np.mean(b < a)), float(np.mean(b > a))


def agreement(values, reference, tolerance: float) -> tuple[int, float]:
    """How many of ``values`` lie within ``tolerance`` of the matching ``reference`` value.

    Args:
        values: measured values (``None`` or non-finite when missing).
        reference: the published values, in the same order.
        tolerance: the largest difference that agrees.

    Returns:
        ``(count within tolerance, largest difference)``, the difference ``inf`` if a value is missing or
        not finite.
    """
    gaps = [
        abs(float(v) - float(r)) if v is not None and math.isfinite(v) else math.inf for v, r in zip(values, reference)
    ]
    return sum(g <= tolerance for g in gaps), max(gaps)


def final_losses(records) -> list[float]:
    """The last recorded loss of every record, in order.

    Args:
        records: results records.

    Returns:
        One float per record (NaN where missing).
    """
    return [float(_as_float(r["loss"])[-1]) for r in records]


def reach_table(records, target: float, problem: str | None = None) -> list[dict]:
    """Per method: final mean ± std loss, and when the mean curve over the seeds reaches ``target``.

    Args:
        records: results records.
        target: the loss to reach.
        problem: keep only this problem's records (``None``: all).

    Returns:
        One row per method: ``method, final_mean, final_std, epochs_to_target`` and ``time_to_target_s``,
        the mean over seeds of the run's clock at that epoch (teleport cost included; ``None`` if never).
    """
    rows = []
    for method, group in by_method(records, problem).items():
        mean, std = curve_stats(group, "loss")
        epoch = epochs_to_reach(mean, target)
        clock, _ = curve_stats(group, "time_s")
        rows.append(
            {
                "method": method,
                "final_mean": float(mean[-1]),
                "final_std": float(std[-1]),
                "epochs_to_target": epoch,
                "time_to_target_s": None if epoch is None else float(clock[epoch]),
            }
        )
    return rows


def time_in_teleports(records) -> dict[str, dict[str, float]]:
    """Per method, the mean over seeds of the seconds spent teleporting and of the whole run's seconds.

    Args:
        records: results records with their ``teleports``.

    Returns:
        ``{method: {"teleport_s", "run_s"}}``.
    """
    out = {}
    for method, group in by_method(records).items():
        cost = np.mean([sum(t["cost_s"] for t in r["teleports"]) for r in group])
        total = np.mean([r["time_s"][-1] for r in group])
        out[method] = {"teleport_s": float(cost), "run_s": float(total)}
    return out


#: the arms of every case of the minibatch-safety runs: no teleport, then each ``accept`` of the Teleporter
ARMS = ("none", "always", "lookahead")


def arm(record: dict) -> str:
    """The arm of a minibatch-safety record: ``none`` (no teleport), ``always`` or ``lookahead``.

    Args:
        record: one run's record.

    Returns:
        Its ``accept``, or ``none`` for the run without teleports.
    """
    return record.get("accept") or "none"


def chosen_fraction(teleport: dict) -> float:
    """The fraction ``t`` of a teleport's path that was applied.

    Args:
        teleport: a teleport's record, as a results file holds it.

    Returns:
        Its ``t``: 0 when declined; 1 when the record has none (a teleport applied as found).
    """
    t = teleport.get("t")
    return 1.0 if t is None else float(t)


def full_trial_ratio(teleport: dict) -> float | None:
    """How the look-ahead's step from the whole teleport compared with the step from where the run stood.

    Args:
        teleport: a teleport's record, its look-ahead trials under ``trace["lookahead"]``.

    Returns:
        The trial loss at ``t = 1`` over the trial loss at ``t = 0``; ``None`` when the teleport has no such
        trials (declined before the look-ahead, or applied as found).
    """
    trials = (teleport.get("trace") or {}).get("lookahead")
    if not trials or 0.0 not in trials["t"] or 1.0 not in trials["t"]:
        return None
    losses = dict(zip(trials["t"], trials["loss"]))
    return float(losses[1.0] / losses[0.0]) if losses[0.0] else None


def ratio_interval(plain, tele, confidence: float = 0.95) -> dict:
    """The paired ratio of ``tele`` to ``plain``: final losses of the same seeds, in the same order.

    ``mean_ratio = mean(tele) / mean(plain)``; ``geometric`` is ``exp(mean(log rᵢ))`` of the per-seed ratios
    ``rᵢ = teleᵢ / plainᵢ``, with the ``confidence`` Student-t interval of the mean log ratio
    (``exp(m ± t_{n−1}·sd/√n)``); ``worst`` the largest ``rᵢ``. A non-finite loss (a diverged run) makes the
    ratios involving it ``inf`` or NaN, and the interval ``None``.

    Args:
        plain: the final losses without teleports, one per seed.
        tele: the final losses with them, for the same seeds.
        confidence: the interval's coverage.

    Returns:
        ``{"mean_ratio", "geometric", "low", "high", "worst", "confidence", "ratios"}``; ``low`` and ``high``
        are ``None`` with one seed.

    Raises:
        ValueError: lists of different lengths, or empty.
    """
    from scipy import stats

    a, b = np.asarray(plain, dtype=float), np.asarray(tele, dtype=float)
    if a.shape != b.shape or not a.size:
        raise ValueError(f"Invalid final losses: {len(a)} without teleports against {len(b)} with")
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = b / a
        logs = np.log(ratios)
    out = {
        "mean_ratio": float(b.mean() / a.mean()),
        "geometric": float(np.exp(logs.mean())),
        "worst": float(ratios.max()),
        "low": None,
        "high": None,
        "confidence": confidence,
        "ratios": [float(r) for r in ratios],
    }
    if len(logs) > 1 and np.all(np.isfinite(logs)):
        half = stats.t.ppf(0.5 + confidence / 2, len(logs) - 1) * logs.std(ddof=1) / math.sqrt(len(logs))
        out["low"], out["high"] = float(np.exp(logs.mean() - half)), float(np.exp(logs.mean() + half))
    return out


def safety_table(records, confidence: float = 0.95) -> list[dict]:
    """The minibatch-safety records reduced to one row per (network, optimiser), in the records' order.

    Args:
        records: the records of :func:`symtele.study.minibatch.minibatch_safety`.
        confidence: the coverage of the ratios' intervals.

    Returns:
        Per case: ``network``, ``optimizer``, ``lr``, ``seeds``; for every arm present, the seeds' final
        training losses (``final_loss``) and held-out accuracies (``final_test_accuracy``); for each teleported
        arm its teleports (``teleports``: ``count``, ``applied`` with ``t > 0``, every ``t``) and its
        :func:`ratio_interval` to the run without teleports, paired by seed (``ratio``). A diverged run's loss
        counts as ``inf``.

    Raises:
        LookupError: a case whose arms do not hold the same seeds, or that lacks the run without teleports.
    """
    cases: dict[tuple, dict] = {}
    for r in records:
        cases.setdefault((r["problem"], r["optimizer"]), {}).setdefault(arm(r), {})[r["seed"]] = r
    rows = []
    for (model_name, optimizer), arms in cases.items():
        seeds = sorted(arms.get("none", {}))
        if not seeds or any(sorted(by_seed) != seeds for by_seed in arms.values()):
            raise LookupError(f"{model_name} with {optimizer}: the arms do not hold the same seeds")
        finals = {a: [_loss_value(arms[a][s]["final_loss"]) for s in seeds] for a in ARMS if a in arms}
        teleports = {a: [t for s in seeds for t in arms[a][s]["teleports"]] for a in finals}
        rows.append(
            {
                "network": model_name,
                "optimizer": optimizer,
                "lr": arms["none"][seeds[0]]["lr"],
                "seeds": seeds,
                "final_loss": finals,
                "final_test_accuracy": {a: [arms[a][s]["final_test_accuracy"] for s in seeds] for a in finals},
                "teleports": {
                    a: {
                        "count": len(ts),
                        "applied": sum(chosen_fraction(t) > 0 for t in ts),
                        "t": [chosen_fraction(t) for t in ts],
                    }
                    for a, ts in teleports.items()
                    if a != "none"
                },
                "ratio": {a: ratio_interval(finals["none"], v, confidence) for a, v in finals.items() if a != "none"},
            }
        )
    return rows


def _loss_value(value) -> float:
    """A loss as a results file stores it: ``None`` (NaN: a diverged run) counts as ``inf``, as does ``"inf"``."""
    return math.inf if value is None else float(value)


def pearson_interval(x, y, *, resamples: int = 2000, confidence: float = 0.95, seed: int = 0) -> dict:
    """Pearson's correlation ``r`` of ``x`` and ``y``, with a percentile bootstrap interval.

    ``r = Σ (xᵢ − x̄)(yᵢ − ȳ) / (Σ (xᵢ − x̄)² Σ (yᵢ − ȳ)²)^{1/2}``; the interval is the central ``confidence``
    share of ``r`` over ``resamples`` resamples of the pairs with replacement (a NumPy generator seeded with
    ``seed``; resamples in which ``x`` or ``y`` is constant are left out).

    Args:
        x: the first values.
        y: the second values, paired with ``x``.
        resamples: bootstrap resamples.
        confidence: the interval's coverage, in ``(0, 1)``.
        seed: the bootstrap's seed.

    Returns:
        ``{"r", "low", "high", "n", "confidence"}``.

    Raises:
        ValueError: lists of different lengths or fewer than three pairs, a constant list, or a bad
            ``resamples`` or ``confidence``.
    """
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 3:
        raise ValueError(f"Invalid values: {a.shape} against {b.shape} (need two equal lists of at least 3)")
    if not a.std() or not b.std():
        raise ValueError("Invalid values: a constant list has no correlation")
    return _bootstrapped(_pearson, (a, b), resamples, confidence, seed)


def _pearson(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Pearson's ``r`` along the last axis (``nan`` where ``u`` or ``v`` is constant)."""
    u, v = u - u.mean(-1, keepdims=True), v - v.mean(-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (u * v).sum(-1) / np.sqrt((u * u).sum(-1) * (v * v).sum(-1))


def _partial_pearson(u: np.ndarray, v: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The partial correlation of ``u`` and ``v`` given ``w`` along the last axis (``nan`` where undefined)."""
    uv, uw, vw = _pearson(u, v), _pearson(u, w), _pearson(v, w)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (uv - uw * vw) / np.sqrt((1 - uw**2) * (1 - vw**2))


def _bootstrapped(statistic, arrays: tuple, resamples: int, confidence: float, seed: int) -> dict:
    """``statistic`` of ``arrays`` and its percentile bootstrap interval over resamples of their rows together.

    Resamples where the statistic is not finite are left out.
    """
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 1:
        raise ValueError(f"Invalid resamples: {resamples!r} (must be a positive integer)")
    if not 0 < confidence < 1:
        raise ValueError(f"Invalid confidence: {confidence!r} (must be in (0, 1))")
    whole = float(statistic(*arrays))
    if not math.isfinite(whole):
        raise ValueError("Invalid values: z determines x or y exactly (nothing is left to correlate)")
    index = np.random.default_rng(seed).integers(0, len(arrays[0]), (resamples, len(arrays[0])))
    values = statistic(*(v[index] for v in arrays))
    values = values[np.isfinite(values)]
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return {"r": whole, "low": float(low), "high": float(high), "n": len(arrays[0]), "confidence": confidence}


def partial_pearson_interval(x, y, z, *, resamples: int = 2000, confidence: float = 0.95, seed: int = 0) -> dict:
    """Pearson's partial correlation of ``x`` and ``y`` given ``z``, with a percentile bootstrap interval.

    The correlation of what is left of ``x`` and of ``y`` once each is fitted linearly on ``z``:
    ``r_xy·z = (r_xy − r_xz r_yz) / ((1 − r_xz²)(1 − r_yz²))^{1/2}``. The interval is the central
    ``confidence`` share of it over ``resamples`` resamples of the triples with replacement (a NumPy generator
    seeded with ``seed``; degenerate resamples left out).

    Args:
        x: the first values.
        y: the second values, paired with ``x``.
        z: the values held fixed, paired with both.
        resamples: bootstrap resamples.
        confidence: the interval's coverage, in ``(0, 1)``.
        seed: the bootstrap's seed.

    Returns:
        ``{"r", "low", "high", "n", "confidence"}``.

    Raises:
        ValueError: lists of different lengths or fewer than four triples, a constant list, ``z`` that
            determines ``x`` or ``y`` exactly, or a bad ``resamples`` or ``confidence``.
    """
    a, b, c = (np.asarray(v, dtype=float) for v in (x, y, z))
    if not a.shape == b.shape == c.shape or a.ndim != 1 or len(a) < 4:
        raise ValueError(
            f"Invalid values: shapes {a.shape}, {b.shape}, {c.shape} (need three equal lists of at least 4)"
        )
    if not a.std() or not b.std() or not c.std():
        raise ValueError("Invalid values: a constant list has no correlation")
    return _bootstrapped(_partial_pearson, (a, b, c), resamples, confidence, seed)


#: the measures of a trained net that :func:`correlation_table` correlates with its losses
MEASURES = ("sharpness", "adaptive_sharpness", "curvature")


def correlation_table(
    nets: list[dict], *, resamples: int = 2000, confidence: float = 0.95, seed: int = 0
) -> list[dict]:
    """Pearson's r of each of :data:`MEASURES` with the validation loss and with the training loss.

    The training loss is the confound: nets that fit the training set better may be flatter or more curved and
    lower in validation loss at once, so a measure's r with the validation loss says little beyond its r with
    the training loss. Each measure's partial r with the validation loss given the training loss
    (:func:`partial_pearson_interval`) is what is left. A last row correlates the training loss with the
    validation loss.

    Args:
        nets: the correlation experiment's records (``test_loss``, ``loss`` and each measure).
        resamples: bootstrap resamples of the nets (:func:`pearson_interval`).
        confidence: the intervals' coverage.
        seed: the bootstrap's seed.

    Returns:
        One row per measure, then one for ``loss``: ``measure``, ``test_loss`` and (but in the last row)
        ``loss``, each :func:`pearson_interval`'s dict, and (but in the last row) ``test_loss_given_loss``,
        :func:`partial_pearson_interval`'s.
    """
    rows = []
    for measure in (*MEASURES, "loss"):
        row = {"measure": measure}
        for target in ("test_loss", "loss"):
            if target != measure:
                pairs = [n[measure] for n in nets], [n[target] for n in nets]
                row[target] = pearson_interval(*pairs, resamples=resamples, confidence=confidence, seed=seed)
        if measure != "loss":
            row["test_loss_given_loss"] = partial_pearson_interval(
                *([n[key] for n in nets] for key in (measure, "test_loss", "loss")),
                resamples=resamples,
                confidence=confidence,
                seed=seed,
            )
        rows.append(row)
    return rows


def _after(record, key) -> float:
    """The mean of ``record[key]`` over the epochs after its teleport epoch."""
    return float(np.mean(_as_float(record[key][record["teleport_epoch"] + 1 :])))


def _paired(differences, confidence: float) -> dict:
    """The mean of paired differences with its Student-t interval (``None`` with one, or a non-finite one)."""
    from scipy import stats

    d = np.asarray(differences, dtype=float)
    out = {"mean": float(d.mean()), "low": None, "high": None, "differences": [float(v) for v in d]}
    if len(d) > 1 and np.all(np.isfinite(d)):
        half = stats.t.ppf(0.5 + confidence / 2, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
        out["low"], out["high"] = float(d.mean() - half), float(d.mean() + half)
    return out


def sam_table(records, confidence: float = 0.95) -> list[dict]:
    """SAM against a teleport to lower sharpness at equal compute, per data set (the ``sam`` experiment).

    For each seed, as :func:`generalisation_table` does: the mean validation loss over the epochs after the
    teleport epoch, the final validation loss and the mean training loss after it, of an arm minus those of a
    reference arm of the same data set and seed; the mean over seeds with its Student-t interval. Three
    comparisons: each of ``sharpness-decrease`` and ``sam`` against the run without a teleport (``none``, of
    the ``teleport`` experiment), and ``sharpness-decrease`` against ``sam``.

    Args:
        records: the records of both experiments (``experiment``, ``problem``, ``arm``, ``seed``,
            ``teleport_epoch``, ``loss``, ``test_loss``, ``gradient_examples``).
        confidence: the intervals' coverage.

    Returns:
        One row per (data set, comparison): ``problem``, ``arm``, ``reference``, ``seeds``, ``test_loss_after``,
        ``final_test_loss``, ``loss_after`` (each ``{"mean", "low", "high", "differences"}``) and ``compute``
        (per seed, the arm's ``gradient_examples`` over the reference's).

    Raises:
        LookupError: a (data set, seed) of the SAM experiment without its run without a teleport.
    """
    records = [r for r in records if r.get("experiment") in ("teleport", "sam")]
    index = {(r["experiment"], r["problem"], r["arm"], r["seed"]): r for r in records}
    sam = [r for r in records if r.get("experiment") == "sam"]
    rows = []
    for problem in dict.fromkeys(r["problem"] for r in sam):
        seeds = list(dict.fromkeys(r["seed"] for r in sam if r["problem"] == problem))
        missing = [seed for seed in seeds if ("teleport", problem, "none", seed) not in index]
        if missing:
            raise LookupError(f"no run without a teleport on {problem} for seeds {missing}")
        for arm, reference in (
            (("sam", "sharpness-decrease"), ("teleport", "none")),
            (("sam", "sam"), ("teleport", "none")),
            (("sam", "sharpness-decrease"), ("sam", "sam")),
        ):
            pairs = [
                (index[(*arm[:1], problem, arm[1], seed)], index[(*reference[:1], problem, reference[1], seed)])
                for seed in seeds
            ]
            rows.append(
                {
                    "problem": problem,
                    "arm": arm[1],
                    "reference": reference[1],
                    "seeds": seeds,
                    "test_loss_after": _paired(
                        [_after(a, "test_loss") - _after(b, "test_loss") for a, b in pairs], confidence
                    ),
                    "final_test_loss": _paired(
                        [_loss_value(a["test_loss"][-1]) - _loss_value(b["test_loss"][-1]) for a, b in pairs],
                        confidence,
                    ),
                    "loss_after": _paired([_after(a, "loss") - _after(b, "loss") for a, b in pairs], confidence),
                    "compute": [a["gradient_examples"] / b["gradient_examples"] for a, b in pairs],
                }
            )
    return rows


def generalisation_table(records, confidence: float = 0.95) -> list[dict]:
    """Per network, data set and teleported arm, how its validation loss after the teleport compares with no teleport.

    For each seed, the mean validation loss over the epochs after the teleport (``test_loss[e]`` for ``e`` from
    ``teleport_epoch + 1`` on) of the arm minus that of the run without a teleport: the mean of these paired
    differences over seeds with its ``confidence`` Student-t interval (``None`` with one seed), and the same
    for the final validation loss and for the mean training loss after the teleport.

    Args:
        records: the teleport experiment's records (``problem``, ``arm``, ``seed``, ``teleport_epoch``,
            ``loss``, ``test_loss``, ``teleports``; ``model``, ``"leaky-mlp"`` where absent).
        confidence: the intervals' coverage.

    Returns:
        One row per (network, data set, arm), in the records' order: ``model``, ``problem``, ``arm``,
        ``seeds``, ``test_loss_after``, ``final_test_loss`` and ``loss_after`` (each ``{"mean", "low", "high",
        "differences"}``), ``objective_ratio`` (the objective after over before, per seed), ``held_out_ratio``
        (the same on the teleport's held-out sample, per seed that has one), ``loss_change`` (the largest
        relative training-loss change of the teleports) and ``diverged`` (the seeds whose run ended with a
        non-finite loss).

    Raises:
        LookupError: a (network, data set, seed) without its run without a teleport.
    """

    def paired(differences):
        return _paired(differences, confidence)

    after = _after

    def where(r):
        return r.get("model", "leaky-mlp"), r["problem"]

    records = [r for r in records if r.get("experiment", "teleport") == "teleport"]
    plain = {(*where(r), r["seed"]): r for r in records if r["arm"] == "none"}
    rows = []
    for model, problem in dict.fromkeys(where(r) for r in records):
        arms = dict.fromkeys(r["arm"] for r in records if where(r) == (model, problem) and r["arm"] != "none")
        for arm in arms:
            group = [r for r in records if (*where(r), r["arm"]) == (model, problem, arm)]
            missing = [r["seed"] for r in group if (model, problem, r["seed"]) not in plain]
            if missing:
                raise LookupError(f"no run without a teleport of the {model} on {problem} for seeds {missing}")
            base = [plain[(model, problem, r["seed"])] for r in group]
            rows.append(
                {
                    "model": model,
                    "problem": problem,
                    "arm": arm,
                    "seeds": [r["seed"] for r in group],
                    "test_loss_after": paired(
                        [after(r, "test_loss") - after(b, "test_loss") for r, b in zip(group, base)]
                    ),
                    "final_test_loss": paired(
                        [_loss_value(r["test_loss"][-1]) - _loss_value(b["test_loss"][-1]) for r, b in zip(group, base)]
                    ),
                    "loss_after": paired([after(r, "loss") - after(b, "loss") for r, b in zip(group, base)]),
                    "objective_ratio": [
                        r["teleports"][0]["objective_after"] / r["teleports"][0]["objective_before"] for r in group
                    ],
                    "held_out_ratio": [
                        t["held_out_after"] / t["held_out_before"]
                        for t in (r["teleports"][0] for r in group)
                        if "held_out_before" in t
                    ],
                    "loss_change": max(r["teleports"][0]["loss_change"] for r in group),
                    "diverged": [r["seed"] for r in group if not np.isfinite(_loss_value(r["loss"][-1]))],
                }
            )
    return rows


#: the ``experiment`` of the runs teleported by the data-dependent GL(h) action (:mod:`symtele.study.generalisation_gl`)
GL_EXPERIMENT = "teleport-gl"


def gl_table(records, gl_records, confidence: float = 0.95) -> list[dict]:
    """Per data set and arm, the rescalings' teleport and the GL(h) action's side by side, on the seeds of both.

    The validation-loss differences are :func:`~symtele.study.summaries.generalisation_table`'s, each arm paired
    by seed with the run without a teleport.

    Args:
        records: :func:`~symtele.study.generalisation.teleport_runs`' records (the runs without a teleport and
            along the rescalings).
        gl_records: :func:`~symtele.study.generalisation_gl.gl_teleport_runs`' records.
        confidence: the intervals' coverage.

    Returns:
        One row per (data set, arm, group), the rescalings' first: ``problem``, ``arm``, ``group``
        (``"rescale"`` or ``"gl-data"``), ``seeds``, ``objective_ratio`` (after over before, on the chapter's
        teleport batch, per seed), ``loss_change`` (the largest relative change of the loss on the teleport's own
        batch), ``held_out_loss_change`` and ``validation_loss_change`` (the relative changes right after the
        teleport, per seed; ``None`` for the rescalings, which keep every output), ``steps_taken``,
        ``condition`` (of ``σ(gZ)`` after, per seed; ``None`` for the rescalings), ``test_loss_after``,
        ``final_test_loss``, ``loss_after`` and ``diverged`` (as in ``generalisation_table``).

    Raises:
        LookupError: a GL run without its run without a teleport.
    """
    seeds = {r["seed"] for r in gl_records}
    plain = [r for r in records if r.get("experiment", "teleport") == "teleport" and r["seed"] in seeds]
    rescaled = {(row["problem"], row["arm"]): row for row in generalisation_table(plain, confidence)}
    none = [r for r in plain if r["arm"] == "none"]
    moved = [{**r, "experiment": "teleport", "arm": f"gl-{r['arm']}"} for r in gl_records]
    gl = {(row["problem"], row["arm"][3:]): row for row in generalisation_table(none + moved, confidence)}
    rows = []
    for problem, arm in dict.fromkeys((r["problem"], r["arm"]) for r in gl_records):
        for group, row, runs in (
            ("rescale", rescaled.get((problem, arm)), plain),
            ("gl-data", gl[(problem, arm)], gl_records),
        ):
            if row is None:
                continue
            teleports = [r["teleports"][0] for r in runs if (r["problem"], r["arm"]) == (problem, arm)]
            exact = group == "rescale"

            def change(before: str, after: str, teleports=teleports, exact=exact):
                return None if exact else [(t[after] - t[before]) / abs(t[before]) for t in teleports]

            rows.append(
                {
                    "problem": problem,
                    "arm": arm,
                    "group": group,
                    "seeds": row["seeds"],
                    "objective_ratio": [
                        t["objective_after"] / t["objective_before"]
                        if exact
                        else t["chapter_objective_after"] / t["chapter_objective_before"]
                        for t in teleports
                    ],
                    "loss_change": row["loss_change"],
                    "held_out_loss_change": change("held_out_loss_before", "held_out_loss_after"),
                    "validation_loss_change": change("validation_loss_before", "validation_loss_after"),
                    "steps_taken": [t["steps_taken"] for t in teleports],
                    "condition": None if exact else [t["condition"] for t in teleports],
                    "test_loss_after": row["test_loss_after"],
                    "final_test_loss": row["final_test_loss"],
                    "loss_after": row["loss_after"],
                    "diverged": row["diverged"],
                }
            )
    return rows


def transformer_table(records, confidence: float = 0.95) -> list[dict]:
    """The transformer chapter's runs reduced to one row per teleported arm, in the records' order.

    Args:
        records: the run records of :func:`symtele.study.transformers.transformer_runs` (those without ``kind``).
        confidence: the coverage of the ratios' intervals.

    Returns:
        Per (optimiser, state, accept): ``optimizer``, ``lr``, ``state``, ``accept``, ``method``, ``seeds``;
        ``final_val_loss`` and ``final_loss``, each ``{"none": [...], "arm": [...]}`` by seed; ``ratio`` and
        ``train_ratio``, the :func:`ratio_interval` of the arm's final validation (training) loss to the run
        without teleports', paired by seed; ``teleports`` (``count``, ``applied`` with ``t > 0``, every ``t``);
        ``diverged`` (the seeds whose arm stopped at a loss that is not finite). A diverged run's loss counts as
        ``inf``.

    Raises:
        LookupError: an arm whose seeds are not those of its optimiser's run without teleports.
    """
    plain = {(r["optimizer"], r["seed"]): r for r in records if r["state"] is None}
    rows = []
    for method in dict.fromkeys(r["method"] for r in records if r["state"] is not None):
        group = [r for r in records if r["method"] == method]
        optimizer = group[0]["optimizer"]
        missing = [r["seed"] for r in group if (optimizer, r["seed"]) not in plain]
        if missing:
            raise LookupError(f"{method}: no run without teleports with {optimizer} for seeds {missing}")
        base = [plain[(optimizer, r["seed"])] for r in group]
        finals = {
            key: {"none": [_loss_value(b[key]) for b in base], "arm": [_loss_value(r[key]) for r in group]}
            for key in ("final_val_loss", "final_loss")
        }
        ts = [chosen_fraction(t) for r in group for t in r["teleports"]]
        rows.append(
            {
                "optimizer": optimizer,
                "lr": group[0]["lr"],
                "state": group[0]["state"],
                "accept": group[0]["accept"],
                "method": method,
                "seeds": [r["seed"] for r in group],
                **finals,
                "ratio": ratio_interval(finals["final_val_loss"]["none"], finals["final_val_loss"]["arm"], confidence),
                "train_ratio": ratio_interval(finals["final_loss"]["none"], finals["final_loss"]["arm"], confidence),
                "teleports": {"count": len(ts), "applied": sum(t > 0 for t in ts), "t": ts},
                "diverged": [r["seed"] for r in group if r.get("diverged_at") is not None],
            }
        )
    return rows


def comparison_table(records) -> list[dict]:
    """The teleport comparisons of the transformer chapter, one row per method (``symmetry``, ``nullspace``).

    Args:
        records: the ``teleport_comparison`` records of :func:`symtele.study.transformers.teleport_comparison`.

    Returns:
        Per method, over its points (seeds × steps): ``method``, ``points``; ``gain`` (``‖∇L‖²`` after over
        before on the teleport batch: ``min``, ``median``, ``max``); ``batch_change`` and ``held_out_change``
        (the largest absolute relative change of the loss on the teleport batch, and on the held-out batches);
        ``passes`` (the mean ``grad_evals``, ``hvp_evals`` and ``forward_evals``); ``grad_evals`` (the time of
        the teleport in plain gradients: ``min``, ``median``, ``max``).
    """
    rows = []
    for method in dict.fromkeys(r["method"] for r in records):
        group = [r for r in records if r["method"] == method]

        def spread(values):
            return {"min": float(np.min(values)), "median": float(np.median(values)), "max": float(np.max(values))}

        rows.append(
            {
                "method": method,
                "points": len(group),
                "gain": spread([r["gain"] for r in group]),
                "batch_change": max(abs(r["batch_change"]) for r in group),
                "held_out_change": max(r["max_held_out_change"] for r in group),
                "passes": {
                    k: float(np.mean([r[k] for r in group])) for k in ("grad_evals", "hvp_evals", "forward_evals")
                },
                "grad_evals": spread([r["wall_ratios"]["grad_evals"] for r in group]),
            }
        )
    return rows
