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
