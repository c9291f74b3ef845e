"""The seed's numbers (REFERENCE §1 and §2), reproduced through the public API."""
import pytest
import torch

import symtele as st

GD_QUADRATIC = [100, 52.128, 33.2131, 22.7443, 15.9146, 11.2035, 7.9002, 5.5734, 3.9324, 2.7747]
TELEPORT_QUADRATIC = [100, 52.128, 33.2131, 22.7443, 15.9146, 3.08107, 0.596495, 0.115481, 0.0223570, 0.00432800]

FINAL_LOSSES = {
    ("gd", None): [2.3368, 2.1128, 1.7473, 2.1046, 1.2967],
    ("gd", 1e-4): [1.3999, 1.0025, 1.2858, 1.3605, 0.9173],
    ("adagrad", None): [1.3561, 1.2590, 1.5574, 1.3472, 1.4276],
    ("adagrad", 1e-5): [1.2551, 0.9431, 1.0511, 1.0849, 0.6893],
}


def test_quadratic_gd_losses():
    history = st.train(st.QUADRATIC, st.QUADRATIC.initial_params(), lr=0.08, epochs=10)
    assert history.method == "gd"
    assert history.loss == pytest.approx(GD_QUADRATIC, rel=1e-3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_quadratic_teleport_losses(seed):
    history = st.train(st.QUADRATIC, st.QUADRATIC.initial_params(), lr=0.08, epochs=10,
                       teleport=st.SO2(lr=1e-3, steps=10, seed=seed), schedule=4)
    assert history.method == "gd+so2"
    assert history.teleport_epochs == [4]
    assert history.loss == pytest.approx(TELEPORT_QUADRATIC, rel=1e-3)


def test_quadratic_teleport_lands_on_steepest_point():
    history = st.train(st.QUADRATIC, st.QUADRATIC.initial_params(), lr=0.08, epochs=4)
    (w,) = history.final_params  # the point of epoch 4, where the seed teleports
    teleported, record = st.so2_teleport(st.QUADRATIC, w, generator=torch.Generator().manual_seed(0))
    # all of the loss in v = 3y: the gradient norm is maximal, 36 · f
    assert record.loss_after == pytest.approx(record.loss_before, rel=1e-12)
    assert record.grad_norm_sq_after == pytest.approx(36 * record.loss_before, rel=1e-6)
    assert abs(teleported[0].item()) < 1e-4


@pytest.mark.parametrize("optimizer,teleport_lr", list(FINAL_LOSSES))
def test_relu_final_losses_per_seed(optimizer, teleport_lr):
    objective, weights = st.seed_task(st.SEEDS)
    lr = 1e-4 if optimizer == "gd" else 1e-1
    teleport = None if teleport_lr is None else st.PositiveScale(lr=teleport_lr, steps=10, clamp=0.1)
    history = st.train(objective, weights, optimizer=optimizer, lr=lr, epochs=300,
                       teleport=teleport, schedule=None if teleport is None else 5)
    assert history.loss[-1] == pytest.approx(FINAL_LOSSES[optimizer, teleport_lr], rel=1e-3)
    if teleport is not None:
        (record,) = history.teleports
        assert record.epoch == 5 and record.steps_taken == 10 and record.stopped is None
        assert all(a > b for a, b in zip(record.grad_norm_sq_after, record.grad_norm_sq_before))


def test_batched_seeds_equal_the_per_seed_loop():
    objective, weights = st.seed_task(st.SEEDS)
    batched = st.train(objective, weights, lr=1e-4, epochs=50, teleport=st.PositiveScale(), schedule=5)
    for i, seed in enumerate(st.SEEDS):
        single_objective, single_weights = st.seed_task(seed)
        single = st.train(single_objective, single_weights, lr=1e-4, epochs=50,
                          teleport=st.PositiveScale(), schedule=5)
        assert [row[i] for row in batched.loss] == pytest.approx(single.loss, rel=1e-6)
