"""Two-dimensional test problems with a hidden rotational (SO(2)) symmetry.

Each problem is ``f(x, y) = u(x, y)² + v(x, y)²`` for an invertible change of
variables ``(x, y) ↦ (u, v)``. Rotating ``(u, v)`` by any angle θ leaves ``f``
unchanged, so ``g_θ · w = φ⁻¹(R_θ φ(w))`` is a loss-preserving action on the
parameters ``w = (x, y)``:

* quadratic  ``x² + 9y²``:                      ``u = x``,                ``v = 3y``
* Booth      ``(x + 2y − 7)² + (2x + y − 5)²``: ``u = x + 2y − 7``,       ``v = 2x + y − 5``
* Rosenbrock ``100(x² − y)² + (x − 1)²``:       ``u = 10(x² − y)``,       ``v = x − 1``
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from . import checks
from .objective import Objective


@dataclass(frozen=True)
class Problem2D(Objective):
    """``f(w) = ‖φ(w)‖²`` with ``φ`` invertible; params are ``[w]`` with ``w`` of shape ``(..., 2)``.

    A problem has no starting point of its own: the experiments choose theirs
    (:mod:`symtele.study.settings`).

    Attributes:
        name: the problem's name.
        to_uv: ``φ``, from ``(x, y)`` to ``(u, v)`` along the last dimension.
        from_uv: ``φ⁻¹``.
        minimum: the point where ``φ(w) = 0``.
        formula: when given, ``f`` as the problem is usually written, term by term: the same function, with
            the rounding of that arithmetic (which a float32 run on Rosenbrock follows for a thousand
            steps; ``‖φ(w)‖²`` leaves it after about a hundred).
    """

    takes_batches = True  # elementwise in the leading dimensions of w

    name: str
    to_uv: Callable[[torch.Tensor], torch.Tensor]
    from_uv: Callable[[torch.Tensor], torch.Tensor]
    minimum: tuple[float, float]
    formula: Callable[[torch.Tensor], torch.Tensor] | None = None

    def loss(self, params) -> torch.Tensor:
        """``f(w)``, elementwise in the leading dimensions of ``w``.

        Args:
            params: ``[w]``, ``w`` of shape ``(..., 2)``.

        Returns:
            ``f`` of shape ``w.shape[:-1]``.
        """
        (w,) = params
        if self.formula is not None:
            return self.formula(w)
        return self.to_uv(w).square().sum(-1)

    def rotate(self, w: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
        """``g_θ · w = φ⁻¹(R_θ φ(w))``: rotate ``φ(w)`` by ``angle`` and map back; ``f`` is unchanged.

        Args:
            w: points, shape ``(..., 2)``.
            angle: ``θ`` in radians, broadcast against ``w.shape[:-1]``.

        Returns:
            The rotated points, shape of ``w``.
        """
        uv = self.to_uv(w)
        c, s = torch.cos(angle), torch.sin(angle)
        u, v = uv[..., 0], uv[..., 1]
        return self.from_uv(torch.stack((c * u - s * v, s * u + c * v), dim=-1))

    def grid(self, x_range, y_range, n: int = 200):
        """``f`` on an ``n × n`` grid, for contour plots of the level sets (float64).

        Args:
            x_range: ``(x_min, x_max)``.
            y_range: ``(y_min, y_max)``.
            n: points per axis.

        Returns:
            ``(X, Y, F)`` NumPy arrays of shape ``(n, n)``.
        """
        xs = torch.linspace(*x_range, n, dtype=torch.float64)
        ys = torch.linspace(*y_range, n, dtype=torch.float64)
        gx, gy = torch.meshgrid(xs, ys, indexing="xy")
        f = self.loss([torch.stack((gx, gy), dim=-1)])
        return gx.numpy(), gy.numpy(), f.numpy()

    def __hash__(self):
        """Hash by name (the functions it holds are not hashable by value)."""
        return hash(self.name)


def _quadratic_uv(w):
    return torch.stack((w[..., 0], 3 * w[..., 1]), dim=-1)


def _quadratic_xy(uv):
    return torch.stack((uv[..., 0], uv[..., 1] / 3), dim=-1)


def _booth_uv(w):
    x, y = w[..., 0], w[..., 1]
    return torch.stack((x + 2 * y - 7, 2 * x + y - 5), dim=-1)


def _booth_xy(uv):
    # Solve [[1, 2], [2, 1]] (x, y) = (u + 7, v + 5); the determinant is −3.
    a, b = uv[..., 0] + 7, uv[..., 1] + 5
    return torch.stack(((2 * b - a) / 3, (2 * a - b) / 3), dim=-1)


def _rosenbrock_uv(w):
    x, y = w[..., 0], w[..., 1]
    return torch.stack((10 * (x * x - y), x - 1), dim=-1)


def _rosenbrock(w):
    x, y = w[..., 0], w[..., 1]
    return 100 * (x**2 - y) ** 2 + (x - 1) ** 2


def _rosenbrock_xy(uv):
    x = uv[..., 1] + 1
    return torch.stack((x, x * x - uv[..., 0] / 10), dim=-1)


QUADRATIC = Problem2D("quadratic", _quadratic_uv, _quadratic_xy, minimum=(0.0, 0.0))
BOOTH = Problem2D("booth", _booth_uv, _booth_xy, minimum=(1.0, 3.0))
ROSENBROCK = Problem2D("rosenbrock", _rosenbrock_uv, _rosenbrock_xy, minimum=(1.0, 1.0), formula=_rosenbrock)

#: the 2-D problems by name
PROBLEMS_2D = {p.name: p for p in (QUADRATIC, BOOTH, ROSENBROCK)}


def get_problem(name: str) -> Problem2D:
    """Look a 2-D problem up by name.

    Args:
        name: ``quadratic``, ``booth`` or ``rosenbrock``.

    Returns:
        The problem.

    Raises:
        ValueError: another name.
    """
    checks.choice("problem", name, PROBLEMS_2D)
    return PROBLEMS_2D[name]
