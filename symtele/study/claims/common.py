"""What every claim check shares: reading records, the verdict words, and numbers as the writeup prints them.

A check takes the loaded results (``{notebook stem: results file or None}``) and returns
``(measured, holds)`` or ``(measured, holds, extra)``: ``measured`` says what this build found and
the criterion it was judged by, ``holds`` is ``yes``, ``partly`` or ``no``, and ``extra`` adds fields
to the row (``timing: True`` and ``sure`` for the claims measured from wall-clock time). A check
raises ``LookupError`` naming what is missing when the results lack what the claim needs.
"""

from __future__ import annotations

from ..summaries import below_and_above, by_method

YES, PARTLY, NO, NOT_MEASURED = "yes", "partly", "no", "not measured"
#: how the claims name the course project's runs
LABELS = {"gd": "GD", "gd+posscale": "GD + teleport", "adagrad": "AdaGrad", "adagrad+posscale": "AdaGrad + teleport"}


def verdict(all_ok: bool, any_ok: bool = False) -> str:
    """``yes`` when the criterion holds everywhere, ``partly`` when it holds somewhere, else ``no``.

    Args:
        all_ok: the criterion holds everywhere.
        any_ok: it holds somewhere.

    Returns:
        The verdict word.
    """
    return YES if all_ok else (PARTLY if any_ok else NO)


def g(value) -> str:
    """A number as the writeup prints it (shortest form, Unicode minus).

    Args:
        value: the number.

    Returns:
        Its text.
    """
    return f"{value:g}".replace("-", "−")


def point(p) -> str:
    """A point as the writeup prints it: ``(x, y)``, each coordinate as :func:`g` prints it.

    Args:
        p: the point's coordinates.

    Returns:
        Its text.
    """
    return "(" + ", ".join(g(v) for v in p) + ")"


def records_of(results, stem, problem=None) -> list[dict]:
    """The records of a notebook (of one ``problem`` if given).

    Args:
        results: the loaded results, ``{notebook stem: results file}``.
        stem: the notebook.
        problem: the records' ``problem``, or ``None`` for all.

    Returns:
        The records.

    Raises:
        LookupError: there are none.
    """
    found = [r for r in results[stem]["records"] if problem is None or r.get("problem") == problem]
    if not found:
        raise LookupError(f"{stem} has no records{'' if problem is None else f' of {problem}'}")
    return found


def one(records, method) -> dict:
    """The first record of ``method``.

    Args:
        records: run records.
        method: the method's name.

    Returns:
        The record.

    Raises:
        LookupError: naming ``method``, if no record has it.
    """
    groups = by_method(records)
    if method not in groups:
        raise LookupError(f"no {method} run")
    return groups[method][0]


def after_teleport(plain, tele, key="loss") -> tuple[float, float]:
    """Fractions of the epochs after ``tele``'s first teleport where ``tele``'s ``key`` is below and above ``plain``'s.

    Strictly below, and strictly above; the teleport's own epoch is excluded (there the loss is the one it
    kept).

    Args:
        plain: the run without teleports (its ``key`` curve).
        tele: the teleported run (its ``key`` curve and ``teleport_epochs``).
        key: the curve compared.

    Returns:
        ``(below, above)``.
    """
    first = tele["teleport_epochs"][0]
    shifted = {**tele, "teleport_epochs": [first + 1]}
    return below_and_above(plain, shifted, key)


def share(fraction: float) -> str:
    """A fraction as a whole percentage, ``"42%"``.

    Args:
        fraction: a number in ``[0, 1]``.

    Returns:
        Its text.
    """
    return f"{100 * fraction:.0f}%"


def rounds_text(agreeing: int, total: int) -> str:
    """How sure a timing verdict is: in how many of the interleaved rounds its criterion held.

    Args:
        agreeing: the rounds that agree with the verdict.
        total: the rounds.

    Returns:
        ``"<agreeing> of <total> rounds"``.
    """
    return f"{agreeing} of {total} rounds"


def cost_against_reference(ours: dict, ref: dict, most: float, factor: float) -> tuple[float, float, str, dict]:
    """A cost claim: the closed form at most ``most`` gradient evaluations, the reference ``factor`` times it or more.

    Args:
        ours: the closed form's cost record's ``wall_ratios`` (``grad_evals``, and per round
            ``grad_evals_rounds``).
        ref: the reference's, alike.
        most: the closed form's largest cost that passes, in gradient evaluations.
        factor: the smallest ratio of the reference's cost to the closed form's that passes.

    Returns:
        ``(ours, reference, verdict, extra)``: the two costs, the verdict, and ``extra``, which marks the row as
        timed and says in how many interleaved rounds the verdict held.
    """
    a, b = ours["grad_evals"], ref["grad_evals"]
    pairs = list(zip(ours.get("grad_evals_rounds") or [a], ref.get("grad_evals_rounds") or [b]))
    holds = a <= most and b >= factor * a
    sure = sum((x <= most and y >= factor * x) == holds for x, y in pairs)
    return a, b, verdict(holds, a <= most or b >= factor * a), {"timing": True, "sure": rounds_text(sure, len(pairs))}
