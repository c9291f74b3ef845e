"""What a new user runs into first: arguments refused with the reason, errors that say where they came from."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import symtele as st
from symtele.lookahead import shadow_step

ROOT = Path(__file__).resolve().parents[1]


def _mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 3))


def _data(n: int = 64):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 10, generator=g), torch.randint(0, 3, (n,), generator=g)


def _values(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def test_an_optimizer_of_another_network_is_refused_when_the_teleporter_is_made():
    torch.manual_seed(0)
    model, other = _mlp(), _mlp()
    optimizer = torch.optim.SGD(other.parameters(), lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match=r"Invalid optimizer: SGD holds none of the model's 4 trainable parameters"):
        st.Teleporter(model, F.cross_entropy, optimizer, every=2)


def test_an_optimizer_of_part_of_the_network_teleports_with_the_lookahead():
    """The parameters the optimiser does not hold are rescaled and do not step (was a KeyError in the look-ahead)."""
    torch.manual_seed(0)
    model = _mlp()
    optimizer = torch.optim.SGD(model[2].parameters(), lr=0.1, momentum=0.9)  # the first layer is not in it
    x, y = _data()
    teleporter = st.Teleporter(model, F.cross_entropy, optimizer, every=1)
    before = model(x).detach()
    record = teleporter.teleport(x[:32], y[:32], lookahead_batch=(x[32:], y[32:]))
    assert "lookahead" in record.trace and len(record.trace["lookahead"]["t"]) >= 2
    torch.testing.assert_close(model(x).detach(), before, rtol=1e-4, atol=1e-5)  # the function is kept


def test_shadow_step_leaves_a_parameter_the_optimizer_does_not_hold_where_it_was_given():
    a, b = nn.Parameter(torch.ones(3)), nn.Parameter(torch.ones(2))
    optimizer = torch.optim.SGD([a], lr=0.5)
    values = {a: torch.full((3,), 2.0), b: torch.full((2,), 3.0)}
    grads = {a: torch.ones(3), b: torch.ones(2)}
    new = shadow_step(optimizer, values, grads, {})
    torch.testing.assert_close(new[a], torch.full((3,), 1.5))  # 2 - 0.5 * 1
    torch.testing.assert_close(new[b], torch.full((2,), 3.0))  # not the optimiser's: no step
    assert torch.equal(a.detach(), torch.ones(3)) and torch.equal(b.detach(), torch.ones(2))


def test_an_empty_batch_is_refused_naming_the_argument_before_anything_changes():
    torch.manual_seed(0)
    model = _mlp()
    x, y = _data()
    start = _values(model)
    teleporter = st.Teleporter(model, F.cross_entropy, torch.optim.SGD(model.parameters(), lr=0.1), every=1)
    with pytest.raises(ValueError, match=r"Invalid inputs: an empty batch \(shape \(0, 10\)\)"):
        teleporter.teleport(x[:0], y[:0])
    with pytest.raises(ValueError, match=r"Invalid inputs: an empty batch"):
        teleporter.maybe(1, x[:0], y[:0])
    with pytest.raises(ValueError, match=r"Invalid inputs: an empty batch"):
        st.teleport_model(model, F.cross_entropy, x[:0], y[:0])
    with pytest.raises(ValueError, match=r"Invalid example: an empty batch \(shape \(0, 10\)\)"):
        st.discover(model, x[:0])
    assert all(torch.equal(a, b) for a, b in zip(start, model.parameters())) and not teleporter.records


def test_a_bad_judging_batch_is_named_as_the_previous_steps_batch_and_changes_nothing():
    torch.manual_seed(0)
    model = _mlp()
    x, y = _data()
    teleporter = st.Teleporter(model, F.cross_entropy, torch.optim.SGD(model.parameters(), lr=0.1), every=2)
    teleporter.maybe(0, x, y)
    teleporter.maybe(1, x, y[:4])  # off the schedule: kept, unchecked, as the next teleport's judging batch
    start = _values(model)
    with pytest.raises(ValueError, match=r"raised on the previous step's batch \(the look-ahead's judging batch\)"):
        teleporter.maybe(2, x, y)
    assert all(torch.equal(a, b) for a, b in zip(start, model.parameters())) and not teleporter.records
    teleporter.maybe(3, x, y)
    teleporter.maybe(5, x[:0], y[:0])
    with pytest.raises(ValueError, match=r"Invalid previous step's batch \(the look-ahead's judging batch\): an empty"):
        teleporter.maybe(6, x, y)


def test_a_batch_of_the_wrong_shape_is_refused_with_the_models_own_error_and_no_printed_traceback(capsys):
    model = _mlp()
    with pytest.raises(ValueError, match=r"shape \(2, 7\) does not run through Sequential \(RuntimeError: mat1"):
        st.discover(model, torch.randn(2, 7))
    assert "Traceback" not in capsys.readouterr().err


def test_the_readme_names_the_notebooks_that_take_device_and_threads():
    from report.parameters import inspect_defaults

    notebooks = sorted(p for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    parameters = {p.stem[:2]: set(inspect_defaults(p)["parameters"]) for p in notebooks}
    device = [n for n, names in parameters.items() if "device" in names]
    no_threads = [n for n, names in parameters.items() if "threads" not in names]
    text = " ".join((ROOT / "README.md").read_text().split())
    assert device == ["01", "02", "03", "04", "05", "08", "09"] and no_threads == ["07"]
    assert "01–05, 08 and 09 take `device`" in text and "all but 07 take `threads`" in text


def test_a_teleport_of_no_steps_says_so_rather_than_blaming_the_gradient():
    torch.manual_seed(0)
    model = _mlp()
    x, y = _data()
    record = st.teleport_model(model, F.cross_entropy, x, y, steps=0)
    assert record.t == 0 and record.stopped == "moved nothing: steps=0"
    assert st.teleport_model(model, F.cross_entropy, x, y).grad_norm_sq_after > record.grad_norm_sq_before


def test_the_readmes_params_example_with_an_exponent_in_yaml_is_read_as_numbers(tmp_path):
    """PyYAML reads ``1e-3`` as a string (YAML 1.1 wants ``1.0e-3``); the build reads it as YAML 1.2 does."""
    from report.parameters import parse_value, resolve

    assert parse_value("lrs", "{sgd: 0.2, adam: 1e-3}") == {"sgd": 0.2, "adam": 0.001}
    assert parse_value("x", "[1E+2, -3e2, .5e1, 1e3x]") == [100.0, -300.0, 5.0, "1e3x"]
    example = "01_convex_so2.start=(1,2) 04_beyond_optimizers.lrs='{sgd: 0.2, adam: 1e-3}'"
    assert example in (ROOT / "README.md").read_text()
    notebooks = ROOT / "notebooks"
    resolved = resolve(notebooks, tmp_path / "build", ["01_convex_so2", "04_beyond_optimizers"], "", example)
    assert resolved["04_beyond_optimizers"]["lrs"] == {"sgd": 0.2, "adam": 0.001}
    params_file = tmp_path / "params.yaml"
    params_file.write_text("02_relu_posscale:\n  gd_lr: 2e-4\n")
    resolved = resolve(notebooks, tmp_path / "build", ["02_relu_posscale"], "", "", str(params_file))
    assert resolved["02_relu_posscale"]["gd_lr"] == 2e-4


def test_a_network_whose_units_are_all_dead_says_the_gradient_has_nothing_along_the_scales():
    """Not that later steps overshot: ‖∇L‖² is the same at every step of the ascent."""
    torch.manual_seed(0)
    model = _mlp()
    with torch.no_grad():
        model[0].bias.fill_(-100.0)  # every ReLU off on every input
    x, y = _data()
    record = st.teleport_model(model, F.cross_entropy, x, y)
    assert record.t == 0 and record.stopped == "moved nothing: the gradient has no component along the scales"
    assert record.grad_norm_sq_after == record.grad_norm_sq_before


@pytest.mark.parametrize("schedule", [5.0, "5", object()])
def test_a_schedule_that_is_neither_steps_nor_a_schedule_is_refused_naming_it(schedule):
    model = _mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(TypeError, match=r"Invalid schedule: .* \(expected an epoch, a list of epochs or a Schedule\)"):
        st.Teleporter(model, F.cross_entropy, optimizer, schedule=schedule)


def test_a_record_not_teleported_from_a_penalised_gradient_gives_the_reason_and_no_nan_gradient_norms():
    torch.manual_seed(0)
    model = _mlp()
    x, y = _data()
    teleporter = st.Teleporter(model, F.cross_entropy, torch.optim.SGD(model.parameters(), lr=0.1), every=1)
    penalty = 0.1 * sum((p**2).sum() for p in model.parameters())
    (F.cross_entropy(model(x), y) + penalty).backward()
    record = teleporter.maybe_after_backward(1, x, y)
    assert record.t == 0 and "p.grad is not the gradient of a loss the rescalings keep" in record.stopped
    assert "nan" not in str(record) and "‖∇L‖²" not in str(record)
