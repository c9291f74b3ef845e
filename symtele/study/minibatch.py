"""When a teleport hurts: minibatch training without teleports and with ``symtele.Teleporter`` (notebook 09).

The Teleporter's teleports are accepted every time or only after their look-ahead.

* :func:`safety_runs`      — one network, optimiser and seed: the run without teleports, then one per ``accept``.
* :func:`minibatch_safety` — every network × optimiser × seed of the settings.

Their records reduce to the report's table with :func:`symtele.study.summaries.safety_table`.

Every arm of a (network, optimiser, seed) starts from the same initial weights and takes the same minibatches.
The arm that accepts every teleport continues a copy of the run without teleports made before the minibatch
step just before the first teleport (everything before it is the same computation; the look-ahead compares on
the minibatch given to the Teleporter one step before a teleport, so the copy sees that step too). The
look-ahead's arm *follows* the run without teleports: a declined teleport leaves the run bit for bit as it was
(the Teleporter guarantees it, and the tests check it), so each of its teleports is asked on a copy of the run
without teleports, and only from the first one applied does the arm continue on its own. Its clock is the run
without teleports' plus the time of the teleports it asked.
"""

from __future__ import annotations

import copy
import time
from functools import partial

import torch

from ..teleporter import Teleporter
from .experiments import NETWORK_OPTIMIZERS, _checked, _MinibatchRun, cosine_lr_factor, minibatch_order
from .settings import SAFETY, SafetySettings

#: the losses on the whole training and held-out sets are measured by forward passes over slices of at most this
#: many examples: the same numbers as one pass over the whole set (``_on_training_set``); the CNN's and the ResNet's
#: passes over the training set take about a fifth and a third less
EVAL_ROWS = 1024
#: a record's ``method`` is the optimiser's name with this suffix, per arm (:data:`~symtele.study.summaries.ARMS`)
ARM_SUFFIX = {"none": "", "always": "+rescale", "lookahead": "+rescale-lookahead"}
__all__ = ["ARM_SUFFIX", "EVAL_ROWS", "digits_inputs", "minibatch_order", "minibatch_safety", "network", "safety_runs"]


def network(model_name: str, hidden=(32, 32)) -> torch.nn.Module:
    """A fresh network of ``model_name``, initialised from torch's global generator.

    Args:
        model_name: ``digits-mlp``, ``digits-cnn`` or ``digits-resnet``.
        hidden: the MLP's hidden widths (``digits-mlp`` only).

    Returns:
        The network.
    """
    from ..models import digits_cnn, digits_mlp_net, digits_resnet

    if model_name == "digits-mlp":
        return digits_mlp_net(tuple(hidden))
    return {"digits-cnn": digits_cnn, "digits-resnet": digits_resnet}[model_name]()


def digits_inputs(model_name: str, seed: int, device="cpu"):
    """The digits split and standardised with ``seed``, shaped for ``model_name``.

    Args:
        model_name: ``digits-mlp`` (64 features), or a convolutional network's name (1×8×8 images).
        seed: the seed of the split.
        device: the device the tensors are made on.

    Returns:
        ``(x, y, x_test, y_test)``.
    """
    from ..tasks import digits_data

    data = digits_data(seed, device=device)
    shape = (-1, 64) if model_name == "digits-mlp" else (-1, 1, 8, 8)
    return data.x_train.reshape(shape), data.y_train, data.x_test.reshape(shape), data.y_test


def safety_runs(
    model_name: str, optimizer: str, seed: int, settings: SafetySettings = SAFETY, *, device="cpu", share=True
) -> list[dict]:
    """Minibatch runs of ``model_name`` on the digits with ``optimizer``, without teleports and with them.

    One run without teleports, then one per entry of ``settings.accepts`` in which
    ``Teleporter(model, cross_entropy, optimizer, every=settings.every, accept=accept)`` (every other argument
    at its default) is asked before every step whether to teleport.

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

    Raises:
        TypeError: ``settings`` that is not a :class:`~symtele.study.settings.SafetySettings`.
        ValueError: an ``optimizer`` that ``settings.lrs`` does not name.
    """
    s = _checked(settings, SafetySettings)
    if optimizer not in s.lrs:
        raise ValueError(f"Invalid optimizer: {optimizer!r} (the settings' lrs name {', '.join(s.lrs)})")
    x, y, x_test, y_test = digits_inputs(model_name, seed, device)
    batches = minibatch_order(len(y), s.batch_size, s.epochs, seed, device)
    per_epoch, total = -(-len(y) // s.batch_size), len(batches)
    fork = min(s.every - 1, total) if share else 0

    factor = partial(cosine_lr_factor, total=total) if s.lr_schedule == "cosine" else None

    def fresh() -> _MinibatchRun:
        torch.manual_seed(seed)
        model = network(model_name, s.hidden).to(device)
        opt = NETWORK_OPTIMIZERS[optimizer](model.parameters(), s.lrs[optimizer])
        return _MinibatchRun(model, opt, x, y, test=(x_test, y_test), lr_factor=factor, eval_rows=EVAL_ROWS)

    def teleporter(run: _MinibatchRun, accept: str) -> Teleporter:
        return Teleporter(run.model, torch.nn.functional.cross_entropy, run.optimizer, every=s.every, accept=accept)

    plain = fresh()
    plain.advance(batches, 0, fork, per_epoch)
    runs = [(None, plain, None, [])]  # (accept, run, its teleporter, its records when finished already)
    followers = []
    for accept in s.accepts:
        if share and accept == "lookahead":
            followers.append(_Follower(accept, teleporter(plain, accept), per_epoch))
            continue
        run = plain.copy() if share else fresh()
        runs.append((accept, run, teleporter(run, accept), None))
    for step in range(fork, total):
        for follower in followers:
            follower.ask(plain, batches, step)
        plain.advance(batches, step, step + 1, per_epoch)
    runs[1:1] = [(f.accept, *f.finished(plain)) for f in followers]
    runs.sort(key=lambda arm: -1 if arm[0] is None else s.accepts.index(arm[0]))
    records = []
    for accept, run, arm_teleporter, teleports in runs:
        if teleports is None:
            run.advance(batches, fork, total, per_epoch, arm_teleporter)
            teleports = arm_teleporter.records
        records.append(
            {
                "problem": model_name,
                "method": optimizer + ARM_SUFFIX[accept or "none"],
                "seed": seed,
                "optimizer": optimizer,
                "lr": s.lrs[optimizer],
                "lr_schedule": s.lr_schedule,
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


class _Follower:
    """An arm that follows the run without teleports until its first applied teleport (module docstring).

    ``teleporter`` is made on the run without teleports, from its start, so that it sees every step as the
    arm's own would; it is only ever asked on copies.
    """

    def __init__(self, accept: str, teleporter: Teleporter, per_epoch: int):
        self.accept, self.teleporter, self.per_epoch = accept, teleporter, per_epoch
        self.run, self.own, self.records = None, None, []
        self.asked_s: list[tuple[int, float]] = []  # (step, seconds) of each teleport asked while following
        self.network = None  # the copies' network, one object for every copy (see _copy)

    def ask(self, plain: _MinibatchRun, batches: list, step: int) -> None:
        """Before ``plain`` takes ``step``: ask the teleport on a copy when it is due, else show the minibatch.

        The copy goes on alone if the teleport is applied; a step that is not due lets the teleporter see the
        step's minibatch.
        """
        if self.run is not None:
            return
        batch = batches[step]
        if not self.teleporter.schedule.due(step):
            self.teleporter.maybe(step, plain.x[batch], plain.y[batch])
            return
        run, own = self._copy(plain)
        run.set_lr(step)  # the step's own rate, which the look-ahead steps with
        began = time.perf_counter()
        record = own.maybe(step, run.x[batch], run.y[batch])
        self.asked_s.append((step, time.perf_counter() - began))
        self.records.append(record)
        if record.t:
            run.elapsed += sum(seconds for _, seconds in self.asked_s)
            self._add_asked(run)
            run.advance(batches, step, len(batches), self.per_epoch, own, asked=step)
            self.run, self.own = run, own

    def _copy(self, plain: _MinibatchRun) -> tuple[_MinibatchRun, Teleporter]:
        """A copy of ``plain`` and of the teleporter, sharing the data, whose network is always the same object.

        The network made for the first copy gets ``plain``'s parameters, gradients and buffers (copied in place)
        and stands in for ``plain``'s network, module for module and tensor for tensor, in a deep copy of the rest
        (optimiser, log, teleporter). The numbers are those of a fresh deep copy; the symmetry the teleporter
        discovers is kept with the network (:func:`~symtele.teleports.rescale.symmetry_of`), so it is found once
        per run rather than once per teleport asked.
        """
        if self.network is None:
            self.network = copy.deepcopy(plain.model)
        pairs = [
            *zip(plain.model.modules(), self.network.modules(), strict=True),
            *zip(plain.model.parameters(), self.network.parameters(), strict=True),
            *zip(plain.model.buffers(), self.network.buffers(), strict=True),
        ]
        with torch.no_grad():
            for theirs, mine in zip(plain.model.parameters(), self.network.parameters(), strict=True):
                mine.copy_(theirs)
                mine.grad = None if theirs.grad is None else theirs.grad.clone()
            for theirs, mine in zip(plain.model.buffers(), self.network.buffers(), strict=True):
                mine.copy_(theirs)
        for theirs, mine in zip(plain.model.modules(), self.network.modules(), strict=True):
            mine.training = theirs.training
        shared = (plain.x, plain.y, plain.test, *(plain.test or ()))
        memo = {id(t): t for t in shared} | {id(theirs): mine for theirs, mine in pairs}
        return copy.deepcopy((plain, self.teleporter), memo=memo)

    def _add_asked(self, run: _MinibatchRun) -> None:
        """The teleports' seconds added to the clock of every epoch logged after them."""
        for e in range(1, len(run.times)):
            run.times[e] += sum(seconds for step, seconds in self.asked_s if step < e * self.per_epoch)

    def finished(self, plain: _MinibatchRun) -> tuple:
        """``(run, None, records)`` of the arm, once ``plain`` is finished."""
        if self.run is None:
            run = plain.copy()
            self._add_asked(run)
            return run, None, self.records
        return self.run, None, self.records + self.own.records[1:]


def minibatch_safety(settings: SafetySettings = SAFETY, *, device="cpu") -> list[dict]:
    """Every network × optimiser × seed of ``settings``, each :func:`safety_runs` (one record per arm).

    Args:
        settings: the notebook's settings (by default ``SAFETY``, the writeup's).
        device: the device the runs compute on.

    Returns:
        The records of every run.

    Raises:
        TypeError: ``settings`` that is not a :class:`~symtele.study.settings.SafetySettings`.
    """
    s = _checked(settings, SafetySettings)
    records = []
    for model_name in s.models:
        for optimizer in s.lrs:
            for seed in s.seeds:
                records += safety_runs(model_name, optimizer, seed, s, device=device)
    return records
