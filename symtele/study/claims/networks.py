"""The claims about teleporting whole networks (notebook 08, and notebook 05's cost of a ResNet-18)."""

from __future__ import annotations

import numpy as np

from .common import cost_against_reference, records_of, verdict

STEM = "08_networks"


def speeds_up(results):
    """The writeup's general claim, on a CNN and a ResNet trained by minibatches: a lower final training loss.

    The teleported run (optimiser state transported) ends at a lower mean training loss, for every network
    and optimiser.

    Args:
        results: the loaded results, ``{notebook stem: results file}``.

    Returns:
        ``(measured, holds)``, as :mod:`~symtele.study.claims.common` says.

    Raises:
        LookupError: naming what the results lack that the claim needs.
    """
    records = records_of(results, STEM)
    cases = {}
    for r in records:
        key = (r["problem"], r["optimizer"])
        if r["state"] in (None, "transport"):
            cases.setdefault(key, {}).setdefault(r["state"], []).append(r["loss"][-1])
    lower = [
        k for k, v in cases.items() if None in v and "transport" in v and np.mean(v["transport"]) < np.mean(v[None])
    ]
    parts = [f"{m} with {o}" for m, o in lower]
    return (
        f"lower mean final training loss with one teleport in {len(lower)} of {len(cases)} (network, optimiser) "
        f"cases{': ' + ', '.join(parts) if parts else ''} (yes: all)",
        verdict(len(lower) == len(cases), bool(lower)),
    )


def exact(results):
    """Every teleport of the networks left the minibatch loss unchanged to within 1e-5 (relative).

    Args:
        results: the loaded results, ``{notebook stem: results file}``.

    Returns:
        ``(measured, holds)``, as :mod:`~symtele.study.claims.common` says.

    Raises:
        LookupError: naming what the results lack that the claim needs.
    """
    teleports = [t for r in records_of(results, STEM) for t in r["teleports"]]
    if not teleports:
        raise LookupError(f"{STEM} has no teleports")
    worst = max(abs(t["loss_after"] / t["loss_before"] - 1) for t in teleports)
    return (
        f"largest relative change of the minibatch loss over {len(teleports)} teleports: {worst:.1e} (yes: within "
        "1e-5, float32 rounding; tests/test_discovery.py checks the outputs of generated architectures and a "
        "ResNet-18 in train and eval mode, tests/test_trust.py those of networks built from every case that "
        "could break a rescaling, and discover checks every group numerically before use)",
        verdict(worst <= 1e-5),
    )


def resnet18_cost(results):
    """A ResNet-18 teleport costs at most one gradient evaluation, ≥ 25× less than double backprop.

    Args:
        results: the loaded results, ``{notebook stem: results file}``.

    Returns:
        ``(measured, holds, extra)``, as :mod:`~symtele.study.claims.common` says.

    Raises:
        LookupError: naming what the results lack that the claim needs.
    """
    found = {
        r["method"]: r
        for r in records_of(results, "05_performance")
        if r.get("kind") == "network_teleport_cost" and r.get("model") == "resnet18"
    }
    if "rescale" not in found or "rescale-ref" not in found:
        raise LookupError("05_performance has no ResNet-18 cost: `make bench` measures it (minutes on a CPU)")
    a, b, holds, extra = cost_against_reference(
        found["rescale"]["wall_ratios"], found["rescale-ref"]["wall_ratios"], most=1.0, factor=25
    )
    return (
        f"ResNet-18, batch 32 of 32×32, one thread: closed form {a:.2f} gradient evaluations, double backprop "
        f"{b:.1f}, {b / a:.0f}× (yes: ≤ 1.0 and ≥ 25×)",
        holds,
        extra,
    )


ROWS = [
    (
        "Teleportation can be added to existing optimisers and speeds them up: a CNN and a ResNet, by minibatches",
        "writeup §1; this report's networks chapter",
        [STEM],
        speeds_up,
    ),
    (
        "Every rescaling found from a network's graph leaves its function unchanged",
        "this report (symtele.discover)",
        [STEM],
        exact,
    ),
    (
        "A 10-step teleport of a ResNet-18 costs at most one gradient evaluation, ≥ 25× less than double backprop",
        "this report's target",
        ["05_performance"],
        resnet18_cost,
    ),
]
