"""Teleporting for generalisation: Zhao et al. (2024)'s Fig. 4 and Table 1, scaled down (notebook 10).

* :func:`teleport_runs`     — one data set and seed: SGD without a teleport, and one run per teleported arm.
* :func:`generalisation_runs` — every data set × seed of the settings.
* :func:`correlation_nets`  — small MLPs trained with varied seeds and steps, each measured once at the end.

Their records reduce to the report's tables with :func:`symtele.study.summaries.generalisation_table` and
:func:`symtele.study.summaries.correlation_table`.

The network is :func:`symtele.models.leaky_mlp` (bias-free, LeakyReLU 0.1), the group the positive rescalings
of its hidden units, the teleport :func:`symtele.teleports.generalisation.teleport_objective`. Every arm of a
(data set, seed) starts from the same initial weights and takes the same minibatches: the teleported arms
continue copies of the run without a teleport made at the teleport epoch (plain SGD has no state to carry).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from ..models import leaky_mlp
from ..teleports.generalisation import make_objective, module_loss, teleport_objective
from ..teleports.rescale import symmetry_of
from .experiments import _checked, _MinibatchRun, minibatch_order
from .settings import GENERALISATION, GeneralisationSettings
from .summaries import MEASURES

__all__ = ["correlation_nets", "data", "generalisation_runs", "teleport_runs"]


def data(name: str, seed: int):
    """The data set ``name`` split with ``seed`` (:mod:`symtele.tasks_generalisation`).

    Args:
        name: ``mnist1d`` or ``mnist-5k``.
        seed: the seed of the split.

    Returns:
        A :class:`~symtele.tasks.DigitsData` (``x_test``/``y_test`` are the validation part).

    Raises:
        ValueError: another name.
    """
    from ..tasks_generalisation import mnist1d, mnist_5k

    loaders = {"mnist1d": mnist1d, "mnist-5k": mnist_5k}
    if name not in loaders:
        raise ValueError(f"Invalid data set: {name!r} (choose {', '.join(loaders)})")
    return loaders[name](seed)


def _network(inputs: int, hidden: tuple, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return leaky_mlp((inputs, *hidden, 10))


def _objective_options(s: GeneralisationSettings) -> dict:
    """The objectives' sampling, as :func:`~symtele.teleports.generalisation.make_objective` takes it."""
    return dict(directions=s.directions, t_range=tuple(s.t_range), t_count=s.t_count, samples=s.samples)


def teleport_runs(name: str, seed: int, settings: GeneralisationSettings = GENERALISATION) -> list[dict]:
    """SGD on ``name`` without a teleport, and one run per arm of ``settings.arms`` teleported once.

    At the end of epoch ``settings.teleport_epoch`` the parameters are moved along the positive rescalings to
    decrease or increase the sharpness φ or the curvature ψ (``teleport_objective``, on the first
    ``teleport_batch`` examples of the next epoch's minibatch order), then SGD goes on with the same step and
    minibatches.

    Args:
        name: ``mnist1d`` or ``mnist-5k`` (a key of ``settings.lrs``).
        seed: the data split, the initial weights (``torch.manual_seed(seed)``) and the minibatch order.
        settings: the sizes and the teleport.

    Returns:
        One record per arm (``experiment`` ``"teleport"``), the run without a teleport first (``arm``
        ``"none"``, ``method`` ``"sgd"``; the others' ``method`` is ``"sgd+<arm>"``). ``loss``, ``test_loss``
        and ``test_accuracy`` are the whole training and validation sets' at the start and after every epoch;
        ``grad_norm_sq`` the first minibatch's ``‖∇L‖²``, then each epoch's mean over its minibatches; ``time_s``
        the run's clock after every epoch (the teleport's time included); ``teleports`` the
        :class:`~symtele.teleports.generalisation.ObjectiveRecord` as a dict (none without a teleport);
        ``final_*`` the last epoch's values.

    Raises:
        TypeError: ``settings`` that is not a :class:`~symtele.study.settings.GeneralisationSettings`.
        ValueError: a ``name`` that ``settings.lrs`` does not name.
    """
    s = _checked(settings, GeneralisationSettings)
    if name not in s.lrs:
        raise ValueError(f"Invalid data set: {name!r} (the settings' lrs name {', '.join(s.lrs)})")
    split = data(name, seed)
    x, y = split.x_train, split.y_train
    batches = minibatch_order(len(y), s.batch_size, s.epochs, seed)
    per_epoch = -(-len(y) // s.batch_size)
    at = s.teleport_epoch * per_epoch
    model = _network(x.shape[1], s.hidden, seed)
    plain = _MinibatchRun(
        model, torch.optim.SGD(model.parameters(), lr=s.lrs[name]), x, y, (split.x_test, split.y_test)
    )
    plain.advance(batches, 0, at, per_epoch)
    order = torch.cat(batches[at : at + -(-s.teleport_batch // s.batch_size)])[: s.teleport_batch]
    runs = [("none", plain, None)]
    for arm in s.arms:
        run = plain.copy()
        objective, direction = arm.split("-")
        params, record = teleport_objective(
            run.model,
            F.cross_entropy,
            (x[order], y[order]),
            objective,
            direction,
            steps=s.teleport_steps,
            max_log_step=s.max_log_step,
            seed=seed,
            **_objective_options(s),
        )
        with torch.no_grad():
            for n, p in run.model.named_parameters():
                p.copy_(params[n])
        runs.append((arm, run, record.to_dict()))
    records = []
    for arm, run, teleport in runs:
        run.advance(batches, at, len(batches), per_epoch)
        if teleport is not None:  # the clock of every epoch after the teleport includes it
            run.times[s.teleport_epoch + 1 :] = [t + teleport["cost_s"] for t in run.times[s.teleport_epoch + 1 :]]
        records.append(
            {
                "experiment": "teleport",
                "problem": name,
                "method": "sgd" if arm == "none" else f"sgd+{arm}",
                "arm": arm,
                "seed": seed,
                "lr": s.lrs[name],
                "teleport_epoch": s.teleport_epoch,
                "teleport_epochs": [] if teleport is None else [s.teleport_epoch],
                "teleports": [] if teleport is None else [teleport],
                "loss": run.losses,
                "grad_norm_sq": run.grads,
                "time_s": run.times,
                "test_loss": run.test_losses,
                "test_accuracy": run.test_accuracies,
                "final_loss": run.losses[-1],
                "final_test_loss": run.test_losses[-1],
                "final_test_accuracy": run.test_accuracies[-1],
            }
        )
    return records


def generalisation_runs(settings: GeneralisationSettings = GENERALISATION) -> list[dict]:
    """Every data set × seed of ``settings``, each :func:`teleport_runs` (one record per arm).

    Args:
        settings: the notebook's settings.

    Returns:
        The records of every run.

    Raises:
        TypeError: ``settings`` that is not a :class:`~symtele.study.settings.GeneralisationSettings`.
    """
    s = _checked(settings, GeneralisationSettings)
    return [record for name in s.lrs for seed in s.seeds for record in teleport_runs(name, seed, s)]


def correlation_nets(settings: GeneralisationSettings = GENERALISATION) -> list[dict]:
    """``settings.nets`` MLPs on ``settings.net_data``, each trained by SGD, then measured once.

    Net ``i`` has initial weights and minibatch order from seed ``i`` and the step ``net_lrs[i % len(net_lrs)]``;
    all share one split (seed 0) and train ``net_epochs`` epochs. At the end: the training and validation
    losses (whole sets), the validation accuracy, and φ, adaptive φ and ψ (the settings' sampling, seed 0 for
    every net) with φ measured on the first ``teleport_batch`` training examples.

    Args:
        settings: the notebook's settings.

    Returns:
        One record per net (``experiment`` ``"correlation"``): ``problem`` (the data set), ``net``, ``seed``,
        ``lr``, ``epochs``, ``loss``, ``test_loss``, ``test_accuracy`` and the
        :data:`~symtele.study.summaries.MEASURES`.

    Raises:
        TypeError: ``settings`` that is not a :class:`~symtele.study.settings.GeneralisationSettings`.
    """
    s = _checked(settings, GeneralisationSettings)
    split = data(s.net_data, 0)
    x, y = split.x_train, split.y_train
    batch = (x[: s.teleport_batch], y[: s.teleport_batch])
    per_epoch = -(-len(y) // s.batch_size)
    records = []
    for i in range(s.nets):
        lr = s.net_lrs[i % len(s.net_lrs)]
        model = _network(x.shape[1], s.hidden, i)
        run = _MinibatchRun(model, torch.optim.SGD(model.parameters(), lr=lr), x, y, (split.x_test, split.y_test))
        batches = minibatch_order(len(y), s.batch_size, s.net_epochs, i)
        run.advance(batches, 0, len(batches), per_epoch)
        params = {n: p.detach() for n, p in model.named_parameters()}
        symmetry = symmetry_of(model, batch[0])
        loss_of = module_loss(model, F.cross_entropy, *batch)
        zero = torch.zeros(symmetry.n_scales, dtype=torch.float64)
        record = {"experiment": "correlation", "problem": s.net_data, "net": i, "seed": i, "lr": lr}
        record["epochs"] = s.net_epochs
        record.update(loss=run.losses[-1], test_loss=run.test_losses[-1], test_accuracy=run.test_accuracies[-1])
        with torch.no_grad():
            for measure in MEASURES:
                objective = make_objective(measure, loss_of, params, symmetry, seed=0, **_objective_options(s))
                record[measure] = float(objective.value(zero))
        records.append(record)
    return records
