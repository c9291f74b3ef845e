"""The report's experiments, one seeded function each, returning tidy records.

Every function checks its arguments, runs the same ``train`` loop the library exposes,
and returns a list of records in the results schema of :mod:`symtele.study.results` (one
per run and seed), ready for ``write_results`` and for the plot functions of
:mod:`symtele.plots`. Each takes ``device`` (``"cpu"`` by default); the defaults are the
writeup's settings (:mod:`symtele.study.settings`), which the report runs with.

* :func:`convex_so2`        — GD ± SO(2) teleport on a 2-D problem (writeup §4.1.1).
* :func:`relu_posscale`     — GD and AdaGrad ± positive-scale teleport on the course project's ReLU task (§4.1.2).
* :func:`gln_baseline`      — GL(n) against positive-scale teleport on the LeakyReLU version of that task.
* :func:`level_set`         — GD (Armijo or fixed step) ± level-set teleport on a 2-D problem (§4.2.1).
* :func:`level_set_mlp`     — GD ± level-set teleport on the 2-layer Softplus MLP (§4.2.2).
* :func:`beyond_optimizers` — torch optimisers ± positive-scale teleport on a digits MLP.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .. import checks
from ..problems import get_problem
from ..regression import regression_task
from ..schedule import Schedule
from ..tasks import accuracy, digits_mlp, softplus_mlp
from ..teleports import SO2, GLn, LevelSet, PositiveScale
from ..training import train
from .results import batched_records, run_record
from .settings import CONVEX, DIGITS, GD_STEPS_2D, GLN, LEVEL_SET, REGRESSION, STARTS


def course_regression_task(
    seeds: Sequence[int] | int = REGRESSION.seeds,
    dims: Sequence[int] = REGRESSION.dims,
    *,
    negative_slope: float = 0.0,
    dtype=torch.float32,
    device="cpu",
):
    """The course project's regression task (:func:`symtele.regression_task`) with the writeup's
    dims and seeds by default: ``(objective, weights)``, the seeds stacked on a leading dimension."""
    return regression_task(seeds, dims, negative_slope=negative_slope, dtype=dtype, device=device)


def _path_fields(history) -> dict:
    """The visited points of a 2-D run: ``path`` ([x, y] per entry) and ``path_epochs``."""
    return {
        "path": [params[0].tolist() for _, params in history.path],
        "path_epochs": [epoch for epoch, _ in history.path],
    }


def _start(problem: str, start) -> tuple[float, float]:
    """A 2-D starting point as a pair of floats (``None``: the problem's, :data:`STARTS`); raises naming ``start``."""
    start = tuple(float(v) for v in (STARTS[problem] if start is None else start))
    if len(start) != 2:
        raise ValueError(f"Invalid start: {start!r} (expected two coordinates x, y)")
    return start


def _epochs_list(name: str, epochs, n_epochs: int) -> list[int]:
    epochs = [epochs] if isinstance(epochs, int) else list(epochs)
    for e in epochs:
        checks.count(name, e)
        if e >= n_epochs:
            raise ValueError(f"Invalid {name}: {e} (the run has epochs 0..{n_epochs - 1})")
    return epochs


def convex_so2(
    problem: str = "quadratic",
    *,
    start: Sequence[float] | None = None,
    lr: float | None = None,
    epochs: int = CONVEX.epochs,
    teleport_epoch: int = CONVEX.teleport_epoch,
    teleport_lr: float = CONVEX.teleport_lr,
    teleport_steps: int = CONVEX.teleport_steps,
    seed: int = CONVEX.seed,
    device="cpu",
) -> list[dict]:
    """Gradient descent ``w ← w − lr ∇f(w)`` on a 2-D problem, without and with one SO(2) teleport.

    The teleport, before the step of ``teleport_epoch``, draws θ₀ ~ U[0, π) from a generator
    seeded with ``seed`` and takes ``teleport_steps`` ascent steps on ``‖∇f(g_θ·w)‖²`` in θ.
    Defaults: the writeup's run on the quadratic ``x² + 9y²`` (REFERENCE §1); ``start`` and ``lr``
    left ``None`` are the problem's (:mod:`symtele.study.settings`). Records carry the visited points
    (``path``, ``path_epochs``), ``start`` and ``lr``.
    """
    prob = get_problem(problem)
    start = _start(problem, start)
    lr = checks.positive("lr", GD_STEPS_2D[problem] if lr is None else lr)
    epochs = checks.count("epochs", epochs, minimum=1)
    _epochs_list("teleport_epoch", teleport_epoch, epochs)
    teleport = SO2(lr=teleport_lr, steps=teleport_steps, seed=seed)
    records = []
    for tp in (None, teleport):
        w = [torch.tensor(start, dtype=torch.float64, device=device)]
        history = train(
            prob,
            w,
            optimizer="gd",
            lr=lr,
            epochs=epochs,
            teleport=tp,
            schedule=teleport_epoch if tp else None,
            keep_path=True,
        )
        records.append(run_record(prob.name, seed, history, start=list(start), lr=lr, **_path_fields(history)))
    return records


def relu_posscale(
    seeds: Sequence[int] = REGRESSION.seeds,
    *,
    dims: Sequence[int] = REGRESSION.dims,
    epochs: int = REGRESSION.epochs,
    gd_lr: float = REGRESSION.gd_lr,
    adagrad_lr: float = REGRESSION.adagrad_lr,
    teleport_epoch: int = REGRESSION.teleport_epoch,
    teleport_lr_gd: float = REGRESSION.teleport_lr_gd,
    teleport_lr_adagrad: float = REGRESSION.teleport_lr_adagrad,
    teleport_steps: int = REGRESSION.teleport_steps,
    clamp: float = REGRESSION.clamp,
    device="cpu",
) -> list[dict]:
    """GD and AdaGrad on the course project's ReLU regression, without and with one positive-scale teleport.

    All ``seeds`` are trained as one batched computation; the teleport (before the step of
    ``teleport_epoch``) takes ``teleport_steps`` clipped ascent steps on ``‖∇L‖²`` over the
    per-unit scales. Runs ``gd``, ``gd+posscale``, ``adagrad``, ``adagrad+posscale`` (REFERENCE §2).
    """
    epochs = checks.count("epochs", epochs, minimum=1)
    _epochs_list("teleport_epoch", teleport_epoch, epochs)
    runs = [
        ("gd", checks.positive("gd_lr", gd_lr), PositiveScale(teleport_lr_gd, teleport_steps, clamp)),
        (
            "adagrad",
            checks.positive("adagrad_lr", adagrad_lr),
            PositiveScale(teleport_lr_adagrad, teleport_steps, clamp),
        ),
    ]
    objective, weights = regression_task(list(seeds), dims, device=device)
    records = []
    for optimizer, lr, teleport in runs:
        for tp in (None, teleport):
            history = train(
                objective,
                weights,
                optimizer=optimizer,
                lr=lr,
                epochs=epochs,
                teleport=tp,
                schedule=teleport_epoch if tp else None,
            )
            records.extend(batched_records("relu-mlp", list(seeds), history, lr=lr))
    return records


def gln_baseline(
    seeds: Sequence[int] = REGRESSION.seeds,
    *,
    dims: Sequence[int] = REGRESSION.dims,
    epochs: int = REGRESSION.epochs,
    lr: float = REGRESSION.gd_lr,
    negative_slope: float = GLN.negative_slope,
    teleport_epoch: int = REGRESSION.teleport_epoch,
    gln_lr: float = GLN.lr,
    gln_steps: int = GLN.steps,
    posscale_lr: float = REGRESSION.teleport_lr_gd,
    posscale_steps: int = REGRESSION.teleport_steps,
    clamp: float = REGRESSION.clamp,
    device="cpu",
) -> list[dict]:
    """GD on the LeakyReLU version of the course project's regression: no teleport, GL(n), positive scale.

    Both teleports act once, before the step of ``teleport_epoch``, on the same weights;
    GL(n) (Zhao et al. 2022, REFERENCE §3) is only approximately loss-preserving, and each
    record's ``teleports`` says by how much the loss moved.
    """
    epochs = checks.count("epochs", epochs, minimum=1)
    lr = checks.positive("lr", lr)
    _epochs_list("teleport_epoch", teleport_epoch, epochs)
    teleports = [None, GLn(lr=gln_lr, steps=gln_steps), PositiveScale(posscale_lr, posscale_steps, clamp)]
    objective, weights = regression_task(list(seeds), dims, negative_slope=negative_slope, device=device)
    records = []
    for tp in teleports:
        history = train(
            objective,
            weights,
            optimizer="gd",
            lr=lr,
            epochs=epochs,
            teleport=tp,
            schedule=teleport_epoch if tp else None,
        )
        records.extend(batched_records("leaky-relu-mlp", list(seeds), history, lr=lr))
    return records


def level_set(
    problem: str = "booth",
    *,
    start: Sequence[float] | None = None,
    epochs: int = LEVEL_SET.booth_epochs,
    teleport_epochs: Sequence[int] | int = LEVEL_SET.booth_teleport_epochs,
    optimizers: Sequence[str] = ("gd-ls", "gd"),
    lrs: dict | None = None,
    rho: float = LEVEL_SET.rho,
    teleport_steps: int = LEVEL_SET.teleport_steps,
    line_search_steps: int = LEVEL_SET.line_search_steps,
    teleport_only: bool = False,
    device="cpu",
) -> list[dict]:
    """GD without and with level-set teleports on a 2-D problem, for each optimiser in ``optimizers``.

    ``gd-ls`` takes the Armijo step ``η = max{lr·2⁻ʲ : L(w − η∇L) ≤ L(w) − η/2 ‖∇L‖²}``, ``gd``
    the fixed step ``lr`` (``lrs[optimizer]``; by default the Armijo search starts at the writeup's
    ``η₀`` and the fixed step is the problem's, :data:`~symtele.study.settings.GD_STEPS_2D`).
    The teleport maximises ``½‖∇L‖²`` over ``{L ≤ L(w_k)}`` with at most ``teleport_steps``
    sequential steps and ``line_search_steps`` halvings of ρ each. ``teleport_only`` skips the
    runs without teleport. Records carry ``path`` and the per-epoch ``step_size``.
    """
    prob = get_problem(problem)
    start = _start(problem, start)
    epochs = checks.count("epochs", epochs, minimum=1)
    tele = _epochs_list("teleport_epochs", teleport_epochs, epochs)
    lrs = {"gd-ls": LEVEL_SET.armijo_lr, "gd": GD_STEPS_2D[problem], **(lrs or {})}
    for optimizer in optimizers:
        checks.choice("optimizer", optimizer, ("gd", "gd-ls"))
        checks.positive(f"lrs[{optimizer!r}]", lrs[optimizer])
    teleport = LevelSet(rho=rho, steps=teleport_steps, line_search_steps=line_search_steps)
    records = []
    for optimizer in optimizers:
        for tp in (teleport,) if teleport_only else (None, teleport):
            w = [torch.tensor(start, dtype=torch.float64, device=device)]
            history = train(
                prob,
                w,
                optimizer=optimizer,
                lr=lrs[optimizer],
                epochs=epochs,
                teleport=tp,
                schedule=Schedule.at(tele) if tp else None,
                keep_path=True,
            )
            records.append(
                run_record(
                    prob.name,
                    0,
                    history,
                    start=list(start),
                    lr=lrs[optimizer],
                    step_size=history.step_size,
                    **_path_fields(history),
                )
            )
    return records


def level_set_mlp(
    seed: int = LEVEL_SET.mlp_seed,
    *,
    epochs: int = LEVEL_SET.mlp_epochs,
    lr: float = LEVEL_SET.mlp_lr,
    teleport_epochs: Sequence[int] | int = LEVEL_SET.mlp_teleport_epochs,
    n_samples: int = LEVEL_SET.mlp_samples,
    hidden: int = LEVEL_SET.mlp_hidden,
    rho: float = LEVEL_SET.rho,
    teleport_steps: int = LEVEL_SET.teleport_steps,
    line_search_steps: int = LEVEL_SET.line_search_steps,
    device="cpu",
) -> list[dict]:
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
        history = train(
            objective,
            params,
            optimizer="gd",
            lr=lr,
            epochs=epochs,
            teleport=tp,
            schedule=Schedule.at(tele) if tp else None,
        )
        records.append(run_record("softplus-mlp", seed, history, lr=lr))
    return records


def beyond_optimizers(
    seeds: Sequence[int] = DIGITS.seeds,
    *,
    optimizers: Sequence[str] = tuple(DIGITS.lrs),
    lrs: dict | None = None,
    epochs: int = DIGITS.epochs,
    hidden: Sequence[int] = DIGITS.hidden,
    teleport_epochs: Sequence[int] | int = DIGITS.teleport_epochs,
    teleport_lr: float = DIGITS.teleport_lr,
    teleport_steps: int = DIGITS.teleport_steps,
    clamp: float = DIGITS.clamp,
    device="cpu",
) -> list[dict]:
    """Full-batch training of a ReLU MLP on the digits with torch optimisers, ± positive-scale teleport.

    For each optimiser and seed, one run without and one with the teleport at
    ``teleport_epochs`` (optimiser state kept). Records add ``train_accuracy`` and
    ``test_accuracy`` of the final parameters (held-out quarter of the digits) and ``lr``.
    """
    epochs = checks.count("epochs", epochs, minimum=1)
    tele = _epochs_list("teleport_epochs", teleport_epochs, epochs)
    lrs = {**DIGITS.lrs, **(lrs or {})}
    for optimizer in optimizers:
        checks.choice("optimizer", optimizer, tuple(DIGITS.lrs))
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
                history = train(
                    objective,
                    params,
                    optimizer=optimizer,
                    lr=lrs[optimizer],
                    epochs=epochs,
                    teleport=tp,
                    schedule=Schedule.at(tele) if tp else None,
                )
                final = history.final_params
                records.append(
                    run_record(
                        "digits-mlp",
                        seed,
                        history,
                        lr=lrs[optimizer],
                        optimizer=optimizer,
                        train_accuracy=accuracy(objective, final, data.x_train, data.y_train),
                        test_accuracy=accuracy(objective, final, data.x_test, data.y_test),
                    )
                )
    return records
