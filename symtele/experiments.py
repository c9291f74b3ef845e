"""The report's experiments, one seeded function each, returning tidy records.

Every function checks its arguments, runs the same ``train`` loop the library exposes,
and returns a list of records in the results schema of :mod:`symtele.results` (one
per run and seed), ready for ``write_results`` and for the plot functions of
:mod:`symtele.plots`. Each takes ``device`` (``"cpu"`` by default); the numbers in
the report come from the defaults.

* :func:`convex_so2`        — GD ± SO(2) teleport on a 2-D problem (writeup §4.1.1).
* :func:`relu_posscale`     — GD and AdaGrad ± positive-scale teleport on the seed's ReLU task (§4.1.2).
* :func:`gln_baseline`      — GL(n) against positive-scale teleport on the LeakyReLU version of that task.
* :func:`level_set`         — GD (Armijo or fixed step) ± level-set teleport on a 2-D problem (§4.2.1).
* :func:`level_set_mlp`     — GD ± level-set teleport on the 2-layer Softplus MLP (§4.2.2).
* :func:`beyond_optimizers` — torch optimisers ± positive-scale teleport on a digits MLP.
"""
from __future__ import annotations

from typing import Sequence

import torch

from . import checks
from .mlp import SEED_DIMS, SEEDS, seed_task
from .models import accuracy, digits_mlp, softplus_mlp
from .problems import get_problem
from .results import batched_records, run_record
from .schedule import Schedule
from .teleports import GLn, LevelSet, PositiveScale, SO2
from .training import train

#: the optimisers of :func:`beyond_optimizers` and the step size each uses by default
DIGITS_LRS = {"sgd": 0.1, "momentum": 0.02, "rmsprop": 1e-3, "adam": 1e-3, "adagrad-torch": 0.05}


def _path_fields(history) -> dict:
    """The visited points of a 2-D run: ``path`` ([x, y] per entry) and ``path_epochs``."""
    return {"path": [params[0].tolist() for _, params in history.path],
            "path_epochs": [epoch for epoch, _ in history.path]}


def _epochs_list(name: str, epochs, n_epochs: int) -> list[int]:
    epochs = [epochs] if isinstance(epochs, int) else list(epochs)
    for e in epochs:
        checks.count(name, e)
        if e >= n_epochs:
            raise ValueError(f"Invalid {name}: {e} (the run has epochs 0..{n_epochs - 1})")
    return epochs


def convex_so2(problem: str = "quadratic", *, start: Sequence[float] | None = None, lr: float = 0.08,
               epochs: int = 10, teleport_epoch: int = 4, teleport_lr: float = 1e-3, teleport_steps: int = 10,
               seed: int = 0, device="cpu") -> list[dict]:
    """Gradient descent ``w ← w − lr ∇f(w)`` on a 2-D problem, without and with one SO(2) teleport.

    The teleport, before the step of ``teleport_epoch``, draws θ₀ ~ U[0, π) from a generator
    seeded with ``seed`` and takes ``teleport_steps`` ascent steps on ``‖∇f(g_θ·w)‖²`` in θ.
    Defaults: the quadratic ``x² + 9y²`` from (8, −2), REFERENCE §1. Records carry the
    visited points (``path``, ``path_epochs``), ``start`` and ``lr``.
    """
    prob = get_problem(problem)
    start = prob.start if start is None else tuple(float(v) for v in start)
    if len(start) != 2:
        raise ValueError(f"Invalid start: {start!r} (expected two coordinates x, y)")
    lr = checks.positive("lr", lr)
    epochs = checks.count("epochs", epochs, minimum=1)
    _epochs_list("teleport_epoch", teleport_epoch, epochs)
    teleport = SO2(lr=teleport_lr, steps=teleport_steps, seed=seed)
    records = []
    for tp in (None, teleport):
        w = [torch.tensor(start, dtype=torch.float64, device=device)]
        history = train(prob, w, optimizer="gd", lr=lr, epochs=epochs, teleport=tp,
                        schedule=teleport_epoch if tp else None, keep_path=True)
        records.append(run_record(prob.name, seed, history, start=list(start), lr=lr, **_path_fields(history)))
    return records


def relu_posscale(seeds: Sequence[int] = SEEDS, *, dims: Sequence[int] = SEED_DIMS, epochs: int = 300,
                  gd_lr: float = 1e-4, adagrad_lr: float = 1e-1, teleport_epoch: int = 5,
                  teleport_lr_gd: float = 1e-4, teleport_lr_adagrad: float = 1e-5, teleport_steps: int = 10,
                  clamp: float = 0.1, device="cpu") -> list[dict]:
    """GD and AdaGrad on the seed's ReLU regression, without and with one positive-scale teleport.

    All ``seeds`` are trained as one batched computation; the teleport (before the step of
    ``teleport_epoch``) takes ``teleport_steps`` clipped ascent steps on ``‖∇L‖²`` over the
    per-unit scales. Defaults: REFERENCE §2 (``gd``, ``gd+posscale``, ``adagrad``,
    ``adagrad+posscale``, five seeds, 300 epochs).
    """
    epochs = checks.count("epochs", epochs, minimum=1)
    _epochs_list("teleport_epoch", teleport_epoch, epochs)
    runs = [("gd", checks.positive("gd_lr", gd_lr), PositiveScale(teleport_lr_gd, teleport_steps, clamp)),
            ("adagrad", checks.positive("adagrad_lr", adagrad_lr),
             PositiveScale(teleport_lr_adagrad, teleport_steps, clamp))]
    objective, weights = seed_task(list(seeds), dims, device=device)
    records = []
    for optimizer, lr, teleport in runs:
        for tp in (None, teleport):
            history = train(objective, weights, optimizer=optimizer, lr=lr, epochs=epochs, teleport=tp,
                            schedule=teleport_epoch if tp else None)
            records.extend(batched_records("relu-mlp", list(seeds), history, lr=lr))
    return records


def gln_baseline(seeds: Sequence[int] = SEEDS, *, dims: Sequence[int] = SEED_DIMS, epochs: int = 300,
                 lr: float = 1e-4, negative_slope: float = 0.1, teleport_epoch: int = 5,
                 gln_lr: float = 1e-7, gln_steps: int = 8, posscale_lr: float = 1e-4, posscale_steps: int = 10,
                 clamp: float = 0.1, device="cpu") -> list[dict]:
    """GD on the LeakyReLU version of the seed task: no teleport, GL(n) teleport, positive-scale teleport.

    Both teleports act once, before the step of ``teleport_epoch``, on the same weights;
    GL(n) (Zhao et al. 2022, REFERENCE §3) is only approximately loss-preserving, and each
    record's ``teleports`` says by how much the loss moved.
    """
    epochs = checks.count("epochs", epochs, minimum=1)
    lr = checks.positive("lr", lr)
    _epochs_list("teleport_epoch", teleport_epoch, epochs)
    teleports = [None, GLn(lr=gln_lr, steps=gln_steps), PositiveScale(posscale_lr, posscale_steps, clamp)]
    objective, weights = seed_task(list(seeds), dims, negative_slope=negative_slope, device=device)
    records = []
    for tp in teleports:
        history = train(objective, weights, optimizer="gd", lr=lr, epochs=epochs, teleport=tp,
                        schedule=teleport_epoch if tp else None)
        records.extend(batched_records("leaky-relu-mlp", list(seeds), history, lr=lr))
    return records


def level_set(problem: str = "booth", *, start: Sequence[float] | None = None, epochs: int = 10,
              teleport_epochs: Sequence[int] | int = (1,), optimizers: Sequence[str] = ("gd-ls", "gd"),
              lrs: dict | None = None, rho: float = 1.0, teleport_steps: int = 100, line_search_steps: int = 50,
              teleport_only: bool = False, device="cpu") -> list[dict]:
    """GD without and with level-set teleports on a 2-D problem, for each optimiser in ``optimizers``.

    ``gd-ls`` takes the Armijo step ``η = max{lr·2⁻ʲ : L(w − η∇L) ≤ L(w) − η/2 ‖∇L‖²}``, ``gd``
    the fixed step ``lr`` (``lrs[optimizer]``; default 1 for ``gd-ls`` and 0.05 for ``gd``).
    The teleport maximises ``½‖∇L‖²`` over ``{L ≤ L(w_k)}`` with at most ``teleport_steps``
    sequential steps and ``line_search_steps`` halvings of ρ each. ``teleport_only`` skips the
    runs without teleport. Records carry ``path`` and the per-epoch ``step_size``.
    """
    prob = get_problem(problem)
    start = prob.start if start is None else tuple(float(v) for v in start)
    if len(start) != 2:
        raise ValueError(f"Invalid start: {start!r} (expected two coordinates x, y)")
    epochs = checks.count("epochs", epochs, minimum=1)
    tele = _epochs_list("teleport_epochs", teleport_epochs, epochs)
    lrs = {"gd-ls": 1.0, "gd": 0.05, **(lrs or {})}
    for optimizer in optimizers:
        checks.choice("optimizer", optimizer, ("gd", "gd-ls"))
        checks.positive(f"lrs[{optimizer!r}]", lrs[optimizer])
    teleport = LevelSet(rho=rho, steps=teleport_steps, line_search_steps=line_search_steps)
    records = []
    for optimizer in optimizers:
        for tp in ((teleport,) if teleport_only else (None, teleport)):
            w = [torch.tensor(start, dtype=torch.float64, device=device)]
            history = train(prob, w, optimizer=optimizer, lr=lrs[optimizer], epochs=epochs, teleport=tp,
                            schedule=Schedule.at(tele) if tp else None, keep_path=True)
            records.append(run_record(prob.name, 0, history, start=list(start), lr=lrs[optimizer],
                                      step_size=history.step_size, **_path_fields(history)))
    return records


def level_set_mlp(seed: int = 0, *, epochs: int = 300, lr: float = 0.02, teleport_epochs: Sequence[int] | int = (5,),
                  n_samples: int = 128, hidden: int = 50, rho: float = 1.0, teleport_steps: int = 100,
                  line_search_steps: int = 50, device="cpu") -> list[dict]:
    """GD with step ``lr`` on the 2-layer Softplus MLP (``hidden`` units), without and with level-set teleports.

    The data and network come from :func:`symtele.softplus_mlp` with ``seed``; the loss is the
    mean squared error on ``n_samples`` points.
    """
    epochs = checks.count("epochs", epochs, minimum=1)
    lr = checks.positive("lr", lr)
    tele = _epochs_list("teleport_epochs", teleport_epochs, epochs)
    objective, params = softplus_mlp(seed, n_samples=n_samples, hidden=hidden, device=device)
    teleport = LevelSet(rho=rho, steps=teleport_steps, line_search_steps=line_search_steps)
    records = []
    for tp in (None, teleport):
        history = train(objective, params, optimizer="gd", lr=lr, epochs=epochs, teleport=tp,
                        schedule=Schedule.at(tele) if tp else None)
        records.append(run_record("softplus-mlp", seed, history, lr=lr))
    return records


def beyond_optimizers(seeds: Sequence[int] = (0, 1, 2), *, optimizers: Sequence[str] = tuple(DIGITS_LRS),
                      lrs: dict | None = None, epochs: int = 100, hidden: Sequence[int] = (32, 32),
                      teleport_epochs: Sequence[int] | int = (5,), teleport_lr: float = 100.0,
                      teleport_steps: int = 10, clamp: float = 0.1, device="cpu") -> list[dict]:
    """Full-batch training of a ReLU MLP on the digits with torch optimisers, ± positive-scale teleport.

    For each optimiser and seed, one run without and one with the teleport at
    ``teleport_epochs`` (optimiser state kept). Records add ``train_accuracy`` and
    ``test_accuracy`` of the final parameters (held-out quarter of the digits) and ``lr``.
    """
    epochs = checks.count("epochs", epochs, minimum=1)
    tele = _epochs_list("teleport_epochs", teleport_epochs, epochs)
    lrs = {**DIGITS_LRS, **(lrs or {})}
    for optimizer in optimizers:
        checks.choice("optimizer", optimizer, tuple(DIGITS_LRS))
        checks.positive(f"lrs[{optimizer!r}]", lrs[optimizer])
    seeds = [checks.count("seed", s) for s in seeds]
    if not seeds:
        raise ValueError("Invalid seeds: empty")
    teleport = PositiveScale(lr=teleport_lr, steps=teleport_steps, clamp=clamp)
    records = []
    for seed in seeds:
        objective, params, data = digits_mlp(seed, hidden=tuple(hidden), device=device)
        for optimizer in optimizers:
            for tp in (None, teleport):
                history = train(objective, params, optimizer=optimizer, lr=lrs[optimizer], epochs=epochs,
                                teleport=tp, schedule=Schedule.at(tele) if tp else None)
                final = history.final_params
                records.append(run_record(
                    "digits-mlp", seed, history, lr=lrs[optimizer], optimizer=optimizer,
                    train_accuracy=accuracy(objective, final, data.x_train, data.y_train),
                    test_accuracy=accuracy(objective, final, data.x_test, data.y_test)))
    return records
