"""The Teleporter under DistributedDataParallel: two gloo processes on the CPU teleport the global batch, stay
bitwise equal, and match one process trained on the union of their batches; differing settings are refused."""

import copy
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import symtele as st
import symtele.distributed
import symtele.teleporter

WORLD, STEPS, PER_RANK = 2, 10, 16
ROOT = Path(__file__).resolve().parents[1]
#: the look-ahead's threshold in these tests: any consistently lower point is applied, so that some teleports are
#: (each process's 8 chunks are the same samples as one process's 8 chunks of the union: the decisions agree)
LENIENT_Z = 0.0
#: the gradients of at least this many bytes are all-reduced in place in these tests, the others in the flat buffer
IN_PLACE_BYTES = 24 * 24 * 8


def _network():
    torch.manual_seed(0)  # no BatchNorm: the union's statistics would differ from each process's
    return nn.Sequential(nn.Linear(12, 24), nn.ReLU(), nn.Linear(24, 24), nn.ReLU(), nn.Linear(24, 5)).double()


def _global_batches():
    g = torch.Generator().manual_seed(1)
    return [
        (torch.randn(WORLD * PER_RANK, 12, generator=g, dtype=torch.float64), torch.randint(0, 5, (WORLD * PER_RANK,)))
        for _ in range(STEPS)
    ]


def _teleporter(model, optimizer, **options):
    return st.Teleporter(model, F.cross_entropy, optimizer, every=3, horizon=1.0, **options)


def _train(model, step_model, teleporter, optimizer, batches):
    for step, (x, y) in enumerate(batches):
        teleporter.maybe(step, x, y)
        optimizer.zero_grad()
        F.cross_entropy(step_model(x), y).backward()
        optimizer.step()


def _train_after_backward(model, step_model, teleporter, optimizer, batches):
    """The teleport between the backward pass and the optimiser's step, from the gradient in ``p.grad``."""
    for step, (x, y) in enumerate(batches):
        optimizer.zero_grad()
        F.cross_entropy(step_model(x), y).backward()
        teleporter.maybe_after_backward(step, x, y)
        optimizer.step()


def _records(teleporter):
    return [(r.epoch, r.t, r.grad_evals, r.log_scales, r.trace.get("all_reduce_bytes")) for r in teleporter.records]


def _readme_example() -> str:
    """The README's DDP example (the first of its subsection on training setups)."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("### Distributed, mixed precision, compiled, accumulated, Lightning") :].split("\n## ")[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)[0]


def _sums(rank):
    """``sum_over`` on tensors large and small, one expanded and two sharing their memory, and their true sums."""
    base = torch.arange(600.0, dtype=torch.float64) * (rank + 1)  # 4800 bytes: at least IN_PLACE_BYTES
    shared = base.clone()
    tensors = [
        base.clone(),
        torch.full((), rank + 1.0, dtype=torch.float64).expand(30, 30),
        shared,
        shared,
        base[:5].float(),
    ]
    expected = [
        base * 3 / (rank + 1),
        torch.full((30, 30), 3.0, dtype=torch.float64),
        *[base * 3 / (rank + 1)] * 2,
        base[:5].float() * 3 / (rank + 1),
    ]
    sums, numbers, _, sent = symtele.distributed.sum_over(dist.group.WORLD, tensors, [rank + 1.0, 1.0])
    return sums, expected, numbers, sent, [t.dtype for t in sums]


def _on_each_process(rank, store, out):
    """Both scenarios in one start of the processes: training with teleports, then a Teleporter whose ``state``
    differs between the processes."""
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    symtele.teleporter.Z = LENIENT_Z
    symtele.distributed.IN_PLACE_BYTES = IN_PLACE_BYTES
    try:
        result = {"sums": _sums(rank)}
        model = _network()
        ddp = DistributedDataParallel(model)
        optimizer = torch.optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9)
        teleporter = _teleporter(ddp, optimizer)
        mine = [(x[rank::WORLD], y[rank::WORLD]) for x, y in _global_batches()]
        _train(model, ddp, teleporter, optimizer, mine)
        result.update(params=[p.detach().clone() for p in model.parameters()], records=_records(teleporter))
        # the same training, teleporting from the gradient DistributedDataParallel averaged (a fresh replica)
        model = _network()
        ddp = DistributedDataParallel(model)
        optimizer = torch.optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9)
        teleporter = _teleporter(ddp, optimizer)
        _train_after_backward(model, ddp, teleporter, optimizer, mine)
        result["after_backward"] = ([p.detach().clone() for p in model.parameters()], _records(teleporter))
        # without DistributedDataParallel each process's p.grad is its own: refused on every process
        alone_model = _network()
        alone_optimizer = torch.optim.SGD(alone_model.parameters(), lr=0.1)  # the DDP model's stays `optimizer`
        teleporter = st.Teleporter(
            alone_model, F.cross_entropy, alone_optimizer, schedule=[0], accept="always", process_group=dist.group.WORLD
        )
        F.cross_entropy(alone_model(mine[0][0]), mine[0][1]).backward()
        before = [p.detach().clone() for p in alone_model.parameters()]
        try:
            teleporter.maybe_after_backward(0, *mine[0])
            result["differing"] = None
        except ValueError as error:
            result["differing"] = str(error)
        result["differing_unchanged"] = all(torch.equal(p, q) for p, q in zip(before, alone_model.parameters()))
        # the unwrapped model with a group given: all processes; a group of one: each process on its own batch
        everyone = dist.new_group(list(range(WORLD)))
        alone = [dist.new_group([r]) for r in range(WORLD)][rank]  # every process makes every group
        for name, group in (("everyone", everyone), ("alone", alone)):
            snapshot = copy.deepcopy(model)
            teleporter = st.Teleporter(
                snapshot, F.cross_entropy, schedule=[0], accept="always", state="keep", process_group=group
            )
            record = teleporter.maybe(0, *mine[0])
            result[name] = (record.log_scales, record.trace.get("all_reduce_bytes"))
        # one process transports the optimiser's state, the other keeps it
        teleporter = _teleporter(ddp, optimizer, state="transport" if rank == 0 else "keep")
        x, y = mine[0]
        try:
            teleporter.maybe(0, x, y)
            result["error"] = None
        except ValueError as error:
            result["error"] = str(error)
        dist.barrier()  # both processes are done with their collectives before either closes its connections
    finally:
        dist.destroy_process_group()
    torch.save(result, f"{out}/{rank}.pt")


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """What each of the two processes returned."""
    folder = tmp_path_factory.mktemp("ddp")
    mp.spawn(_on_each_process, args=(folder / "store", folder), nprocs=WORLD, join=True)
    return [torch.load(folder / f"{rank}.pt") for rank in range(WORLD)]


def test_processes_teleport_the_global_batch_as_one_process_does_on_the_union(ranks, monkeypatch):
    monkeypatch.setattr("symtele.teleporter.Z", LENIENT_Z)  # as in the processes
    for p, q in zip(ranks[0]["params"], ranks[1]["params"]):
        assert torch.equal(p, q)  # bitwise: the same group element and the same state on both
    assert ranks[0]["records"] == ranks[1]["records"]

    model = _network()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    teleporter = _teleporter(model, optimizer)
    _train(model, model, teleporter, optimizer, _global_batches())
    one = _records(teleporter)
    many = ranks[0]["records"]
    assert [r[:2] for r in many] == [r[:2] for r in one]  # the same steps, the same look-ahead choices
    assert any(t > 0 for _, t, *_ in many), "no teleport was accepted: the comparison would test nothing"
    for (_, _, evals, scales, sent), (*_, scales_one, _) in zip(many, one):
        assert evals == 1  # one gradient per process, as in one process
        if scales is not None:
            torch.testing.assert_close(torch.tensor(scales), torch.tensor(scales_one), rtol=1e-6, atol=1e-9)
        n = sum(p.numel() for p in model.parameters())
        assert sent == (n + 2) * 8  # every gradient, the loss and a flag, in float64: one buffer
    for p, q in zip(ranks[0]["params"], model.parameters()):
        torch.testing.assert_close(p, q.detach(), rtol=1e-6, atol=1e-9)


def test_after_backward_processes_stay_equal_and_reduce_only_numbers(ranks, monkeypatch):
    """DistributedDataParallel's averaged gradient in p.grad: the processes stay bitwise equal, equal one process
    teleporting after the backward pass on the union of their batches, and all-reduce five numbers each."""
    monkeypatch.setattr("symtele.teleporter.Z", LENIENT_Z)  # as in the processes
    (params, records), (other_params, other_records) = ranks[0]["after_backward"], ranks[1]["after_backward"]
    for p, q in zip(params, other_params):
        assert torch.equal(p, q)
    assert records == other_records
    assert any(t > 0 for _, t, *_ in records), "no teleport was accepted: the comparison would test nothing"
    for _, _, evals, _, sent in records:
        assert evals == 0  # no gradient computed: DistributedDataParallel's is used
        assert sent == WORLD * 5 * 8  # the loss, the flag, p.grad's sum and checksum (2) per process: no gradient

    model = _network()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    teleporter = _teleporter(model, optimizer)
    _train_after_backward(model, model, teleporter, optimizer, _global_batches())
    one = _records(teleporter)
    assert [r[:2] for r in records] == [r[:2] for r in one]
    for (*_, scales, _), (*_, scales_one, _) in zip(records, one):
        if scales is not None:
            torch.testing.assert_close(torch.tensor(scales), torch.tensor(scales_one), rtol=1e-6, atol=1e-9)
    for p, q in zip(params, model.parameters()):
        torch.testing.assert_close(p, q.detach(), rtol=1e-6, atol=1e-9)
    # and the same as the processes' teleports before the backward pass, which computed and all-reduced a gradient
    for p, q in zip(params, ranks[0]["params"]):
        torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-12)


def test_after_backward_refuses_gradients_that_differ_between_processes(ranks):
    for rank in ranks:
        assert rank["differing"] is not None and "p.grad differs between the processes" in rank["differing"]
        assert "DistributedDataParallel" in rank["differing"] and rank["differing_unchanged"]


def test_large_gradients_are_summed_in_place_and_small_ones_and_numbers_in_one_buffer(ranks):
    for rank in ranks:
        sums, expected, numbers, sent, dtypes = rank["sums"]
        for got, want in zip(sums, expected):
            assert torch.equal(got, want)  # the expanded one copied, the second of the shared pair too
        assert numbers == [3.0, 2.0]
        assert dtypes == [torch.float64] * 4 + [torch.float32]
        assert sent == (600 + 900 + 600 + 600) * 8 + (5 + 2) * 4  # the flat buffer in float32: small and numbers
    assert symtele.distributed.IN_PLACE_BYTES == 1 << 20  # the tests' own threshold was set in their processes only


def test_a_process_group_given_is_the_one_averaged_over(ranks):
    assert ranks[0]["everyone"] == ranks[1]["everyone"] and ranks[0]["everyone"][1] > 0
    assert ranks[0]["alone"][0] != ranks[1]["alone"][0]  # each process's own batch, and nothing sent
    assert ranks[0]["alone"][1] is None and ranks[1]["alone"][1] is None


def test_settings_that_differ_between_processes_are_refused_on_every_process(ranks):
    for rank in ranks:
        assert rank["error"] is not None
        assert "differ between the processes" in rank["error"]
        assert "state: process 0 'transport', process 1 'keep'" in rank["error"]


def test_the_readme_ddp_example_runs(tmp_path):
    """The README's DDP example as a script (its own two processes), its process group on a file, not a port."""
    code = _readme_example()
    assert 'init_method="tcp://127.0.0.1:29517"' in code
    code = code.replace('"tcp://127.0.0.1:29517"', repr(f"file://{tmp_path / 'store'}"))
    (tmp_path / "ddp_example.py").write_text(code)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run(
        [sys.executable, "ddp_example.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-3000:]
    lines = [line.split(",")[0] for line in run.stdout.splitlines()]
    assert lines == ["TeleportRecord(step=10", "TeleportRecord(step=20"]  # printed by process 0
