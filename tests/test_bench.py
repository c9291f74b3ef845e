"""The benchmarks (symtele.study.bench*), their records and scripts: well-formed output, clear errors.

No assertion here depends on how fast anything ran.
"""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from symtele.study import bench, bench_records
from symtele.study.bench_protocol import interleaved_times
from symtele.study.settings import CONVEX, REGRESSION

ROOT = Path(__file__).resolve().parent.parent
COST_KEYS = {
    "method",
    "dims",
    "n_params",
    "steps",
    "device",
    "dtype",
    "grad_evals",
    "teleport_s",
    "grad_s",
    "reps",
    "steps_taken",
    "stopped",
}


def _script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_interleaved_times_gives_one_time_per_round_and_caps_slow_functions():
    calls = {"a": 0, "b": 0}

    def a():
        calls["a"] += 1

    def b():
        calls["b"] += 1

    times = interleaved_times({"a": a, "b": b}, reps=4, warmup=2, min_time=0.0, max_reps={"b": 2})
    assert len(times["a"]) == 4 and len(times["b"]) == 2
    assert all(t >= 0 for t in times["a"] + times["b"])
    assert calls == {"a": 2 + 4, "b": 2 + 2}


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(fns={}), ValueError),
        (dict(fns={"a": 3}), TypeError),
        (dict(fns={"a": lambda: None}, reps=0), ValueError),
        (dict(fns={"a": lambda: None}, min_time=-1.0), ValueError),
        (dict(fns={"a": lambda: None}, max_reps={"b": 1}), ValueError),
        (dict(fns={"a": lambda: None}, device="tpu"), ValueError),
    ],
)
def test_interleaved_times_rejects_bad_input(kwargs, error):
    with pytest.raises(error, match="Invalid"):
        interleaved_times(**kwargs)


def test_teleport_cost_records_are_well_formed_and_json_ready():
    records = bench.teleport_cost((4, 5, 6, 7, 8), reps=1, min_time=0.0)
    assert [r["method"] for r in records] == list(bench.METHODS)
    for r in records:
        assert COST_KEYS <= set(r)
        assert r["dims"] == [4, 5, 6, 7, 8] and r["n_params"] == 5 * 6 + 6 * 7 + 7 * 8
        assert r["grad_evals"] > 0 and r["teleport_s"] > 0 and r["grad_s"] > 0
        assert r["device"] == "cpu" and r["dtype"] == "float32" and r["reps"] == 1
    steps = {r["method"]: r["steps"] for r in records}
    assert steps == {"posscale": 10, "posscale-ref": 10, "gln": 8, "levelset-step": 1}
    assert records[0]["steps_taken"] == 10 and records[1]["steps_taken"] is None
    assert json.loads(json.dumps(records)) == records


def test_network_cost_records_every_method_and_the_look_aheads_trials():
    from symtele.study import bench_networks

    records = bench_networks.network_teleport_cost("digits-cnn", bench_networks.METHODS, reps=1)
    assert [r["method"] for r in records] == list(bench_networks.METHODS)
    look = records[-1]
    assert look["trials"] in (2, 3, 4) and look["grad_evals"] > 0 and "trials" not in records[0]
    json.dumps(records)


def test_discovery_time_records_are_well_formed_and_json_ready():
    from symtele.study.bench_networks import discovery_time

    records = discovery_time("digits-cnn", reps=1)
    assert [r["method"] for r in records] == ["discover", "discover-rules"]
    for r in records:
        assert r["batch"] == [2, 1, 8, 8] and r["reps"] == 1 and r["n_scales"] == 56
        assert r["seconds"] > 0 and r["forwards"] > 0
    assert json.loads(json.dumps(records)) == records


def test_teleport_cost_takes_steps_dtype_and_caps():
    (r,) = bench.teleport_cost(
        (3, 4, 5, 2), ["posscale"], steps=3, reps=3, min_time=0.0, dtype="float64", max_reps={"posscale": 1}
    )
    assert r["steps"] == 3 and r["dtype"] == "float64" and r["reps"] == 1


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(dims=(4, 5)),
        dict(dims=(4, 0, 6)),
        dict(methods=["posscale", "adam"]),
        dict(methods=[]),
        dict(steps=0),
        dict(reps=0),
        dict(dtype=torch.int64),
        dict(device="nonsense"),
        dict(max_reps={"gln": 1}, methods=["posscale"]),
    ],
)
def test_teleport_cost_rejects_bad_input(kwargs):
    with pytest.raises((ValueError, TypeError), match="Invalid"):
        bench.teleport_cost(**{"dims": (4, 5, 6, 7, 8), **kwargs})


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(ValueError, match="Invalid device: 'cuda'"):
        bench.teleport_cost((4, 5, 6, 7, 8), device="cuda")


def test_time_to_target_reports_seconds_epochs_and_speedups():
    result = bench.time_to_target(REGRESSION.replace(epochs=30), reps=1, tasks=["relu"])
    teleported = {f"{o}+{t}" for o in ("gd", "adagrad") for t in ("posscale", "posscale-ref")}
    names = {"gd", "adagrad", *teleported}
    assert set(result["seconds"]) == names and set(result["epochs"]) == names
    assert set(result["speedup"]) == teleported
    # the closed form and its double-backprop definition take the same steps: the same losses, to rounding
    assert result["epochs"]["gd+posscale"] == result["epochs"]["gd+posscale-ref"]
    assert len(result["seconds_rounds"]["gd"]) == 1 and result["seconds"]["gd"] == min(result["seconds_rounds"]["gd"])
    assert result["target"]["relu"] == result["final_mean_loss"]["gd"]
    assert result["epochs"]["gd"] is not None and result["seconds"]["gd"] > 0
    assert result["epochs"]["gd+posscale"] <= result["epochs"]["gd"]
    assert json.loads(json.dumps(result)) == result


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(tasks=["tanh"]), r"tasks\[0\]"),
        (dict(tasks=[]), "tasks"),
        (dict(reps=0), "reps"),
        (dict(warmup=-1), "warmup"),
        (dict(settings=CONVEX), "settings"),
    ],
)
def test_time_to_target_rejects_bad_input(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        bench.time_to_target(**kwargs)


def test_batched_vs_loop_compares_losses():
    records = bench.batched_vs_loop(REGRESSION.replace(seeds=(0, 12345), epochs=8), reps=1)
    assert [r["method"] for r in records] == ["gd", "gd+posscale", "adagrad", "adagrad+posscale"]
    for r in records:
        assert r["identical"] and r["max_abs_diff"] == 0.0  # the loop runs each seed as a batch of one
        assert r["batched_s"] > 0 and r["loop_s"] > 0


def test_bench_script_rejects_bad_options_and_skips_missing_cuda(tmp_path, capsys):
    run = _script("run")
    with pytest.raises(SystemExit):
        run.main(["--only", "everything"])
    with pytest.raises(SystemExit):
        run.main(["--threads", "0"])
    if not torch.cuda.is_available():
        assert run.main(["--device", "cuda", "--out", str(tmp_path)]) == 0
        assert "skipped" in capsys.readouterr().err
        assert not list(tmp_path.iterdir())


def test_bench_script_writes_batched_seeds_json(tmp_path, monkeypatch):
    run = _script("run")
    measure = bench.batched_vs_loop
    monkeypatch.setattr(
        run.bench,
        "batched_vs_loop",
        lambda device: measure(REGRESSION.replace(seeds=(0,), epochs=6), reps=1, device=device),
    )
    assert run.main(["--only", "batched", "--out", str(tmp_path)]) == 0
    written = json.loads((tmp_path / "batched_seeds.json").read_text())
    assert len(written["records"]) == 4 and "torch" in written["machine"]


def test_records_are_checked_against_their_declared_fields(tmp_path):
    good = dict(method="gd", seeds=[0], dims=[4, 5], epochs=3, batched_s=1.0, loop_s=2.0, speedup=2.0)
    good.update(max_abs_diff=0.0, max_rel_diff=0.0, identical=True, reps=1, device="cpu", dtype="float32")
    assert bench_records.record("batched_seeds", **good) == good
    with pytest.raises(ValueError, match=r"Invalid batched_seeds record: unknown fields \['colour'\]"):
        bench_records.record("batched_seeds", **good, colour="red")
    with pytest.raises(ValueError, match=r"missing fields \['reps'\]"):
        bench_records.record("batched_seeds", **{k: v for k, v in good.items() if k != "reps"})
    with pytest.raises(ValueError, match=r"epochs = '3' \(expected int\)"):
        bench_records.record("batched_seeds", **{**good, "epochs": "3"})
    with pytest.raises(ValueError, match=r"identical = 1 \(expected bool\)"):
        bench_records.record("batched_seeds", **{**good, "identical": 1})
    with pytest.raises(ValueError, match=r"Invalid kind: 'nothing'"):
        bench_records.record("nothing")
    # written in the file's shape, checked again on the way
    path = bench_records.write(tmp_path / "b.json", "batched_seeds", [good], {"torch": "x"})
    assert json.loads(path.read_text()) == {"records": [good], "machine": {"torch": "x"}}
    with pytest.raises(ValueError, match="batched_s = 'fast'"):
        bench_records.write(tmp_path / "c.json", "batched_seeds", [{**good, "batched_s": "fast"}])
    assert not (tmp_path / "c.json").exists()


def test_the_timing_fields_follow_from_the_schema():
    """What strip_timing drops from the performance notebook's results: every wall-clock field, no other."""
    assert set(bench_records.WALL_S) == {
        "teleport_s", "grad_s", "seconds", "seconds_rounds", "time_s", "batched_s", "loop_s", "cold_s", "warm_s",
        "noop_s", "forward_s",
    }  # fmt: skip
    assert set(bench_records.WALL_RATIOS) == {
        "grad_evals", "grad_evals_rounds", "speedup", "speedup_rounds", "teleport_share", "forwards",
    }  # fmt: skip


def test_report_build_copies_the_working_tree_only():
    files = _script("report_build").tree_files(ROOT)
    assert "Makefile" in files and "symtele/study/bench.py" in files
    assert not any(f.startswith(("build/", ".venv/")) for f in files)


@pytest.mark.parametrize("full", [False, True])
def test_bench_script_plans_valid_cost_calls(monkeypatch, full):
    run = _script("run")
    calls = []

    def fake(dims, methods, device, max_reps):
        assert set(max_reps) <= set(methods)
        calls.append((tuple(dims), list(methods)))
        return [{"method": m, "dims": list(dims), "grad_evals": 1.0} for m in methods]

    monkeypatch.setattr(run.bench, "teleport_cost", fake)
    records = run.cost_records("cpu", full, log=lambda msg: None)
    assert {tuple(r["dims"]) for r in records if r.get("sweep")} == {run.sweep_dims(w) for w in run.SWEEP_WIDTHS}
    skipped = [r for r in records if r["grad_evals"] is None]
    assert (len(skipped) == 0) == full


def _fake_cost(method, width, seconds, grad_evals, device="cpu"):
    n_params = 784 * width + width * width + 10 * width
    return {
        "method": method,
        "dims": [256, 784, width, width, 10],
        "n_params": n_params,
        "device": device,
        "teleport_s": seconds,
        "grad_s": seconds / grad_evals,
        "grad_evals": grad_evals,
        "sweep": True,
    }


def test_scaling_exponent_recovers_a_power_law():
    records = [_fake_cost("posscale", w, 1e-9 * (784 * w + w * w + 10 * w) ** 1.5, 2.0) for w in (64, 128, 256)]
    assert bench.scaling_exponent(records, "posscale") == pytest.approx(1.5)
    assert bench.scaling_exponent(records, "posscale", "grad_evals") == pytest.approx(0.0, abs=1e-12)
    assert bench.scaling_exponent(records[:1], "posscale") is None
    with pytest.raises(ValueError, match="Invalid key"):
        bench.scaling_exponent(records, "posscale", "seconds")


def test_bench_plots_draw_from_records():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from symtele.plots import benchmarks as bench_plots

    records = [
        _fake_cost(m, w, 0.01 * w, e, d)
        for m, e in (("posscale", 1.0), ("posscale-ref", 50.0))
        for w in (64, 128)
        for d in ("cpu", "cuda:0")
    ]
    records.append({**_fake_cost("gln", 64, 1.0, 1.0), "grad_evals": None, "teleport_s": None, "grad_s": None})
    table = bench_plots.cost_table(records)
    assert list(table.columns.get_level_values("device").unique()) == ["cpu", "cuda"]
    assert table.loc[str([256, 784, 64, 64, 10]), ("cpu", "posscale-ref")] == 50.0
    for y in ("seconds", "grad_evals"):
        fig = bench_plots.scaling(records, y=y)
        assert len(fig.axes[0].lines) == (6 if y == "seconds" else 4)
        plt.close(fig)
    with pytest.raises(ValueError, match="Invalid y"):
        bench_plots.scaling(records, y="joules")
    result = {
        "seconds": {"gd": 0.2, "gd+posscale": 0.04, "gd+gln": None},
        "speedup": {"gd+posscale": 5.0, "gd+gln": None},
    }
    fig = bench_plots.target_bars(result)
    assert len(fig.axes[0].patches) == 2
    plt.close(fig)


TINY_GPT = dict(vocab_size=11, context=8, n_layer=1, n_head=2, d_model=8)


def _tiny_gpt(dtype=torch.float64, seed=0):
    from symtele.models_gpt import GPTConfig
    from symtele.study import bench_attention

    return bench_attention._setup(GPTConfig(**TINY_GPT), (2, 8), dtype, torch.device("cpu"), seed)


def test_attention_cost_records_both_methods_and_their_teleports_agree(tmp_path):
    from symtele.models_gpt import GPTConfig
    from symtele.study.bench_attention import METHODS, attention_teleport_cost

    records = attention_teleport_cost(
        config=GPTConfig(**TINY_GPT), batch=(2, 8), steps=3, reps=2, min_time=0.0, dtype=torch.float64
    )
    assert [r["method"] for r in records] == list(METHODS)
    closed, ref = records
    for r in records:
        assert r["model"] == "gpt" and r["config"]["d_model"] == 8 and r["batch"] == [2, 8]
        assert r["n_groups"] == 4 and r["d_head"] == 4 and r["steps"] == 3 and r["dtype"] == "float64"
        assert r["grad_evals"] > 0 and len(r["grad_evals_rounds"]) == r["reps"] == 2
        # the closed form and double backpropagation take the same steps: the same A per group, to rounding
        assert r["max_a_diff"] < 1e-10 and r["gain"] > 1
    assert closed["speedup"] == pytest.approx(ref["grad_evals"] / closed["grad_evals"])
    assert len(closed["speedup_rounds"]) == 2 and "speedup" not in ref
    assert json.loads(json.dumps(records)) == records
    path = bench_records.write(tmp_path / "a.json", "attention_teleport_cost", records)
    assert len(json.loads(path.read_text())) == 2


def test_the_reference_slopes_are_the_double_backprop_definition_and_the_closed_form():
    """``reference_slopes`` in ``X_g`` against ``pair_gradient_norm_reference`` along X, and ``2 D`` in closed form."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from symtele.study.bench_attention import reference_slopes, reference_teleport
    from symtele.teleports.attention import grams, pair_gradient_norm_reference, pair_slope
    from symtele.teleports.attention_stack import ascend_heads
    from symtele.teleports.discovery import discover

    model, tokens, params, loss_of, grad = _tiny_gpt()
    groups = discover(model, tokens).pair_groups
    _, grads = grad()
    start = [torch.eye(g.d, dtype=torch.float64) for g in groups]
    value, slopes = reference_slopes(loss_of, params, groups, start)
    assert float(value) == pytest.approx(sum(float(g.square().sum()) for g in grads.values()), rel=1e-12)
    x = torch.randn(4, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    for group, slope in zip(groups, slopes):
        assert torch.allclose(slope, 2 * pair_slope(*grams(group, grads), start[0]), rtol=1e-9, atol=1e-13)
        with sdpa_kernel(SDPBackend.MATH):  # the CPU's fused attention has no second derivative
            _, along = pair_gradient_norm_reference(loss_of, params, group, start[0], x)
        assert float((slope * x).sum()) == pytest.approx(float(along), rel=1e-9, abs=1e-15)
    moved, closed = ascend_heads(groups, params, grads, steps=4)
    moved_ref, ref = reference_teleport(loss_of, params, groups, steps=4)
    for a, b in zip(closed, ref):
        assert not torch.allclose(a, torch.eye(4, dtype=a.dtype)) and torch.allclose(a, b, rtol=0, atol=1e-10)
    for name in params:
        assert torch.allclose(moved[name], moved_ref[name], rtol=0, atol=1e-10)
    with torch.no_grad():  # the teleport keeps the function: the same logits
        before = torch.func.functional_call(model, params, (tokens,))
        after = torch.func.functional_call(model, moved, (tokens,))
    assert torch.allclose(before, after, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(methods=["attention", "adam"]), "method"),
        (dict(methods=[]), "methods"),
        (dict(batch=(2,)), "batch"),
        (dict(batch=(2, 9)), "batch"),
        (dict(batch=(0, 8)), r"batch\[0\]"),
        (dict(steps=0), "steps"),
        (dict(max_step=0.0), "max_step"),
        (dict(dtype=torch.int64), "dtype"),
        (dict(device="nonsense"), "device"),
        (dict(max_reps={"attention-ref": 1}, methods=["attention"]), "max_reps"),
        (dict(config="gpt"), "config"),
    ],
)
def test_attention_cost_rejects_bad_input_before_any_compute(kwargs, match):
    from symtele.models_gpt import GPTConfig
    from symtele.study.bench_attention import attention_teleport_cost

    with pytest.raises((ValueError, TypeError), match=f"Invalid {match}"):
        attention_teleport_cost(**{"config": GPTConfig(**TINY_GPT), "batch": (2, 8), **kwargs})


def _attention_results(closed, ref, steps=1):
    def one(method, grad_evals):
        fields = dict(method=method, steps=steps, device="cpu", n_params=1000, n_groups=16, d_head=16, dtype="float32")
        return {"kind": "attention_teleport_cost", **fields, "batch": [16, 64], "wall_ratios": grad_evals}

    return {
        "05_performance": {
            "records": [
                one("attention", {"grad_evals": closed, "grad_evals_rounds": [closed, 2 * closed]}),
                one("attention-ref", {"grad_evals": ref, "grad_evals_rounds": [ref, ref]}),
            ]
        }
    }


@pytest.mark.parametrize(
    "closed, ref, holds", [(0.3, 9.0, "yes"), (0.3, 6.0, "partly"), (0.6, 30.0, "partly"), (0.6, 9.0, "no")]
)
def test_the_attention_cost_claim_reads_the_one_step_records(closed, ref, holds):
    from symtele.study.claims import timing

    measured, verdict, extra = timing.attention_cost(_attention_results(closed, ref))
    assert verdict == holds and extra["timing"] and f"closed form {closed:.2f}" in measured
    with pytest.raises(LookupError, match="one-step attention"):
        timing.attention_cost(_attention_results(closed, ref, steps=10))


def _lookahead_results(cost, forwards, rounds, model="resnet18"):
    record = {
        "kind": "network_teleport_cost",
        "method": "lookahead",
        "model": model,
        "device": "cpu",
        "n_params": 11181642,
        "batch": [32, 3, 32, 32],
        "dtype": "float32",
        "trials": 4,
        "wall_ratios": {"grad_evals": cost, "grad_evals_rounds": rounds, "forwards": forwards},
    }
    return {"05_performance": {"records": [record]}}


@pytest.mark.parametrize(
    "cost, forwards, rounds, holds, sure",
    [(0.45, 2.5, [0.45, 0.6, 0.47], "yes", "2 of 3"), (1.5, 6.0, [1.5, 0.4], "no", "1 of 2")],
)
def test_the_lookahead_cost_claim_shows_the_forward_passes_it_cannot_skip(cost, forwards, rounds, holds, sure):
    from symtele.study.claims import timing

    measured, verdict, extra = timing.lookahead_cost(_lookahead_results(cost, forwards, rounds))
    assert verdict == holds and extra == {"timing": True, "sure": f"{sure} rounds"}
    forward = cost / forwards
    assert f"{cost:.2f} gradient evaluations with 4 points tried" in measured
    assert f"one forward pass alone is {forward:.2f}" in measured and f"cost {2 * forward:.2f}" in measured
    with pytest.raises(LookupError, match="ResNet-18"):
        timing.lookahead_cost(_lookahead_results(cost, forwards, rounds, model="digits-cnn"))


def test_bench_script_writes_attention_cost_json(tmp_path, monkeypatch):
    from symtele.models_gpt import GPTConfig

    run = _script("run")
    measure = run.bench_attention.attention_teleport_cost
    monkeypatch.setattr(
        run.bench_attention,
        "attention_teleport_cost",
        lambda steps, device: measure(
            config=GPTConfig(**TINY_GPT), batch=(2, 8), steps=steps, reps=1, min_time=0.0, device=device
        ),
    )
    assert run.main(["--only", "attention", "--out", str(tmp_path)]) == 0
    written = json.loads((tmp_path / "attention_cost.json").read_text())
    assert [(r["steps"], r["method"]) for r in written] == [
        (s, m) for s in run.ATTENTION_STEPS for m in ("attention", "attention-ref")
    ]
    assert all("torch" in r["machine"] for r in written)


def test_amp_cost_records_both_settings_for_both_networks_and_the_teleports_keep_the_loss(tmp_path):
    from symtele.models_gpt import GPTConfig
    from symtele.study.bench_amp import amp_teleport_cost

    gpt = amp_teleport_cost("gpt", config=GPTConfig(**TINY_GPT), batch=(2, 8), reps=2, min_time=0.0)
    resnet = amp_teleport_cost("resnet18", batch=(4, 16), reps=1, min_time=0.0)
    for records, model in ((gpt, "gpt"), (resnet, "resnet18")):
        assert [(r["model"], r["amp"]) for r in records] == [(model, False), (model, True)]
        off, on = records
        # on a CPU, AMP is bfloat16 autocast without a loss scale: the training step's output is in bfloat16
        assert (off["amp_dtype"], off["output_dtype"], off["grad_scaler"]) == (None, "float32", False)
        assert (on["amp_dtype"], on["output_dtype"], on["grad_scaler"]) == ("bfloat16", "bfloat16", False)
        for r in records:
            assert r["device"] == "cpu" and r["dtype"] == "float32" and r["method"] == "teleporter"
            assert r["grad_evals"] > 0 and len(r["grad_evals_rounds"]) == r["reps"]
            # the teleport runs in full precision under autocast: it moved and kept the loss to float32 rounding
            assert r["t"] == 1.0 and r["stopped"] is None and r["loss_rel_change"] < 1e-5
    assert resnet[0]["n_params"] == 11181642 and resnet[0]["batch"] == [4, 16]
    path = bench_records.write(tmp_path / "a.json", "amp_teleport_cost", gpt + resnet)
    assert len(json.loads(path.read_text())) == 4


def test_amp_on_a_gpu_is_float16_with_a_loss_scale():
    from symtele.study.bench_amp import amp_settings

    assert amp_settings(torch.device("cuda")) == {"amp_dtype": torch.float16, "grad_scaler": True}
    assert amp_settings(torch.device("cpu")) == {"amp_dtype": torch.bfloat16, "grad_scaler": False}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(model="vgg"), "model"),
        (dict(amps=()), "amps"),
        (dict(amps=(True, True)), "amps"),
        (dict(amps=("bf16",)), "amps"),
        (dict(batch=(2,)), "batch"),
        (dict(batch=(2, 9)), "batch"),
        (dict(batch=(0, 8)), r"batch\[0\]"),
        (dict(reps=0), "reps"),
        (dict(device="nonsense"), "device"),
        (dict(config="gpt"), "config"),
    ],
)
def test_amp_cost_rejects_bad_input_before_any_compute(kwargs, match, monkeypatch):
    from symtele.models_gpt import GPTConfig
    from symtele.study import bench_amp

    monkeypatch.setattr(bench_amp, "_setup", lambda *args: pytest.fail("computed before checking"))
    with pytest.raises((ValueError, TypeError), match=f"Invalid {match}"):
        bench_amp.amp_teleport_cost(**{"model": "gpt", "config": GPTConfig(**TINY_GPT), "batch": (2, 8), **kwargs})


def test_bench_script_writes_amp_cost_json(tmp_path, monkeypatch):
    from symtele.models_gpt import GPTConfig

    run = _script("run")
    measure = run.bench_amp.amp_teleport_cost
    monkeypatch.setattr(run.bench_amp, "MODELS", {"gpt": (2, 8)})
    monkeypatch.setattr(
        run.bench_amp,
        "amp_teleport_cost",
        lambda model, device: measure(
            model, config=GPTConfig(**TINY_GPT), batch=(2, 8), reps=1, min_time=0.0, device=device
        ),
    )
    assert run.main(["--only", "amp", "--out", str(tmp_path)]) == 0
    written = json.loads((tmp_path / "amp_cost.json").read_text())
    assert [(r["model"], r["amp"]) for r in written] == [("gpt", False), ("gpt", True)]
    assert all("torch" in r["machine"] for r in written)


def test_bench_script_writes_the_distributed_teleports_share(tmp_path, monkeypatch):
    """Two gloo processes teleport a ResNet-18 (a tiny batch, two rounds here): the JSON holds every round of
    both processes, the bytes all-reduced and the shares, each a fraction that follows from the rows."""
    run = _script("run")
    measure = run.bench_distributed.distributed_teleport_cost
    monkeypatch.setattr(run.bench_distributed, "distributed_teleport_cost", lambda: measure(batch=2, rounds=2))
    assert run.main(["--only", "distributed", "--out", str(tmp_path)]) == 0
    written = json.loads((tmp_path / "distributed_teleport.json").read_text())
    assert written["world"] == 2 and len(written["ranks"]) == 2 and all(len(rows) == 2 for rows in written["ranks"])
    assert written["all_reduce_bytes"] >= 4 * 11_000_000  # one ResNet-18 gradient's worth, float32
    assert sum(c["calls"] for c in written["collectives"].values()) >= 1
    inside = [min(rank[i]["collectives_s"] / rank[i]["global_s"] for rank in written["ranks"]) for i in range(2)]
    assert written["collectives_share_rounds"] == pytest.approx(inside)
    assert 0 < written["collectives_share"] < 1 and "torch" in written["machine"]
    # the teleport from p.grad: five numbers per process all-reduced, no gradient; its share follows from the rows
    assert written["after_backward_all_reduce_bytes"] == 2 * 5 * 8
    assert written["after_backward_collectives"]["all_reduce"]["bytes"] < 1000
    after = [
        min(rank[i]["after_backward_collectives_s"] / rank[i]["after_backward_s"] for rank in written["ranks"])
        for i in range(2)
    ]
    assert written["after_backward_collectives_share_rounds"] == pytest.approx(after)
    one = written["one_process"]
    assert one["batch"] == 2 and len(one["grad_s"]) == len(one["after_backward_s"]) == 2
    assert one["after_backward_grad_evals"] == pytest.approx(min(one["after_backward_s"]) / min(one["grad_s"]))
