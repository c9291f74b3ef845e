"""SO(2) teleport on the 2-D problems: loss invariance (property tests) and the rotation itself."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as hs

import symtele as st

coordinates = hs.floats(-3.0, 3.0, allow_nan=False)


def _steepened_or_said_why(record, keep):
    """All 10 ascent steps taken unless one was rejected or undone by rounding (the record says which). With
    ``keep="steepest"`` the teleport never ends less steep than it began, and says "moved nothing" when it
    lands no steeper; with the writeup's ``keep="last"`` it may end less steep, and then says so."""
    why = record.stopped or ""
    assert record.steps_taken == 10 or any(w in why for w in ("rejected", "walked back", "moved nothing"))
    steeper = record.grad_norm_sq_after > record.grad_norm_sq_before * (1 + 1e-12)
    if keep == "steepest":
        assert record.grad_norm_sq_after >= record.grad_norm_sq_before * (1 - 1e-6)
        assert steeper or "moved nothing" in why
    elif record.grad_norm_sq_after < record.grad_norm_sq_before * (1 - 1e-6):
        assert "ended less steep than the start" in why or "moved nothing" in why


@given(
    hs.sampled_from(sorted(st.PROBLEMS_2D)),
    coordinates,
    coordinates,
    hs.floats(0.0, 2 * math.pi),
    hs.sampled_from([1e-5, 1e-4, 1e-3]),
    hs.sampled_from(["last", "steepest"]),
)
def test_so2_keeps_the_loss_float64(name, x, y, angle, lr, keep):
    problem = st.get_problem(name)
    w = torch.tensor((x, y), dtype=torch.float64)
    new, record = st.so2_teleport(problem, w, lr=lr, steps=10, angle=angle, keep=keep)
    before, after = problem.loss([w]).item(), problem.loss([new]).item()
    assert abs(after - before) <= 1e-10 * max(before, 1e-300)
    assert torch.isfinite(new).all()
    _steepened_or_said_why(record, keep)


@given(
    hs.sampled_from(sorted(st.PROBLEMS_2D)),
    coordinates,
    coordinates,
    hs.floats(0.0, 2 * math.pi),
    hs.sampled_from(["last", "steepest"]),
)
def test_so2_keeps_the_loss_float32(name, x, y, angle, keep):
    problem = st.get_problem(name)
    w = torch.tensor((x, y), dtype=torch.float32)
    new, record = st.so2_teleport(problem, w, lr=1e-4, steps=10, angle=angle, keep=keep)
    before, after = problem.loss([w]).item(), problem.loss([new]).item()
    assert abs(after - before) <= 1e-5 * max(before, 1e-30)
    assert torch.isfinite(new).all()
    _steepened_or_said_why(record, keep)


@pytest.mark.parametrize("problem", [st.QUADRATIC, st.BOOTH, st.ROSENBROCK])
def test_change_of_variables_is_inverted(problem):
    w = torch.randn(50, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(problem.from_uv(problem.to_uv(w)), w, atol=1e-12)
    assert torch.allclose(problem.rotate(w, torch.tensor(0.0, dtype=torch.float64)), w, atol=1e-12)


def test_batched_points_teleport_independently():
    w = torch.tensor([[8.0, -2.0], [1.0, 1.0], [-3.0, 0.5]], dtype=torch.float64)
    new, record = st.so2_teleport(st.QUADRATIC, w, angle=0.5)
    assert new.shape == w.shape and len(record.loss_before) == 3
    assert record.loss_after == pytest.approx(record.loss_before, rel=1e-12)
    for i in range(3):
        alone, _ = st.so2_teleport(st.QUADRATIC, w[i], angle=0.5)
        assert torch.allclose(new[i], alone, rtol=1e-12, atol=1e-12)


def test_an_overshooting_ascent_keeps_its_steepest_angle():
    # Rosenbrock at (1.86, 2.41): ‖∇f‖² varies by orders of magnitude around the level set, and a step of 1e-3
    # on the angle overshoots; the last angle is far less steep than one visited before it
    w = torch.tensor((1.8613034159795374, 2.412995702637496), dtype=torch.float64)
    last, said = st.so2_teleport(st.ROSENBROCK, w, lr=1e-3, steps=10, angle=1.948714650604693)
    assert said.grad_norm_sq_after < said.grad_norm_sq_before and "ended less steep" in said.stopped
    new, record = st.so2_teleport(st.ROSENBROCK, w, lr=1e-3, steps=10, angle=1.948714650604693, keep="steepest")
    assert "kept the steepest angle visited" in record.stopped
    assert record.grad_norm_sq_after > record.grad_norm_sq_before
    kept = st.ROSENBROCK.rotate(w, torch.tensor(record.trace["angle"][0], dtype=torch.float64))
    assert torch.allclose(kept, new, rtol=1e-12) and not torch.allclose(kept, last)
