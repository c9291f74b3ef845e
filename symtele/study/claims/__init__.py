"""Each claim of the writeup and of the course project's README, checked against this build's results files.

:func:`check_claims` takes the loaded results of the report's notebooks, by notebook stem (``None``
for a file that is missing), and returns one row per claim: ``claim``, ``source``, ``measured``
(what this build found, in words and numbers, and the criterion it was judged by) and ``holds``:
``yes``, ``partly``, ``no``, or ``not measured``, with the cause in ``measured`` (a missing file,
a run that is not the one the claim is about). A criterion is as strict as the claim's own words:
"lies below" means at every epoch after the teleport, "never … always" means every teleport.
Rows measured from wall-clock time carry ``timing: True`` and ``sure``: in how many of the
interleaved rounds their criterion held.

One module per part of the report: :mod:`.convex` (01), :mod:`.regression` (02), :mod:`.level_set`
(03), :mod:`.timing` (05), :mod:`.schedules` (04, 06), :mod:`.networks` (08), :mod:`.safety` (09),
:mod:`.generalisation` and :mod:`.generalisation_gl` (10) and :mod:`.transformers` (11); each lists
its ``ROWS`` as ``(claim, source, notebooks needed, check)``.
"""

from __future__ import annotations

from . import (
    convex,
    generalisation,
    generalisation_gl,
    level_set,
    networks,
    regression,
    safety,
    schedules,
    timing,
    transformers,
)
from .common import NOT_MEASURED

#: every claim, in the report's order: ``(claim, source, notebook stems it needs, check)``
CLAIMS = [
    *convex.ROWS,
    *regression.ROWS,
    *timing.ROWS,
    *level_set.ROWS,
    *schedules.ROWS,
    *networks.ROWS,
    *safety.ROWS,
    *generalisation.ROWS,
    *generalisation_gl.ROWS,
    *transformers.ROWS,
]


def check_claims(results: dict) -> list[dict]:
    """Check every claim of :data:`CLAIMS` against the results, one row each.

    Args:
        results: a notebook stem → its loaded results file, or ``None`` when missing.

    Returns:
        One row per claim: ``claim``, ``source``, ``measured``, ``holds`` (and, for the claims measured from
        wall-clock time, ``timing: True`` and ``sure``).

    Raises:
        TypeError: ``results`` that is not a dict.
    """
    if not isinstance(results, dict):
        raise TypeError(f"Invalid results: expected a dict of notebook stem → results, got {type(results).__name__}")
    rows = []
    for claim, source, needs, check in CLAIMS:
        row = {"claim": claim, "source": source}
        missing = [s for s in needs if results.get(s) is None]
        if missing:
            row.update(measured=f"no results file of {', '.join(missing)} in this build", holds=NOT_MEASURED)
        else:
            try:
                measured, holds, *extra = check(results)
            except LookupError as error:
                measured, holds, extra = str(error), NOT_MEASURED, []
            row.update(measured=measured, holds=holds)
            for fields in extra:
                row.update(fields)
        rows.append(row)
    return rows


__all__ = ["CLAIMS", "NOT_MEASURED", "check_claims"]
