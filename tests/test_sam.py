"""symtele.sam.SAM: the ascent step, the step from w, and the base optimiser at rho = 0."""

import pytest
import torch

from symtele.sam import SAM


def _quadratic():
    torch.manual_seed(0)
    a = torch.randn(5, 5, dtype=torch.float64)
    a = a @ a.T + torch.eye(5, dtype=torch.float64)
    w = torch.nn.Parameter(torch.randn(5, dtype=torch.float64))
    return a, w, lambda: 0.5 * w @ a @ w


def test_the_ascent_step_has_length_rho_along_the_gradient_and_the_step_starts_from_w():
    a, w, loss = _quadratic()
    rho, lr = 0.3, 0.05
    opt = SAM(torch.optim.SGD([w], lr=lr), rho=rho)
    w0 = w.detach().clone()
    g = a @ w0
    seen = []

    def closure():
        seen.append(w.detach().clone())
        value = loss()
        value.backward()
        return value

    opt.zero_grad()
    loss().backward()
    opt.step(closure)
    (perturbed,) = seen
    assert torch.linalg.vector_norm(perturbed - w0) == pytest.approx(rho, rel=1e-12)
    assert opt.last_ascent_norm == pytest.approx(rho, rel=1e-12)
    torch.testing.assert_close(perturbed, w0 + rho * g / g.norm(), rtol=1e-14, atol=1e-14)
    # the step: from w (not from w + e), with the gradient at w + e
    torch.testing.assert_close(w.detach(), w0 - lr * (a @ perturbed), rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize(
    "make",
    [lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9), lambda ps: torch.optim.Adam(ps, lr=0.01)],
    ids=["momentum", "adam"],
)
def test_rho_zero_is_the_base_optimiser_bit_for_bit(make):
    torch.manual_seed(1)
    x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
    nets = []
    for _ in range(2):
        torch.manual_seed(2)
        nets.append(torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)))
    plain, sam = make(nets[0].parameters()), SAM(make(nets[1].parameters()), rho=0.0)

    def loss(net):
        return torch.nn.functional.cross_entropy(net(x), y)

    for _ in range(5):
        plain.zero_grad()
        loss(nets[0]).backward()
        plain.step()
        sam.zero_grad()
        loss(nets[1]).backward()
        sam.step(lambda: loss(nets[1]).backward())
    for p, q in zip(nets[0].parameters(), nets[1].parameters()):
        assert torch.equal(p, q)
    assert sam.last_ascent_norm == 0.0


def test_a_positive_rho_moves_differently_from_the_base_optimiser():
    a, w, loss = _quadratic()
    w0 = w.detach().clone()
    opt = SAM(torch.optim.SGD([w], lr=0.05), rho=0.3)
    opt.zero_grad()
    loss().backward()
    opt.step(lambda: loss().backward())
    assert not torch.allclose(w.detach(), w0 - 0.05 * (a @ w0))


def test_bad_arguments_are_refused():
    w = torch.nn.Parameter(torch.ones(2))
    with pytest.raises(ValueError, match="rho"):
        SAM(torch.optim.SGD([w], lr=0.1), rho=-0.1)
    with pytest.raises(TypeError, match="optimizer"):
        SAM([w], rho=0.1)
    opt = SAM(torch.optim.SGD([w], lr=0.1), rho=0.1)
    with pytest.raises(ValueError, match="gradient"):
        opt.step(lambda: None)
    (w**2).sum().backward()
    with pytest.raises(ValueError, match="closure"):
        opt.step(None)
