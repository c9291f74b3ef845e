"""The cost of teleporting a GPT's attention heads, by the protocol of :mod:`~symtele.study.bench_protocol`.

:func:`attention_teleport_cost` times, interleaved in the same rounds, one gradient of a
:class:`~symtele.models_gpt.GPT` on one batch of tokens (a forward and a backward pass of the next-token loss)
and ``steps`` ascent steps on ``‖∇L‖²`` along every attention head group
:func:`~symtele.teleports.discovery.discover` keeps (:mod:`~symtele.teleports.attention`), two ways:

* ``attention`` (:func:`~symtele.teleports.attention_stack.ascend_heads`), the closed form, from the gradient
  at hand: the Gram matrices ``C_L, C_R`` of every group, the ascent of all groups at once, and the group
  elements applied to the weights, each stacked over the groups. Its time is the cost *beyond* the gradient;
  no forward pass confirms the loss.
* ``attention-ref`` (:func:`reference_teleport`), the same steps by double backpropagation: each step acts on
  the weights by ``A_g exp(X_g)`` for every group ``g``, differentiates the loss, squares, and differentiates
  again in all the ``X_g`` at once (one forward and two backward passes per step, the cheapest way to get every
  group's slope by autograd; ``F.scaled_dot_product_attention`` on its ``MATH`` kernel, as the CPU's fused
  kernel has no second derivative); its time is the whole cost.

``grad_evals = min_r t_method[r] / min_r t_grad[r]`` (minima over the rounds), and the speed-up of the closed
form is ``grad_evals(attention-ref) / grad_evals(attention)``. Both methods' group elements are compared in
every run (``max_a_diff``): they take the same steps, so they agree to rounding.
"""

from __future__ import annotations

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from .. import checks
from ..models_gpt import GPT, GPTConfig, next_token_loss
from ..teleports.attention import act, grams, pair_objective
from ..teleports.attention_stack import ascend_heads
from ..teleports.discovery import discover
from ..teleports.symmetry import PairGroup
from .bench_protocol import interleaved_times
from .bench_records import record

#: the characters of the Shakespeare corpus (:func:`~symtele.text.shakespeare_corpus`), the GPT's vocabulary
VOCAB_SIZE = 85
#: the GPT timed by default: :class:`~symtele.models_gpt.GPTConfig`'s default sizes on that vocabulary
GPT_CONFIG = GPTConfig(vocab_size=VOCAB_SIZE)
METHODS = ("attention", "attention-ref")


def reference_slopes(loss_of, params: dict[str, torch.Tensor], groups: list[PairGroup], elements: list[torch.Tensor]):
    """``‖∇L‖²`` at ``g_{A_1}⋯g_{A_n}·w`` and its derivative in every ``X_g`` of ``A_g ← A_g exp(X_g)``, by autograd.

    Act on the parameters, differentiate the loss, square, and differentiate again (double backpropagation),
    every group at once. The derivative in ``X_g`` at 0 is ``2 D_g`` with ``D_g`` the closed form's
    :func:`~symtele.teleports.attention.pair_slope`. ``F.scaled_dot_product_attention`` runs on its ``MATH``
    kernel here, the one whose backward pass can itself be differentiated on a CPU.

    Args:
        loss_of: maps a dict of all the parameters to the loss.
        params: every parameter, by name.
        groups: the attention head groups.
        elements: each group's ``A`` to start from (float64).

    Returns:
        ``(value, slopes)``: the squared gradient norm and one ``d × d`` derivative per group.
    """
    with torch.enable_grad(), sdpa_kernel(SDPBackend.MATH):
        xs = [torch.zeros_like(a, requires_grad=True) for a in elements]
        moved = {n: p.detach() for n, p in params.items()}
        for group, a, x in zip(groups, elements, xs):
            moved = act(group, a @ torch.linalg.matrix_exp(x), moved)
        leaves = {n: (p if p.requires_grad else p.requires_grad_(True)) for n, p in moved.items()}
        grads = torch.autograd.grad(loss_of(leaves), list(leaves.values()), create_graph=True)
        value = sum(g.double().square().sum() for g in grads)
        slopes = torch.autograd.grad(value, xs)
    return value.detach(), list(slopes)


def reference_teleport(
    loss_of, params: dict[str, torch.Tensor], groups: list[PairGroup], steps: int, max_step: float = 0.1
) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
    """The teleport of :func:`~symtele.teleports.attention_stack.ascend_heads`, each step's slopes by double backprop.

    ``steps`` rounds of ``A_g ← A_g exp(max_step · D_g/‖D_g‖₂)`` for every group from ``A_g = I``, ``2 D_g`` from
    :func:`reference_slopes`; a group whose ``D_g`` vanishes stays.

    Args:
        loss_of: maps a dict of all the parameters to the loss.
        params: every parameter, by name.
        groups: the attention head groups.
        steps: ascent steps.
        max_step: the spectral norm of each step's ``X``.

    Returns:
        ``(moved, elements)``, as :func:`~symtele.teleports.attention_stack.ascend_heads`.
    """
    device = next(iter(params.values())).device
    elements = [torch.eye(g.d, dtype=torch.float64, device=device) for g in groups]
    for _ in range(steps):
        _, slopes = reference_slopes(loss_of, params, groups, elements)
        for i, slope in enumerate(slopes):
            norm = torch.linalg.matrix_norm(slope, 2)
            if bool(norm > 0) and bool(torch.isfinite(norm)):
                elements[i] = elements[i] @ torch.linalg.matrix_exp(slope * (max_step / norm))
    moved = {n: p.detach() for n, p in params.items()}
    for group, a in zip(groups, elements):
        moved = act(group, a, moved)
    return moved, elements


def _setup(config: GPTConfig, batch: tuple[int, int], dtype, dev, seed: int):
    """The GPT, its parameters, a batch of random tokens and their targets, the loss and the gradient call."""
    torch.manual_seed(seed)
    model = GPT(config).to(device=dev, dtype=dtype).train()
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, config.vocab_size, batch, generator=g).to(dev)
    targets = torch.randint(0, config.vocab_size, batch, generator=g).to(dev)
    params = {n: p.detach().clone() for n, p in model.named_parameters()}

    def loss_of(p):
        return next_token_loss(torch.func.functional_call(model, p, (tokens,)), targets)

    def grad():
        leaves = {n: p.clone().requires_grad_(True) for n, p in params.items()}
        loss = loss_of(leaves)
        return loss.detach(), dict(zip(params, torch.autograd.grad(loss, list(leaves.values()))))

    return model, tokens, params, loss_of, grad


def attention_teleport_cost(
    methods=METHODS,
    *,
    config: GPTConfig = GPT_CONFIG,
    batch: tuple[int, int] = (16, 64),
    steps: int = 1,
    max_step: float = 0.1,
    reps: int = 5,
    warmup: int = 1,
    min_time: float = 0.01,
    dtype=torch.float32,
    device="cpu",
    seed: int = 0,
    max_reps: dict[str, int] | None = None,
) -> list[dict]:
    """The cost of a ``steps``-step teleport of a GPT's attention heads in gradient evaluations, per method.

    ``grad_evals = min_r t_teleport[r] / min_r t_grad[r]``, the teleport and one gradient of the GPT on one batch
    timed interleaved in the same rounds (:mod:`~symtele.study.bench_protocol`). The closed form's cost is
    beyond the gradient, the reference's is whole (see the module's docstring).

    Args:
        methods: among :data:`METHODS`: ``attention`` (:func:`~symtele.teleports.attention_stack.ascend_heads`)
            and ``attention-ref``
            (:func:`reference_teleport`).
        config: the GPT's sizes.
        batch: ``(sequences, tokens per sequence)`` of the random batch; tokens per sequence at most
            ``config.context``.
        steps: ascent steps per teleport.
        max_step: the spectral norm of each step's ``X``.
        reps: rounds.
        warmup: untimed calls of each function first.
        min_time: seconds a timing lasts at least (fast calls are repeated within a round).
        dtype: the arithmetic.
        device: ``"cpu"`` or ``"cuda"``.
        seed: the seed of the weights and the batch.
        max_reps: at most this many rounds for the named functions (``grad`` or a method).

    Returns:
        One ``attention_teleport_cost`` record (:mod:`~symtele.study.bench_records`) per method: ``method, model,
        config, n_params, n_groups, d_head, batch, steps, max_step, device, dtype, grad_evals,
        grad_evals_rounds, teleport_s, grad_s, reps``, ``max_a_diff`` (the largest entry of ``|A_closed −
        A_ref|`` over the groups, both computed once outside the timing), ``gain`` (``‖∇L‖²`` after the closed
        form's teleport over before, from its Gram matrices), and, when both methods are timed, on the
        closed form's record, ``speedup`` (reference over closed form, minima) and ``speedup_rounds``.

    Raises:
        TypeError: ``config`` not a :class:`~symtele.models_gpt.GPTConfig`.
        ValueError: an unknown method, a bad batch, count, step, dtype or device, a ``max_reps`` key that is
            not timed, or a GPT whose attention has no head group.
    """
    methods = [checks.choice("method", m, METHODS) for m in methods]
    if not methods:
        raise ValueError("Invalid methods: empty")
    if not isinstance(config, GPTConfig):
        raise TypeError(f"Invalid config: {config!r} (expected a GPTConfig)")
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise ValueError(f"Invalid batch: {batch!r} (expected (sequences, tokens per sequence))")
    batch = (checks.count("batch[0]", batch[0], minimum=1), checks.count("batch[1]", batch[1], minimum=1))
    if batch[1] > config.context:
        raise ValueError(f"Invalid batch: {batch[1]} tokens per sequence (at most context = {config.context})")
    steps = checks.count("steps", steps, minimum=1)
    max_step = checks.positive("max_step", max_step)
    reps = checks.count("reps", reps, minimum=1)
    warmup = checks.count("warmup", warmup, minimum=1)
    min_time = checks.non_negative("min_time", min_time)
    seed = checks.count("seed", seed)
    dtype, dev = checks.dtype("dtype", dtype), checks.device("device", device)
    max_reps = dict(max_reps or {})
    for name in max_reps:
        checks.choice("max_reps key", name, ["grad", *methods])

    model, tokens, params, loss_of, grad = _setup(config, batch, dtype, dev, seed)
    groups = discover(model, tokens).pair_groups
    if not groups:
        raise ValueError(f"Invalid config: {config!r} (discover keeps no attention head group of this GPT)")
    _, grads = grad()
    _, closed = ascend_heads(groups, params, grads, steps, max_step)
    _, ref = reference_teleport(loss_of, params, groups, steps, max_step)
    max_a_diff = max(float((a - b).abs().max()) for a, b in zip(closed, ref))
    gain = _gain(groups, grads, closed)

    calls = {
        "attention": lambda: ascend_heads(groups, params, grads, steps, max_step),
        "attention-ref": lambda: reference_teleport(loss_of, params, groups, steps, max_step),
    }
    fns = {"grad": grad, **{m: calls[m] for m in methods}}
    times = interleaved_times(fns, reps=reps, warmup=warmup, min_time=min_time, device=dev, max_reps=max_reps)
    ratios = {m: [t / g for t, g in zip(times[m], times["grad"])] for m in methods}
    grad_evals = {m: min(times[m]) / min(times["grad"]) for m in methods}
    records = []
    for m in methods:
        extra = {}
        if m == "attention" and "attention-ref" in methods:
            extra = {
                "speedup": grad_evals["attention-ref"] / grad_evals["attention"],
                "speedup_rounds": [r / c for r, c in zip(ratios["attention-ref"], ratios["attention"])],
            }
        records.append(
            record(
                "attention_teleport_cost",
                method=m,
                model="gpt",
                config={k: getattr(config, k) for k in config.__dataclass_fields__},
                n_params=sum(p.numel() for p in params.values()),
                n_groups=len(groups),
                d_head=config.d_model // config.n_head,
                batch=list(batch),
                steps=steps,
                max_step=max_step,
                device=str(dev),
                dtype=str(dtype).replace("torch.", ""),
                grad_evals=grad_evals[m],
                grad_evals_rounds=ratios[m],
                teleport_s=min(times[m]),
                grad_s=min(times["grad"]),
                reps=len(times[m]),
                max_a_diff=max_a_diff,
                gain=gain,
                **extra,
            )
        )
    return records


def _gain(groups: list[PairGroup], grads: dict[str, torch.Tensor], elements: list[torch.Tensor]) -> float:
    """``‖∇L‖²`` after the teleport over before, from the gradient before (the groups move disjoint rows)."""
    before = sum(float(g.double().square().sum()) for g in grads.values())
    after = before
    for group, a in zip(groups, elements):
        c_left, c_right = grams(group, grads)
        identity = torch.eye(group.d, dtype=a.dtype, device=a.device)
        after += float(pair_objective(c_left, c_right, a) - pair_objective(c_left, c_right, identity))
    return after / before
