"""Teleport inside PyTorch Lightning's ``Trainer.fit`` (the optional extra ``symtele[lightning]``).

    trainer = lightning.Trainer(max_epochs=5, callbacks=[TeleportCallback(F.cross_entropy, every=100)])
    trainer.fit(module, loader)

:class:`TeleportCallback` builds a :class:`~symtele.teleporter.Teleporter` on the ``LightningModule`` and its
optimiser when training starts; the teleports, the look-ahead and the optimiser state's treatment are the
Teleporter's, at the steps ``trainer.global_step`` of its schedule. By default (``after_backward=True``) it
calls :meth:`~symtele.teleporter.Teleporter.maybe_after_backward` in the hook ``on_before_optimizer_step``,
which Lightning calls after the backward passes of the step (and, with 16-bit mixed precision, after its
``GradScaler`` unscaled the gradients, which is checked): the teleport uses the gradient in ``p.grad`` and
rewrites it to the gradient at the teleported point, computing none of its own. With
``accumulate_grad_batches=K`` that gradient is of all ``K`` micro-batches of the step (Lightning divides each
loss by ``K``), and so is the teleport's loss (the callback keeps the micro-batches it was handed). With
``after_backward=False`` it calls :meth:`~symtele.teleporter.Teleporter.maybe` before the step instead (the
hook ``on_train_batch_start``), which computes its own gradient, fitted to the first of the ``K``
micro-batches. Under Lightning's DDP strategies ``torch.distributed`` is initialised and a teleport is one
teleport of the global batch (:mod:`~symtele.distributed`).
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
        after_backward: teleport from the gradient of the step's backward passes, in ``on_before_optimizer_step``
            (default), or before the step with a gradient of its own (``False``).
        **options: the :class:`~symtele.teleporter.Teleporter`'s keyword arguments (``every`` or ``schedule``,
            ``state``, ``accept``, ``teleport``, ``horizon``, …), counted in optimiser steps.

    Raises:
        TypeError: ``batch_to_pair`` is not callable.
        ValueError: the module has more than one optimiser, or (when training starts) SGD with momentum and a
            coupled weight decay under ``state="transport"``: Lightning runs the backward pass inside the
            optimiser's step, after the step pre-hook that follows the decay part of the momentum, which then
            sees no gradient; and what the Teleporter raises on its arguments.

    Attributes:
        records: the Teleporter's list of :class:`~symtele.history.TeleportRecord` (empty before training).
    """

    def __init__(
        self, loss_fn: Callable, *, batch_to_pair: Callable | None = None, after_backward: bool = True, **options
    ):
        if batch_to_pair is not None and not callable(batch_to_pair):
            raise TypeError(f"Invalid batch_to_pair: {batch_to_pair!r} is not callable")
        if not isinstance(after_backward, bool):
            raise TypeError(f"Invalid after_backward: {after_backward!r} (True or False)")
        self.loss_fn, self.options, self.after_backward = loss_fn, options, after_backward
        self.batch_to_pair = batch_to_pair or _pair
        self.teleporter: Teleporter | None = None
        self._micro_batches: list = []  # the step's (inputs, targets), with after_backward

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
        teleporter = Teleporter(pl_module, self.loss_fn, trainer.optimizers[0], **self.options)
        if teleporter.decay is not None and teleporter.decay.coupled:
            for handle in teleporter.decay.handles:
                handle.remove()
            raise ValueError(
                "Invalid state: 'transport' of SGD's momentum with a coupled weight decay under Lightning: its "
                "backward pass runs inside optimizer.step, after the step pre-hook that follows the momentum's decay "
                "part, which sees no gradient; use state='keep' or 'reset', or a decoupled weight decay (AdamW)"
            )
        self.teleporter = teleporter

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        """Keep ``batch`` for the step's teleport (``after_backward``), or teleport on it now.

        Without ``after_backward``: teleport if the step ``trainer.global_step`` is on the schedule, only at the
        first micro-batch of an optimiser step (``batch_idx`` a multiple of ``accumulate_grad_batches``).

        Args:
            trainer: the Lightning ``Trainer``.
            pl_module: the ``LightningModule`` being trained.
            batch: the training batch, mapped to ``(inputs, targets)`` by ``batch_to_pair``.
            batch_idx: the batch's index in the epoch.

        Raises:
            TypeError: a batch that is not a pair (by default).
        """
        first = batch_idx % trainer.accumulate_grad_batches == 0  # the first micro-batch of an optimiser step
        if self.after_backward:
            if first:
                self._micro_batches = []
            self._micro_batches.append(self.batch_to_pair(batch))
            return
        if first:
            inputs, targets = self.batch_to_pair(batch)
            self.teleporter.maybe(trainer.global_step, inputs, targets)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        """With ``after_backward``: teleport from ``p.grad`` if ``trainer.global_step`` is on the schedule.

        On the step's micro-batches (their list when there are several), checking that a mixed-precision
        ``GradScaler`` has unscaled the gradients.

        Args:
            trainer: the Lightning ``Trainer``.
            pl_module: the ``LightningModule`` being trained.
            optimizer: the optimiser about to step.
        """
        if not self.after_backward:
            return
        batches, self._micro_batches = self._micro_batches, []
        if len(batches) == 1:
            inputs, targets = batches[0]
        else:
            inputs, targets = [x for x, _ in batches], [y for _, y in batches]
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        self.teleporter.maybe_after_backward(trainer.global_step, inputs, targets, scaler=scaler)
