"""Teleporting for generalisation: Zhao et al. (2024)'s Fig. 4 and Table 1, scaled down, and beyond (notebook 10).

* :func:`teleport_runs`     — one data set and seed: SGD without a teleport, and one run per teleported arm.
* :func:`sam_runs`          — one data set and seed: SAM against a teleport to lower sharpness at equal compute.
* :func:`generalisation_runs` — every data set × seed of the settings (and the SAM comparison on ``sam_data``).
* :func:`correlation_nets`  — small MLPs trained with varied seeds and steps, each measured once at the end.

Their records reduce to the report's tables with :func:`symtele.study.summaries.generalisation_table`,
:func:`symtele.study.summaries.sam_table` and :func:`symtele.study.summaries.correlation_table`.

The network is the settings' ``model`` (:data:`MODELS`): :func:`symtele.models.leaky_mlp` (bias-free, LeakyReLU
0.1) on the MNIST data sets, :func:`symtele.models.digits_cnn` or :func:`symtele.models.digits_resnet` on
scikit-learn's digits; the group the positive rescalings of the hidden units or channels (for the ResNet, of
its BatchNorms' affine outputs, shared along the residual stream), the teleport
:func:`symtele.teleports.generalisation.teleport_objective`, in eval mode (BatchNorm's running statistics, as the
records' losses are measured; they never change).
Every arm of a (data set, seed) starts from the same initial weights and takes the same minibatches: the
teleported and SAM arms continue copies of the run without a teleport made at the teleport epoch (plain SGD has
no state to carry). Compute is counted in per-example loss gradients: a minibatch step's examples once (SAM's
twice), a teleport's gradient evaluations times its batch.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace

import torch
from torch.nn import functional as F

from ..models import digits_cnn, digits_resnet, leaky_mlp
from ..sam import SAM
from ..teleports.generalisation import make_objective, module_loss, teleport_objective
from ..teleports.rescale import symmetry_of
from .ensemble import sgd_together
from .experiments import _checked, _MinibatchRun, _on_training_set, minibatch_order
from .settings import GENERALISATION, GeneralisationSettings
from .summaries import MEASURES

__all__ = ["MODELS", "correlation_nets", "data", "generalisation_runs", "matched_sampling", "sam_runs", "teleport_runs"]


def data(name: str, seed: int):
    """The data set ``name`` split with ``seed`` (:mod:`symtele.tasks_generalisation`, :mod:`symtele.tasks`).

    Args:
        name: ``mnist1d``, ``mnist-5k`` or ``digits`` (scikit-learn's digits as 1×8×8 images).
        seed: the seed of the split.

    Returns:
        A :class:`~symtele.tasks.DigitsData` (``x_test``/``y_test`` are the validation part).

    Raises:
        ValueError: another name.
    """
    from ..tasks import DigitsData, digits_data
    from ..tasks_generalisation import mnist1d, mnist_5k

    def digits(seed):
        flat = digits_data(seed)
        return DigitsData(flat.x_train.view(-1, 1, 8, 8), flat.y_train, flat.x_test.view(-1, 1, 8, 8), flat.y_test)

    loaders = {"mnist1d": mnist1d, "mnist-5k": mnist_5k, "digits": digits}
    if name not in loaders:
        raise ValueError(f"Invalid data set: {name!r} (choose {', '.join(loaders)})")
    return loaders[name](seed)


#: the networks by the name the settings' ``model`` gives: ``(inputs, hidden) → network``, Zhao et al.'s MLP on the
#: MNIST data sets, the report's digits CNN and ResNet on the digits (as 1×8×8 images)
MODELS = {
    "leaky-mlp": lambda inputs, hidden: leaky_mlp((inputs, *hidden, 10)),
    "digits-cnn": lambda inputs, hidden: digits_cnn(),
    "digits-resnet": lambda inputs, hidden: digits_resnet(),
}


def _network(model: str, inputs: int, hidden: tuple, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return MODELS[model](inputs, hidden)


@contextlib.contextmanager
def _evaluating(model: torch.nn.Module):
    """``model`` in eval mode inside, train mode after.

    A teleport's losses then use the running statistics, as the records' losses do (and never change them:
    :func:`~symtele.teleports.generalisation.module_loss`).
    """
    model.eval()
    try:
        yield model
    finally:
        model.train()


def _objective_options(s: GeneralisationSettings) -> dict:
    """The objectives' sampling, as :func:`~symtele.teleports.generalisation.make_objective` takes it."""
    return dict(directions=s.directions, t_range=tuple(s.t_range), t_count=s.t_count, samples=s.samples)


@dataclass
class _Start:
    """A data set and seed's run without a teleport, stopped at the teleport epoch, and what its arms share."""

    name: str
    seed: int
    s: GeneralisationSettings
    split: object
    batches: list
    per_epoch: int
    at: int
    plain: _MinibatchRun

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``size`` examples of the minibatch order after the teleport epoch."""
        order = torch.cat(self.batches[self.at : self.at + -(-size // self.s.batch_size)])[:size]
        return self.split.x_train[order], self.split.y_train[order]

    def record(self, experiment: str, arm: str, method: str, run: _MinibatchRun, teleport, examples: int) -> dict:
        """The record of one arm, ``run`` finished."""
        s = self.s
        return {
            "experiment": experiment,
            "problem": self.name,
            "model": s.model,
            "method": method,
            "arm": arm,
            "seed": self.seed,
            "lr": s.lrs[self.name],
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
            "gradient_examples": examples,
        }


def _start_key(name: str, seed: int, s: GeneralisationSettings) -> tuple:
    """Everything a run up to the teleport epoch depends on: the data set, seed, network, step and minibatches."""
    return (name, seed, s.model, tuple(s.hidden), s.lrs[name], s.batch_size, s.epochs, s.teleport_epoch)


def _start(name: str, seed: int, s: GeneralisationSettings, starts: dict | None = None) -> _Start:
    """The run without a teleport of ``name`` and ``seed`` up to the teleport epoch: taken from ``starts``, or trained.

    ``starts`` holds copies of such runs by :func:`_start_key` (:func:`generalisation_runs` fills it); the one
    taken is removed from it.
    """
    if name not in s.lrs:
        raise ValueError(f"Invalid data set: {name!r} (the settings' lrs name {', '.join(s.lrs)})")
    kept = None if starts is None else starts.pop(_start_key(name, seed, s), None)
    if kept is not None:  # the same computation, made by generalisation_runs
        return replace(kept, s=s)
    split = data(name, seed)
    x, y = split.x_train, split.y_train
    batches = minibatch_order(len(y), s.batch_size, s.epochs, seed)
    per_epoch = -(-len(y) // s.batch_size)
    at = s.teleport_epoch * per_epoch
    model = _network(s.model, x.shape[1], s.hidden, seed)
    plain = _MinibatchRun(
        model, torch.optim.SGD(model.parameters(), lr=s.lrs[name]), x, y, (split.x_test, split.y_test)
    )
    plain.advance(batches, 0, at, per_epoch)
    return _Start(name, seed, s, split, batches, per_epoch, at, plain)


#: the seed of a teleport's held-out sample of its objective is the run's seed plus this (its own is the run's seed)
HELD_OUT = 10_000


def _measured(model, objective: str, batch, options: dict, seed: int, log_scales) -> tuple[float, float]:
    """``objective`` sampled as ``options`` say with ``seed``, at ``model``'s weights and moved by ``log_scales``."""
    with _evaluating(model), torch.no_grad():
        measure = make_objective(
            objective,
            module_loss(model, F.cross_entropy, *batch),
            {n: p.detach() for n, p in model.named_parameters()},
            symmetry_of(model, batch[0]),
            seed=seed,
            **options,
        )
        moved = torch.tensor(log_scales, dtype=torch.float64)
        return float(measure.value(torch.zeros_like(moved))), float(measure.value(moved))


def _teleported(start: _Start, objective: str, direction: str, batch, **sampling) -> tuple[_MinibatchRun, dict]:
    """A copy of the run at the teleport epoch, teleported along the positive rescalings; its record as a dict.

    The record also has ``held_out_before`` and ``held_out_after``: the objective before and after on an
    independent sample of its directions (seed ``HELD_OUT`` + the run's), as many as the teleport's own, on the
    same batch (measured, not counted as compute). The teleport's own sample is what it moved; the held-out one
    tells how much of that move is the objective's and how much fits the sample.
    """
    s = start.s
    options = {**_objective_options(s), **sampling}
    run = start.plain.copy()
    with _evaluating(run.model):
        params, record = teleport_objective(
            run.model,
            F.cross_entropy,
            batch,
            objective,
            direction,
            steps=s.teleport_steps,
            max_log_step=s.max_log_step,
            seed=start.seed,
            **options,
        )
    held_out = _measured(run.model, objective, batch, options, HELD_OUT + start.seed, record.log_scales)
    with torch.no_grad():
        for n, p in run.model.named_parameters():
            p.copy_(params[n])
    return run, {**record.to_dict(), "held_out_before": held_out[0], "held_out_after": held_out[1]}


def _finish(start: _Start, run: _MinibatchRun, teleport) -> None:
    """Train ``run`` to the end; the clock of every epoch after the teleport includes the teleport's."""
    run.advance(start.batches, start.at, len(start.batches), start.per_epoch)
    if teleport is not None:
        e = start.s.teleport_epoch
        run.times[e + 1 :] = [t + teleport["cost_s"] for t in run.times[e + 1 :]]


def _sgd_examples(start: _Start) -> int:
    """The examples of every minibatch of the run: one gradient each."""
    return sum(len(b) for b in start.batches)


def _teleport_arms(start: _Start) -> list[dict]:
    """The run without a teleport and one per arm of the settings, each finished (the plain run last)."""
    s = start.s
    batch = start.batch(s.teleport_batch)
    runs = []
    for arm in s.arms:
        objective, direction = arm.split("-")
        runs.append((arm, *_teleported(start, objective, direction, batch)))
    records = []
    for arm, run, teleport in [("none", start.plain, None), *runs]:
        _finish(start, run, teleport)
        examples = _sgd_examples(start) + (0 if teleport is None else teleport["gradient_evaluations"] * len(batch[1]))
        records.append(start.record("teleport", arm, "sgd" if arm == "none" else f"sgd+{arm}", run, teleport, examples))
    return records


def teleport_runs(name: str, seed: int, settings: GeneralisationSettings = GENERALISATION) -> list[dict]:
    """SGD on ``name`` without a teleport, and one run per arm of ``settings.arms`` teleported once.

    At the end of epoch ``settings.teleport_epoch`` the parameters are moved along the positive rescalings to
    decrease or increase the sharpness φ or the curvature ψ (``teleport_objective``, on the first
    ``teleport_batch`` examples of the next epoch's minibatch order), then SGD goes on with the same step and
    minibatches. The network is ``settings.model`` (:data:`MODELS`).

    Args:
        name: ``mnist1d``, ``mnist-5k`` or ``digits`` (a key of ``settings.lrs``).
        seed: the data split, the initial weights (``torch.manual_seed(seed)``) and the minibatch order.
        settings: the sizes and the teleport.

    Returns:
        One record per arm (``experiment`` ``"teleport"``), the run without a teleport first (``arm``
        ``"none"``, ``method`` ``"sgd"``; the others' ``method`` is ``"sgd+<arm>"``). ``model`` names the
        network; ``loss``, ``test_loss`` and ``test_accuracy`` are the whole training and validation sets' at
        the start and after every epoch; ``grad_norm_sq`` the first minibatch's ``‖∇L‖²``, then each epoch's
        mean over its minibatches; ``time_s`` the run's clock after every epoch (the teleport's time included);
        ``teleports`` the :class:`~symtele.teleports.generalisation.ObjectiveRecord` as a dict (none without a
        teleport), with ``held_out_before`` and ``held_out_after``, the objective on an independent sample
        (measured, not counted as compute); ``final_*`` the last epoch's values; ``gradient_examples`` the run's
        compute, counted in per-example loss gradients (each minibatch example once, plus the teleport's
        gradient evaluations times its batch).

    Raises:
        TypeError: ``settings`` that is not a :class:`~symtele.study.settings.GeneralisationSettings`.
        ValueError: a ``name`` that ``settings.lrs`` does not name.
    """
    s = _checked(settings, GeneralisationSettings)
    return _teleport_arms(_start(name, seed, s))


def matched_sampling(budget: int, settings: GeneralisationSettings) -> dict:
    """The sharpness sampling of a teleport that spends at most ``budget`` per-example gradients.

    Every evaluation of φ and its slope costs ``K·T`` gradients on the teleport's batch of ``b`` examples, and a
    teleport evaluates it at most ``teleport_steps + 1`` times. The settings' ``t_count`` ``T`` and steps are
    kept; ``K`` is the most directions (up to the settings' ``directions``) that fit on ``teleport_batch``
    examples, and when not even one does, one direction on the most examples that fit.

    Args:
        budget: per-example gradients the teleport may spend.
        settings: the chapter's settings.

    Returns:
        ``{"directions": K, "teleport_batch": b}``.

    Raises:
        ValueError: a budget that does not pay for one direction on one example.
    """
    s = settings
    per_direction = (s.teleport_steps + 1) * s.t_count
    directions = min(s.directions, budget // (per_direction * s.teleport_batch))
    if directions >= 1:
        return {"directions": int(directions), "teleport_batch": s.teleport_batch}
    examples = budget // per_direction
    if examples < 1:
        raise ValueError(f"Invalid budget: {budget} (below one direction on one example, {per_direction} gradients)")
    return {"directions": 1, "teleport_batch": int(examples)}


def _sam_arms(start: _Start) -> list[dict]:
    """SAM from the teleport epoch, and a teleport to lower φ that spends its extra gradients (copies of the run)."""
    s = start.s
    after = sum(len(b) for b in start.batches[start.at :])  # SAM's second gradient on every example after
    sampling = matched_sampling(after, s)
    batch = start.batch(sampling["teleport_batch"])
    flat, teleport = _teleported(start, "sharpness", "decrease", batch, directions=sampling["directions"])
    # φ as the chapter measures it (its directions, on its batch) before and after: not counted as compute
    chapter = start.batch(s.teleport_batch)
    options = _objective_options(s)
    before_after = _measured(start.plain.model, "sharpness", chapter, options, start.seed, teleport["log_scales"])
    teleport["sharpness_before"], teleport["sharpness_after"] = before_after
    sam = start.plain.copy()
    sam.optimizer = SAM(torch.optim.SGD(sam.model.parameters(), lr=s.lrs[start.name]), rho=s.sam_rho)
    records = []
    for arm, run, record, extra in (
        ("sharpness-decrease", flat, teleport, teleport["gradient_evaluations"] * len(batch[1])),
        ("sam", sam, None, after),
    ):
        _finish(start, run, record)
        method = "sgd+sam" if arm == "sam" else "sgd+sharpness-decrease"
        records.append(
            {**start.record("sam", arm, method, run, record, _sgd_examples(start) + extra), "rho": s.sam_rho}
        )
    return records


def sam_runs(name: str, seed: int, settings: GeneralisationSettings = GENERALISATION) -> list[dict]:
    """Two ways to spend the same extra compute on flatness, from the run's weights at the teleport epoch.

    After epoch ``teleport_epoch`` of SGD (the run of :func:`teleport_runs`): SAM (:class:`symtele.sam.SAM`
    around the same SGD step, radius ``settings.sam_rho``) for the remaining epochs, which costs one more
    gradient per minibatch example; or one teleport to lower the sharpness φ whose sampling spends at most
    as many gradients (:func:`matched_sampling`), then SGD. Both take the same minibatches as the run without
    a teleport.

    Args:
        name: a data set of ``settings.lrs``.
        seed: the data split, the initial weights and the minibatch order.
        settings: the sizes, ``sam_rho`` and the teleport.

    Returns:
        Two records (``experiment`` ``"sam"``), ``arm`` ``"sharpness-decrease"`` then ``"sam"``, with the fields of
        :func:`teleport_runs`' records and ``rho``; the teleport's record also has ``sharpness_before`` and
        ``sharpness_after``, φ at the chapter's sampling before and after it (measured, not counted as
        compute). The run without a teleport to compare with is :func:`teleport_runs`' ``"none"`` arm.

    Raises:
        TypeError: ``settings`` that is not a :class:`~symtele.study.settings.GeneralisationSettings`.
        ValueError: a ``name`` that ``settings.lrs`` does not name.
    """
    s = _checked(settings, GeneralisationSettings)
    return _sam_arms(_start(name, seed, s))


def generalisation_runs(settings: GeneralisationSettings = GENERALISATION, *, starts: dict | None = None) -> list[dict]:
    """Every data set × seed of ``settings``: :func:`teleport_runs`, and on ``sam_data`` :func:`sam_runs` too.

    The SAM comparison continues the same run at the teleport epoch (computed once).

    Args:
        settings: the notebook's settings (:meth:`~symtele.study.settings.GeneralisationSettings.for_network`
            for the digits CNN's or ResNet's).
        starts: a dict that receives, with GL arms (the MLP's ``gl_arms``), a copy of the run at the teleport
            epoch of each of the first ``gl_seed_count`` seeds; pass the same dict to
            :func:`~symtele.study.generalisation_gl.generalisation_gl_runs`, which continues those runs instead of
            training them again (the same computation). ``None``: nothing is kept.

    Returns:
        The records of every run.

    Raises:
        TypeError: ``settings`` that is not a :class:`~symtele.study.settings.GeneralisationSettings`.
    """
    s = _checked(settings, GeneralisationSettings)
    gl_seeds = s.seeds[: s.gl_seed_count] if starts is not None and s.gl_arms and s.model == "leaky-mlp" else ()
    records = []
    for name in s.lrs:
        for seed in s.seeds:
            start = _start(name, seed, s)
            if seed in gl_seeds:  # the GL runs (generalisation_gl_runs) continue this run too
                starts[_start_key(name, seed, s)] = replace(start, plain=start.plain.copy())
            records += _sam_arms(start) if name == s.sam_data else []
            records += _teleport_arms(start)
    return records


def correlation_nets(settings: GeneralisationSettings = GENERALISATION) -> list[dict]:
    """``settings.nets`` MLPs on ``settings.net_data``, each trained by SGD, then measured once.

    Net ``i`` has initial weights and minibatch order from seed ``i`` and the step ``net_lrs[i % len(net_lrs)]``;
    all share one split (seed 0) and train ``net_epochs`` epochs of plain SGD, all at once
    (:func:`~symtele.study.ensemble.sgd_together`: the same steps as one at a time, up to rounding). At the end:
    the training and validation losses (whole sets), the validation accuracy, and φ, adaptive φ and ψ (the
    settings' sampling, seed 0 for every net) with φ measured on the first ``teleport_batch`` training examples.

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
    lrs = [s.net_lrs[i % len(s.net_lrs)] for i in range(s.nets)]
    models = [_network("leaky-mlp", x.shape[1], s.hidden, i) for i in range(s.nets)]
    sgd_together(models, lrs, x, y, [minibatch_order(len(y), s.batch_size, s.net_epochs, i) for i in range(s.nets)])
    records = []
    for i, (model, lr) in enumerate(zip(models, lrs)):
        params = {n: p.detach() for n, p in model.named_parameters()}
        symmetry = symmetry_of(model, batch[0])
        loss_of = module_loss(model, F.cross_entropy, *batch)
        zero = torch.zeros(symmetry.n_scales, dtype=torch.float64)
        record = {"experiment": "correlation", "problem": s.net_data, "net": i, "seed": i, "lr": lr}
        record["epochs"] = s.net_epochs
        record["loss"] = _on_training_set(model, x, y)[0]
        record["test_loss"], record["test_accuracy"] = _on_training_set(model, split.x_test, split.y_test)
        with torch.no_grad():
            for measure in MEASURES:
                objective = make_objective(measure, loss_of, params, symmetry, seed=0, **_objective_options(s))
                record[measure] = float(objective.value(zero))
        records.append(record)
    return records
