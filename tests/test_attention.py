"""The GL(d) pair symmetry of attention heads: exact on nn.MultiheadAttention in every layout, and its closed-form
objective and slope equal to double backpropagation."""

from dataclasses import replace

import pytest
import torch
from torch import nn

from symtele.teleports.attention import (
    act,
    ascend_pair,
    grams,
    multihead_attention_groups,
    pair_gradient_norm_reference,
    pair_objective,
    pair_slope,
)

LAYOUTS = {
    "fused": dict(),
    "fused-no-bias": dict(bias=False),
    "separate-kdim-vdim": dict(kdim=5, vdim=7),
    "sequence-first": dict(batch_first=False),
}


def _attention(layout, seed=0):
    torch.manual_seed(seed)
    options = {"batch_first": True, **LAYOUTS[layout]}
    module = nn.MultiheadAttention(8, 2, **options).double()
    shape = lambda width: (3, 4, width) if options["batch_first"] else (4, 3, width)  # noqa: E731
    q = torch.randn(shape(8), dtype=torch.float64)
    k = torch.randn(shape(options.get("kdim", 8)), dtype=torch.float64)
    v = torch.randn(shape(options.get("vdim", 8)), dtype=torch.float64)
    mask = torch.triu(torch.ones(4, 4, dtype=torch.bool), 1)  # causal

    def outputs(params):
        out, weights = torch.func.functional_call(module, params, (q, k, v), {"attn_mask": mask})
        return out, weights

    return module, outputs


def _random_element(d, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.linalg.matrix_exp(0.4 * torch.randn(d, d, generator=g, dtype=torch.float64))


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_every_head_group_keeps_every_output(layout):
    module, outputs = _attention(layout)
    params = dict(module.named_parameters())
    before = outputs(params)
    groups = multihead_attention_groups(module)
    assert [g.name for g in groups] == ["attention.qk[0]", "attention.vo[0]", "attention.qk[1]", "attention.vo[1]"]
    moved = {n: p.detach() for n, p in params.items()}
    for i, group in enumerate(groups):
        moved = act(group, _random_element(group.d, i), moved)
    after = outputs(moved)
    assert any(not torch.equal(moved[n], p) for n, p in params.items())
    for a, b in zip(before, after):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_the_closed_form_is_double_backpropagation(layout):
    module, outputs = _attention(layout, seed=1)
    target = torch.randn_like(outputs(dict(module.named_parameters()))[0])

    def loss_of(p):
        return (outputs(p)[0] - target).square().mean()

    params = {n: p.detach() for n, p in module.named_parameters()}
    leaves = {n: p.clone().requires_grad_(True) for n, p in params.items()}
    grads = dict(zip(leaves, torch.autograd.grad(loss_of(leaves), list(leaves.values()))))
    for i, group in enumerate(multihead_attention_groups(module)):
        c_left, c_right = grams(group, grads)
        touched = {b.param for b in group.blocks}
        rest = sum(float(g.square().sum()) for n, g in grads.items() if n not in touched)
        untouched_parts = 0.0  # the rows of touched parameters that this head's group does not move
        for name in touched:
            mask = torch.ones_like(grads[name], dtype=torch.bool)
            for b in group.blocks:
                if b.param == name:
                    if b.columns:
                        mask[:, b.rows] = False
                    else:
                        mask[b.rows] = False
            untouched_parts += float(grads[name][mask].square().sum())
        a = _random_element(group.d, 10 + i)
        x = torch.randn(group.d, group.d, dtype=torch.float64, generator=torch.Generator().manual_seed(i))
        value, slope = pair_gradient_norm_reference(loss_of, params, group, a, x)
        closed = float(pair_objective(c_left, c_right, a)) + rest + untouched_parts
        assert closed == pytest.approx(float(value), rel=1e-10)
        expected_slope = 2 * float((x @ pair_slope(c_left, c_right, a)).trace())
        assert expected_slope == pytest.approx(float(slope), rel=1e-8, abs=1e-14)


def test_the_ascent_raises_the_objective_by_bounded_steps():
    module, outputs = _attention("fused", seed=2)
    target = torch.randn_like(outputs(dict(module.named_parameters()))[0])
    leaves = {n: p.detach().clone().requires_grad_(True) for n, p in module.named_parameters()}
    loss = (outputs(leaves)[0] - target).square().mean()
    grads = dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values()))))
    group = multihead_attention_groups(module)[0]
    trail, values = ascend_pair(*grams(group, grads), steps=10, max_step=0.1)
    assert len(trail) == 11 and all(float(b) > float(a) for a, b in zip(values, values[1:]))
    for a, b in zip(trail, trail[1:]):  # each step's exp(X) has its eigenvalues within e^{±0.1}
        step = torch.linalg.inv(a) @ b
        eig = torch.linalg.eigvals(step).real
        assert float(eig.max()) <= float(torch.exp(torch.tensor(0.1))) + 1e-12
        assert float(eig.min()) >= float(torch.exp(torch.tensor(-0.1))) - 1e-12


def test_learned_key_and_value_rows_are_refused_by_name():
    with pytest.raises(ValueError, match="add_bias_kv"):
        multihead_attention_groups(nn.MultiheadAttention(8, 2, add_bias_kv=True))


def test_stacked_groups_ascend_each_by_its_own_steps():
    """Groups stacked along a leading axis take the steps each would take alone; one whose slope vanishes stays."""
    module, outputs = _attention("fused", seed=4)
    target = torch.randn_like(outputs(dict(module.named_parameters()))[0])
    leaves = {n: p.detach().clone().requires_grad_(True) for n, p in module.named_parameters()}
    loss = (outputs(leaves)[0] - target).square().mean()
    grads = dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values()))))
    pairs = [grams(group, grads) for group in multihead_attention_groups(module)]
    still = torch.eye(4, dtype=torch.float64)  # C_L = C_R = I: D = 0 at A = I, the group stays
    pairs.append((still, still))
    c_left, c_right = (torch.stack(c) for c in zip(*pairs))
    trail, values = ascend_pair(c_left, c_right, steps=5, max_step=0.1)
    assert len(trail) == 6 and trail[-1].shape == (len(pairs), 4, 4) and values[-1].shape == (len(pairs),)
    for i, (cl, cr) in enumerate(pairs[:-1]):
        alone, alone_values = ascend_pair(cl, cr, steps=5, max_step=0.1)
        assert torch.allclose(trail[-1][i], alone[-1], rtol=1e-12, atol=1e-14)
        assert float(values[-1][i]) == pytest.approx(float(alone_values[-1]), rel=1e-12)
    assert torch.equal(trail[-1][-1], still) and len(ascend_pair(still, still, steps=5)[0]) == 1


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_the_stacked_groups_are_the_groups_one_by_one(layout):
    """HeadStack's Gram matrices and action equal grams and act of each group; ascend_heads is their ascent."""
    from symtele.teleports.attention_stack import HeadStack, ascend_heads

    module, outputs = _attention(layout, seed=5)
    params = {n: p.detach().clone() for n, p in module.named_parameters()}
    g = torch.Generator().manual_seed(6)
    grads = {n: torch.randn(p.shape, generator=g, dtype=p.dtype) for n, p in params.items()}
    groups = multihead_attention_groups(module)
    stack = HeadStack(groups)
    c_left, c_right = stack.grams(grads)
    elements = torch.stack([_random_element(4, seed) for seed in range(len(groups))])
    one_by_one = dict(params)
    for i, group in enumerate(groups):
        assert torch.allclose(c_left[i], grams(group, grads)[0], rtol=1e-13, atol=0)
        assert torch.allclose(c_right[i], grams(group, grads)[1], rtol=1e-13, atol=0)
        one_by_one = act(group, elements[i], one_by_one)
    stacked = stack.act(elements, params)
    for name in params:
        assert torch.allclose(stacked[name], one_by_one[name], rtol=1e-12, atol=1e-14), name
    for before, after in zip(outputs(params), outputs(stacked)):  # every output kept
        assert torch.allclose(before, after, rtol=1e-10, atol=1e-12)
    moved, found = ascend_heads(groups, params, grads, steps=3)
    trail, _ = ascend_pair(c_left, c_right, steps=3)
    assert all(torch.equal(a, b) for a, b in zip(found, trail[-1]))
    for name, p in stack.act(trail[-1], params).items():
        assert torch.equal(moved[name], p)
    with pytest.raises(ValueError, match="Invalid groups"):
        HeadStack([])
    with pytest.raises(ValueError, match="head dimensions"):
        HeadStack([groups[0], replace(groups[1], d=3)])


def test_the_stack_reads_blocks_given_by_row_lists():
    """Hand-written attention names its rows by index: the stack reads them as it reads slices."""
    from symtele.teleports.attention_stack import HeadStack
    from symtele.teleports.symmetry import Block, PairGroup

    module, _ = _attention("fused", seed=7)
    params = {n: p.detach().clone() for n, p in module.named_parameters()}
    listed = [
        PairGroup(g.layer, g.kind, g.head, g.d, tuple(replace(b, rows=tuple(range(64)[b.rows])) for b in g.blocks))
        for g in multihead_attention_groups(module)
    ]
    assert all(isinstance(b, Block) and isinstance(b.rows, tuple) for g in listed for b in g.blocks)
    elements = torch.stack([_random_element(4, seed) for seed in range(len(listed))])
    by_slices = HeadStack(multihead_attention_groups(module)).act(elements, params)
    by_lists = HeadStack(listed).act(elements, params)
    assert all(torch.equal(by_slices[n], by_lists[n]) for n in params)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_the_path_carries_parameters_gradients_and_squares_as_each_group_would(layout):
    """PairPath moves every group at once (stacked) as act, act_on_gradient and act_on_squares of each group in turn
    would, at every fraction of the path, and plan_pairs keeps the steepest step of each group's own ascent."""
    from symtele.teleports.attention import act_on_gradient, act_on_squares
    from symtele.teleports.attention_stack import plan_pairs

    module, _ = _attention(layout, seed=8)
    params = {n: p.detach().clone() for n, p in module.named_parameters()}
    g = torch.Generator().manual_seed(9)
    grads = {n: torch.randn(p.shape, generator=g, dtype=p.dtype) for n, p in params.items()}
    groups = multihead_attention_groups(module)
    path, rows = plan_pairs(grads, groups, steps=4, max_step=0.2)
    assert [r["name"] for r in rows] == [group.name for group in groups]
    for group, row in zip(groups, rows):
        trail, values = ascend_pair(*grams(group, grads), steps=4, max_step=0.2)
        best = max(range(len(values)), key=lambda i: float(values[i]))
        assert row["step"] == best and row["after"] == pytest.approx(float(values[best]), rel=1e-12)
    assert path and len(path.moves) == sum(1 for r in rows if r["step"])
    squares = {n: v.square() for n, v in grads.items()}
    missing = groups[0].blocks[0].param  # a parameter without optimiser state yet: skipped
    partial = {n: v for n, v in grads.items() if n != missing}
    for t in (1.0, 0.5, 0.25):
        for power, move, tensors in ((-1, act, params), (1, act_on_gradient, grads), (2, act_on_squares, squares)):
            expected = dict(tensors)
            for group, a in path.elements(t):
                expected = move(group, a, expected)
            carried = path.apply(t, tensors, power)
            for name in tensors:
                assert torch.allclose(carried[name], expected[name], rtol=1e-12, atol=1e-14), (t, power, name)
        carried = path.apply(t, partial, 1)
        assert set(carried) == set(partial) and missing not in carried
    assert path.apply(1.0, grads, 0) is grads


def test_a_stack_is_made_once_per_layout():
    from symtele.teleports.attention_stack import stack_of

    module, _ = _attention("fused", seed=10)
    groups = multihead_attention_groups(module)
    again = multihead_attention_groups(module)  # new objects, the same layout
    assert stack_of(groups) is stack_of(again) and stack_of(groups[:2]) is not stack_of(groups)
    shifted = [replace(g, blocks=tuple(replace(b, side="right") for b in g.blocks)) for g in groups]
    assert stack_of(shifted) is not stack_of(groups)
