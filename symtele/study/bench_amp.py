"""A Teleporter's teleport in a training step with automatic mixed precision (AMP) on and off.

Under AMP the user's forward pass runs in autocast (bfloat16 on a CPU; float16 on a GPU, with the loss scaled
by a ``GradScaler``), while a :class:`~symtele.teleporter.Teleporter`'s passes run in the parameters' dtype
whatever autocast is on (its gradient and its confirming forward pass): the teleport does not get cheaper with
the step, so it costs more of an AMP step's gradients than of a full-precision one's.

:func:`amp_teleport_cost` times, interleaved in the same rounds (:mod:`~symtele.study.bench_protocol`), for each
AMP setting: the user's gradient (``zero_grad``, the forward pass under the setting's autocast, the backward
pass, of the scaled loss with a ``GradScaler``) and a teleport, ``Teleporter.teleport`` called inside the same
autocast (``accept="always"``, ``state="keep"``: the teleport's own cost, its gradient, the ascent, the
confirming forward passes and the scales applied). ``grad_evals`` is the teleport's time over the gradient's
(minima over the rounds) within each setting. Each timed teleport moves the network further (the same model
serves every call), which does not change what one costs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import checks
from ..models import resnet18
from ..models_gpt import GPT, GPTConfig, next_token_loss
from ..teleporter import Teleporter
from .bench_attention import GPT_CONFIG
from .bench_protocol import interleaved_times
from .bench_records import record

#: the networks timed, with their default batch: images of a side (ResNet-18), or sequences of tokens (GPT)
MODELS = {"resnet18": (32, 32), "gpt": (16, 64)}


def amp_settings(device: torch.device) -> dict:
    """What AMP means on ``device``: the autocast dtype and whether the loss is scaled.

    Args:
        device: the device.

    Returns:
        ``{"amp_dtype": torch.bfloat16, "grad_scaler": False}`` on a CPU, ``{"amp_dtype": torch.float16,
        "grad_scaler": True}`` on a GPU.
    """
    if device.type == "cuda":
        return {"amp_dtype": torch.float16, "grad_scaler": True}
    return {"amp_dtype": torch.bfloat16, "grad_scaler": False}


def _setup(name: str, batch: tuple[int, int], config: GPTConfig, dev: torch.device, seed: int):
    """The network, one batch, and the loss function."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    if name == "gpt":
        model = GPT(config)
        x = torch.randint(0, config.vocab_size, batch, generator=g)
        y = torch.randint(0, config.vocab_size, batch, generator=g)
        loss_fn = next_token_loss
    else:
        model = resnet18()
        x = torch.randn(batch[0], 3, batch[1], batch[1], generator=g)
        y = torch.randint(0, 10, (batch[0],), generator=g)
        loss_fn = F.cross_entropy
    return model.to(dev).train(), x.to(dev), y.to(dev), loss_fn


def amp_teleport_cost(
    model: str = "resnet18",
    *,
    amps=(False, True),
    batch: tuple[int, int] | None = None,
    config: GPTConfig = GPT_CONFIG,
    reps: int = 5,
    warmup: int = 1,
    min_time: float = 0.01,
    device="cpu",
    seed: int = 0,
) -> list[dict]:
    """The cost of a Teleporter's teleport in gradients of the training step, with AMP off and on.

    ``grad_evals = min_r t_teleport[r] / min_r t_grad[r]`` for each AMP setting, every setting's gradient and
    teleport timed interleaved in the same rounds (see the module's docstring).

    Args:
        model: a key of :data:`MODELS`: ``"resnet18"`` or ``"gpt"`` (:class:`~symtele.models_gpt.GPT`).
        amps: the AMP settings timed, ``False`` (full precision) and/or ``True`` (:func:`amp_settings`).
        batch: ``(images, side)`` of random 3-channel images (ResNet-18) or ``(sequences, tokens per sequence)``
            of random tokens (GPT; tokens at most ``config.context``); by default :data:`MODELS`'s.
        config: the GPT's sizes (for ``model="gpt"``).
        reps: rounds.
        warmup: untimed calls of each function first (the first teleport discovers the symmetry, outside
            autocast).
        min_time: seconds a timing lasts at least (fast calls are repeated within a round).
        device: ``"cpu"`` or ``"cuda"``.
        seed: the seed of the weights and the batch.

    Returns:
        One ``amp_teleport_cost`` record (:mod:`~symtele.study.bench_records`) per AMP setting: ``method``
        (``"teleporter"``), ``model, n_params, batch, device, dtype`` (the parameters'), ``amp, amp_dtype``
        (``None`` when off), ``grad_scaler``, ``output_dtype`` (the network's output under the setting's
        autocast), ``grad_evals, grad_evals_rounds, teleport_s, grad_s, reps``, and of the last teleport
        ``t``, ``loss_rel_change`` (``|loss_after − loss_before| / |loss_before|``) and ``stopped``.

    Raises:
        TypeError: ``config`` not a :class:`~symtele.models_gpt.GPTConfig`.
        ValueError: an unknown model, no or repeated AMP settings, a bad batch, count or device (all before
            any compute).
    """
    model = checks.choice("model", model, list(MODELS))
    if not isinstance(amps, (tuple, list)) or not amps or len(set(amps)) != len(amps):
        raise ValueError(f"Invalid amps: {amps!r} (expected distinct settings among False, True)")
    for amp in amps:
        if not isinstance(amp, bool):
            raise ValueError(f"Invalid amps: {amp!r} is not a bool")
    if not isinstance(config, GPTConfig):
        raise TypeError(f"Invalid config: {config!r} (expected a GPTConfig)")
    batch = MODELS[model] if batch is None else batch
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise ValueError(f"Invalid batch: {batch!r} (expected a pair of counts)")
    batch = (checks.count("batch[0]", batch[0], minimum=1), checks.count("batch[1]", batch[1], minimum=1))
    if model == "gpt" and batch[1] > config.context:
        raise ValueError(f"Invalid batch: {batch[1]} tokens per sequence (at most context = {config.context})")
    reps = checks.count("reps", reps, minimum=1)
    warmup = checks.count("warmup", warmup, minimum=1)
    min_time = checks.non_negative("min_time", min_time)
    seed = checks.count("seed", seed)
    dev = checks.device("device", device)

    net, x, y, loss_fn = _setup(model, batch, config, dev, seed)
    mixed = amp_settings(dev)
    fns, teleporters, outputs = {}, {}, {}
    for amp in amps:
        dtype = mixed["amp_dtype"] if amp else None
        scaler = torch.amp.GradScaler(dev.type) if amp and mixed["grad_scaler"] else None
        teleporters[amp] = Teleporter(net, loss_fn, schedule=[0], accept="always", state="keep")
        with torch.no_grad(), torch.autocast(dev.type, dtype=dtype, enabled=amp):
            outputs[amp] = str(net(x).dtype).removeprefix("torch.")

        def gradient(amp=amp, dtype=dtype, scaler=scaler):
            net.zero_grad(set_to_none=True)
            with torch.autocast(dev.type, dtype=dtype, enabled=amp):
                loss = loss_fn(net(x), y)
            (loss if scaler is None else scaler.scale(loss)).backward()

        def teleport(amp=amp, dtype=dtype):
            with torch.autocast(dev.type, dtype=dtype, enabled=amp):
                teleporters[amp].teleport(x, y)

        fns[f"grad {amp}"], fns[f"teleport {amp}"] = gradient, teleport
    times = interleaved_times(fns, reps=reps, warmup=warmup, min_time=min_time, device=dev)

    records = []
    for amp in amps:
        grad_t, tele_t = times[f"grad {amp}"], times[f"teleport {amp}"]
        last = teleporters[amp].records[-1]
        records.append(
            record(
                "amp_teleport_cost",
                method="teleporter",
                model=model,
                n_params=sum(p.numel() for p in net.parameters()),
                batch=list(batch),
                device=str(dev),
                dtype=str(next(net.parameters()).dtype).removeprefix("torch."),
                amp=amp,
                amp_dtype=str(mixed["amp_dtype"]).removeprefix("torch.") if amp else None,
                grad_scaler=bool(amp and mixed["grad_scaler"]),
                output_dtype=outputs[amp],
                grad_evals=min(tele_t) / min(grad_t),
                grad_evals_rounds=[t / g for t, g in zip(tele_t, grad_t)],
                teleport_s=min(tele_t),
                grad_s=min(grad_t),
                reps=reps,
                t=float(last.t),
                loss_rel_change=abs(last.loss_after - last.loss_before) / abs(last.loss_before),
                stopped=last.stopped,
            )
        )
    return records
