"""SO(2) teleport on the 2-D problems: loss invariance (property tests) and the rotation itself."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as hs

import symtele as st

coordinates = hs.floats(-3.0, 3.0, allow_nan=False)


@given(
    hs.sampled_from(sorted(st.PROBLEMS_2D)),
    coordinates,
    coordinates,
    hs.floats(0.0, 2 * math.pi),
    hs.sampled_from([1e-5, 1e-4, 1e-3]),
)
def test_so2_keeps_the_loss_float64(name, x, y, angle, lr):
    problem = st.get_problem(name)
    w = torch.tensor((x, y), dtype=torch.float64)
    new, record = st.so2_teleport(problem, w, lr=lr, steps=10, angle=angle)
    before, after = problem.loss([w]).item(), problem.loss([new]).item()
    assert abs(after - before) <= 1e-10 * max(before, 1e-300)
    assert torch.isfinite(new).all()


@given(hs.sampled_from(sorted(st.PROBLEMS_2D)), coordinates, coordinates, hs.floats(0.0, 2 * math.pi))
def test_so2_keeps_the_loss_float32(name, x, y, angle):
    problem = st.get_problem(name)
    w = torch.tensor((x, y), dtype=torch.float32)
    new, record = st.so2_teleport(problem, w, lr=1e-4, steps=10, angle=angle)
    before, after = problem.loss([w]).item(), problem.loss([new]).item()
    assert abs(after - before) <= 1e-5 * max(before, 1e-30)
    assert torch.isfinite(new).all()


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
