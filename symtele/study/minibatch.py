"""When a teleport hurts: minibatch training without teleports and with ``symtele.Teleporter``, its teleports
accepted every time or only after their look-ahead (the report's notebook 09).

* :func:`safety_runs`      — one network, optimiser and seed: the run without teleports, then one per ``accept``.
* :func:`minibatch_safety` — every network × optimiser × seed of the settings.
* :func:`safety_table`     — per (network, optimiser): the final losses of every arm, their ratio to the run
  without teleports with an interval over seeds, the held-out accuracies and the teleports accepted.

Every arm of a (network, optimiser, seed) starts from the same initial weights and takes the same minibatches.
The teleported arms continue a copy of the run without teleports made before the minibatch step just before
the first teleport (everything before it is the same computation; the look-ahead compares on the minibatch
given to the Teleporter one step before a teleport, so the copy sees that step too).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .experiments import NETWORK_OPTIMIZERS, _checked, _MinibatchRun
from .settings import SAFETY, SafetySettings

#: the arms of every case: no teleport, then each ``accept`` of the Teleporter
ARMS = ("none", "always", "lookahead")
#: a record's ``method`` is the optimiser's name with this suffix
ARM_SUFFIX = {"none": "", "always": "+rescale", "lookahead": "+rescale-lookahead"}


def minibatch_order(n: int, batch_size: int, epochs: int, seed: int, device="cpu") -> list[torch.Tensor]:
    """The minibatches of a run: per epoch, a permutation of the ``n`` training examples drawn from a generator
    seeded with ``seed`` (one generator for the whole run), cut into batches of ``batch_size`` (the last one of
    an epoch smaller when ``batch_size`` does not divide ``n``)."""
    order = torch.Generator().manual_seed(seed)
    return [
        perm[i : i + batch_size]
        for perm in (torch.randperm(n, generator=order).to(device) for _ in range(epochs))
        for i in range(0, n, batch_size)
    ]


def network(model_name: str, hidden=(32, 32)) -> torch.nn.Module:
    """A fresh network of ``model_name`` (``digits-mlp`` with hidden widths ``hidden``, ``digits-cnn``,
    ``digits-resnet``), initialised from torch's global generator."""
    from ..models import digits_cnn, digits_mlp_net, digits_resnet

    if model_name == "digits-mlp":
        return digits_mlp_net(tuple(hidden))
    return {"digits-cnn": digits_cnn, "digits-resnet": digits_resnet}[model_name]()


def digits_inputs(model_name: str, seed: int, device="cpu"):
    """``(x, y, x_test, y_test)``: the digits split and standardised with ``seed``, as 64 features for the MLP
    and as 1×8×8 images for the convolutional networks."""
    from ..tasks import digits_data

    data = digits_data(seed, device=device)
    shape = (-1, 64) if model_name == "digits-mlp" else (-1, 1, 8, 8)
    return data.x_train.reshape(shape), data.y_train, data.x_test.reshape(shape), data.y_test


def safety_runs(
    model_name: str, optimizer: str, seed: int, settings: SafetySettings = SAFETY, *, device="cpu", share=True
) -> list[dict]:
    """Minibatch runs of ``model_name`` on the digits with ``optimizer``: one without teleports, then one per
    entry of ``settings.accepts`` in which ``Teleporter(model, cross_entropy, optimizer, every=settings.every,
    accept=accept)`` (every other argument at its default) is asked before every step whether to teleport.

    Args:
        model_name: ``digits-mlp``, ``digits-cnn`` or ``digits-resnet``.
        optimizer: a key of ``settings.lrs`` (``sgd``, ``momentum``, ``adam``, ``adamw``).
        seed: the data split, the initial weights (``torch.manual_seed(seed)``) and the minibatch order.
        settings: the epochs, batch size, steps, teleport period and arms.
        device: the torch device of the runs.
        share: continue the teleported runs from a copy of the run without teleports (the same numbers as
            running each from the start, which ``share=False`` does).

    Returns:
        One record per arm (``accept`` is ``None`` for the run without teleports). ``loss``, ``test_loss`` and
        ``test_accuracy`` are measured on the whole training and held-out sets in eval mode, at the start and
        after every epoch; ``grad_norm_sq`` is the first minibatch's ``‖∇L‖²``, then each epoch's mean over its
        minibatches; ``time_s`` the run's clock after every epoch (teleports included); ``teleports`` the
        Teleporter's records (``epoch`` is the minibatch step); ``final_*`` the last epoch's values.
    """
    from ..teleporter import Teleporter

    s = _checked(settings, SafetySettings)
    if optimizer not in s.lrs:
        raise ValueError(f"Invalid optimizer: {optimizer!r} (the settings' lrs name {', '.join(s.lrs)})")
    x, y, x_test, y_test = digits_inputs(model_name, seed, device)
    batches = minibatch_order(len(y), s.batch_size, s.epochs, seed, device)
    per_epoch, total = -(-len(y) // s.batch_size), len(batches)
    fork = min(s.every - 1, total) if share else 0

    def fresh() -> _MinibatchRun:
        torch.manual_seed(seed)
        model = network(model_name, s.hidden).to(device)
        opt = NETWORK_OPTIMIZERS[optimizer](model.parameters(), s.lrs[optimizer])
        return _MinibatchRun(model, opt, x, y, test=(x_test, y_test))

    plain = fresh()
    plain.advance(batches, 0, fork, per_epoch)
    runs = [(None, plain, None)]
    for accept in s.accepts:
        run = plain.copy() if share else fresh()
        teleporter = Teleporter(
            run.model, torch.nn.functional.cross_entropy, run.optimizer, every=s.every, accept=accept
        )
        runs.append((accept, run, teleporter))
    records = []
    for accept, run, teleporter in runs:
        run.advance(batches, fork, total, per_epoch, teleporter)
        teleports = [] if teleporter is None else teleporter.records
        records.append(
            {
                "problem": model_name,
                "method": optimizer + ARM_SUFFIX[accept or "none"],
                "seed": seed,
                "optimizer": optimizer,
                "lr": s.lrs[optimizer],
                "accept": accept,
                "every": None if accept is None else s.every,
                "loss": run.losses,
                "grad_norm_sq": run.grads,
                "time_s": run.times,
                "test_loss": run.test_losses,
                "test_accuracy": run.test_accuracies,
                "teleport_epochs": [r.epoch for r in teleports],
                "teleports": [r.to_dict() for r in teleports],
                "train_accuracy": run.accuracy,
                "final_loss": run.losses[-1],
                "final_test_loss": run.test_losses[-1],
                "final_test_accuracy": run.test_accuracies[-1],
                "steps": total,
            }
        )
    return records


def minibatch_safety(settings: SafetySettings = SAFETY, *, device="cpu") -> list[dict]:
    """Every network × optimiser × seed of ``settings``, each :func:`safety_runs` (one record per arm)."""
    s = _checked(settings, SafetySettings)
    records = []
    for model_name in s.models:
        for optimizer in s.lrs:
            for seed in s.seeds:
                records += safety_runs(model_name, optimizer, seed, s, device=device)
    return records


def arm(record: dict) -> str:
    """The arm of a record: ``none`` (no teleport), ``always`` or ``lookahead``."""
    return record.get("accept") or "none"


def chosen_fraction(teleport: dict) -> float:
    """The fraction ``t`` of a teleport's path that was applied (0: declined; 1 when the record has none,
    as with a Teleporter that accepts every teleport)."""
    t = teleport.get("t")
    return 1.0 if t is None else float(t)


def ratio_interval(plain, tele, confidence: float = 0.95) -> dict:
    """The paired ratio of ``tele`` to ``plain`` (final losses of the same seeds, in the same order).

    ``mean_ratio = mean(tele) / mean(plain)``; ``geometric`` is ``exp(mean(log rᵢ))`` of the per-seed ratios
    ``rᵢ = teleᵢ / plainᵢ``, with the ``confidence`` Student-t interval of the mean log ratio
    (``exp(m ± t_{n−1}·sd/√n)``; ``None`` with one seed); ``worst`` the largest ``rᵢ``. A missing or non-finite
    loss (a diverged run) makes the ratios involving it ``inf`` or NaN, and its interval ``None``.
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
    """Per (network, optimiser), in the records' order: for every arm present, the seeds' final training losses
    (``final_loss``), final held-out accuracies (``final_test_accuracy``) and teleports (``teleports``: how
    many, how many were applied at all (``t > 0``), every ``t``); and for each teleported arm its
    :func:`ratio_interval` to the run without teleports, paired by seed (``ratio``).

    Raises ``LookupError`` naming a case whose arms do not hold the same seeds (or that lacks the run without
    teleports)."""
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
    """A loss as a results file stores it: ``None`` (NaN: a diverged run) counts as ``inf``, as do ``"inf"``."""
    return math.inf if value is None else float(value)
