"""Level-set teleport: stays in the sub-level set and steepens the gradient."""

import pytest
import torch

import symtele as st


@pytest.mark.parametrize(
    "problem,start",
    [
        (st.QUADRATIC, (8.0, -2.0)),
        (st.BOOTH, (5.0, -2.0)),
        (st.ROSENBROCK, (-1.2, 1.0)),
        (st.ROSENBROCK, (0.5, -0.5)),
    ],
)
def test_level_set_teleport_keeps_the_level_and_raises_the_gradient(problem, start):
    w = torch.tensor(start, dtype=torch.float64)
    delta = 1e-8
    new, record = st.level_set_teleport(lambda v: problem.loss([v]), w, delta=delta)
    assert problem.loss([new]).item() <= problem.loss([w]).item() + delta
    assert record.grad_norm_sq_after > 1.2 * record.grad_norm_sq_before
    assert torch.isfinite(new).all()
    trace = record.trace
    assert (
        len(trace["objective"]) == len(trace["constraint_gap"]) == len(trace["kkt_residual"]) == len(trace["step_size"])
    )
    assert trace["step_size"][0] > 0


def test_quadratic_reaches_the_steepest_point_of_its_level_set():
    # On x² + 9y² = 100 the largest ‖∇f‖² is 36 · 100, at (0, ±10/3).
    w = torch.tensor((8.0, -2.0), dtype=torch.float64)
    new, record = st.level_set_teleport(lambda v: st.QUADRATIC.loss([v]), w)
    assert record.grad_norm_sq_after == pytest.approx(3600.0, rel=1e-6)
    assert abs(new[1].item()) == pytest.approx(10 / 3, rel=1e-6)


def test_level_set_on_a_module_through_training():
    objective, params = st.softplus_mlp(0, n_samples=32)
    history = st.train(
        objective, params, optimizer="gd", lr=0.1, epochs=8, teleport=st.LevelSet(steps=10), schedule=[3]
    )
    (record,) = history.teleports
    assert history.method == "gd+levelset"
    assert record.loss_after <= record.loss_before + 1e-8
    assert record.grad_norm_sq_after >= record.grad_norm_sq_before
    assert history.loss[3] == pytest.approx(record.loss_after)


def test_non_finite_candidates_are_never_returned():
    radius = 3.0

    def walled(v):  # a quadratic that is +inf outside a disc
        value = st.QUADRATIC.loss([v])
        return torch.where(v.norm() > radius, torch.full_like(value, float("inf")), value)

    w = torch.tensor((2.0, -0.5), dtype=torch.float64)
    new, record = st.level_set_teleport(walled, w, rho=1e6)
    assert torch.isfinite(new).all() and new.norm() <= radius
    assert walled(new).item() <= walled(w).item() + 1e-8


def test_booth_teleport_reaches_the_maximum_computed_independently():
    # Booth is f = ‖A w − b‖², so ∇f = 2Aᵀr with r = A w − b, and over the level set {‖r‖² = f} (A is
    # invertible, so every such r is reached) ‖∇f‖² = 4 rᵀAAᵀr is at most 4 λ_max(AAᵀ) f
    A = torch.tensor([[1.0, 2.0], [2.0, 1.0]], dtype=torch.float64)
    w = torch.tensor((5.0, -2.0), dtype=torch.float64)
    f = st.BOOTH.loss([w]).item()
    most = 4 * torch.linalg.eigvalsh(A @ A.T).max().item() * f
    new, record = st.level_set_teleport(lambda v: st.BOOTH.loss([v]), w)
    assert st.BOOTH.loss([new]).item() <= f + 1e-8
    assert record.grad_norm_sq_after == pytest.approx(most, rel=1e-6)
    assert record.newton_angle_deg < 1e-3  # there ∇f is an eigenvector of the Hessian 2AᵀA
    assert record.grad_evals > 0 and record.hvp_evals == record.steps_taken + 1


def test_the_recorded_evaluations_are_the_gradients_computed():
    # the record counts every gradient the teleport computes, once (a pull-back starts from the trial
    # point's loss and gradient, already known, instead of computing them again)
    calls = {"forward": 0}

    def counted(v):
        calls["forward"] += 1
        return st.ROSENBROCK.loss([v])

    w = torch.tensor((-0.5, 1.2), dtype=torch.float64)
    new, record = st.level_set_teleport(counted, w, steps=40, penalty=3.0)
    assert record.steps_taken > 5 and record.grad_evals > record.hvp_evals
    # each gradient (an HVP's included) is one forward; one more measures the end point, outside the cost
    assert calls["forward"] == record.grad_evals + 1


def test_a_step_that_cannot_return_to_the_sub_level_set_is_a_rejected_trial():
    # Rosenbrock from writeup Fig. 6's start, after 50 Armijo steps in float32 (the point of its first
    # teleport). The first trial step, ρ = 1, lands where f ≈ 7e9: ‖∇f‖² grows like x⁶ and the penalty like
    # x⁴, so the merit rewards it, and no pull-back returns from there. That trial must count as rejected
    # (a smaller ρ is tried), not end the teleport at its start.
    history = st.train(st.ROSENBROCK, [torch.tensor([-1.0, -1.0])], optimizer="gd-ls", lr=1.0, epochs=50)
    (w,) = history.final_params
    new, record = st.level_set_teleport(lambda v: st.ROSENBROCK.loss([v]), w)
    assert record.trace["step_size"][0] < 1.0  # the first accepted step is a smaller one
    assert record.steps_taken > 1 and "moved nothing" not in (record.stopped or "")
    assert record.grad_norm_sq_after > 100 * record.grad_norm_sq_before
    assert st.ROSENBROCK.loss([new]).item() <= st.ROSENBROCK.loss([w]).item() + 1e-8


def test_a_teleport_that_moves_nothing_says_so():
    # at the minimum the gradient is zero: there is nothing to climb
    w = torch.tensor((1.0, 1.0), dtype=torch.float64)
    new, record = st.level_set_teleport(lambda v: st.ROSENBROCK.loss([v]), w)
    assert torch.equal(new, w) and record.stopped == "moved nothing: zero gradient"
    _, none = st.level_set_teleport(lambda v: st.QUADRATIC.loss([v]), torch.tensor((8.0, -2.0)), steps=0)
    assert none.stopped.startswith("moved nothing")


def test_the_writeups_penalty_barely_moves():
    # γ = 1e9 (writeup Algorithm 3) accepts only tiny steps: after 100 iterations ‖∇f‖² on x² + 9y² from
    # (8, −2) is where it started to six digits, while the scaled penalty reaches the maximum, 36 f = 3600
    w = torch.tensor((8.0, -2.0), dtype=torch.float64)
    _, fixed = st.level_set_teleport(lambda v: st.QUADRATIC.loss([v]), w, gamma=1e9)
    _, scaled = st.level_set_teleport(lambda v: st.QUADRATIC.loss([v]), w)
    assert fixed.grad_norm_sq_after == pytest.approx(fixed.grad_norm_sq_before, rel=1e-5)
    assert scaled.grad_norm_sq_after == pytest.approx(3600.0, rel=1e-6)
    with pytest.raises(ValueError, match="gamma"):
        st.LevelSet(gamma=-1.0)
