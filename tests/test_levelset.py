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
