"""A small GPT on Shakespeare, trained with and without ``symtele.Teleporter``; two teleports compared (notebook 11).

* :func:`transformer_runs`    — one optimiser and seed: the run without teleports, then one per (state, accept).
* :func:`teleport_comparison` — the exact symmetry's teleport and the null-space projection teleport of Wu et al.
  (2025) on the same model and minibatch: their cost, their gain in ``‖∇L‖²``, the loss they change off the batch.
* :func:`transformer_study`   — every optimiser × seed of the settings, and the comparisons.

Their records reduce to the report's tables with :func:`symtele.study.summaries.transformer_table` and
:func:`symtele.study.summaries.comparison_table`.

The model is :class:`~symtele.models_gpt.GPT` (ReLU MLPs, pre-LayerNorm blocks), the data the character-level
Shakespeare corpus of :mod:`symtele.text`, split by position (its last ``val_fraction`` held out). A run's losses
are measured on fixed batches of windows, the same for every run of the build (:data:`EVAL_SEED`): the training
loss on ``eval_batches`` batches of the training split, the validation loss on as many of the held-out split.

Every arm of an (optimiser, seed) starts from the same initial weights (``torch.manual_seed(seed)``) and takes
the same minibatches. The arms that accept every teleport continue a copy of the run without teleports made
before the step just before the first teleport (everything before it is the same computation). The look-ahead's
arms *follow* the run without teleports: a declined teleport leaves a run bit for bit as it was (the
Teleporter guarantees it), so each of their teleports is asked on the run without teleports itself, and only
from the first one applied does the arm go on, on a copy, alone (the run without teleports goes on from a copy of
its state before the ask). Such an arm's clock is the run without teleports' plus the time of the teleports it
asked. A run's clock counts its optimiser steps and teleports, not the loss measurements.
"""

from __future__ import annotations

import copy
import math
import time

import torch

from ..models_gpt import GPT, GPTConfig, next_token_loss
from ..objective import grad_norm_sq
from ..teleporter import Teleporter, teleport_model
from ..teleports.null_space import held_out_loss_change, null_space_teleport
from ..teleports.rescale import symmetry_of
from ..text import BatchSampler, CharCorpus, shakespeare_corpus
from .experiments import _checked
from .settings import TRANSFORMERS, TransformerSettings

__all__ = [
    "EVAL_SEED",
    "PROBLEM",
    "corpus",
    "method_name",
    "network",
    "teleport_comparison",
    "transformer_runs",
    "transformer_study",
]

#: the records' ``problem``
PROBLEM = "shakespeare-gpt"
#: the seed of the fixed batches every loss is measured on (training and validation), the same for every run
EVAL_SEED = 10_000
#: the optimisers by name: AdamW (torch's default weight decay) and SGD with momentum 0.9
OPTIMIZERS = {
    "adamw": lambda params, lr: torch.optim.AdamW(params, lr=lr),
    "momentum": lambda params, lr: torch.optim.SGD(params, lr=lr, momentum=0.9),
}


def method_name(optimizer: str, state: str | None = None, accept: str | None = None) -> str:
    """A run's ``method``: the optimiser's name, and for a teleported run ``+<state>-<accept>``.

    Args:
        optimizer: ``adamw`` or ``momentum``.
        state: the Teleporter's ``state``, or ``None`` for the run without teleports.
        accept: the Teleporter's ``accept``.

    Returns:
        ``adamw``, ``adamw+transport-lookahead``, …
    """
    return optimizer if state is None else f"{optimizer}+{state}-{accept}"


def corpus(settings: TransformerSettings = TRANSFORMERS) -> CharCorpus:
    """The Shakespeare corpus of ``settings``: its first ``plays`` texts (0: all), split by position.

    Args:
        settings: the chapter's settings.

    Returns:
        The :class:`~symtele.text.CharCorpus`.

    Raises:
        TypeError: ``settings`` that is not a :class:`~symtele.study.settings.TransformerSettings`.
        ModuleNotFoundError: the ``shakespeare`` package is not installed.
    """
    s = _checked(settings, TransformerSettings)
    return shakespeare_corpus(val_fraction=s.val_fraction, plays=s.plays or None)


def network(vocab_size: int, settings: TransformerSettings = TRANSFORMERS) -> GPT:
    """A fresh :class:`~symtele.models_gpt.GPT` of ``settings``' sizes, initialised from torch's global generator.

    Args:
        vocab_size: the corpus's characters.
        settings: the chapter's settings (``context``, ``n_layer``, ``n_head``, ``d_model``).

    Returns:
        The model (ReLU MLPs, biases, no weight tying: :class:`~symtele.models_gpt.GPTConfig`'s defaults).
    """
    s = _checked(settings, TransformerSettings)
    config = GPTConfig(vocab_size=vocab_size, context=s.context, n_layer=s.n_layer, n_head=s.n_head, d_model=s.d_model)
    return GPT(config)


def _fixed_batches(tokens: torch.Tensor, s: TransformerSettings, count: int, seed: int) -> list[tuple]:
    sampler = BatchSampler(tokens, s.batch_size, s.context, seed=seed)
    return [sampler.sample() for _ in range(count)]


def _mean_loss(model, batches) -> float:
    with torch.no_grad():
        return sum(float(next_token_loss(model(x), y)) for x, y in batches) / len(batches)


def _finite(model) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


class _TokenRun:
    """A GPT, its optimiser and the log of one run, continued step by step and copied at any step.

    The log holds, at step 0 and after every ``eval_every`` steps (``steps``): the training and validation loss
    on the fixed batches (``losses``, ``val_losses``), the mean minibatch ``‖∇L‖²`` since the last entry (the
    first minibatch's at step 0: ``grads``) and the clock (``times``). A run whose minibatch loss or parameters
    stop being finite stops there (``diverged_at``); its later entries are NaN.
    """

    def __init__(self, model, optimizer, batches, train_eval, val_eval, eval_every: int):
        self.model, self.optimizer, self.batches = model, optimizer, batches
        self.params = list(model.parameters())  # the same tensors throughout: teleports rescale them in place
        self.train_eval, self.val_eval, self.eval_every = train_eval, val_eval, eval_every
        self.steps, self.times, self.grads, self.interval = [0], [0.0], [], []
        self.losses, self.val_losses = [_mean_loss(model, train_eval)], [_mean_loss(model, val_eval)]
        self.clock, self.diverged_at = 0.0, None
        self.keep, self.kept = set(), {}  # the steps whose model state_dict to keep (before the step), and those kept

    def shared(self) -> dict:
        """The deepcopy memo that keeps the data shared between copies."""
        tensors = [t for pair in (*self.batches, *self.train_eval, *self.val_eval) for t in pair]
        return {id(t): t for t in (*tensors, self.batches, self.train_eval, self.val_eval)}

    def copy(self) -> _TokenRun:
        """A copy of the model, optimiser and log (the batches are shared, not copied; it keeps no states)."""
        twin = copy.deepcopy(self, memo=self.shared())
        twin.keep, twin.kept = set(), {}
        return twin

    def snapshot(self) -> tuple:
        """The model's and the optimiser's state, copied (:meth:`restore` puts them back)."""
        return copy.deepcopy((self.model.state_dict(), self.optimizer.state_dict()))

    def restore(self, snapshot: tuple) -> None:
        """Put back a :meth:`snapshot`: the same numbers, in the same parameter tensors."""
        self.model.load_state_dict(snapshot[0])
        self.optimizer.load_state_dict(snapshot[1])

    def advance(self, start: int, stop: int, teleporter=None, *, asked: int | None = None) -> None:
        """Take the steps ``start … stop − 1``, each teleporting first if ``teleporter`` says so.

        Step ``asked`` does not ask: its teleport was asked already.
        """
        model, opt = self.model, self.optimizer
        for step in range(start, stop):
            if self.diverged_at is not None:
                return
            if step in self.keep:
                self.kept[step] = copy.deepcopy(model.state_dict())
            x, y = self.batches[step]
            began = time.perf_counter()
            if teleporter is not None and step != asked:
                if teleporter.schedule.due(step) and not _finite(model):
                    self.diverged_at = step
                    return
                teleporter.maybe(step, x, y)
            opt.zero_grad()
            loss = next_token_loss(model(x), y)
            loss.backward()
            opt.step()
            self.clock += time.perf_counter() - began
            if not math.isfinite(float(loss.detach())):
                self.diverged_at = step
                return
            self.interval.append(float(grad_norm_sq([p.grad for p in self.params])))
            if (step + 1) % self.eval_every == 0:
                self._log(step + 1)

    def _log(self, step: int) -> None:
        if not self.grads:
            self.grads.append(self.interval[0])
        self.steps.append(step)
        self.times.append(self.clock)
        self.grads.append(sum(self.interval) / len(self.interval))
        self.losses.append(_mean_loss(self.model, self.train_eval))
        self.val_losses.append(_mean_loss(self.model, self.val_eval))
        self.interval = []

    def curves(self, total: int) -> dict:
        """The log as a record's fields, every curve one entry per logged step of a run of ``total`` steps."""
        points = [0, *range(self.eval_every, total + 1, self.eval_every)]
        missing = len(points) - len(self.steps)
        grads = self.grads or ([self.interval[0]] if self.interval else [math.nan])
        nan = [math.nan] * missing
        return {
            "steps": points,
            "loss": self.losses + nan,
            "val_loss": self.val_losses + nan,
            "grad_norm_sq": grads + [math.nan] * (len(points) - len(grads)),
            "time_s": self.times + nan,
            "diverged_at": self.diverged_at,
        }


class _Follower:
    """A look-ahead arm that follows the run without teleports until its first applied teleport (module docstring).

    ``teleporter`` is made on the run without teleports and asked on it; when it applies a teleport, the arm goes
    on alone from a copy of the run and of the teleporter, and the run without teleports goes back to its state
    before the ask.
    """

    def __init__(self, state: str, teleporter: Teleporter):
        self.state, self.teleporter = state, teleporter
        self.run, self.own = None, None
        self.asked_s: list[tuple[int, float]] = []  # (step, seconds) of each teleport asked while following

    def ask(self, plain: _TokenRun, step: int, total: int) -> None:
        """Before ``plain`` takes ``step``: show the teleporter the minibatch, or ask its teleport when due."""
        if self.run is not None or plain.diverged_at is not None:
            return
        x, y = plain.batches[step]
        if not self.teleporter.schedule.due(step):
            self.teleporter.maybe(step, x, y)
            return
        if not _finite(plain.model):
            return  # plain stops at this step too
        before = plain.snapshot()
        began = time.perf_counter()
        record = self.teleporter.maybe(step, x, y)
        self.asked_s.append((step, time.perf_counter() - began))
        if not record.t:
            return
        run, own = copy.deepcopy((plain, self.teleporter), memo=plain.shared())
        run.keep, run.kept = set(), {}
        plain.restore(before)
        symmetry_of(run.model, x)  # the discovery the arm's own run made at its first teleport (timed in the ask)
        self._add_asked(run)
        run.advance(step, total, own, asked=step)
        self.run, self.own = run, own

    def _add_asked(self, run: _TokenRun) -> None:
        """The asked teleports' seconds added to the clock, and to every time logged after them."""
        for i, logged in enumerate(run.steps):
            run.times[i] += sum(seconds for step, seconds in self.asked_s if step < logged)
        run.clock += sum(seconds for _, seconds in self.asked_s)

    def finished(self, plain: _TokenRun) -> tuple[_TokenRun, list]:
        """``(run, records)`` of the arm, once ``plain`` has finished."""
        if self.run is None:
            run = copy.copy(plain)
            run.times = list(plain.times)
            self._add_asked(run)
            return run, self.teleporter.records
        return self.run, self.own.records


def _seed_data(seed: int, s: TransformerSettings, text: CharCorpus) -> tuple[list, list, list]:
    """The seed's minibatches, and the fixed training and validation batches the losses are measured on."""
    batches = _fixed_batches(text.train, s, s.steps, seed)
    train_eval = _fixed_batches(text.train, s, s.eval_batches, EVAL_SEED)
    val_eval = _fixed_batches(text.val, s, s.eval_batches, EVAL_SEED)
    return batches, train_eval, val_eval


def transformer_runs(
    optimizer: str,
    seed: int,
    settings: TransformerSettings = TRANSFORMERS,
    text: CharCorpus | None = None,
    *,
    share: bool = True,
    checkpoints: dict | None = None,
) -> list[dict]:
    """Runs of the GPT on Shakespeare with ``optimizer``, without teleports and with them.

    One run without teleports, then one per ``state`` of ``settings.states[optimizer]`` and ``accept`` of
    ``settings.accepts`` in which ``Teleporter(model, next_token_loss, optimizer, every=settings.every,
    state=state, accept=accept)`` (every other argument at its default) is asked before every step whether to
    teleport.

    Args:
        optimizer: a key of ``settings.lrs`` (``adamw``, ``momentum``).
        seed: the initial weights (``torch.manual_seed(seed)``) and the minibatches' seed.
        settings: the sizes, steps, teleport period and arms.
        text: the corpus (by default :func:`corpus` of ``settings``).
        share: continue the teleported runs from the run without teleports (module docstring; the same numbers
            as running each from the start, which ``share=False`` does).
        checkpoints: if given, the run without teleports stores in it, by step, its model's ``state_dict``
            before every step of ``settings.compare_at`` (after that many steps).

    Returns:
        One record per arm, the run without teleports first (``state`` and ``accept`` ``None``): ``problem``,
        ``method`` (:func:`method_name`), ``seed``, ``optimizer``, ``lr``, ``state``, ``accept``, ``every``;
        ``steps`` (0 and every ``eval_every``-th step) and at those steps ``loss`` and ``val_loss`` (on the fixed
        batches), ``grad_norm_sq`` (the first minibatch's, then the mean since the last entry) and ``time_s``
        (the run's clock); ``diverged_at`` (the step a run stopped at for a loss or parameter that is not
        finite, else ``None``); ``teleports`` (the Teleporter's records; ``epoch`` is the step) and
        ``teleport_epochs``; ``final_loss``, ``final_val_loss``; ``total_steps``.

    Raises:
        TypeError: ``settings`` that is not a :class:`~symtele.study.settings.TransformerSettings`.
        ValueError: an ``optimizer`` that ``settings.lrs`` does not name.
    """
    s = _checked(settings, TransformerSettings)
    if optimizer not in s.lrs:
        raise ValueError(f"Invalid optimizer: {optimizer!r} (the settings' lrs name {', '.join(s.lrs)})")
    text = corpus(s) if text is None else text
    batches, train_eval, val_eval = _seed_data(seed, s, text)
    states = tuple(s.states.get(optimizer, ()))
    total = s.steps
    fork = min(s.every - 1, total) if share else 0

    def fresh() -> _TokenRun:
        torch.manual_seed(seed)
        model = network(text.vocab_size, s)
        opt = OPTIMIZERS[optimizer](model.parameters(), s.lrs[optimizer])
        return _TokenRun(model, opt, batches, train_eval, val_eval, s.eval_every)

    def teleporter(run: _TokenRun, state: str, accept: str) -> Teleporter:
        return Teleporter(run.model, next_token_loss, run.optimizer, every=s.every, state=state, accept=accept)

    plain = fresh()
    plain.keep = set(s.compare_at) if checkpoints is not None else set()
    plain.advance(0, fork)
    arms, followers = [], []  # arms: (state, accept, run, teleporter); followers: the look-ahead arms, shared
    for state in states:
        for accept in s.accepts:
            if share and accept == "lookahead":
                followers.append(_Follower(state, teleporter(plain, state, accept)))
            else:
                run = plain.copy() if share else fresh()
                arms.append((state, accept, run, teleporter(run, state, accept)))
    for step in range(fork, total):
        for follower in followers:
            follower.ask(plain, step, total)
        plain.advance(step, step + 1)
    if checkpoints is not None:
        checkpoints.update(plain.kept)
    records = [_record(optimizer, seed, s, None, None, plain, [])]
    by_arm = {}
    for state, accept, run, arm_teleporter in arms:
        run.advance(fork, total, arm_teleporter)
        by_arm[state, accept] = (run, arm_teleporter.records)
    for follower in followers:
        by_arm[follower.state, "lookahead"] = follower.finished(plain)
    for state in states:
        for accept in s.accepts:
            run, teleports = by_arm[state, accept]
            records.append(_record(optimizer, seed, s, state, accept, run, teleports))
    return records


def _record(optimizer, seed, s: TransformerSettings, state, accept, run: _TokenRun, teleports) -> dict:
    curves = run.curves(s.steps)
    return {
        "problem": PROBLEM,
        "method": method_name(optimizer, state, accept),
        "seed": seed,
        "optimizer": optimizer,
        "lr": s.lrs[optimizer],
        "state": state,
        "accept": accept,
        "every": None if state is None else s.every,
        **curves,
        "teleport_epochs": [r.epoch for r in teleports],
        "teleports": [r.to_dict() for r in teleports],
        "final_loss": curves["loss"][-1],
        "final_val_loss": curves["val_loss"][-1],
        "total_steps": s.steps,
    }


def _gradient_seconds(model, x, y, reps: int = 3) -> float:
    """The fastest of ``reps`` plain gradients of the model on ``(x, y)`` (a forward and a backward pass)."""
    params = list(model.parameters())
    fastest = math.inf
    for _ in range(reps):
        began = time.perf_counter()
        torch.autograd.grad(next_token_loss(model(x), y), params)
        fastest = min(fastest, time.perf_counter() - began)
    return fastest


def teleport_comparison(
    model: GPT, batch: tuple, held_out: list, settings: TransformerSettings = TRANSFORMERS, **fields
) -> list[dict]:
    """The exact symmetry's teleport and the null-space projection teleport, on the same model and minibatch.

    ``symmetry``: :func:`~symtele.teleporter.teleport_model` on a copy of ``model`` (the positive scales and the
    attention heads' GL(d) groups, the Rescale's defaults, applied as found); its discovery is made first and
    timed apart (``discovery_s``: once per model in a training run). ``nullspace``:
    :func:`~symtele.teleports.null_space.null_space_teleport` with ``settings.null_space_*`` and
    ``max_loss_change``. The loss on ``held_out`` batches is measured before and after each
    (:func:`~symtele.teleports.null_space.held_out_loss_change`); each teleport is timed whole and divided by
    the fastest of three plain gradients of the model on the batch.

    Args:
        model: the GPT at the point to teleport from (left as it is).
        batch: the teleport's minibatch ``(x, y)``.
        held_out: other batches ``[(x, y), …]``.
        settings: the null-space teleport's settings.
        **fields: further fields of both records (the seed and step of the point).

    Returns:
        Two records, ``kind: "teleport_comparison"``, ``method`` ``symmetry`` and ``nullspace``: ``loss_before``,
        ``loss_after``, ``grad_norm_sq_before``, ``grad_norm_sq_after`` (on the batch), ``gain`` (after over
        before), ``batch_change`` (relative change of the batch's loss), ``held_out`` (the losses before and after
        and their relative changes), ``max_held_out_change`` (the largest of their absolute values), the passes
        (``grad_evals``, ``hvp_evals``, ``forward_evals``), ``steps_taken``, ``stopped``; ``wall_s``
        (``teleport_s``, ``grad_s``, and for the symmetry ``discovery_s``) and ``wall_ratios`` (``grad_evals``:
        ``teleport_s / grad_s``).

    Raises:
        TypeError: ``settings`` that is not a :class:`~symtele.study.settings.TransformerSettings`.
    """
    s = _checked(settings, TransformerSettings)
    x, y = batch
    grad_s = _gradient_seconds(model, x, y)
    moved = copy.deepcopy(model)
    began = time.perf_counter()
    symmetry_of(moved, x)
    discovery_s = time.perf_counter() - began
    began = time.perf_counter()
    exact = teleport_model(moved, next_token_loss, x, y)
    exact_s = time.perf_counter() - began
    exact_params = {n: p.detach() for n, p in moved.named_parameters()}
    began = time.perf_counter()
    params, projected = null_space_teleport(
        model,
        next_token_loss,
        x,
        y,
        steps=s.null_space_steps,
        lr=s.null_space_lr,
        epsilon=s.null_space_epsilon,
        max_loss_change=s.max_loss_change,
    )
    projected_s = time.perf_counter() - began
    records = []
    for method, record, point, seconds in (
        ("symmetry", exact, exact_params, exact_s),
        ("nullspace", projected, params, projected_s),
    ):
        held = held_out_loss_change(model, next_token_loss, point, held_out)
        wall = {
            "teleport_s": seconds,
            "grad_s": grad_s,
            **({"discovery_s": discovery_s} if method == "symmetry" else {}),
        }
        records.append(
            {
                "kind": "teleport_comparison",
                "problem": PROBLEM,
                "method": method,
                **fields,
                "loss_before": record.loss_before,
                "loss_after": record.loss_after,
                "grad_norm_sq_before": record.grad_norm_sq_before,
                "grad_norm_sq_after": record.grad_norm_sq_after,
                "gain": record.grad_norm_sq_after / record.grad_norm_sq_before,
                "batch_change": (record.loss_after - record.loss_before) / abs(record.loss_before),
                "held_out": held,
                "max_held_out_change": max(abs(v) for v in held["relative_change"]),
                "grad_evals": record.grad_evals,
                "hvp_evals": record.hvp_evals or 0,
                "forward_evals": record.forward_evals or 0,
                "steps_taken": record.steps_taken,
                "stopped": record.stopped,
                "wall_s": wall,
                "wall_ratios": {"grad_evals": seconds / grad_s},
            }
        )
    return records


def transformer_study(settings: TransformerSettings = TRANSFORMERS, text: CharCorpus | None = None) -> list[dict]:
    """Every optimiser × seed of ``settings`` (:func:`transformer_runs`), and the teleport comparisons.

    The comparisons (:func:`teleport_comparison`) are made at the steps ``settings.compare_at`` of the first
    optimiser's run without teleports, per seed, each on that step's minibatch, with the fixed validation
    batches held out.

    Args:
        settings: the notebook's settings (by default ``TRANSFORMERS``, the report's).
        text: the corpus (by default :func:`corpus` of ``settings``).

    Returns:
        The records of every run, then those of every comparison (with ``seed``, ``step`` and ``optimizer``).

    Raises:
        TypeError: ``settings`` that is not a :class:`~symtele.study.settings.TransformerSettings`.
    """
    s = _checked(settings, TransformerSettings)
    text = corpus(s) if text is None else text
    records, comparisons = [], []
    for seed in s.seeds:
        for k, optimizer in enumerate(s.lrs):
            points = {} if k == 0 else None
            records += transformer_runs(optimizer, seed, s, text, checkpoints=points)
            if points is None:
                continue
            batches, _, val_eval = _seed_data(seed, s, text)
            for step, state in sorted(points.items()):
                model = network(text.vocab_size, s)
                model.load_state_dict(state)
                comparisons += teleport_comparison(
                    model, batches[step], val_eval, s, seed=seed, step=step, optimizer=optimizer
                )
    return records + comparisons
