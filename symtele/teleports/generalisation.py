"""Objectives of a minimum along its positive rescalings, and teleports that raise or lower them at an unchanged loss.

Zhao, Gower, Walters and Yu (ICLR 2024) relate two quantities of a minimum ``w`` to how well it generalises.
Here they are functions of the log-scales ``s`` of a network's positive rescalings
(:class:`~symtele.teleports.symmetry.Symmetry`), at the point ``g_s·w`` whose parameter ``p`` is
``p · e^{a_p(s)}``, ``a_p(s) = Σ_t sign_t s[units_t]`` (:func:`~symtele.teleports.rescale.scale_factors`):

* **sharpness** ``φ(w) = (1 / (K·T)) Σ_k Σ_j L(w + t_j d_k)``: the mean loss at ``K`` seeded random directions
  ``d_k`` (standard normal over all the parameters, scaled to unit norm) and ``T`` step sizes ``t_j`` evenly
  spaced in a range. It is not invariant: ``L(g·w + t d) ≠ L(w + t d)`` in general.
* **adaptive sharpness**: the same with ``d_k`` scaled entrywise by ``|w|``, ``L(w + t_j |w| ⊙ d_k)``. Since
  ``g·w + t |g·w| ⊙ d = g·(w + t |w| ⊙ d)`` for the diagonal positive action and ``L(g·v) = L(v)`` for every
  ``v``, it is invariant under every rescaling: a teleport cannot change it (:func:`teleport_objective`
  refuses to try).
* **curvature** ``ψ``: the curvature at ``t = 0`` of the orbit ``γ(t) = exp(tM)·w`` for a Lie-algebra element
  ``M``, ``ψ = (|γ'|²|γ''|² − (γ'·γ'')²)^{1/2} / |γ'|³``, averaged over ``K`` seeded random ``M``. For the
  positive rescalings ``M`` is a log-scale direction ``m`` (standard normal, one entry per scale) and the
  action is diagonal, so ``γ(t)_i = v_i e^{t α_i}`` with ``v = g_s·w`` and ``α_i = a_i(m)``: ``γ'(0) = α ⊙ v``,
  ``γ''(0) = α² ⊙ v``. With ``A_k = Σ_i α_i^k v_i²``, ``ψ = (A_2 A_4 − A_3²)^{1/2} / A_2^{3/2}`` in closed form
  (independent of the length and sign of ``m``, and of the loss).
* **Hessian trace**: differentiating ``L(D v) = L(v)`` twice for the diagonal ``D = e^{a(s)}`` gives
  ``D H(D v) D = H(v)``, so ``H_ii(g_s·w) = e^{−2 a_i(s)} H_ii(w)`` and
  ``tr H(g_s·w) = Σ_i e^{−2 a_i(s)} H_ii(w)``: one estimate of ``diag H(w)`` (Hutchinson's,
  ``E[z ⊙ Hz]`` over Rademacher ``z``) gives the trace at every point of the orbit.

Each objective is an object whose :meth:`~Sharpness.value_and_slope` returns the value at ``g_s·w`` and its
gradient in ``s``: sharpness by autograd through the group action, curvature and Hessian trace by autograd
through their closed forms (arrays a fraction of the weights' size). :func:`teleport_objective` takes gradient
steps on ``s`` to decrease or increase one of them and confirms the loss with one forward pass.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch.nn.utils import parametrize

from .. import checks
from .invariance import default_rtol, preserved
from .rescale import Rescale, ascent_step, scale_factors, symmetry_of
from .symmetry import Symmetry

#: the objectives by name; ``adaptive_sharpness`` can be measured but not teleported (it is invariant)
OBJECTIVES = ("sharpness", "adaptive_sharpness", "curvature", "hessian_trace")
DIRECTIONS = ("decrease", "increase")

LossOf = Callable[[dict[str, torch.Tensor]], torch.Tensor]


def act(symmetry: Symmetry, s: torch.Tensor, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The parameters at ``g_s·w``: ``p · e^{a_p(s)}`` where a scale acts, ``p`` elsewhere.

    Args:
        symmetry: the network's positive rescalings.
        s: the log-scales, ``symmetry.n_scales`` entries (autograd flows through them).
        params: every parameter of the network, by name.

    Returns:
        The moved parameters, by name, in ``params``' order.
    """
    factors = scale_factors(symmetry, s, params)
    return {n: p * factors[n] if n in factors else p for n, p in params.items()}


def module_loss(model: torch.nn.Module, loss_fn: Callable, inputs: torch.Tensor, targets: torch.Tensor) -> LossOf:
    """``loss_fn(model_θ(inputs), targets)`` as a function of a dict ``θ`` of parameters.

    The model runs in the mode it is in, with ``θ`` in place of its parameters for the call. Its buffers
    (BatchNorm's running statistics) are never changed: every call runs on fresh copies of them, so in train mode
    too each call sees the model's statistics as they stand. The tensors are swapped into the modules that hold
    them and back (:func:`_owners`, found once; a tied weight in every place it is held), which runs the same
    forward as ``torch.func.functional_call`` at a fraction of its cost per call; a parametrized model, or a dict
    with other names, goes through ``functional_call``.

    Args:
        model: the network (never changed).
        loss_fn: ``(outputs, targets) → scalar``.
        inputs: a batch of inputs.
        targets: their targets.

    Returns:
        The function of the parameters.
    """
    buffers = {n: b.detach() for n, b in model.named_buffers()}
    owners = _owners(model)

    def loss_of(params: dict[str, torch.Tensor]) -> torch.Tensor:
        state = {**{n: b.clone() for n, b in buffers.items()}, **params}
        if owners is None or not state.keys() <= owners.keys():
            return loss_fn(torch.func.functional_call(model, state, (inputs,)), targets)
        return loss_fn(_swapped_call(model, owners, state, inputs), targets)

    return loss_of


def _owners(model: torch.nn.Module) -> dict[str, list[tuple[dict, str]]] | None:
    """Where each parameter and buffer of ``model`` lives: its name → every ``(module's table, attribute)`` holding it.

    The name is the one ``named_parameters``/``named_buffers`` give it; a tensor held in several places (tied
    weights) has them all, so that swapping it keeps the tie. ``None`` for a parametrized model
    (``torch.nn.utils.parametrize``), whose tensors are not plain entries of the tables.
    """
    if any(parametrize.is_parametrized(m) for m in model.modules()):
        return None
    names = {id(t): n for n, t in (*model.named_parameters(), *model.named_buffers())}
    owners: dict[str, list[tuple[dict, str]]] = {}
    for kind in ("_parameters", "_buffers"):
        for module in model.modules():  # each module once: a shared module's table is one table
            table = getattr(module, kind)
            for attr, tensor in table.items():
                if tensor is not None:
                    owners.setdefault(names[id(tensor)], []).append((table, attr))
    return owners


def _swapped_call(model: torch.nn.Module, owners: dict, state: dict[str, torch.Tensor], inputs: torch.Tensor):
    """``model(inputs)`` with ``state``'s tensors in their owners' tables for the call, the originals put back."""
    saved = []
    try:
        for name, tensor in state.items():
            for table, attr in owners[name]:
                saved.append((table, attr, table[attr]))
                table[attr] = tensor
        return model(inputs)
    finally:
        for table, attr, original in reversed(saved):
            table[attr] = original


def _compact(symmetry: Symmetry, name: str, values: torch.Tensor) -> tuple[torch.Tensor, list]:
    """``values`` (a parameter's shape) summed over the axes no scale depends on, in float64, and its terms.

    The terms are ``(units, sign)`` pairs: with the summed values, the arrays the closed forms work on.
    """
    terms = [(t.units.to(values.device), t.sign) for t in symmetry.terms if t.param == name]
    free = tuple(axis for axis in range(values.dim()) if all(u.shape[axis] == 1 for u, _ in terms))
    values = values.double()
    return (values.sum(free, keepdim=True) if free else values), terms


def _log_factor(terms: list, s: torch.Tensor) -> torch.Tensor:
    """``a_p(s) = Σ_t sign_t s[units_t]`` on a compact array; ``s`` may have leading sample dimensions."""
    padded = torch.cat([s, s.new_zeros((*s.shape[:-1], 1))], -1)
    out = 0
    for units, sign in terms:
        out = out + sign * padded[..., units]
    return out


@dataclass
class Sharpness:
    """``φ(g_s·w)``, the mean loss at ``g_s·w + t_j d_k`` (adaptive: ``g_s·w + t_j |g_s·w| ⊙ d_k``).

    Args:
        loss_of: the loss as a function of a dict of every parameter (:func:`module_loss`); called once per
            perturbed point (a loop, which works with any module).
        params: the parameters ``w`` by name.
        symmetry: the network's positive rescalings.
        directions: ``K``, the random directions.
        t_range: ``(t_min, t_max)``, the range of the step sizes, ``0 ≤ t_min ≤ t_max``.
        t_count: ``T``, the step sizes, evenly spaced over ``t_range`` (both ends included when ``T > 1``).
        adaptive: scale each direction entrywise by ``|g_s·w|``.
        seed: the seed of the directions.

    Raises:
        ValueError: a count below 1, a negative or reversed ``t_range``, a seed below 0.
    """

    loss_of: LossOf
    params: dict[str, torch.Tensor]
    symmetry: Symmetry
    directions: int = 100
    t_range: tuple[float, float] = (0.1, 1.0)
    t_count: int = 10
    adaptive: bool = False
    seed: int = 0
    _d: dict[str, torch.Tensor] = field(init=False, repr=False)
    _t: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self):
        """Check the arguments and draw the directions."""
        self.directions = checks.count("directions", self.directions, minimum=1)
        self.t_count = checks.count("t_count", self.t_count, minimum=1)
        self.t_range = _t_range(self.t_range)
        self.seed = checks.count("seed", self.seed)
        self.params = {n: p.detach() for n, p in self.params.items()}
        gen = torch.Generator().manual_seed(self.seed)
        raw = {
            n: torch.randn((self.directions, *p.shape), generator=gen, dtype=torch.float64)
            for n, p in self.params.items()
        }
        norm = torch.sqrt(sum(d.flatten(1).square().sum(1) for d in raw.values()))
        self._d = {n: (d / norm.view(-1, *[1] * (d.dim() - 1))).to(self.params[n]) for n, d in raw.items()}
        first = next(iter(self.params.values()))
        self._t = torch.linspace(*self.t_range, self.t_count, dtype=first.dtype, device=first.device)

    def value(self, s: torch.Tensor) -> torch.Tensor:
        """``φ`` at ``g_s·w`` (autograd flows through ``s``).

        Args:
            s: the log-scales.

        Returns:
            The mean loss over the ``K·T`` perturbed points, a scalar in the parameters' dtype.
        """
        return self.at(act(self.symmetry, s, self.params))

    def at(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """``φ`` at any point ``params`` (its directions and step sizes; autograd flows through ``params``).

        Args:
            params: every parameter, by name (a point on the rescalings' orbit or anywhere else).

        Returns:
            The mean loss over the ``K·T`` perturbed points, a scalar in the parameters' dtype.
        """
        return sum(self._direction(params, k) for k in range(self.directions)) / (self.directions * self.t_count)

    def _direction(self, base: dict[str, torch.Tensor], k: int) -> torch.Tensor:
        """The summed loss at ``base + t_j d_k`` (adaptive: ``base + t_j |base| ⊙ d_k``) over the step sizes.

        The products ``t_j d_k`` of every step size are formed at once per parameter (the same products, one
        operation instead of ``T``), and ``|base|`` once per direction.
        """
        steps = {name: self._t.view(-1, *[1] * (d.dim() - 1)) * d[k] for name, d in self._d.items()}
        if self.adaptive:
            scales = {name: p.abs() for name, p in base.items()}
            steps = {name: step * scales[name] for name, step in steps.items()}
        total = 0
        for j in range(self.t_count):
            total = total + self.loss_of({name: p + steps[name][j] for name, p in base.items()})
        return total

    def value_and_slope(self, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``φ(g_s·w)`` and its gradient in ``s`` (autograd through the group action).

        The gradient with respect to the moved parameters ``v = g_s·w`` is accumulated one direction at a time
        (one direction's graph in memory), then carried to ``s`` by the chain rule through ``v = g_s·w``.

        Args:
            s: the log-scales.

        Returns:
            ``(value, slope)``, detached.
        """
        n = self.directions * self.t_count
        with torch.enable_grad():
            s = s.detach().clone().requires_grad_(True)
            moved = act(self.symmetry, s, self.params)
            base = {name: p.detach().requires_grad_(True) for name, p in moved.items()}
            value = 0
            for k in range(self.directions):
                part = self._direction(base, k) / n
                part.backward()
                value = value + part.detach()
            acted = [name for name in moved if moved[name].requires_grad]
            (slope,) = torch.autograd.grad([moved[a] for a in acted], s, [base[a].grad for a in acted])
        return value, slope


def _t_range(value) -> tuple[float, float]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ValueError(f"Invalid t_range: {value!r} (expected (t_min, t_max))")
    lo, hi = (checks.non_negative("t_range", v) for v in value)
    if lo > hi:
        raise ValueError(f"Invalid t_range: {value!r} (t_min must be <= t_max)")
    return lo, hi


class _ClosedForm:
    """An objective with a closed form ``value(s)`` in the log-scales, differentiated by autograd."""

    def value(self, s: torch.Tensor) -> torch.Tensor:  # pragma: no cover (each objective defines it)
        """The objective at ``g_s·w``."""
        raise NotImplementedError

    def value_and_slope(self, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The objective at ``g_s·w`` and its gradient in ``s`` (autograd through the closed form).

        Args:
            s: the log-scales.

        Returns:
            ``(value, slope)``, detached, float64.
        """
        with torch.enable_grad():
            s = s.detach().double().clone().requires_grad_(True)
            value = self.value(s)
            (slope,) = torch.autograd.grad(value, s)
        return value.detach(), slope


@dataclass
class Curvature(_ClosedForm):
    """``ψ(g_s·w)``, the mean curvature of the orbits ``t ↦ exp(t m)·g_s·w`` over random directions ``m``.

    The closed form of the module's docstring, on arrays summed over the axes no scale depends on.

    Args:
        params: the parameters ``w`` by name.
        symmetry: the network's positive rescalings.
        samples: ``K``, the random directions ``m``.
        seed: the seed of the directions.

    Raises:
        ValueError: ``samples`` below 1, a seed below 0, or a symmetry with no scales.
    """

    params: dict[str, torch.Tensor]
    symmetry: Symmetry
    samples: int = 100
    seed: int = 0
    _items: list = field(init=False, repr=False)
    _m: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self):
        """Check the arguments and draw the Lie-algebra elements."""
        self.samples = checks.count("samples", self.samples, minimum=1)
        self.seed = checks.count("seed", self.seed)
        if self.symmetry.n_scales == 0:
            raise ValueError("Invalid symmetry: it has no scales (no orbit to measure the curvature of)")
        gen = torch.Generator().manual_seed(self.seed)
        self._m = torch.randn(self.samples, self.symmetry.n_scales, generator=gen, dtype=torch.float64)
        self._items = []
        for name in self.symmetry.params:
            squares, terms = _compact(self.symmetry, name, self.params[name].detach().square())
            alpha = _log_factor(terms, self._m.to(squares.device))
            self._items.append((squares, terms, tuple(alpha**k for k in (2, 3, 4))))  # α², α³, α⁴: fixed, made once

    def value(self, s: torch.Tensor) -> torch.Tensor:
        """``ψ`` at ``g_s·w``, float64 (autograd flows through ``s``).

        Args:
            s: the log-scales.

        Returns:
            The mean over the directions of ``(A_2 A_4 − A_3²)^{1/2} / A_2^{3/2}``.
        """
        s = s.double()
        return self._mean_curvature(
            [
                (squares * torch.exp(2 * _log_factor(terms, s.to(squares.device))), powers)
                for squares, terms, powers in self._items
            ]
        )

    def at(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """``ψ`` at any point ``params``, float64 (its Lie-algebra elements; autograd flows through ``params``).

        Args:
            params: the parameters the rescalings act on (at least), by name.

        Returns:
            The mean over the directions of ``(A_2 A_4 − A_3²)^{1/2} / A_2^{3/2}`` with ``A_k = Σ_i α_i^k p_i²``.
        """
        return self._mean_curvature(
            [
                (_compact(self.symmetry, name, params[name].square())[0], powers)
                for name, (_, _, powers) in zip(self.symmetry.params, self._items)
            ]
        )

    @staticmethod
    def _mean_curvature(items: list) -> torch.Tensor:
        """The mean of ``(A_2 A_4 − A_3²)^{1/2} / A_2^{3/2}`` from ``(squares, (α², α³, α⁴))`` on compact arrays."""
        moments = [0, 0, 0]
        for q, powers in items:
            for i, power in enumerate(powers):
                moments[i] = moments[i] + (power * q).sum(tuple(range(1, power.dim())))
        a2, a3, a4 = moments
        return (torch.sqrt((a2 * a4 - a3**2).clamp_min(0)) / a2**1.5).mean()


def hessian_diagonal(
    loss_of: LossOf, params: dict[str, torch.Tensor], *, probes: int = 100, seed: int = 0, chunk: int = 256
) -> dict[str, torch.Tensor]:
    """``diag H(w)``: Hutchinson's estimate, the mean of ``z ⊙ Hz`` over Rademacher probes ``z``, or exact.

    The estimate is unbiased (``E[z_i (Hz)_i] = H_ii``), with variance ``Σ_{j≠i} H_ij²`` per probe. With
    ``probes=0`` the diagonal is exact: ``e_iᵀ H e_i`` for every entry, one Hessian-vector product per
    parameter entry: for small networks. The products are forward-over-reverse, ``chunk`` at a time under
    ``torch.func.vmap``.

    Args:
        loss_of: the loss as a function of a dict of every parameter.
        params: ``w`` by name.
        probes: the probes (one Hessian-vector product each); 0 for the exact diagonal.
        seed: the seed of the probes.
        chunk: probes or basis vectors per batched product.

    Returns:
        The diagonal, by name, each the parameter's shape and dtype.

    Raises:
        ValueError: ``probes`` or a seed below 0, ``chunk`` below 1.
    """
    probes = checks.count("probes", probes)
    seed = checks.count("seed", seed)
    chunk = checks.count("chunk", chunk, minimum=1)
    params = {n: p.detach() for n, p in params.items()}
    names = list(params)
    sizes = [params[n].numel() for n in names]
    first = params[names[0]]
    total, rows = sum(sizes), torch.arange(chunk, device=first.device)
    out = torch.zeros(total, dtype=first.dtype, device=first.device)
    gen = torch.Generator().manual_seed(seed)
    for start in range(0, total if probes == 0 else probes, chunk):
        if probes == 0:  # the basis vectors e_i of this chunk: the diagonal entries themselves
            index = torch.arange(start, min(total, start + chunk), device=first.device)
            vectors = torch.zeros(len(index), total, dtype=first.dtype, device=first.device)
            vectors[rows[: len(index)], index] = 1
            out[index] = _hessian_vector_products(loss_of, params, vectors)[rows[: len(index)], index]
        else:  # Rademacher probes z: the sum of z ⊙ Hz
            count = min(probes, start + chunk) - start
            vectors = (torch.randint(0, 2, (count, total), generator=gen) * 2 - 1).to(first)
            out += (vectors * _hessian_vector_products(loss_of, params, vectors)).sum(0)
    if probes:
        out /= probes
    return {n: v.view_as(params[n]).clone() for n, v in zip(names, out.split(sizes))}


def _hessian_vector_products(loss_of: LossOf, params: dict[str, torch.Tensor], vectors: torch.Tensor) -> torch.Tensor:
    """``H v`` for every row ``v`` of ``vectors`` (flat over ``params``), forward-over-reverse under ``vmap``."""
    names = list(params)
    sizes = [params[n].numel() for n in names]

    def product(v: torch.Tensor) -> torch.Tensor:
        tangent = {n: x.view_as(params[n]) for n, x in zip(names, v.split(sizes))}
        _, hv = torch.func.jvp(torch.func.grad(loss_of), (params,), (tangent,))
        return torch.cat([hv[n].reshape(-1) for n in names])

    return torch.func.vmap(product)(vectors)


@dataclass
class HessianTrace(_ClosedForm):
    """``tr H(g_s·w) = Σ_i e^{−2 a_i(s)} H_ii(w)`` from ``diag H(w)`` (the closed form of the module's docstring).

    Args:
        diagonal: ``diag H(w)`` by parameter name (:func:`hessian_diagonal`, or exact).
        symmetry: the network's positive rescalings.
    """

    diagonal: dict[str, torch.Tensor]
    symmetry: Symmetry
    _items: list = field(init=False, repr=False)
    _fixed: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self):
        """Sum the diagonal over the axes no scale depends on."""
        acted = set(self.symmetry.params)
        self._fixed = sum(
            (h.detach().double().sum() for n, h in self.diagonal.items() if n not in acted),
            torch.zeros((), dtype=torch.float64),
        )
        self._items = [_compact(self.symmetry, n, self.diagonal[n].detach()) for n in self.symmetry.params]

    @property
    def negative(self) -> int:
        """How many entries of the diagonal, summed over the axes no scale depends on, are negative.

        With any, the trace is unbounded below along the rescalings (``e^{−2a} H_ii → −∞``).
        """
        return sum(int((diag < 0).sum()) for diag, _ in self._items)

    def value(self, s: torch.Tensor) -> torch.Tensor:
        """``tr H`` at ``g_s·w``, float64 (autograd flows through ``s``).

        Args:
            s: the log-scales.

        Returns:
            The trace.
        """
        out = self._fixed.to(s.device)
        for diag, terms in self._items:
            out = out + (diag * torch.exp(-2 * _log_factor(terms, s.double().to(diag.device)))).sum()
        return out


def make_objective(
    objective: str,
    loss_of: LossOf,
    params: dict[str, torch.Tensor],
    symmetry: Symmetry,
    *,
    directions: int = 100,
    t_range: tuple[float, float] = (0.1, 1.0),
    t_count: int = 10,
    samples: int = 100,
    probes: int = 100,
    seed: int = 0,
):
    """One of :data:`OBJECTIVES` at ``w``, as a function of the log-scales.

    Args:
        objective: ``"sharpness"``, ``"adaptive_sharpness"``, ``"curvature"`` or ``"hessian_trace"``.
        loss_of: the loss as a function of a dict of every parameter (:func:`module_loss`).
        params: ``w`` by name.
        symmetry: the network's positive rescalings.
        directions: the sharpness's random directions ``K``.
        t_range: the sharpness's range of step sizes.
        t_count: the sharpness's step sizes ``T``.
        samples: the curvature's random Lie-algebra elements.
        probes: the Hutchinson probes of the Hessian trace (computed here, ``probes`` Hessian-vector products).
        seed: the seed of the directions, elements or probes.

    Returns:
        A :class:`Sharpness`, :class:`Curvature` or :class:`HessianTrace` (each has ``value(s)`` and
        ``value_and_slope(s)``).

    Raises:
        ValueError: an unknown objective or a bad count, range or seed.
    """
    checks.choice("objective", objective, OBJECTIVES)
    if objective in ("sharpness", "adaptive_sharpness"):
        adaptive = objective == "adaptive_sharpness"
        return Sharpness(loss_of, params, symmetry, directions, t_range, t_count, adaptive=adaptive, seed=seed)
    if objective == "curvature":
        return Curvature(params, symmetry, samples, seed)
    return HessianTrace(hessian_diagonal(loss_of, params, probes=probes, seed=seed), symmetry)


@dataclass(kw_only=True)
class ObjectiveMove:
    """How far a teleport moved an objective and the loss: the fields every objective teleport records.

    Attributes:
        objective: the objective's name.
        direction: ``"decrease"`` or ``"increase"``.
        objective_before: its value at ``w`` (with the teleport's own directions, elements or probes): ``trace[0]``,
            set from ``trace``.
        objective_after: its value at the returned point: ``trace[-1]``, set from ``trace``.
        loss_before: the loss on the teleport's batch at ``w``.
        loss_after: the loss on it at the returned point (one forward pass).
        loss_change: ``|loss_after − loss_before| / |loss_before|``, set from the two.
        steps_taken: the steps kept (the best of those taken, walked back if rounding broke the loss).
        stopped: ``None`` if every step was kept, else why not.
        trace: the objective at ``w`` and after every step kept.
        cost_s: wall-clock seconds.
        gradient_evaluations: the loss gradients on the batch the teleport computed: ``K·T`` per evaluation of
            the sharpness and its slope, none for the curvature (a closed form of the weights), two per
            Hessian-vector product of the Hessian trace's diagonal (the confirming forward passes not counted).
    """

    objective: str
    direction: str
    objective_before: float = field(init=False)
    objective_after: float = field(init=False)
    loss_before: float
    loss_after: float
    loss_change: float = field(init=False)
    steps_taken: int
    stopped: str | None
    trace: list[float]
    cost_s: float
    gradient_evaluations: int = 0

    def __post_init__(self):
        """Set the fields that follow from the others."""
        self.objective_before, self.objective_after = self.trace[0], self.trace[-1]
        self.loss_change = abs(self.loss_after - self.loss_before) / max(abs(self.loss_before), math.ulp(0.0))

    @property
    def ratio(self) -> float:
        """``objective_after / objective_before``."""
        return self.objective_after / self.objective_before

    def to_dict(self) -> dict:
        """The record as plain data (JSON-ready)."""
        return asdict(self)


@dataclass(kw_only=True)
class ObjectiveRecord(ObjectiveMove):
    """What :func:`teleport_objective` did.

    The fields of :class:`ObjectiveMove`, and:

    Attributes:
        log_scales: the log-scale of every unit that was applied.
    """

    log_scales: list[float]


def teleport_objective(
    model: torch.nn.Module,
    loss_fn: Callable,
    batch: tuple[torch.Tensor, torch.Tensor],
    objective: str = "sharpness",
    direction: str = "decrease",
    *,
    steps: int = 20,
    max_log_step: float = 0.1,
    lr: float | None = None,
    seed: int = 0,
    directions: int = 100,
    t_range: tuple[float, float] = (0.1, 1.0),
    t_count: int = 10,
    samples: int = 100,
    probes: int = 100,
    loss_rtol: float | None = None,
) -> tuple[dict[str, torch.Tensor], ObjectiveRecord]:
    """Move ``model``'s parameters along its positive rescalings to decrease or increase an objective.

    The rescalings are found by :func:`~symtele.teleports.discovery.discover` (cached per model). From
    ``s = 0``, each step moves the log-scales along ``±∂objective/∂s``: by default scale-free, no log-scale
    by more than ``max_log_step`` per step; with ``lr`` given, ``s ← s + log(1 + clip(±lr·∂, ±0.1))``
    (:func:`~symtele.teleports.rescale.ascent_step`). The step with the best objective is kept; the loss
    at it is confirmed with one forward pass (within ``loss_rtol``: 1e-5 in float32, 1e-10 in float64 by
    default), walking back step by step if rounding breaks it. The model itself is not changed.

    Args:
        model: the network.
        loss_fn: ``(outputs, targets) → scalar``.
        batch: ``(inputs, targets)``, the batch the loss (and sharpness, Hessian) is measured on.
        objective: ``"sharpness"``, ``"curvature"`` or ``"hessian_trace"`` (``"adaptive_sharpness"`` is
            invariant under the rescalings and is refused).
        direction: ``"decrease"`` or ``"increase"``.
        steps: gradient steps on the log-scales.
        max_log_step: the largest change of any log-scale per step (scale-free steps).
        lr: the step size of plain steps instead (see above).
        seed: the seed of the objective's random directions, elements or probes.
        directions: the sharpness's random directions.
        t_range: the sharpness's range of step sizes.
        t_count: the sharpness's step sizes.
        samples: the curvature's random Lie-algebra elements.
        probes: the Hessian trace's Hutchinson probes (0: the exact diagonal, one product per parameter entry).
        loss_rtol: the relative loss change accepted.

    Returns:
        ``(params, record)``: the new parameters by name (every parameter of the model) and an
        :class:`ObjectiveRecord` of how far the objective and the loss moved.

    Raises:
        ValueError: a bad argument (named, before any compute), ``adaptive_sharpness``, or a model with no
            positive rescalings.
        TypeError: a model that is not an ``nn.Module``, or a batch that is not two tensors.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"Invalid model: expected a torch.nn.Module, got {type(model).__name__}")
    if not callable(loss_fn):
        raise TypeError(f"Invalid loss_fn: {loss_fn!r} is not callable")
    if not isinstance(batch, (tuple, list)) or len(batch) != 2 or not all(isinstance(b, torch.Tensor) for b in batch):
        raise TypeError(f"Invalid batch: expected (inputs, targets), two tensors, got {type(batch).__name__}")
    checks.choice("objective", objective, OBJECTIVES)
    checks.choice("direction", direction, DIRECTIONS)
    if objective == "adaptive_sharpness":
        raise ValueError(
            "Invalid objective: 'adaptive_sharpness' is invariant under every positive rescaling "
            "(g·w + t|g·w|⊙d = g·(w + t|w|⊙d)): no teleport along them can change it"
        )
    options = Rescale(steps=steps, max_log_step=max_log_step, lr=lr)
    loss_rtol = None if loss_rtol is None else checks.positive("loss_rtol", loss_rtol)
    _t_range(t_range)
    for name, value in (("directions", directions), ("t_count", t_count), ("samples", samples)):
        checks.count(name, value, minimum=1)
    checks.count("probes", probes)
    checks.count("seed", seed)

    start = time.perf_counter()
    inputs, targets = batch
    symmetry = symmetry_of(model, inputs)
    params = {n: p.detach() for n, p in model.named_parameters()}
    loss_of = module_loss(model, loss_fn, inputs, targets)
    measure = make_objective(
        objective,
        loss_of,
        params,
        symmetry,
        directions=directions,
        t_range=t_range,
        t_count=t_count,
        samples=samples,
        probes=probes,
        seed=seed,
    )
    if objective == "hessian_trace" and direction == "decrease" and measure.negative:
        raise ValueError(
            f"Invalid probes: {probes} (the estimate of diag H has {measure.negative} negative entries summed per "
            "unit, so the trace is unbounded below along the rescalings: use more probes, or probes=0 for the "
            "exact diagonal)"
        )
    sign = 1.0 if direction == "increase" else -1.0
    device = next(iter(params.values())).device
    s = torch.zeros(symmetry.n_scales, dtype=torch.float64, device=device)
    per_slope = directions * t_count if objective == "sharpness" else 0
    evaluations = 0 if objective != "hessian_trace" else 2 * (probes or sum(p.numel() for p in params.values()))
    value, slope = measure.value_and_slope(s)
    evaluations += per_slope
    trail, values, stopped, shrink = [s], [float(value)], None, 1.0
    for k in range(options.steps):
        candidate = s + shrink * ascent_step(sign * slope.double(), options)
        value, new_slope = measure.value_and_slope(candidate)
        evaluations += per_slope
        if not bool(torch.isfinite(value)) or not bool(torch.isfinite(candidate).all()):
            stopped = f"step {k + 1} rejected: the objective is not finite"
            break
        if not sign * float(value) > sign * values[-1]:  # overshot: the same direction, half the step
            shrink /= 2
            if shrink < 2**-20:
                stopped = f"step {k + 1}: no progress at 2^-20 of the step (a stationary point)"
                break
            continue
        s, slope = candidate, new_slope
        trail.append(s)
        values.append(float(value))
    if len(trail) - 1 < options.steps and stopped is None:
        stopped = f"{options.steps - len(trail) + 1} of {options.steps} steps overshot (retried at half the step)"
    best = len(trail) - 1
    with torch.no_grad():
        loss_before = loss_of(params)
        rtol = default_rtol(loss_before.dtype) if loss_rtol is None else loss_rtol
        for k in range(best, -1, -1):
            moved = act(symmetry, trail[k], params)
            loss_after = loss_of(moved)
            if k == 0 or bool(preserved(loss_before, loss_after, rtol)):
                break
            stopped = f"the loss changed beyond {rtol:g} at step {k}: walked back to step {k - 1}"
    before, after = float(loss_before), float(loss_after)
    record = ObjectiveRecord(
        objective=objective,
        direction=direction,
        loss_before=before,
        loss_after=after,
        steps_taken=k,
        stopped=stopped,
        trace=values[: k + 1],
        log_scales=trail[k].tolist(),
        cost_s=time.perf_counter() - start,
        gradient_evaluations=evaluations,
    )
    return {n: p.detach() for n, p in moved.items()}, record
