"""When to teleport during a run of ``epochs`` steps."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from numbers import Integral

from . import checks


@dataclass(frozen=True)
class Schedule:
    """Teleport before the step of each listed epoch (0-based), every ``every`` epochs, or never.

    ``Schedule.at(5)``, ``Schedule.at([5, 50])``, ``Schedule.every_k(20, start=5)``, ``Schedule.never()``.

    Attributes:
        epochs: the listed epochs, sorted, without repeats.
        every: the period, or ``None`` for listed epochs only.
        start: the first epoch of a periodic schedule.
    """

    epochs: tuple[int, ...] = ()
    every: int | None = None
    start: int = 0

    @classmethod
    def at(cls, epochs) -> Schedule:
        """Teleport before each of these epochs.

        Args:
            epochs: an epoch or several (0-based; repeats are merged).

        Returns:
            The schedule.

        Raises:
            TypeError: ``epochs`` neither an integer nor an iterable of them.
            ValueError: an epoch that is not a count ``≥ 0``.
        """
        if isinstance(epochs, Integral) and not isinstance(epochs, bool):
            epochs = [epochs]
        elif isinstance(epochs, (str, bytes)) or not isinstance(epochs, Iterable):
            raise TypeError(f"Invalid schedule: {epochs!r} (expected an epoch, a list of epochs or a Schedule)")
        epochs = tuple(sorted({checks.count("schedule epoch", e) for e in epochs}))
        return cls(epochs=epochs)

    @classmethod
    def every_k(cls, k: int, start: int = 0) -> Schedule:
        """Teleport before epochs ``start, start + k, start + 2k, …``.

        Args:
            k: the period (``≥ 1``).
            start: the first teleport epoch (``≥ 0``).

        Returns:
            The schedule.

        Raises:
            ValueError: ``k < 1`` or ``start < 0``.
        """
        return cls(every=checks.count("every", k, minimum=1), start=checks.count("start", start))

    @classmethod
    def never(cls) -> Schedule:
        """No teleport at all.

        Returns:
            The empty schedule.
        """
        return cls()

    def due(self, step: int) -> bool:
        """Whether to teleport before step ``step`` of an open-ended run (a training loop's).

        Args:
            step: the step about to be taken (0-based).

        Returns:
            ``True`` when the schedule lists it or it falls on the period.
        """
        if self.every is None:
            return step in self.epochs
        return step >= self.start and (step - self.start) % self.every == 0

    def epochs_in(self, n_epochs: int) -> list[int]:
        """The teleport epochs of a run of ``n_epochs``.

        Args:
            n_epochs: the run's length.

        Returns:
            The epochs, ascending.

        Raises:
            ValueError: a listed epoch, or the start of a periodic schedule, outside the run.
        """
        for e in self.epochs:
            if e >= n_epochs:
                raise ValueError(f"Invalid schedule epoch: {e} (the run has epochs 0..{n_epochs - 1})")
        if self.every is None:
            return list(self.epochs)
        if self.start >= n_epochs:
            raise ValueError(f"Invalid schedule start: {self.start} (the run has epochs 0..{n_epochs - 1})")
        return list(range(self.start, n_epochs, self.every))
