"""When to teleport during a run of ``epochs`` steps."""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral

from . import checks


@dataclass(frozen=True)
class Schedule:
    """Teleport before the step of each listed epoch (0-based), every ``every`` epochs, or never.

    ``Schedule.at(5)``, ``Schedule.at([5, 50])``, ``Schedule.every_k(20, start=5)``, ``Schedule.never()``.
    """

    epochs: tuple[int, ...] = ()
    every: int | None = None
    start: int = 0

    @classmethod
    def at(cls, epochs) -> Schedule:
        if isinstance(epochs, Integral) and not isinstance(epochs, bool):
            epochs = [epochs]
        epochs = tuple(sorted({checks.count("schedule epoch", e) for e in epochs}))
        return cls(epochs=epochs)

    @classmethod
    def every_k(cls, k: int, start: int = 0) -> Schedule:
        return cls(every=checks.count("every", k, minimum=1), start=checks.count("start", start))

    @classmethod
    def never(cls) -> Schedule:
        return cls()

    def due(self, step: int) -> bool:
        """Whether to teleport before step ``step`` of an open-ended run (a training loop's)."""
        if self.every is None:
            return step in self.epochs
        return step >= self.start and (step - self.start) % self.every == 0

    def epochs_in(self, n_epochs: int) -> list[int]:
        """The teleport epochs of a run of ``n_epochs``; raises if a listed epoch lies outside it."""
        for e in self.epochs:
            if e >= n_epochs:
                raise ValueError(f"Invalid schedule epoch: {e} (the run has epochs 0..{n_epochs - 1})")
        if self.every is None:
            return list(self.epochs)
        if self.start >= n_epochs:
            raise ValueError(f"Invalid schedule start: {self.start} (the run has epochs 0..{n_epochs - 1})")
        return list(range(self.start, n_epochs, self.every))
