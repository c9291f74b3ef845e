"""Teleport inside PyTorch Lightning's ``Trainer.fit`` (the optional extra ``symtele[lightning]``).

    trainer = lightning.Trainer(max_epochs=5, callbacks=[TeleportCallback(F.cross_entropy, every=100)])
    trainer.fit(module, loader)

:class:`TeleportCallback` builds a :class:`~symtele.teleporter.Teleporter` on the ``LightningModule`` and its
optimiser when training starts, and calls its :meth:`~symtele.teleporter.Teleporter.maybe` before every
optimiser step (the hook ``on_train_batch_start``), with the step (``trainer.global_step``) and the training
batch: the teleports, the look-ahead and the optimiser state's treatment are the Teleporter's. Under
Lightning's DDP strategies ``torch.distributed`` is initialised and a teleport is one teleport of the global
batch (:mod:`~symtele.distributed`). With ``accumulate_grad_batches=K`` the teleport is fitted to the first
of the ``K`` micro-batches of the step (Lightning hands them over one at a time).
"""

from __future__ import annotations

from collections.abc import Callable

from lightning.pytorch import Callback

from ..teleporter import Teleporter


def _pair(batch):
    """A training batch as ``(inputs, targets)``: the batch itself, a pair."""
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise TypeError(
            f"Invalid batch: expected a pair (inputs, targets), got {type(batch).__name__}; "
            "pass TeleportCallback(..., batch_to_pair=...) to say which parts of a batch these are"
        )
    return batch


class TeleportCallback(Callback):
    """Teleports a ``LightningModule`` on a schedule inside ``Trainer.fit`` (module docstring).

    Args:
        loss_fn: ``loss_fn(module(inputs), targets)`` is the scalar loss the module trains on.
        batch_to_pair: maps a training batch to ``(inputs, targets)``; by default the batch is that pair.
        **options: the :class:`~symtele.teleporter.Teleporter`'s keyword arguments (``every`` or ``schedule``,
            ``state``, ``accept``, ``teleport``, ``horizon``, …), counted in optimiser steps.

    Raises:
        TypeError: ``batch_to_pair`` is not callable.
        ValueError: the module has more than one optimiser (when training starts); and what the Teleporter
            raises on its arguments.

    Attributes:
        records: the Teleporter's list of :class:`~symtele.history.TeleportRecord` (empty before training).
    """

    def __init__(self, loss_fn: Callable, *, batch_to_pair: Callable | None = None, **options):
        if batch_to_pair is not None and not callable(batch_to_pair):
            raise TypeError(f"Invalid batch_to_pair: {batch_to_pair!r} is not callable")
        self.loss_fn, self.options = loss_fn, options
        self.batch_to_pair = batch_to_pair or _pair
        self.teleporter: Teleporter | None = None

    @property
    def records(self) -> list:
        """The Teleporter's records, one per teleport (empty before training starts)."""
        return [] if self.teleporter is None else self.teleporter.records

    def on_train_start(self, trainer, pl_module) -> None:
        """Build the :class:`~symtele.teleporter.Teleporter` on the module and its optimiser.

        Args:
            trainer: the Lightning ``Trainer``.
            pl_module: the ``LightningModule`` being trained.

        Raises:
            ValueError: the trainer has other than one optimiser; what the Teleporter raises on its arguments.
        """
        if len(trainer.optimizers) != 1:
            raise ValueError(
                f"Invalid optimizers: {len(trainer.optimizers)}; TeleportCallback treats the state of one optimiser"
            )
        self.teleporter = Teleporter(pl_module, self.loss_fn, trainer.optimizers[0], **self.options)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        """Teleport on ``batch`` if the step ``trainer.global_step`` is on the schedule.

        Only at the first micro-batch of an optimiser step (``batch_idx`` a multiple of
        ``accumulate_grad_batches``).

        Args:
            trainer: the Lightning ``Trainer``.
            pl_module: the ``LightningModule`` being trained.
            batch: the training batch, mapped to ``(inputs, targets)`` by ``batch_to_pair``.
            batch_idx: the batch's index in the epoch.

        Raises:
            TypeError: a batch that is not a pair (by default).
        """
        if batch_idx % trainer.accumulate_grad_batches:  # not the first micro-batch of an optimiser step
            return
        inputs, targets = self.batch_to_pair(batch)
        self.teleporter.maybe(trainer.global_step, inputs, targets)
