"""Level-set teleport by normalised SLP: stays in the sub-level set, finds the steepest point, counts its work."""

import pytest
import torch

import symtele as st
from symtele.teleports.level_set import level_set_teleport
from symtele.teleports.level_set_slp import FIGURE_1, LevelSetSLP, level_set_slp_teleport


def _loss_fn(problem):
    return lambda v: problem.loss([v])


def _steepest_on_level_set(problem, start):
    """max ‖∇f‖² on ``f = f(start)`` for a quadratic ``f = ½(x − x*)ᵀH(x − x*)``: ``2 λ_max(H) (f(start) − f(x*))``."""
    minimum = torch.tensor(problem.minimum, dtype=torch.float64)
    hessian = torch.autograd.functional.hessian(_loss_fn(problem), minimum)
    level = problem.loss([start]) - problem.loss([minimum])
    return 2 * torch.linalg.eigvalsh(hessian).max().item() * level.item()


class _Counting:
    """``loss_fn`` that counts, per call, how many derivatives reach its input: the first is a gradient,
    the second a Hessian-vector product (a derivative of the gradient)."""

    def __init__(self, loss_fn):
        self.loss_fn, self.calls = loss_fn, []

    def __call__(self, v):
        self.calls.append(0)
        i = len(self.calls) - 1

        def hook(grad):
            self.calls[i] += 1

        v.register_hook(hook)
        return self.loss_fn(v)

    @property
    def grads(self):
        return sum(1 for c in self.calls if c >= 1)

    @property
    def hvps(self):
        return sum(1 for c in self.calls if c >= 2)


@pytest.mark.parametrize("problem,start", [(st.QUADRATIC, (8.0, -2.0)), (st.BOOTH, (5.0, -2.0))])
def test_quadratics_reach_the_steepest_point_of_their_level_set(problem, start):
    w = torch.tensor(start, dtype=torch.float64)
    steepest = _steepest_on_level_set(problem, w)
    new, record = level_set_slp_teleport(_loss_fn(problem), w, **FIGURE_1)
    assert problem.loss([new]).item() <= problem.loss([w]).item() + 1e-8
    assert problem.loss([new]).item() == pytest.approx(record.loss_after, abs=0)
    assert torch.autograd.functional.jacobian(_loss_fn(problem), new).square().sum().item() == pytest.approx(
        record.grad_norm_sq_after, rel=1e-12
    )
    assert record.grad_norm_sq_after <= steepest * (1 + 1e-9)
    assert record.grad_norm_sq_after == pytest.approx(steepest, rel=1e-3)


def test_the_quadratics_maxima_are_the_known_ones():
    assert _steepest_on_level_set(st.QUADRATIC, torch.tensor((8.0, -2.0), dtype=torch.float64)) == pytest.approx(3600)
    assert _steepest_on_level_set(st.BOOTH, torch.tensor((5.0, -2.0), dtype=torch.float64)) == pytest.approx(1620)


@pytest.mark.parametrize(
    "problem,start",
    [(st.QUADRATIC, (8.0, -2.0)), (st.BOOTH, (5.0, -2.0)), (st.ROSENBROCK, (-1.2, 1.0)), (st.ROSENBROCK, (0.5, -0.5))],
)
def test_default_constants_keep_the_level_and_the_gain_of_the_last_iterate(problem, start):
    # The iterates approach the level set from above: the pull-back of the last one is what makes the gain usable.
    w = torch.tensor(start, dtype=torch.float64)
    new, record = level_set_slp_teleport(_loss_fn(problem), w)
    assert problem.loss([new]).item() <= problem.loss([w]).item() + 1e-8
    assert torch.isfinite(new).all()
    assert record.method == "levelset-slp"
    assert record.steps_taken == 100 and record.stopped is None
    trace = record.trace
    assert len(trace["objective"]) == len(trace["constraint_gap"]) == len(trace["kkt_residual"]) == 100
    assert trace["step_size"] == [r for r in trace["step_size"] if r > 0] and len(trace["step_size"]) == 100
    assert record.grad_norm_sq_after >= 0.99 * 2 * max(trace["objective"])
    assert record.grad_norm_sq_after > 1.5 * record.grad_norm_sq_before


def test_without_the_pull_back_the_default_constants_move_nothing():
    w = torch.tensor((8.0, -2.0), dtype=torch.float64)
    new, record = level_set_slp_teleport(_loss_fn(st.QUADRATIC), w, pull_back=False)
    assert torch.equal(new, w)
    assert record.stopped.startswith("moved nothing: no iterate within the sub-level set")
    assert record.loss_after == record.loss_before and record.grad_norm_sq_after == record.grad_norm_sq_before
    assert record.trace["constraint_gap"][-1] > 1e-8  # the last iterate lies above the level


@pytest.mark.parametrize("start_grad_norm_sq,trials", [(0.9975, 2), (1.01, 1), (0.97, 1)])
def test_the_step_size_grows_after_a_step_whose_armijo_ratio_is_at_least_five(start_grad_norm_sq, trials):
    # The ratio is that of the log-merit's two sides, so it reaches 5 only when ½ log‖∇L‖² is just above 0
    # (the first step from ‖∇L‖² = 0.9975 has ratio ≈ 12, from 1.01 and 0.97 below 1): the second line
    # search then starts from 2ρ = 0.6, which fails, and accepts 0.3 at its second trial.
    scale = (start_grad_norm_sq / 1552) ** 0.5  # ‖∇(x² + 9y²)‖² = 1552 at (8, −2)
    w = torch.tensor((8.0, -2.0), dtype=torch.float64)
    _, record = level_set_slp_teleport(lambda v: scale * st.QUADRATIC.loss([v]), w, rho=0.3, steps=2, pull_back=False)
    assert record.grad_norm_sq_before == pytest.approx(start_grad_norm_sq)
    assert record.trace["step_size"] == [0.3, 0.3]
    assert (record.grad_evals, record.hvp_evals) == (2 + trials, 2)


@pytest.mark.parametrize(
    "problem,start,grad_norm_sq,gap",
    [
        (st.QUADRATIC, (8.0, -2.0), 3376.409240040042, 0.0006783996947632431),
        (st.BOOTH, (5.0, -2.0), 1607.6771745017213, 0.00016008074173612385),
        (st.ROSENBROCK, (-1.2, 1.0), 121532.94886903343, 0.0011923533447628643),
    ],
)
def test_the_iterates_are_those_of_the_papers_code(problem, start, grad_norm_sq, gap):
    # ‖∇L‖² and L − L₀ at the 100th iterate of the paper's main code (aaronpmishkin/teleport, normalized_slp,
    # its default constants), as run by a re-implementation checked against it to 1e-13.
    _, record = level_set_slp_teleport(_loss_fn(problem), torch.tensor(start, dtype=torch.float64))
    assert 2 * record.trace["objective"][-1] == pytest.approx(grad_norm_sq, rel=1e-10)
    assert record.trace["constraint_gap"][-1] == pytest.approx(gap, rel=1e-6)


def test_the_papers_figure_1_teleport_is_reproduced():
    # Booth from (7.5, −4) with the Figure-1 constants: the point the paper's code returns.
    new, record = level_set_slp_teleport(_loss_fn(st.BOOTH), torch.tensor((7.5, -4.0), dtype=torch.float64), **FIGURE_1)
    assert new.tolist() == pytest.approx([-1.167140908308605, 0.6399051955002714], abs=1e-12)
    assert record.loss_after <= record.loss_before + 1e-8


def test_the_trace_has_the_keys_of_the_other_level_set_solver():
    w = torch.tensor((8.0, -2.0), dtype=torch.float64)
    _, slp = level_set_slp_teleport(_loss_fn(st.QUADRATIC), w, steps=3)
    _, other = level_set_teleport(_loss_fn(st.QUADRATIC), w, steps=3)
    assert set(slp.trace) == set(other.trace)


@pytest.mark.parametrize(
    "problem,start,options",
    [
        (st.QUADRATIC, (8.0, -2.0), {}),
        (st.BOOTH, (5.0, -2.0), {"steps": 300, **{k: v for k, v in FIGURE_1.items() if k != "steps"}}),
        (st.ROSENBROCK, (-1.2, 1.0), {}),
        (st.ROSENBROCK, (-1.2, 1.0), {"pull_back": False, "steps": 250, "beta": 0.8}),
        (st.QUADRATIC, (2.0, -0.5), {}),  # the line search after the first step fails
    ],
)
def test_counts_are_the_gradients_and_products_computed(problem, start, options):
    counting = _Counting(_loss_fn(problem))
    _, record = level_set_slp_teleport(counting, torch.tensor(start, dtype=torch.float64), **options)
    assert all(c in (1, 2) for c in counting.calls)  # every evaluation builds a gradient
    assert (record.grad_evals, record.hvp_evals) == (counting.grads, counting.hvps)
    assert record.hvp_evals == len(record.trace["objective"])
    assert record.grad_evals > record.steps_taken


def test_a_failed_line_search_stops_and_the_pulled_back_first_step_is_returned():
    # The first step from (2, −0.5) overshoots to L − L₀ ≈ 0.84, whence no step passes the Armijo test.
    w = torch.tensor((2.0, -0.5), dtype=torch.float64)
    new, record = level_set_slp_teleport(_loss_fn(st.QUADRATIC), w)
    assert record.stopped == "line search failed" and record.steps_taken == 1
    assert record.trace["constraint_gap"][1] > 0.5 and record.trace["step_size"] == [1.0, 0.0]
    assert st.QUADRATIC.loss([new]).item() <= st.QUADRATIC.loss([w]).item() + 1e-8
    assert record.grad_norm_sq_after > 1.5 * record.grad_norm_sq_before


@pytest.mark.parametrize(
    "field,value",
    [
        ("rho", 0.0),
        ("rho", -1.0),
        ("rho", float("inf")),
        ("rho", float("nan")),
        ("steps", -1),
        ("beta", 0.0),
        ("beta", 1.0),
        ("beta", 1.5),
        ("line_search_steps", 0),
        ("alpha", 0.0),
        ("alpha", 1.0),
        ("penalty", 0.0),
        ("grow_ratio", -5.0),
        ("tol", -1e-6),
        ("min_rho", -1.0),
        ("delta", -1e-8),
    ],
)
def test_bad_options_are_refused_before_any_compute(field, value):
    def never(v):
        raise AssertionError("the loss was evaluated")

    with pytest.raises(ValueError, match=f"Invalid {field}: "):
        level_set_slp_teleport(never, torch.tensor((8.0, -2.0), dtype=torch.float64), **{field: value})
    with pytest.raises(ValueError, match=f"Invalid {field}: "):
        LevelSetSLP(**{field: value})


@pytest.mark.parametrize("field,value", [("steps", 1.5), ("pull_back", "yes"), ("rho", "1"), ("beta", True)])
def test_options_of_the_wrong_type_are_refused(field, value):
    with pytest.raises(TypeError, match=f"Invalid {field}: "):
        LevelSetSLP(**{field: value})


def test_bad_points_are_refused():
    with pytest.raises(ValueError, match="Invalid w"):
        level_set_slp_teleport(_loss_fn(st.QUADRATIC), torch.tensor((float("nan"), 1.0), dtype=torch.float64))
    with pytest.raises(ValueError, match="Invalid w"):
        level_set_slp_teleport(_loss_fn(st.QUADRATIC), torch.ones(1, 2, dtype=torch.float64))


@pytest.mark.parametrize("outside", [float("inf"), float("nan")])
@pytest.mark.parametrize("rho", [1.0, 1e6])
def test_non_finite_candidates_are_never_returned(outside, rho):
    radius = 3.0

    def walled(v):  # a quadratic that is not finite outside a disc
        value = st.QUADRATIC.loss([v])
        return torch.where(v.norm() > radius, torch.full_like(value, outside), value)

    w = torch.tensor((2.0, -0.5), dtype=torch.float64)
    counting = _Counting(walled)
    new, record = level_set_slp_teleport(counting, w, rho=rho)
    assert torch.isfinite(new).all() and new.norm() <= radius
    assert walled(new).item() <= walled(w).item() + 1e-8
    assert record.grad_norm_sq_after > 1.5 * record.grad_norm_sq_before
    assert (record.grad_evals, record.hvp_evals) == (counting.grads, counting.hvps)


def test_it_teleports_a_module_during_training():
    objective, params = st.softplus_mlp(0, n_samples=32)
    history = st.train(
        objective, params, optimizer="gd", lr=0.1, epochs=8, teleport=LevelSetSLP(steps=10), schedule=[3]
    )
    (record,) = history.teleports
    assert history.method == "gd+levelset-slp"
    assert record.epoch == 3 and record.steps_taken == 10
    assert record.loss_after <= record.loss_before + 1e-8
    assert record.grad_norm_sq_after > record.grad_norm_sq_before
    assert history.loss[3] == pytest.approx(record.loss_after)
    assert history.grad_norm_sq[3] == pytest.approx(record.grad_norm_sq_after)


def test_a_batched_objective_is_refused_before_any_compute():
    batch = [torch.tensor([[8.0, -2.0], [5.0, -2.0]], dtype=torch.float64)]
    with pytest.raises(ValueError, match="Invalid objective: .* one problem copy"):
        st.train(st.QUADRATIC, batch, optimizer="gd", lr=0.01, epochs=3, teleport=LevelSetSLP(), schedule=[1])


@pytest.mark.parametrize(
    "start,options,why",
    [
        ((8.0, -2.0), {"steps": 0}, "moved nothing: steps=0"),
        ((0.0, 0.0), {}, "moved nothing: zero gradient"),
        ((0.0, 2.0), {}, "moved nothing: stopping test met"),  # already the steepest point of its level set
    ],
)
def test_a_teleport_that_cannot_move_says_so(start, options, why):
    w = torch.tensor(start, dtype=torch.float64)
    new, record = level_set_slp_teleport(_loss_fn(st.QUADRATIC), w, **options)
    assert torch.equal(new, w)
    assert record.stopped == why
    assert record.steps_taken == 0 and record.trace["step_size"] in ([], [0.0])
    assert (record.grad_evals, record.hvp_evals) == (1, len(record.trace["objective"]))


def test_a_non_finite_start_moves_nothing():
    w = torch.tensor((8.0, -2.0), dtype=torch.float64)
    new, record = level_set_slp_teleport(lambda v: st.QUADRATIC.loss([v]) * float("inf"), w)
    assert torch.equal(new, w)
    assert record.stopped == "moved nothing: non-finite loss or gradient at the start"
