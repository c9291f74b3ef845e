"""Attention's matrix groups found by discovery in three forms (nn.MultiheadAttention, nn.Transformer*Layer, a
hand-written GPT block): every output kept by a random group element in train and eval mode, the closed-form
‖∇L‖² equal to double backpropagation, and what the rules cannot follow dropped with the reason."""

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from symtele.teleports import heads
from symtele.teleports.attention import act, gradient_norm, grams, pair_gradient_norm_reference, pair_slope
from symtele.teleports.discovery import discover
from symtele.teleports.verification import random_element

WIDTH, HEADS, T = 8, 2, 4


class SelfAttention(nn.Module):
    """A GPT block's causal self-attention: one ``c_attn`` split into q, k, v, viewed into heads.

    ``variant`` adds what the rules must refuse: ``"leak"`` (the queries also reach the output), ``"rotary"``
    (a rotary-like position embedding of q and k), ``"gelu"`` (a nonlinearity on q; ``"value-gelu"``: on v),
    ``"tied"`` (``c_attn``'s weight read again elsewhere); or ``"separate"`` q, k, v projections.
    """

    def __init__(self, sdpa=True, variant=None):
        super().__init__()
        self.c_proj = nn.Linear(WIDTH, WIDTH)
        if variant == "separate":  # three projections instead of one
            self.q_proj, self.k_proj, self.v_proj = (nn.Linear(WIDTH, WIDTH, bias=False) for _ in range(3))
        else:
            self.c_attn = nn.Linear(WIDTH, 3 * WIDTH)
        self.sdpa, self.variant = sdpa, variant
        self.register_buffer("mask", torch.tril(torch.ones(T, T)).view(1, 1, T, T))
        angle = torch.arange(T)[:, None] * torch.tensor([1.0, 0.1])[None, :]
        self.register_buffer("cos", angle.cos().repeat(1, 2))
        self.register_buffer("sin", angle.sin().repeat(1, 2))

    def rotate(self, x):
        first, second = x.chunk(2, dim=-1)
        return x * self.cos + torch.cat((-second, first), dim=-1) * self.sin

    def forward(self, x):
        b, t, c = x.size()
        if self.variant == "separate":
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        else:
            q, k, v = self.c_attn(x).split(WIDTH, dim=2)
        q = q.view(b, t, HEADS, c // HEADS).transpose(1, 2)
        k = k.view(b, t, HEADS, c // HEADS).transpose(1, 2)
        v = v.view(b, t, HEADS, c // HEADS).transpose(1, 2)
        if self.variant == "rotary":
            q, k = self.rotate(q), self.rotate(k)
        if self.variant == "gelu":
            q = F.gelu(q)
        if self.variant == "value-gelu":
            v = F.gelu(v)
        if self.sdpa:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(c // HEADS))
            att = F.softmax(att.masked_fill(self.mask == 0, float("-inf")), dim=-1)
            y = att @ v
        y = self.c_proj(y.transpose(1, 2).contiguous().view(b, t, c))
        if self.variant == "leak":
            y = y + q.mean()
        if self.variant == "tied":
            y = y + F.linear(x, self.c_attn.weight)[..., :WIDTH]
        return y


class GPTBlock(nn.Module):
    """Pre-norm: ``x + attn(ln_1(x))``, then ``x + proj(relu(fc(ln_2(x))))``."""

    def __init__(self, sdpa=True, variant=None):
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(WIDTH), nn.LayerNorm(WIDTH)
        self.attn = SelfAttention(sdpa, variant)
        self.fc, self.proj = nn.Linear(WIDTH, 2 * WIDTH), nn.Linear(2 * WIDTH, WIDTH)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.proj(F.relu(self.fc(self.ln_2(x))))


class GPT(nn.Module):
    """Token and position embeddings, two blocks, a final LayerNorm and a linear head: integer inputs."""

    def __init__(self, vocabulary=11):
        super().__init__()
        self.tokens, self.positions = nn.Embedding(vocabulary, WIDTH), nn.Embedding(T, WIDTH)
        self.blocks = nn.ModuleList(GPTBlock() for _ in range(2))
        self.ln_f, self.head = nn.LayerNorm(WIDTH), nn.Linear(WIDTH, vocabulary, bias=False)
        self.register_buffer("position", torch.arange(T))

    def forward(self, idx):
        x = self.tokens(idx) + self.positions(self.position)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


class MergedHeads(nn.Module):
    """Heads merged into the batch (``(B·H, T, d)``, ``torch.bmm``), at the model's top level."""

    def __init__(self):
        super().__init__()
        self.qkv, self.out = nn.Linear(WIDTH, 3 * WIDTH), nn.Linear(WIDTH, WIDTH)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        q, k, v = (z.view(b, t, HEADS, c // HEADS).transpose(1, 2).reshape(b * HEADS, t, c // HEADS) for z in (q, k, v))
        att = torch.softmax(torch.bmm(q, k.transpose(1, 2)) / 2.0, dim=-1)
        return self.out(torch.bmm(att, v).view(b, HEADS, t, c // HEADS).transpose(1, 2).reshape(b, t, c))


class Shared(nn.Module):
    """One ``nn.MultiheadAttention`` called twice."""

    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(WIDTH, HEADS, batch_first=True)

    def forward(self, x):
        x = self.attn(x, x, x)[0]
        return self.attn(x, x, x)[0]


class Attention(nn.Module):
    """``nn.MultiheadAttention`` on ``x``; with ``kdim``/``vdim``, the keys and values from linear maps of ``x``."""

    def __init__(self, **options):
        super().__init__()
        self.batch_first = options.get("batch_first", True)
        self.attn = nn.MultiheadAttention(WIDTH, HEADS, **options)
        self.keys = nn.Linear(WIDTH, options.get("kdim", WIDTH))
        self.values = nn.Linear(WIDTH, options.get("vdim", WIDTH))

    def forward(self, x):
        if not self.batch_first:
            x = x.transpose(0, 1)
        out, weights = self.attn(x, self.keys(x), self.values(x))
        return out, weights


class Layer(nn.Module):
    """An ``nn.TransformerEncoderLayer`` (or decoder layer, reading ``x`` as its memory too; or a stack of two
    encoder layers) and a linear head."""

    def __init__(self, decoder=False, stack=False, **options):
        super().__init__()
        kind = nn.TransformerDecoderLayer if decoder else nn.TransformerEncoderLayer
        self.layer = kind(WIDTH, HEADS, 2 * WIDTH, batch_first=True, **options)
        if stack:
            self.layer = nn.TransformerEncoder(self.layer, 2, enable_nested_tensor=False)
        self.decoder, self.head = decoder, nn.Linear(WIDTH, 3)

    def forward(self, x):
        return self.head(self.layer(x, x) if self.decoder else self.layer(x))


FORMS = {
    "gpt-sdpa": lambda: GPTBlock(sdpa=True),
    "gpt-softmax": lambda: GPTBlock(sdpa=False),
    "gpt-separate": lambda: GPTBlock(sdpa=False, variant="separate"),
    "mha": lambda: Attention(),
    "mha-no-bias": lambda: Attention(bias=False),
    "mha-kdim-vdim": lambda: Attention(kdim=5, vdim=7),
    "mha-sequence-first": lambda: Attention(batch_first=False),
    "encoder-post-relu": lambda: Layer(),
    "encoder-pre-gelu": lambda: Layer(norm_first=True, activation="gelu"),
    "decoder-pre-relu": lambda: Layer(decoder=True, norm_first=True),
    "decoder-post-gelu": lambda: Layer(decoder=True, activation="gelu"),
    "stack-pre-relu": lambda: Layer(stack=True, norm_first=True),
}
#: the attention layers of each form (two groups per head each)
LAYERS = {
    "gpt": ["attn"],
    "mha": ["attn"],
    "encoder": ["layer.self_attn"],
    "decoder": ["layer.self_attn", "layer.multihead_attn"],
    "stack": ["layer.layers.0.self_attn", "layer.layers.1.self_attn"],
}


def _model(form, seed=0):
    torch.manual_seed(seed)
    model = FORMS[form]().double()
    with torch.no_grad():  # biases start at zero in nn.MultiheadAttention: nothing would move them
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(2, T, WIDTH, dtype=torch.float64)
    return model, x


def _outputs(model, params, x, train):
    model.train(train)
    torch.manual_seed(7)  # the same dropout masks in both runs
    out = torch.func.functional_call(model, params, (x,))
    return out if isinstance(out, tuple) else (out,)


@pytest.fixture(scope="module")
def found():
    """Each form's symmetry, found once."""
    out = {}
    for form in FORMS:
        model, x = _model(form)
        out[form] = discover(model, x)
    return out


@pytest.mark.parametrize("form", sorted(FORMS))
def test_every_head_of_every_form_is_found(form, found):
    symmetry = found[form]
    expected = [f"{layer}.{kind}[{h}]" for layer in LAYERS[form.split("-")[0]] for kind in ("qk", "vo") for h in (0, 1)]
    assert sorted(g.name for g in symmetry.pair_groups) == sorted(expected)
    assert all(g.d == WIDTH // HEADS for g in symmetry.pair_groups)
    assert "attention head groups" in str(symmetry) and "A⁻¹" in str(symmetry)
    assert len(json.loads(json.dumps(symmetry.to_dict()))["pair_groups"]) == len(expected)


@pytest.mark.parametrize("form", sorted(FORMS))
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_a_random_group_element_keeps_every_output(form, train, found):
    model, x = _model(form)
    params = {n: p.detach() for n, p in model.named_parameters()}
    before = _outputs(model, params, x, train)
    moved, g = dict(params), torch.Generator().manual_seed(1)
    for group in found[form].pair_groups:
        moved = act(group, random_element(group.d, g, spread=1.0), moved)
    assert all(not torch.equal(moved[n], params[n]) for g in found[form].pair_groups for n in g.params)
    after = _outputs(model, moved, x, train)
    for a, b in zip(after, before):
        assert float((a - b).abs().max()) <= 1e-10 * float(b.abs().max())


@pytest.mark.parametrize("form", sorted(FORMS))
def test_the_closed_form_is_double_backpropagation(form, found):
    model, x = _model(form)
    model.train(False)
    params = {n: p.detach() for n, p in model.named_parameters()}
    target = torch.randn_like(_outputs(model, params, x, False)[0])

    def loss_of(p):
        with sdpa_kernel(SDPBackend.MATH):  # the fused kernels have no second derivative
            out = torch.func.functional_call(model, p, (x,))
        return ((out[0] if isinstance(out, tuple) else out) - target).square().mean()

    leaves = {n: p.clone().requires_grad_(True) for n, p in params.items()}
    grads = dict(zip(leaves, torch.autograd.grad(loss_of(leaves), list(leaves.values()))))
    g = torch.Generator().manual_seed(2)
    for group in found[form].pair_groups:
        a = random_element(group.d, g, spread=1.0)
        direction = torch.randn(group.d, group.d, generator=g, dtype=torch.float64)
        value, slope = pair_gradient_norm_reference(loss_of, params, group, a, direction)
        assert float(gradient_norm(group, grads, a)) == pytest.approx(float(value), rel=1e-10)
        closed_slope = 2 * float((direction @ pair_slope(*grams(group, grads), a)).trace())
        assert closed_slope == pytest.approx(float(slope), rel=1e-8, abs=1e-14)


def _dropped(symmetry, kind):
    return {d.layer: d.reason for d in symmetry.dropped if f".{kind}[" in d.layer}


@pytest.mark.parametrize(
    "variant, reason",
    [
        ("leak", "`mean`"),
        ("rotary", "(the rows are followed only through"),
        ("gelu", "`gelu`"),
        ("tied", "used more than once"),
    ],
)
def test_what_the_rules_cannot_follow_drops_the_query_key_groups(variant, reason):
    torch.manual_seed(0)
    model = GPTBlock(sdpa=variant != "rotary", variant=variant)
    symmetry = discover(model, torch.randn(2, T, WIDTH))
    assert not [g for g in symmetry.pair_groups if g.kind == "qk"]
    dropped = {d.layer: d.reason for d in symmetry.dropped if ".qk" in d.layer}
    assert sorted(dropped) == (["attn.qk"] if variant in ("rotary", "gelu") else ["attn.qk[0]", "attn.qk[1]"])
    assert all(reason in why for why in dropped.values()), dropped
    if variant != "tied":  # the values still reach only their heads and the output projection
        assert sorted(g.name for g in symmetry.pair_groups) == ["attn.vo[0]", "attn.vo[1]"]


def test_a_wrong_group_is_dropped_by_the_numerical_check(monkeypatch):
    """Verification is the safety net: a group the rules got wrong (the keys of the other head) is dropped."""
    check = heads.HeadWalk.check

    def wrong(self, group):
        if group.kind == "qk" and group.head == 0:
            blocks = list(group.blocks)
            blocks[2] = type(blocks[2])(blocks[2].param, slice(12, 16), "right")
            group = type(group)(group.layer, group.kind, group.head, group.d, tuple(blocks))
        check(self, group)

    monkeypatch.setattr(heads.HeadWalk, "check", wrong)
    torch.manual_seed(0)
    symmetry = discover(GPTBlock(), torch.randn(2, T, WIDTH))
    assert "attn.qk[0]" not in [g.name for g in symmetry.pair_groups]
    assert "failed numerical verification" in _dropped(symmetry, "qk")["attn.qk[0]"]
    assert len(symmetry.pair_groups) == 3


def test_discovery_leaves_the_model_as_it_was():
    model, x = _model("gpt-sdpa")
    before = copy.deepcopy(model.state_dict())
    symmetry = discover(model, x)
    assert symmetry.pair_groups and all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_the_normalisers_and_the_relu_mlp_inside_transformer_layers(found):
    groups = {(g.producers, g.consumers) for g in found["decoder-pre-relu"].groups}
    assert (("layer.norm1",), ("layer.self_attn",)) in groups
    assert (("layer.norm2",), ("layer.multihead_attn",)) in groups
    assert (("layer.norm3",), ("layer.linear1",)) in groups
    assert (("layer.linear1",), ("layer.linear2",)) in groups
    assert "no positive scale passes" in found["encoder-pre-gelu"].left["layer.linear1"]
    gpt = {(g.producers, g.consumers) for g in found["gpt-sdpa"].groups}
    assert {(("ln_1",), ("attn.c_attn",)), (("ln_2",), ("fc",)), (("fc",), ("proj",))} <= gpt
    assert (("keys",), ("attn",)) in {(g.producers, g.consumers) for g in found["mha-kdim-vdim"].groups}
    stack = {(g.producers, g.consumers) for g in found["stack-pre-relu"].groups}
    assert (("layer.layers.1.norm2",), ("layer.layers.1.linear1",)) in stack


def test_a_gpt_on_tokens_has_every_head_of_every_block():
    torch.manual_seed(0)
    model = GPT()
    symmetry = discover(model, torch.randint(0, 11, (2, T)))
    expected = {f"blocks.{b}.attn.{kind}[{h}]" for b in (0, 1) for kind in ("qk", "vo") for h in (0, 1)}
    assert {g.name for g in symmetry.pair_groups} == expected
    assert symmetry.verified and "random A" in symmetry.verified


def test_an_attention_called_twice_is_dropped_with_the_reason():
    torch.manual_seed(0)
    symmetry = discover(Shared(), torch.randn(2, T, WIDTH))
    assert not symmetry.pair_groups
    reasons = {d.layer: d.reason for d in symmetry.dropped}
    assert all("is called 2 times" in reasons[f"attn.{kind}[{h}]"] for kind in ("qk", "vo") for h in (0, 1))


@pytest.mark.parametrize("sdpa", [True, False], ids=["sdpa", "softmax"])
def test_a_nonlinearity_on_the_values_drops_only_the_value_output_groups(sdpa):
    torch.manual_seed(0)
    symmetry = discover(GPTBlock(sdpa=sdpa, variant="value-gelu"), torch.randn(2, T, WIDTH))
    assert sorted(g.name for g in symmetry.pair_groups) == ["attn.qk[0]", "attn.qk[1]"]
    assert "`gelu`" in symmetry.left["attn.vo"]


def test_heads_merged_into_the_batch_are_followed_through_the_copies():
    torch.manual_seed(0)
    symmetry = discover(MergedHeads(), torch.randn(3, T, WIDTH))
    assert sorted(g.name for g in symmetry.pair_groups) == ["qkv.qk[0]", "qkv.qk[1]", "qkv.vo[0]", "qkv.vo[1]"]
    qk = symmetry.pair_groups[0]
    assert [(b.param, b.index, b.side) for b in qk.blocks][::2] == [
        ("qkv.weight", slice(0, 4), "left"),
        ("qkv.weight", slice(8, 12), "right"),
    ]


# ---- teleporting the attention groups ------------------------------------------------------------------------


def _small_gpt():
    from symtele.models_gpt import GPT

    torch.manual_seed(0)
    model = GPT(vocab_size=20, n_layer=2, d_model=32, n_head=4, context=16).double()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randint(0, 20, (8, 16), generator=g), torch.randint(0, 20, (8, 16), generator=g)
    return model, x, y


def _token_loss(out, targets):
    return F.cross_entropy(out.reshape(-1, out.shape[-1]), targets.reshape(-1))


def _grad_norm_sq(model, x, y):
    with sdpa_kernel(SDPBackend.MATH):
        grads = torch.autograd.grad(_token_loss(model(x), y), list(model.parameters()))
    return float(sum(g.square().sum() for g in grads))


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_teleport_model_moves_the_attention_groups_and_keeps_every_output(train):
    """A one-shot teleport moves the heads' GL(d) groups after the positive scales: every output the same, and
    the record's ‖∇L‖² after is the gradient's at the new point (computed again by autograd)."""
    import symtele as st

    model, x, y = _small_gpt()
    model.train(train)
    attention = [p for n, p in model.named_parameters() if "c_attn" in n or "attn.c_proj.weight" in n]
    before = [p.detach().clone() for p in attention]
    torch.manual_seed(5)
    with torch.no_grad():
        out = model(x)
    record = st.teleport_model(model, _token_loss, x, y)
    torch.manual_seed(5)
    with torch.no_grad():
        moved_out = model(x)
    assert float((moved_out - out).abs().max()) <= 1e-10 * float(out.abs().max())
    trace = record.trace["attention"]
    assert trace["moved"] == sum(1 for g in trace["groups"] if g["step"]) > 0
    assert any(not torch.equal(p, q) for p, q in zip(attention, before))
    if not train:  # no dropout in the GPT's defaults either way; eval mode keeps the check deterministic
        assert record.grad_norm_sq_after == pytest.approx(_grad_norm_sq(model, x, y), rel=1e-8)
    assert record.grad_norm_sq_after > record.grad_norm_sq_before
    assert record.loss_after == pytest.approx(record.loss_before, rel=1e-10)


@pytest.mark.parametrize("optimizer_name", ["sgd", "adamw"])
def test_the_teleporter_moves_the_attention_groups_and_carries_the_optimiser_state(monkeypatch, optimizer_name):
    """With the look-ahead (made to accept the whole path) and state='transport': every output kept, the attention
    groups moved, and the gradient-like state carried exactly (it is the state a run in the new coordinates has:
    here one step's gradient, so the gradient at the new point by autograd), the squared state approximately."""
    import symtele as st

    monkeypatch.setattr("symtele.teleporter.Z", -math.inf)  # every trial point accepted: t = 1
    model, x, y = _small_gpt()
    model.eval()
    make = {
        "sgd": lambda p: torch.optim.SGD(p, lr=1e-2, momentum=0.9),
        "adamw": lambda p: torch.optim.AdamW(p, lr=1e-3),
    }[optimizer_name]
    optimizer = make(model.parameters())
    teleporter = st.Teleporter(model, _token_loss, optimizer, schedule=[1], lookahead_batch=(x, y))
    with sdpa_kernel(SDPBackend.MATH):
        optimizer.zero_grad()
        _token_loss(model(x), y).backward()
    optimizer.step()  # the state now holds one gradient (momentum buffer, exp_avg ∝ it)
    first = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        out = model(x)
    record = teleporter.maybe(1, x, y)
    with torch.no_grad():
        assert float((model(x) - out).abs().max()) <= 1e-10 * float(out.abs().max())
    assert record.t == 1 and record.trace["attention"]["moved"] > 0 and "attention groups" in record.state
    # the first step's gradient, carried to the new coordinates, is the gradient of the same loss at the old point
    # of the first step mapped by the same group element: compare on the attention projection, whose rows moved
    name = "blocks.0.attn.c_attn.weight"
    key = "momentum_buffer" if optimizer_name == "sgd" else "exp_avg"
    state = optimizer.state[dict(model.named_parameters())[name]][key]
    scale = 1.0 if optimizer_name == "sgd" else 1 - optimizer.param_groups[0]["betas"][0]
    assert not torch.allclose(state, scale * first[name])  # it moved
    # exactly: the rows of head h's query move as W_q ← Aᵀ W_q D and its key's as W_k ← A⁻¹ W_k D (D: the LayerNorm's
    # scales, which the positive rescaling moves into c_attn's columns), so their gradients move as ∇ ← A⁻¹ ∇ D⁻¹ and
    # ∇ ← Aᵀ ∇ D⁻¹; A and D are read back from the weights before and after, independently of the library
    after = dict(model.named_parameters())
    d_inv = torch.diag(after["blocks.0.ln_1.weight"].detach() / before["blocks.0.ln_1.weight"])
    width, head = model.blocks[0].attn.c_attn.weight.shape[1], 8
    for h in range(width // head):
        q, k = slice(h * head, (h + 1) * head), slice(width + h * head, width + (h + 1) * head)
        a_t = after[name].detach()[q] @ d_inv @ torch.linalg.pinv(before[name][q])
        a_inv = torch.linalg.inv(a_t.T)
        assert torch.allclose(after[name].detach()[k], a_inv @ before[name][k] @ torch.linalg.inv(d_inv), rtol=1e-8)
        assert not torch.allclose(a_t, torch.eye(head, dtype=a_t.dtype))  # the head's A is not the identity
        assert torch.allclose(state[q], a_inv @ (scale * first[name][q]) @ d_inv, rtol=1e-8, atol=1e-14)
        assert torch.allclose(state[k], a_t @ (scale * first[name][k]) @ d_inv, rtol=1e-8, atol=1e-14)
    assert record.grad_norm_sq_after > record.grad_norm_sq_before


@pytest.mark.parametrize(
    "make,reason",
    [
        (lambda p: torch.optim.SGD(p, lr=1e-2, momentum=0.9, weight_decay=1e-4), "coupled weight decay"),
        (lambda p: torch.optim.RMSprop(p, lr=1e-3), "not RMSprop"),
    ],
)
def test_state_the_teleporter_cannot_carry_for_attention_leaves_the_groups_and_says_why(make, reason):
    import symtele as st

    model, x, y = _small_gpt()
    optimizer = make(model.parameters())
    teleporter = st.Teleporter(model, _token_loss, optimizer, schedule=[0], accept="always")
    record = teleporter.maybe(0, x, y)
    trace = record.trace["attention"]
    assert trace["moved"] == 0 and "left as they are" in trace["why"] and reason in trace["why"]


def test_the_readme_transformer_example_runs_and_prints_what_it_says(capsys):
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text[text.index("### Transformers") :].split("\n### ")[0]
    code = re.findall(r"```python\n(.*?)```", section, re.S)[0]
    shown = re.findall(r"```text\n(.*?)```", section, re.S)[0].strip()
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    printed = capsys.readouterr().out
    assert "832 independent scales in 7 groups" in printed and "16 attention head groups" in printed
    assert printed.strip().splitlines()[-1] == shown
