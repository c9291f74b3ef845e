"""A small GPT (decoder-only transformer) for character-level language modelling.

The layout is nanoGPT's, written out here so that ``torch.fx`` traces it and the symmetry discovery reads it:

    h₀ = wte(x) + wpe(0 … T−1)
    hᵢ = hᵢ₋₁ + attn(ln_1(hᵢ₋₁)),   hᵢ ← hᵢ + mlp(ln_2(hᵢ))        (pre-LayerNorm blocks, ``n_layer`` of them)
    logits = lm_head(ln_f(h))

* ``attn``: one Linear ``c_attn`` computes ``q, k, v`` (split along the features), each viewed as
  ``(B, T, n_head, d_head)`` and transposed to ``(B, n_head, T, d_head)``; causal attention
  ``softmax(q kᵀ / √d_head + M) v`` with ``M`` the causal mask, by ``F.scaled_dot_product_attention(...,
  is_causal=True)`` (``attention="sdpa"``) or written out with a masked softmax (``attention="explicit"``);
  the heads are joined back and projected by the Linear ``c_proj``.
* ``mlp``: ``c_fc`` (``d_model → mlp_ratio · d_model``), ReLU (positive per-neuron rescaling applies) or
  GELU (no such symmetry), ``c_proj`` back to ``d_model``.
* No dropout: every forward of the same weights and inputs gives the same outputs.

The weights are drawn from the global random state (seed it with ``torch.manual_seed``): Linear and
Embedding weights ``N(0, 0.02²)``, the residual projections (``c_proj``) ``N(0, (0.02/√(2 n_layer))²)``,
biases zero, LayerNorms ``γ = 1, β = 0``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import checks

ATTENTIONS = ("sdpa", "explicit")
ACTIVATIONS = ("relu", "gelu")


@dataclass(frozen=True)
class GPTConfig:
    """The sizes and choices of a :class:`GPT`.

    Args:
        vocab_size: the tokens.
        context: the longest input ``T`` (the learned position embeddings).
        n_layer: transformer blocks.
        n_head: attention heads per block; must divide ``d_model``.
        d_model: the width of the residual stream.
        mlp_ratio: the MLP's hidden width is ``mlp_ratio · d_model``.
        activation: ``"relu"`` or ``"gelu"``, the MLP's nonlinearity.
        attention: ``"sdpa"`` (``F.scaled_dot_product_attention``) or ``"explicit"`` (a masked softmax).
        bias: whether the Linear layers and LayerNorms have biases.
        tie_weights: whether ``lm_head`` shares the token embedding's weight.

    Raises:
        ValueError: a size that is not a positive integer, ``n_head`` not dividing ``d_model``, or an unknown
            ``activation``/``attention``.
    """

    vocab_size: int
    context: int = 64
    n_layer: int = 2
    n_head: int = 4
    d_model: int = 64
    mlp_ratio: int = 4
    activation: str = "relu"
    attention: str = "sdpa"
    bias: bool = True
    tie_weights: bool = False

    def __post_init__(self):
        """Check every field (the errors of the class's ``Raises``)."""
        for name in ("vocab_size", "context", "n_layer", "n_head", "d_model", "mlp_ratio"):
            checks.count(name, getattr(self, name), minimum=1)
        if self.d_model % self.n_head:
            raise ValueError(f"Invalid n_head: {self.n_head} (must divide d_model = {self.d_model})")
        checks.choice("activation", self.activation, ACTIVATIONS)
        checks.choice("attention", self.attention, ATTENTIONS)
        for name in ("bias", "tie_weights"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"Invalid {name}: {getattr(self, name)!r} (expected True or False)")


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with one fused ``c_attn`` for ``q, k, v`` and an output ``c_proj``.

    Args:
        config: the sizes (``d_model``, ``n_head``, ``context``, ``attention``, ``bias``).
    """

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.d_model = config.d_model
        self.d_head = config.d_model // config.n_head
        self.scale = 1.0 / math.sqrt(self.d_head)  # a number, not a traced size: the fx graph multiplies by it
        self.explicit = config.attention == "explicit"
        self.c_attn = nn.Linear(config.d_model, 3 * config.d_model, bias=config.bias)
        self.c_proj = nn.Linear(config.d_model, config.d_model, bias=config.bias)

    def forward(self, x: torch.Tensor, future: torch.Tensor) -> torch.Tensor:
        """``(B, T, d_model) → (B, T, d_model)``; position ``t`` attends to positions ``≤ t`` only.

        Args:
            x: the block's normalised input.
            future: ``(T, T)`` boolean, true where the key's position is after the query's (the explicit form
                masks these scores; the ``sdpa`` form does the same by ``is_causal=True`` and ignores it).
        """
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.d_model, dim=2)
        q = q.view(B, T, self.n_head, self.d_head).transpose(1, 2)
        k = k.view(B, T, self.n_head, self.d_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, self.d_head).transpose(1, 2)
        if self.explicit:
            scores = (q @ k.transpose(-2, -1)) * self.scale
            scores = scores.masked_fill(future, float("-inf"))
            y = F.softmax(scores, dim=-1) @ v
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.c_proj(y)


class MLP(nn.Module):
    """``c_proj(act(c_fc(x)))``, the block's feed-forward part.

    Args:
        config: the sizes (``d_model``, ``mlp_ratio``, ``activation``, ``bias``).
    """

    def __init__(self, config: GPTConfig):
        super().__init__()
        hidden = config.mlp_ratio * config.d_model
        self.c_fc = nn.Linear(config.d_model, hidden, bias=config.bias)
        self.act = nn.ReLU() if config.activation == "relu" else nn.GELU()
        self.c_proj = nn.Linear(hidden, config.d_model, bias=config.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(…, d_model) → (…, d_model)``."""
        return self.c_proj(self.act(self.c_fc(x)))


class Block(nn.Module):
    """A pre-LayerNorm transformer block: ``x + attn(ln_1(x))``, then ``+ mlp(ln_2(·))``.

    Args:
        config: the sizes.
    """

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.d_model, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.d_model, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, future: torch.Tensor) -> torch.Tensor:
        """``(B, T, d_model) → (B, T, d_model)``; ``future`` is the causal mask (see :class:`CausalSelfAttention`)."""
        x = x + self.attn(self.ln_1(x), future)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """A decoder-only transformer: token ids ``(B, T)`` to next-token logits ``(B, T, vocab_size)``.

    See the module's description for the layout and the initialisation. The forward checks its input when it is
    a tensor (under ``torch.fx.symbolic_trace`` it is a ``Proxy``, and the traced graph has no check).

    Args:
        config: a :class:`GPTConfig`, or ``None`` to build one from ``options``.
        **options: the fields of :class:`GPTConfig` (``vocab_size`` is required).

    Raises:
        TypeError: both ``config`` and ``options`` are given, or ``config`` is not a :class:`GPTConfig`.
        ValueError: as :class:`GPTConfig`.
    """

    def __init__(self, config: GPTConfig | None = None, **options):
        super().__init__()
        if config is None:
            config = GPTConfig(**options)
        elif options:
            raise TypeError(f"Invalid options: {sorted(options)} (give a config or options, not both)")
        if not isinstance(config, GPTConfig):
            raise TypeError(f"Invalid config: expected a GPTConfig, got {type(config).__name__}")
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.d_model)
        self.wpe = nn.Embedding(config.context, config.d_model)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.d_model, bias=config.bias)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self._initialise()
        if config.tie_weights:
            self.lm_head.weight = self.wte.weight

    def _initialise(self) -> None:
        residual_std = 0.02 / math.sqrt(2 * self.config.n_layer)
        for name, module in self.named_modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                std = residual_std if name.endswith("c_proj") else 0.02
                nn.init.normal_(module.weight, mean=0.0, std=std)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, T, vocab_size)`` of the token after each position of ``idx`` ``(B, T)``.

        Raises:
            TypeError: ``idx`` is not an integer tensor.
            ValueError: ``idx`` is not ``(B, T)`` with ``1 ≤ T ≤ context``, or has an id outside the vocabulary.
        """
        if isinstance(idx, torch.Tensor):
            _check_tokens(idx, self.config)
        T = idx.size(1)
        pos = torch.arange(T, device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        # the causal mask from the input's length (not from an activation's, so that a traced graph does not
        # make the mask depend on a layer's output)
        future = pos.unsqueeze(0) > pos.unsqueeze(1)
        for block in self.blocks:
            x = block(x, future)
        return self.lm_head(self.ln_f(x))


def _check_tokens(idx: torch.Tensor, config: GPTConfig) -> None:
    """Raise unless ``idx`` is ``(B, T)`` integer tokens with ``1 ≤ T ≤ context`` and ids in the vocabulary."""
    if idx.is_floating_point() or idx.is_complex() or idx.dtype == torch.bool:
        raise TypeError(f"Invalid idx: expected an integer tensor of token ids, got {idx.dtype}")
    if idx.dim() != 2 or not 1 <= idx.size(1) <= config.context:
        raise ValueError(
            f"Invalid idx: shape {tuple(idx.shape)} (expected (batch, T) with 1 <= T <= context = {config.context})"
        )
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= config.vocab_size):
        raise ValueError(
            f"Invalid idx: token ids in [{int(idx.min())}, {int(idx.max())}] "
            f"(the vocabulary has ids 0..{config.vocab_size - 1})"
        )


def next_token_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The mean cross-entropy of ``logits`` ``(B, T, V)`` against the next tokens ``targets`` ``(B, T)``.

    Args:
        logits: the model's output.
        targets: the token ids that follow each position.

    Returns:
        A scalar: ``−(1/BT) Σ_{b,t} log softmax(logits[b, t])[targets[b, t]]``.
    """
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
