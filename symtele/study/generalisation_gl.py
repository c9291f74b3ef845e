"""Zhao et al. (2024)'s own group in their Fig. 4 protocol: the data-dependent GL(h) action beside the rescalings.

* :func:`gl_teleport_runs`     — one data set and seed: one run per arm of ``gl_arms``, teleported by the GL(h)
  action (:func:`symtele.teleports.data_gl.data_gl_teleport`) where :func:`~symtele.study.generalisation.teleport_runs`
  teleports along the positive rescalings.
* :func:`generalisation_gl_runs` — every data set of the settings × the first ``gl_seed_count`` seeds.

The runs are those of :mod:`symtele.study.generalisation`: the same split, initial weights and minibatches, the
run without a teleport stopped at the teleport epoch and copied, then trained on. Only the teleport differs: the
GL(h) action on hidden layer ``gl_layer`` of width ``h`` keeps the outputs only on a batch of exactly ``h``
examples, so it acts on the first ``h`` examples of the chapter's teleport batch; the rest of that batch is its
held-out training data, and the validation set is measured right after the teleport too. The records reduce to
the chapter's table of both groups side by side with :func:`symtele.study.summaries.gl_table`.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from ..teleports.data_gl import data_gl_teleport, hidden_layers
from ..teleports.generalisation import make_objective, module_loss
from ..teleports.rescale import symmetry_of
from .experiments import _checked
from .generalisation import _finish, _objective_options, _sgd_examples, _Start, _start
from .settings import GENERALISATION, GeneralisationSettings
from .summaries import GL_EXPERIMENT as EXPERIMENT

__all__ = ["generalisation_gl_runs", "gl_teleport_runs"]


def _gl_arms(start: _Start) -> list[dict]:
    """One run per arm of ``gl_arms``: a copy of the run at the teleport epoch, GL-teleported, then trained on."""
    s = start.s
    model = start.plain.model
    width = model[hidden_layers(model)[s.gl_layer]].out_features
    chapter = start.batch(s.teleport_batch)
    if width >= len(chapter[1]):
        raise ValueError(
            f"Invalid teleport_batch: {s.teleport_batch} (the GL arms act on the first {width} examples and hold out "
            "the rest: it needs more)"
        )
    batch, held_out = (chapter[0][:width], chapter[1][:width]), (chapter[0][width:], chapter[1][width:])
    validation = (start.split.x_test, start.split.y_test)
    params = {n: p.detach() for n, p in model.named_parameters()}
    options = _objective_options(s)
    records = []
    for arm in s.gl_arms:
        objective, direction = arm.split("-")
        run = start.plain.copy()
        moved, record = data_gl_teleport(
            run.model,
            F.cross_entropy,
            batch,
            objective,
            direction,
            layer=s.gl_layer,
            steps=s.gl_steps,
            max_step=s.gl_max_step,
            seed=start.seed,
            held_out=held_out,
            **options,
        )
        teleport = record.to_dict()
        # the objective as the rescalings' teleport measures it: on the chapter's whole teleport batch
        measure = make_objective(
            objective,
            module_loss(model, F.cross_entropy, *chapter),
            params,
            symmetry_of(model, chapter[0]),
            seed=start.seed,
            **options,
        )
        with torch.no_grad():
            teleport["chapter_objective_before"] = float(measure.at(params))
            teleport["chapter_objective_after"] = float(measure.at(moved))
            validation_loss = module_loss(model, F.cross_entropy, *validation)
            teleport["validation_loss_before"] = float(validation_loss(params))
            teleport["validation_loss_after"] = float(validation_loss(moved))
            for n, p in run.model.named_parameters():
                p.copy_(moved[n])
        _finish(start, run, teleport)
        examples = _sgd_examples(start) + teleport["gradient_evaluations"] * width
        record = start.record(EXPERIMENT, arm, f"sgd+gl-{arm}", run, teleport, examples)
        records.append({**record, "group": teleport["group"]})
    return records


def gl_teleport_runs(
    name: str, seed: int, settings: GeneralisationSettings = GENERALISATION, *, starts: dict | None = None
) -> list[dict]:
    """SGD on ``name`` teleported once by the data-dependent GL(h) action, one run per arm of ``settings.gl_arms``.

    At the end of epoch ``settings.teleport_epoch`` of the run :func:`~symtele.study.generalisation.teleport_runs`
    makes (same split, weights and minibatches), ``g = I + T`` acts on hidden layer ``gl_layer`` (width ``h``)
    given the first ``h`` examples of the teleport batch, ``gl_steps`` steps of ``‖ΔT‖_F ≤ gl_max_step`` moving
    φ (on those ``h`` examples) or ψ up or down; then SGD goes on.

    Args:
        name: ``mnist1d`` or ``mnist-5k`` (a key of ``settings.lrs`` whose network is the MLP).
        seed: the data split, the initial weights and the minibatch order.
        settings: the sizes and the teleport.
        starts: runs at the teleport epoch that :func:`~symtele.study.generalisation.generalisation_runs` kept;
            this run's is taken from it (removed), or trained here when it is not there.

    Returns:
        One record per arm (``experiment`` ``"teleport-gl"``, ``group`` ``"gl-data"``, ``method``
        ``"sgd+gl-<arm>"``) with the fields of :func:`~symtele.study.generalisation.teleport_runs`' records; the
        teleport's is a :class:`~symtele.teleports.data_gl.DataGLRecord` as a dict (its held-out batch the rest
        of the teleport batch) with ``chapter_objective_before``/``_after`` (the objective on the whole teleport
        batch, with the rescalings' teleport's sampling) and ``validation_loss_before``/``_after`` (the whole
        validation set, right before and after the teleport).

    Raises:
        TypeError: ``settings`` that is not a :class:`~symtele.study.settings.GeneralisationSettings`.
        ValueError: a ``name`` that ``settings.lrs`` does not name, settings whose ``model`` is not the MLP, or a
            teleport batch no larger than the layer's width.
    """
    s = _checked(settings, GeneralisationSettings)
    if s.model != "leaky-mlp":
        raise ValueError(
            f"Invalid settings.model: {s.model!r} (the GL(h) action is for the MLP of mnist1d and mnist-5k)"
        )
    return _gl_arms(_start(name, seed, s, starts))


def generalisation_gl_runs(
    settings: GeneralisationSettings = GENERALISATION, *, starts: dict | None = None
) -> list[dict]:
    """:func:`gl_teleport_runs` for every data set of ``lrs`` × the first ``gl_seed_count`` of ``seeds``.

    Args:
        settings: the notebook's settings.
        starts: the dict given to :func:`~symtele.study.generalisation.generalisation_runs` with the same
            settings: the runs it kept are continued, not trained again (each is removed as it is taken).

    Returns:
        The records of every run.

    Raises:
        TypeError: ``settings`` that is not a :class:`~symtele.study.settings.GeneralisationSettings`.
    """
    s = _checked(settings, GeneralisationSettings)
    if not s.gl_arms or s.model != "leaky-mlp":
        return []
    seeds = s.seeds[: s.gl_seed_count]
    return [r for name in s.lrs for seed in seeds for r in gl_teleport_runs(name, seed, s, starts=starts)]
