"""The report's experiments, one seeded function each, returning tidy records.

Every function takes the settings object of its notebook (:mod:`symtele.study.settings`; by
default the writeup's, which the report runs with), whose values were checked when it was made,
runs the same ``train`` loop the library exposes, and returns a list of records in the results
schema of :mod:`symtele.study.results` (one per run and seed), ready for ``write_results`` and for
the plot functions of :mod:`symtele.plots`. Each takes ``device`` (``"cpu"`` by default).

* :func:`convex_so2`        — GD ± SO(2) teleport on a 2-D problem (writeup §4.1.1).
* :func:`relu_posscale`     — GD and AdaGrad ± positive-scale teleport on the course project's regression (§4.1.2).
* :func:`gln_baseline`      — GL(n) against positive-scale teleport on the LeakyReLU version of that task.
* :func:`level_set`         — GD (Armijo or fixed step) ± level-set teleport on a 2-D problem (§4.2.1).
* :func:`same_budget`       — the level-set teleport against GD given as many gradients and Hessian-vector products.
* :func:`level_set_mlp`     — GD ± level-set teleport on the 2-layer Softplus MLP (§4.2.2).
* :func:`beyond_optimizers` — torch optimisers ± positive-scale teleport on a digits MLP.
* :func:`networks`          — a CNN and a ResNet on the digits by minibatches, ± teleport, optimiser state
  kept, reset or transported.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence

import torch

from .. import checks
from ..objective import grad_norm_sq
from ..optimizers import TORCH_OPTIMIZERS
from ..problems import get_problem
from ..regression import regression_task
from ..sam import SAM
from ..tasks import accuracy, digits_data, digits_mlp, softplus_mlp
from ..teleports import SO2, LevelSet, PositiveScale
from ..training import train
from .results import batched_records, run_record
from .settings import (
    CONVEX,
    DIGITS,
    LEVEL_SET,
    NETWORKS,
    REGRESSION,
    ConvexSettings,
    DigitsSettings,
    LevelSetSettings,
    NetworkSettings,
    RegressionSettings,
)
from .settings import NETWORK_OPTIMIZERS as NETWORK_OPTIMIZER_NAMES


def course_regression_task(
    seeds: Sequence[int] | int = REGRESSION.seeds,
    dims: Sequence[int] = REGRESSION.dims,
    *,
    negative_slope: float = 0.0,
    dtype=torch.float32,
    device="cpu",
):
    """The course project's regression task (:func:`symtele.regression_task`), the writeup's dims and seeds by default.

    Args:
        seeds: a seed or several; the seeds' tasks are stacked on a leading dimension.
        dims: the layer widths, input first.
        negative_slope: the LeakyReLU slope (0: ReLU).
        dtype: the floating dtype of the data and weights.
        device: the device they are made on.

    Returns:
        ``(objective, weights)`` of :func:`symtele.regression_task`.
    """
    return regression_task(seeds, dims, negative_slope=negative_slope, dtype=dtype, device=device)


def _checked(settings, kind):
    if not isinstance(settings, kind):
        raise TypeError(f"Invalid settings: {settings!r} (expected a {kind.__name__})")
    return settings


def _with_and_without(objective, params, teleport, schedule, *, only_teleport: bool = False, **train_args):
    """The run without the teleport (unless ``only_teleport``), then the run with it at ``schedule``."""
    runs = [(teleport, schedule)] if only_teleport else [(None, None), (teleport, schedule)]
    return [train(objective, params, teleport=tp, schedule=at, **train_args) for tp, at in runs]


def _path_fields(history) -> dict:
    """The visited points of a 2-D run: ``path`` ([x, y] per entry) and ``path_epochs``."""
    return {
        "path": [params[0].tolist() for _, params in history.path],
        "path_epochs": [epoch for epoch, _ in history.path],
    }


def convex_so2(problem: str = "quadratic", settings: ConvexSettings = CONVEX, *, device="cpu") -> list[dict]:
    """Gradient descent ``w ← w − lr ∇f(w)`` on a 2-D problem, without and with one SO(2) teleport.

    The runs start at the problem's start with its step and epochs (``settings.run(problem)``).
    The teleport, before the step of ``teleport_epoch``, draws θ₀ ~ U[0, π) from a generator
    seeded with ``seed`` and takes ``teleport_steps`` ascent steps on ``‖∇f(g_θ·w)‖²`` in θ.
    Records carry the visited points (``path``, ``path_epochs``), ``start`` and ``lr``.

    Args:
        problem: ``quadratic``, ``booth`` or ``rosenbrock``.
        settings: the notebook's settings (by default ``CONVEX``, the writeup's).
        device: the device the runs compute on.

    Returns:
        One record per run, in the results schema of :mod:`symtele.study.results`.

    Raises:
        TypeError: ``settings`` that is not a :class:`~symtele.study.settings.ConvexSettings`.
        ValueError: an unknown ``problem``.
    """
    prob = get_problem(problem)
    s = _checked(settings, ConvexSettings)
    start, lr, epochs = s.run(problem)
    teleport = SO2(lr=s.teleport_lr, steps=s.teleport_steps, seed=s.seed)
    w = [torch.tensor(start, dtype=torch.float64, device=device)]
    histories = _with_and_without(
        prob, w, teleport, s.teleport_epoch, optimizer="gd", lr=lr, epochs=epochs, keep_path=True
    )
    return [run_record(prob.name, s.seed, h, start=list(start), lr=lr, **_path_fields(h)) for h in histories]


def relu_posscale(settings: RegressionSettings = REGRESSION, *, device="cpu") -> list[dict]:
    """GD and AdaGrad on the course project's ReLU regression, without and with one positive-scale teleport.

    All ``seeds`` are trained as one batched computation; the teleport (before the step of
    ``teleport_epoch``) takes ``teleport_steps`` clipped ascent steps on ``‖∇L‖²`` over the
    per-unit scales. Runs ``gd``, ``gd+posscale``, ``adagrad``, ``adagrad+posscale`` (REFERENCE §2).

    Args:
        settings: the notebook's settings (by default ``REGRESSION``, the writeup's).
        device: the device the runs compute on.

    Returns:
        One record per run and seed, in the results schema of :mod:`symtele.study.results`.

    Raises:
        TypeError: ``settings`` that is not a :class:`~symtele.study.settings.RegressionSettings`.
    """
    s = _checked(settings, RegressionSettings)
    objective, weights = regression_task(list(s.seeds), s.dims, device=device)
    records = []
    for optimizer in ("gd", "adagrad"):
        teleport = PositiveScale(s.teleport_lr(optimizer), s.teleport_steps, s.clamp)
        for h in _with_and_without(
            objective, weights, teleport, s.teleport_epoch, optimizer=optimizer, lr=s.lr(optimizer), epochs=s.epochs
        ):
            records.extend(batched_records("relu-mlp", list(s.seeds), h, lr=s.lr(optimizer)))
    return records


def gln_baseline(settings: RegressionSettings = REGRESSION, *, device="cpu") -> list[dict]:
    """GD and AdaGrad on the LeakyReLU version of the course project's regression, ± GL(n) or positive scales.

    The runs: no teleport, the GL(n) teleport as the original code applies it (``gln``) and with the
    network's actual activations (``gln-updated``), and the positive-scale teleport.

    Every teleport acts once, before the step of ``teleport_epoch``, with the original code's step and
    steps for that optimiser (GD: 1e-7 × 8, AdaGrad: 1e-5 × 2; REFERENCE §3). GL(n) is only
    approximately loss-preserving, and each record's ``teleports`` says by how much the loss moved.
    Methods: ``gd``, ``gd+gln``, ``gd+gln-updated``, ``gd+posscale``, and the same for ``adagrad``.

    Args:
        settings: the notebook's settings (by default ``REGRESSION``, the writeup's).
        device: the device the runs compute on.

    Returns:
        One record per run and seed, in the results schema of :mod:`symtele.study.results`.

    Raises:
        TypeError: ``settings`` that is not a :class:`~symtele.study.settings.RegressionSettings`.
    """
    s = _checked(settings, RegressionSettings)
    objective, weights = regression_task(list(s.seeds), s.dims, negative_slope=s.negative_slope, device=device)
    records = []
    for optimizer in ("gd", "adagrad"):
        teleports = [
            None,
            s.gln(optimizer),
            s.gln(optimizer, hidden="updated"),
            PositiveScale(s.teleport_lr(optimizer), s.teleport_steps, s.clamp),
        ]
        for tp in teleports:
            history = train(
                objective,
                weights,
                optimizer=optimizer,
                lr=s.lr(optimizer),
                epochs=s.epochs,
                teleport=tp,
                schedule=s.teleport_epoch if tp else None,
            )
            records.extend(batched_records("leaky-relu-mlp", list(s.seeds), history, lr=s.lr(optimizer)))
    return records


def _level_set_teleport(s: LevelSetSettings, steps: int | None = None, **options) -> LevelSet:
    return LevelSet(
        rho=s.rho,
        steps=s.teleport_steps if steps is None else steps,
        line_search_steps=s.line_search_steps,
        eps=s.eps,
        delta=s.delta,
        penalty=s.penalty,
        **options,
    )


def level_set(
    problem: str = "booth",
    settings: LevelSetSettings = LEVEL_SET,
    *,
    optimizers: Sequence[str] = ("gd-ls", "gd"),
    teleport_only: bool = False,
    teleport_steps: int | None = None,
    teleport=None,
    device="cpu",
) -> list[dict]:
    """GD without and with level-set teleports on a 2-D problem, for each optimiser in ``optimizers``.

    ``gd-ls`` takes the Armijo step ``η = max{η₀·2⁻ʲ : L(w − η∇L) ≤ L(w) − η/2 ‖∇L‖²}`` from
    ``η₀ = armijo_lr`` and teleports at the problem's teleport epochs, ``gd`` the problem's fixed
    step and teleports at ``settings.fixed_teleport_epochs(problem)``; start, epochs and arithmetic
    (``settings.dtype(problem)``) are the problem's. The teleport maximises ``½‖∇L‖²`` over
    ``{L ≤ L(w_k)}`` with at most ``teleport_steps`` sequential steps (the settings' unless given)
    and ``line_search_steps`` halvings of ρ each; ``teleport`` replaces it by another teleport object
    (the second solver, an SO(2) teleport). ``teleport_only`` skips the runs without teleport.
    Records carry ``path``, the per-epoch ``step_size``, ``start``, ``lr`` and ``dtype``.

    Args:
        problem: ``booth`` or ``rosenbrock`` (the problems the settings have runs of).
        settings: the notebook's settings (by default ``LEVEL_SET``, the writeup's).
        optimizers: the optimisers to run, among ``gd-ls`` and ``gd``, in this order.
        teleport_only: run only the teleported runs.
        teleport_steps: the level-set teleport's steps, instead of the settings'.
        teleport: another teleport object to use instead of the level-set teleport.
        device: the device the runs compute on.

    Returns:
        One record per run, in the results schema of :mod:`symtele.study.results`.

    Raises:
        TypeError: ``settings`` that is not a :class:`~symtele.study.settings.LevelSetSettings`.
        ValueError: an unknown ``problem`` or optimiser; ``teleport_steps`` < 0.
    """
    prob = get_problem(problem)
    s = _checked(settings, LevelSetSettings)
    start, epochs, teleport_epochs, gd_lr = s.run(problem)
    lrs = {"gd-ls": s.armijo_lr, "gd": gd_lr}
    schedules = {"gd-ls": teleport_epochs, "gd": s.fixed_teleport_epochs(problem)}
    optimizers = checks.sequence("optimizers", optimizers, lambda name, v: checks.choice(name, v, lrs))
    if teleport_steps is not None:
        checks.count("teleport_steps", teleport_steps)
    if teleport is None:
        teleport = _level_set_teleport(s, teleport_steps)
    dtype = s.dtype(problem)
    records = []
    for optimizer in optimizers:
        w = [torch.tensor(start, dtype=checks.dtype("dtype", dtype), device=device)]
        for h in _with_and_without(
            prob,
            w,
            teleport,
            list(schedules[optimizer]),
            only_teleport=teleport_only,
            optimizer=optimizer,
            lr=lrs[optimizer],
            epochs=epochs,
            keep_path=True,
        ):
            records.append(
                run_record(
                    prob.name,
                    0,
                    h,
                    start=list(start),
                    lr=lrs[optimizer],
                    dtype=dtype,
                    step_size=h.step_size,
                    **_path_fields(h),
                )
            )
    return records


def same_budget(
    problem: str = "rosenbrock", settings: LevelSetSettings = LEVEL_SET, *, teleported: dict | None = None, device="cpu"
) -> list[dict]:
    """Armijo GD with level-set teleports, and plain Armijo GD given as many gradients and Hessian-vector products.

    The plain run goes on until it has computed as many gradients and Hessian-vector products as the
    teleported run did, teleports included.

    ``teleported`` is the teleported Armijo run's record if it has been run already (by :func:`level_set`
    with the same settings); otherwise it is run here. Each record adds ``evaluations``: per epoch, the
    gradients and Hessian-vector products computed before that epoch's loss was known (one gradient per
    epoch, plus each teleport's ``grad_evals`` and ``hvp_evals``; the Armijo search's loss-only trials are
    left out of both runs).

    Args:
        problem: ``booth`` or ``rosenbrock`` (the problems the settings have runs of).
        settings: the notebook's settings (by default ``LEVEL_SET``, the writeup's).
        teleported: the teleported Armijo run's record, if it has been run already.
        device: the device the runs compute on.

    Returns:
        ``[plain, teleported]``: the two records (the teleported one without its path and step sizes).

    Raises:
        TypeError: ``settings`` that is not a :class:`~symtele.study.settings.LevelSetSettings`.
        ValueError: an unknown ``problem``.
    """
    s = _checked(settings, LevelSetSettings)
    if teleported is None:
        (teleported,) = level_set(problem, s, optimizers=("gd-ls",), teleport_only=True, device=device)
    tele = {k: v for k, v in teleported.items() if k not in ("path", "path_epochs", "step_size")}
    tele["evaluations"] = evaluations(tele)
    budget = tele["evaluations"][-1]
    start = tele["start"]
    w = [torch.tensor(start, dtype=checks.dtype("dtype", tele["dtype"]), device=device)]
    h = train(get_problem(problem), w, optimizer="gd-ls", lr=s.armijo_lr, epochs=budget)
    plain = run_record(problem, 0, h, start=start, lr=s.armijo_lr, dtype=tele["dtype"])
    plain["evaluations"] = evaluations(plain)
    return [plain, tele]


def evaluations(record: dict) -> list[int]:
    """Per epoch of a run, the gradients and Hessian-vector products computed until its loss was known.

    One per epoch before it and this one, plus those of every teleport up to it (``grad_evals`` and
    ``hvp_evals``).

    Args:
        record: a run's record (``loss``, ``teleports``).

    Returns:
        The running counts, one per entry of ``record["loss"]``.
    """
    extra = {}
    for t in record["teleports"]:
        extra[t["epoch"]] = extra.get(t["epoch"], 0) + (t.get("grad_evals") or 0) + (t.get("hvp_evals") or 0)
    total, out = 0, []
    for epoch in range(len(record["loss"])):
        total += 1 + extra.get(epoch, 0)
        out.append(total)
    return out


def level_set_mlp(settings: LevelSetSettings = LEVEL_SET, *, teleports=None, device="cpu") -> list[dict]:
    """GD on the 2-layer Softplus MLP, without and with level-set teleports, for each of ``mlp_seeds``.

    The step is ``mlp_lr``, the MLP has ``mlp_hidden`` units, the teleports act at ``mlp_teleport_epochs``.

    The data and network come from :func:`symtele.softplus_mlp` with the seed; the loss is the
    mean squared error on ``mlp_samples`` points. ``teleports`` lists the teleport objects to run (each a
    run of its own after the plain one; by default the level-set teleport of the settings).

    Args:
        settings: the notebook's settings (by default ``LEVEL_SET``, the writeup's).
        teleports: the teleport objects to run, one run each.
        device: the device the runs compute on.

    Returns:
        One record per run and seed, in the results schema of :mod:`symtele.study.results`.

    Raises:
        TypeError: ``settings`` that is not a :class:`~symtele.study.settings.LevelSetSettings`.
    """
    s = _checked(settings, LevelSetSettings)
    teleports = [_level_set_teleport(s)] if teleports is None else list(teleports)
    records = []
    for seed in s.mlp_seeds:
        objective, params = softplus_mlp(seed, n_samples=s.mlp_samples, hidden=s.mlp_hidden, device=device)
        runs = [None, *teleports]
        for tp in runs:
            h = train(
                objective,
                params,
                optimizer="gd",
                lr=s.mlp_lr,
                epochs=s.mlp_epochs,
                teleport=tp,
                schedule=None if tp is None else list(s.mlp_teleport_epochs),
            )
            records.append(run_record("softplus-mlp", seed, h, lr=s.mlp_lr))
    return records


def beyond_optimizers(settings: DigitsSettings = DIGITS, *, device="cpu") -> list[dict]:
    """Full-batch training of a ReLU MLP on the digits with torch optimisers, ± positive-scale teleport.

    For each seed and each optimiser of ``lrs`` (in its order), one run without and one with the
    teleport at ``teleport_epochs`` (optimiser state kept). Records add ``optimizer``, ``lr``, and
    ``train_accuracy`` and ``test_accuracy`` of the final parameters (held-out quarter of the digits).

    Args:
        settings: the notebook's settings (by default ``DIGITS``, the writeup's).
        device: the device the runs compute on.

    Returns:
        One record per run and seed, in the results schema of :mod:`symtele.study.results`.

    Raises:
        TypeError: ``settings`` that is not a :class:`~symtele.study.settings.DigitsSettings`.
    """
    s = _checked(settings, DigitsSettings)
    teleport = PositiveScale(lr=s.teleport_lr, steps=s.teleport_steps, clamp=s.clamp)
    records = []
    for seed in s.seeds:
        objective, params, data = digits_mlp(seed, hidden=tuple(s.hidden), device=device)
        for optimizer, lr in s.lrs.items():
            for h in _with_and_without(
                objective, params, teleport, list(s.teleport_epochs), optimizer=optimizer, lr=lr, epochs=s.epochs
            ):
                final = h.final_params
                records.append(
                    run_record(
                        "digits-mlp",
                        seed,
                        h,
                        lr=lr,
                        optimizer=optimizer,
                        train_accuracy=accuracy(objective, final, data.x_train, data.y_train),
                        test_accuracy=accuracy(objective, final, data.x_test, data.y_test),
                    )
                )
    return records


def _adamw(params, lr: float) -> torch.optim.AdamW:
    """AdamW with torch's default weight decay (0.01), which only the minibatch networks train with."""
    return torch.optim.AdamW(params, lr=lr)


#: the ``torch.optim`` optimiser behind each name of :class:`~symtele.study.settings.NetworkSettings`: the names
#: are :data:`~symtele.study.settings.NETWORK_OPTIMIZERS`, the optimisers those of :mod:`symtele.optimizers`
#: (and AdamW, which ``symtele.train`` does not offer)
NETWORK_OPTIMIZERS = {name: {**TORCH_OPTIMIZERS, "adamw": _adamw}[name] for name in NETWORK_OPTIMIZER_NAMES}


def _digits_images(seed: int, device):
    data = digits_data(seed, device=device)
    return data.x_train.reshape(-1, 1, 8, 8), data.y_train, data.x_test.reshape(-1, 1, 8, 8), data.y_test


def _on_training_set(model, x, y, rows: int | None = None) -> tuple[float, float]:
    """Loss and accuracy on the whole set ``(x, y)``, the training set or the held-out one.

    From one forward pass in eval mode (running statistics), or, with ``rows``, from forward passes over
    consecutive slices of at most that many examples, of (nearly) equal size, whose outputs are joined before the
    loss and accuracy of the whole set are taken. In eval mode each example's output is its own, so the numbers
    are the same wherever the network's kernels compute an example's output alike in a batch of any of these
    sizes (the digits networks on the CPU: checked by the tests; a slice of one example can take another kernel,
    which the equal slices avoid). A convolutional network's passes over slices of several hundred examples are
    faster than one over the whole training set (their activations stay in the CPU's caches).
    """
    model.eval()
    with torch.no_grad():
        if rows is None or len(x) <= rows:
            logits = model(x)
        else:
            logits = torch.cat([model(part) for part in x.tensor_split(-(-len(x) // rows))])
        loss = torch.nn.functional.cross_entropy(logits, y).item()
        accuracy = (logits.argmax(1) == y).float().mean().item()
    model.train()
    return loss, accuracy


def minibatch_order(n: int, batch_size: int, epochs: int, seed: int, device="cpu") -> list[torch.Tensor]:
    """The minibatches of a run, as index tensors.

    Per epoch, a permutation of the ``n`` training examples drawn from a generator seeded with ``seed`` (one
    generator for the whole run), cut into batches of ``batch_size`` (the last one of an epoch smaller when
    ``batch_size`` does not divide ``n``).

    Args:
        n: the number of training examples.
        batch_size: the examples per minibatch.
        epochs: the number of epochs.
        seed: the generator's seed.
        device: the device the index tensors are moved to.

    Returns:
        The minibatches' indices, epoch after epoch.
    """
    order = torch.Generator().manual_seed(seed)
    return [
        perm[i : i + batch_size]
        for perm in (torch.randperm(n, generator=order).to(device) for _ in range(epochs))
        for i in range(0, n, batch_size)
    ]


def cosine_lr_factor(step: int, total: int) -> float:
    """The cosine schedule's factor of the learning rate at ``step`` of ``total``: ``½(1 + cos(π·step/total))``.

    It starts at 1 and falls to nearly 0 at the last step, so that the loss flattens by the end of the run (the
    annealing of ``torch.optim.lr_scheduler.CosineAnnealingLR`` to zero, per step).

    Args:
        step: the minibatch step (0-based).
        total: the run's steps.

    Returns:
        The factor, in ``(0, 1]``.
    """
    return 0.5 * (1.0 + math.cos(math.pi * step / total))


class _MinibatchRun:
    """A network, its optimiser and the log of one minibatch run, continued step by step and copied at any step.

    The runs with a teleport are copies of the run without, taken just before its first teleport (everything
    before it is the same computation). With ``test=(x_test, y_test)`` the held-out loss and accuracy are
    logged too, at the start and after every epoch (``test_losses``, ``test_accuracies``). With ``lr_factor`` every
    group's learning rate at step ``k`` is its first one times ``lr_factor(k)`` (a schedule such as
    :func:`cosine_lr_factor`), set before the step's teleport is asked, so that a look-ahead sees the step's own rate.
    With ``eval_rows`` the whole-set losses are measured over slices of at most that many examples
    (:func:`_on_training_set`: the same numbers).
    """

    def __init__(self, model, optimizer, x, y, test=None, lr_factor=None, eval_rows=None):
        self.model, self.optimizer, self.x, self.y, self.test = model, optimizer, x, y, test
        self.lr_factor, self.base_lrs = lr_factor, [g["lr"] for g in optimizer.param_groups]
        self.params = list(model.parameters())  # the same tensors throughout: teleports rescale them in place
        self.eval_rows = eval_rows
        loss, self.accuracy = _on_training_set(model, x, y, eval_rows)
        self.losses, self.grads, self.epoch_grads, self.times = [loss], [], [], [0.0]
        self.test_losses, self.test_accuracies = [], []
        self._log_test()
        self.elapsed = 0.0

    def _log_test(self) -> None:
        if self.test is not None:
            loss, accuracy = _on_training_set(self.model, *self.test, self.eval_rows)
            self.test_losses.append(loss)
            self.test_accuracies.append(accuracy)

    def set_lr(self, step: int) -> None:
        """Every group's learning rate for ``step`` (nothing without a schedule)."""
        if self.lr_factor is not None:
            for group, base in zip(self.optimizer.param_groups, self.base_lrs):
                group["lr"] = base * self.lr_factor(step)

    def copy(self) -> _MinibatchRun:
        """A copy of the network, optimiser and log (the data is shared, not copied)."""
        shared = (self.x, self.y, self.test, *(self.test or ()))
        return copy.deepcopy(self, memo={id(t): t for t in shared})

    def advance(
        self, batches: list, start: int, stop: int, steps_per_epoch: int, teleporter=None, *, asked: int | None = None
    ) -> None:
        """Take the minibatch steps ``start … stop − 1``, each teleporting first if ``teleporter`` says so.

        Step ``asked`` does not ask: its teleport was asked already. After the last step of an epoch, the
        training loss and the epoch's mean minibatch ``‖∇L‖²`` are logged. A :class:`~symtele.sam.SAM` optimiser
        is given the closure it needs: the same minibatch's loss and gradient, at its ascent point.
        """
        model, opt, x, y = self.model, self.optimizer, self.x, self.y
        began = time.perf_counter() - self.elapsed
        for step in range(start, stop):
            batch = batches[step]
            self.set_lr(step)
            if teleporter is not None and step != asked:
                teleporter.maybe(step, x[batch], y[batch])
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            self.epoch_grads.append(float(grad_norm_sq([p.grad for p in self.params])))
            if isinstance(opt, SAM):  # its second gradient, at the ascent point, on the same minibatch
                opt.step(lambda b=batch: torch.nn.functional.cross_entropy(model(x[b]), y[b]).backward())
            else:
                opt.step()
            if (step + 1) % steps_per_epoch == 0:
                self.times.append(time.perf_counter() - began)
                loss, self.accuracy = _on_training_set(model, x, y, self.eval_rows)
                self.losses.append(loss)
                self._log_test()
                self.grads += [self.epoch_grads[0]] if not self.grads else []
                self.grads.append(sum(self.epoch_grads) / len(self.epoch_grads))
                self.epoch_grads = []
        self.elapsed = time.perf_counter() - began


def network_runs(
    model_name: str, optimizer: str, seed: int, s: NetworkSettings, *, states=(), device="cpu", share=True
) -> list[dict]:
    """Minibatch runs of ``model_name`` on the digits with ``optimizer``, without teleport and with it.

    One run without teleport, then one per entry of ``states`` (``keep``, ``reset`` or ``transport``) in
    which a :class:`~symtele.teleporter.Teleporter` teleports before the steps of ``s.teleport_at``. All start from
    the same initial weights and take the same minibatches. With ``share`` the teleported runs continue a
    copy of the plain run made before the first teleport (the same numbers as running each from the start,
    which ``share=False`` does).

    The records' ``loss`` is the whole training set's (eval mode) at the start and after every epoch;
    ``grad_norm_sq`` the first minibatch's ``‖∇L‖²``, then each epoch's mean over its minibatches;
    ``teleport_epochs`` are minibatch steps.

    Args:
        model_name: ``digits-cnn`` or ``digits-resnet``.
        optimizer: a name of :data:`~symtele.study.settings.NETWORK_OPTIMIZERS` with a learning rate in
            ``s.lrs``.
        seed: the seed of the data split, the initial weights and the minibatch order.
        s: the :class:`~symtele.study.settings.NetworkSettings`.
        states: the treatments of the optimiser's state to run, one teleported run each.
        device: the device the runs compute on.
        share: continue copies of the plain run made before the first teleport (else run each from the start).

    Returns:
        One record per run: the plain run's first.
    """
    from ..models import digits_cnn, digits_resnet
    from ..teleporter import Teleporter
    from ..teleports.rescale import Rescale

    x, y, x_test, y_test = _digits_images(seed, device)
    batches = minibatch_order(len(y), s.batch_size, s.epochs, seed, device)
    per_epoch, total = -(-len(y) // s.batch_size), len(batches)
    fork = min(min(s.teleport_at), total) if share else 0

    def fresh() -> _MinibatchRun:
        torch.manual_seed(seed)
        model = {"digits-cnn": digits_cnn, "digits-resnet": digits_resnet}[model_name]().to(device)
        return _MinibatchRun(model, NETWORK_OPTIMIZERS[optimizer](model.parameters(), s.lrs[optimizer]), x, y)

    plain = fresh()
    plain.advance(batches, 0, fork, per_epoch)
    runs = [(None, plain, None)]
    for state in states:
        run = plain.copy() if share else fresh()
        teleport = Rescale(steps=s.teleport_steps, max_log_step=s.max_log_step)
        teleporter = Teleporter(
            run.model,
            torch.nn.functional.cross_entropy,
            run.optimizer,
            schedule=list(s.teleport_at),
            teleport=teleport,
            state=state,
            accept="always",  # this chapter studies the state's treatment at one teleport, applied as found
        )
        runs.append((state, run, teleporter))
    records = []
    for state, run, teleporter in runs:
        run.advance(batches, fork, total, per_epoch, teleporter)
        model = run.model.eval()
        with torch.no_grad():
            test_accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
        teleports = [] if teleporter is None else teleporter.records
        records.append(
            {
                "problem": model_name,
                "method": optimizer if state is None else f"{optimizer}+rescale",
                "seed": seed,
                "state": state,
                "optimizer": optimizer,
                "lr": s.lrs[optimizer],
                "loss": run.losses,
                "grad_norm_sq": run.grads,
                "time_s": run.times,
                "teleport_epochs": [r.epoch for r in teleports],
                "teleports": [r.to_dict() for r in teleports],
                "train_accuracy": run.accuracy,  # measured with the last epoch's training loss
                "test_accuracy": test_accuracy,
                "steps": total,
            }
        )
    return records


def networks(settings: NetworkSettings = NETWORKS, *, device="cpu") -> list[dict]:
    """Every model × optimiser × seed without teleport and with it (:func:`network_runs`).

    With the teleport, the optimiser's state is treated in each of the settings' ``states``; plain SGD has no
    state, and is run with ``transport`` alone.

    Args:
        settings: the notebook's settings (by default ``NETWORKS``, the writeup's).
        device: the device the runs compute on.

    Returns:
        One record per run.

    Raises:
        TypeError: ``settings`` that is not a :class:`~symtele.study.settings.NetworkSettings`.
    """
    s = _checked(settings, NetworkSettings)
    records = []
    for model_name in s.models:
        for optimizer in s.lrs:
            states = s.states if optimizer != "sgd" else ("transport",)  # plain SGD has no state to treat
            for seed in s.seeds:
                records += network_runs(model_name, optimizer, seed, s, states=states, device=device)
    return records
