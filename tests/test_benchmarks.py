"""Bookkeeping of the benchmarks (no timing: performance is measured in benchmarks/, not here)."""
import json
import math
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import input_pipeline, train_step
from benchmarks.harness import parse_overrides


@pytest.fixture(autouse=True)
def _denormals_back_on():
    """The PyTorch sides flush denormals to zero process-wide (as XLA-CPU does, for a fair
    race); the tests after these need IEEE floats back (hypothesis refuses to run without)."""
    yield
    if "torch" in sys.modules:
        sys.modules["torch"].set_flush_denormal(False)

REPO_ROOT = Path(__file__).resolve().parents[1]


TINY = ["num_layers=1", "emb_dim=32", "num_heads=2", "mlp_dim=64"]
SHORT = ["--batch", "2", "--seq-len", "16", "--steps", "1", "--warmup", "0", "--max-wait", "0",
         "--max-rounds", "0", "--peak-sizes", "64", "--peak-repeats", "1"]


def test_train_step_runs_gpt2_small_and_bert_base_shrunken_with_their_mfu(tmp_path):
    """benchmarks.train_step end to end on CPU at its GPU workloads (gpt2_small, bert_base)."""
    out = train_step.main(["--workload", "gpt2_small", "bert_base", *SHORT, "--repeats", "1",
                           "--dtype", "bfloat16", "--torch", "--override", *TINY,
                           "vocab_size=128", "--json", str(tmp_path / "out.json")])
    assert [r["workload"] for r in out["results"]] == ["gpt2_small", "bert_base"]
    for r in out["results"]:
        zoo = r["sides"]["zoo"]
        assert r["dtype"] == "bfloat16" and r["config"]["compute_dtype"] == "bfloat16"
        assert list(r["sides"]) == ["zoo"] and zoo["num_params"] < 100_000
        assert zoo["tflops"] > 0 and zoo["pct_peak"] > 0 and zoo["cpu_ms_per_step"] > 0
        assert zoo["pct_datasheet"] is None  # no datasheet peak for a CPU
        assert zoo["program"]["fusions"] > 0 and zoo["vs_torch"] is None
    assert json.loads((tmp_path / "out.json").read_text())["results"][1]["seq_len"] == 16
    gpt, bert = out["results"]  # 6 * matmul params * tokens + logits + attention, by hand:
    L, D, F, V, B, T = 1, 32, 64, 128, 2, 16
    assert gpt["model_flops_per_step"] == B * T * (
        6 * L * (4 * D * D + 2 * D * F) + 6 * D * V + 12 * L * T * D)
    P = round(T * 0.15)  # BERT's MLM head runs at the P positions the task chooses per row
    assert bert["task"]["mask_rate"] == 0.15 and bert["model_flops_per_step"] == B * (
        T * (6 * L * (4 * D * D + 2 * D * F) + 12 * L * T * D) + P * (6 * D * D + 6 * D * V))


def test_train_step_parallel_variants_start_from_the_same_loss():
    """`parallel=pmap` and `parallel=mesh` variants over the 4 fake devices take the same first
    step as jit on one device; an RNN workload adds Flax's own layers as a side."""
    variants = ["--variant", "jit:", "pmap:parallel=pmap", "mesh:parallel=mesh"]
    for workload, shape, sides in (
            ("gpt_tiny", [*TINY, "vocab_size=128"], ["jit", "pmap", "mesh"]),
            ("lstm", ["emb_dim=32", "hidden_size=32"], ["jit", "pmap", "mesh", "flax"])):
        out = train_step.main(["--workload", workload, *SHORT, "--batch", "4", "--repeats", "1",
                               "--torch", "--override", *shape, *variants])
        [r] = out["results"]
        assert list(r["sides"]) == sides
        first = [side["first_loss"] for side in r["sides"].values()]
        assert first[1:3] == pytest.approx([first[0]] * 2, rel=1e-5)
        assert all(_positive(side["ms_per_step"]) for side in r["sides"].values())


def test_variants_and_overrides():
    assert parse_overrides(["num_layers=2", "attention_implementation=cudnn", "remat=True"]) == {
        "num_layers": 2, "attention_implementation": "cudnn", "remat": True}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_overrides(["num_layers"])
    assert train_step.parse_variant("s2:scan_layers=True,scan_unroll=2") == (
        "s2", {"scan_layers": True, "scan_unroll": 2})
    assert train_step.parse_variant("zoo:") == ("zoo", {})


def _positive(x) -> bool:
    return isinstance(x, float) and math.isfinite(x) and x > 0


@pytest.mark.slow
def test_torch_sides_eager_and_compiled_on_cpu(tmp_path):
    """The PyTorch references (gpt_step.TorchGPTStep with nanogpt=True, transformer_step.
    TorchBertStep) timed beside the zoo; on CPU, shrunken.

    Vocabulary 120: GPT-2's torch side pads it to 128 (nanoGPT's 50257 -> 50304); BERT's keeps
    it (and holds the [MASK] id 103). In a subprocess, as a user runs it: torch.compile's
    C++ kernels and worker threads stay out of the test process."""
    pytest.importorskip("torch")
    subprocess.run([
        sys.executable, "-m", "benchmarks.train_step", "--workload", "gpt2_small", "bert_base",
        *SHORT, "--repeats", "2", "--dtype", "bfloat16", "--torch", "eager", "compile",
        "--override", *TINY, "vocab_size=120", "--json", str(tmp_path / "out.json")],
        cwd=REPO_ROOT, check=True)
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["errors"] == [] and out["skipped"] == []
    assert out["args"]["torch"] == ["eager", "compile"]
    gpt, bert = (r["sides"] for r in out["results"])
    assert gpt["torch"]["vocab_size"] == 128 and bert["torch"]["vocab_size"] == 120
    # Same parameters as the zoo's models, plus GPT-2's 8 padding rows of the token embedding.
    assert gpt["torch.compile"]["num_params"] == gpt["zoo"]["num_params"] + (128 - 120) * 32
    assert bert["torch.compile"]["num_params"] == bert["zoo"]["num_params"]
    for sides in (gpt, bert):
        assert list(sides) == ["zoo", "torch", "torch.compile"]
        assert sides["zoo"]["first_loss"] == pytest.approx(math.log(120), abs=0.3)  # uniform
        eager, compiled = sides["torch"], sides["torch.compile"]
        for side in (eager, compiled):
            assert side["first_loss"] == pytest.approx(math.log(side["vocab_size"]), abs=0.3)
            assert len(side["step_s_per_round"]) == 2 and side["pct_datasheet"] is None
            for key in ("first_step_s", "ms_per_step", "tokens_per_s", "tflops", "pct_peak"):
                assert _positive(side[key]), (key, side[key])
        assert compiled["first_loss"] == pytest.approx(eager["first_loss"], rel=1e-3)  # seed 0
        zoo = sides["zoo"]
        assert _positive(zoo["vs_torch"]) and _positive(zoo["vs_torch_compile"])
        assert zoo["vs_torch_compile"] == pytest.approx(
            compiled["ms_per_step"] / zoo["ms_per_step"])
        assert compiled["vs_torch_compile"] == 1.0
    assert gpt["torch"]["first_loss"] == pytest.approx(math.log(128), abs=0.1)


def test_train_step_reports_failed_and_skipped_parts(capsys):
    """A failing part is reported and the rest still run; past the budget, parts are skipped."""
    pytest.importorskip("torch")
    args = ["--workload", "gpt2_small", *SHORT, "--repeats", "1", "--override", *TINY,
            "vocab_size=128"]
    out = train_step.main([*args, "--dtype", "float16", "--torch", "eager"])  # torch: bf16, f32
    assert [e["part"] for e in out["errors"]] == ["gpt2_small B=2 torch eager"]
    assert "bfloat16 autocast or float32" in out["errors"][0]["error"]
    [zoo_only] = out["results"]
    assert list(zoo_only["sides"]) == ["zoo"] and zoo_only["sides"]["zoo"]["vs_torch"] is None
    assert _positive(zoo_only["sides"]["zoo"]["ms_per_step"])

    out = train_step.main([*args, "--batch", "2", "3", "--time-budget", "0"])
    assert out["results"] == [] and out["errors"] == []
    assert out["skipped"] == ["matmul peak", "gpt2_small B=2", "gpt2_small B=3"]
    assert "SKIPPED gpt2_small B=3" in capsys.readouterr().out


@pytest.mark.slow
def test_compile_time_cold_then_warm_cache_on_cpu(tmp_path):
    """benchmarks.compile_time as a command, tiny: a cold then a warm persistent cache in fresh
    processes."""
    path = tmp_path / "compile_time.json"
    subprocess.run(
        [sys.executable, "-m", "benchmarks.compile_time", "--workload", "gpt2_small",
         "--override", "emb_dim=32", "num_heads=2", "mlp_dim=64", "vocab_size=128",
         "--batch", "2", "--seq-len", "16", "--json", str(path)],
        cwd=REPO_ROOT, check=True)
    out = json.loads(path.read_text())
    assert out["errors"] == [] and out["skipped"] == [] and out["info"]["platform"] == "cpu"
    cold, warm = out["first_step"]
    assert (cold["cache"], warm["cache"]) == ("cold", "warm")
    for r in (cold, warm):
        for key in ("process_to_first_loss_s", "python_startup_s", "imports_s",
                    "build_to_first_loss_s", "compile_s"):
            assert _positive(r[key]), (key, r[key])
        assert r["compile_s"] < r["build_to_first_loss_s"] < r["process_to_first_loss_s"]
        assert r["first_loss"] == pytest.approx(math.log(128), abs=0.1)
        assert r["cache_files_after"] > 0  # the cold process filled the fresh cache
    assert warm["first_loss"] == cold["first_loss"]


def test_input_pipeline_feeds_the_step_from_the_loops_batches():
    """benchmarks.input_pipeline, tiny: the loop's batches (`create_data`) through the
    iterator, against the step that consumes them."""
    out = input_pipeline.main(["--batches", "3", "--steps", "1", "--workers", "0",
                               "--workloads", "gpt_tiny packed"])
    [row] = out["rows"]
    assert (row["workload"], row["batch"], row["seq_len"]) == ("gpt_tiny packed", 16, 256)
    for key in ("batches_per_s", "tokens_per_s", "step_batches_per_s", "fed_ms", "fixed_ms"):
        assert _positive(row[key]), (key, row[key])
    assert 0 < row["weighted_tokens_per_s"] <= row["tokens_per_s"]


def _xplane(name: str, lines: dict[str, list[tuple[str, float]]]) -> str:
    """One plane of an XSpace text proto: {line name: [(event name, ms), ...]}."""
    names = sorted({e for events in lines.values() for e, _ in events})
    text = "".join(
        f'lines {{ id: {i} name: "{line}" ' + "".join(
            f"events {{ metadata_id: {names.index(e) + 1} duration_ps: {int(ms * 1e9)} }} "
            for e, ms in events) + "} " for i, (line, events) in enumerate(lines.items(), 1))
    return (f'planes {{ name: "{name}" {text}' + "".join(
        f'event_metadata {{ key: {k} value {{ id: {k} name: "{e}" }} }} '
        for k, e in enumerate(names, 1)) + "}\n")


def test_kernel_breakdown_reads_gpu_streams_and_tpu_ops_from_the_xspace(tmp_path):
    """`--trace`'s per-kernel sums: GPU stream lines only (the "XLA Ops" line on the same plane
    repeats their time), a TPU plane's "XLA Ops", nothing from the host, per step."""
    from jax.profiler import ProfileData

    from benchmarks.harness import kernel_breakdown

    gpu = _xplane("/device:GPU:0", {
        "Stream #7(Kernel,MemcpyD2D)": [("sm90_xmma_gemm_bf16bf16", 4.0), ("cudnn_fmha_fwd", 2.0),
                                       ("loop_add_fusion", 1.0), ("sm90_xmma_gemm_bf16bf16", 2.0)],
        "Stream #9(MemcpyH2D)": [("MemcpyH2D", 1.0)], "XLA Ops": [("fusion.1", 10.0)]})
    host = _xplane("/host:CPU", {"python": [("train_step", 20.0)]})
    path = tmp_path / "plugins" / "profile" / "run" / "host.xplane.pb"
    path.parent.mkdir(parents=True)
    path.write_bytes(ProfileData.text_proto_to_serialized_xspace(gpu + host))
    out = kernel_breakdown(str(tmp_path), steps=2)
    assert out["device_lines"] == ["/device:GPU:0 Stream #7(Kernel,MemcpyD2D)",
                                   "/device:GPU:0 Stream #9(MemcpyH2D)"]
    assert out["total_ms_per_step"] == pytest.approx(5.0)
    assert out["by_category_ms"] == pytest.approx(
        {"matmul": 3.0, "attention (cuDNN)": 1.0, "other (fusions, copies, reductions)": 1.0})
    assert out["top_kernels_ms"][0] == ("sm90_xmma_gemm_bf16bf16", pytest.approx(3.0))
    assert out["num_kernels"] == 4

    path.write_bytes(ProfileData.text_proto_to_serialized_xspace(_xplane("/device:TPU:0", {
        "XLA Modules": [("jit_train_step", 8.0)], "XLA Ops": [("fusion.3", 3.0), ("dot.1", 5.0)]})))
    out = kernel_breakdown(str(tmp_path), steps=1)
    assert out["device_lines"] == ["/device:TPU:0 XLA Ops"]
    assert out["total_ms_per_step"] == pytest.approx(8.0)
    assert kernel_breakdown(str(tmp_path / "empty"), 1) == {
        "error": f"no *.xplane.pb under {tmp_path / 'empty'}"}


def test_benchmarks_import_nothing_the_gpu_host_lacks():
    """The GPU host has no ml_collections, tensorflow_datasets, grain or num2words: the modules
    the GPU benchmarks import (their own and, lazily, the zoo's models, tasks and train step)
    must not need them."""
    code = (
        "import importlib.abc, sys\n"
        "class Lacking(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('ml_collections', 'tensorflow_datasets', 'grain',\n"
        "                                  'num2words'):\n"
        "            raise ImportError(name + ' is not on the GPU host')\n"
        "sys.meta_path.insert(0, Lacking())\n"
        "import benchmarks.train_step, benchmarks.harness, benchmarks.compile_time\n"
        "import zoo.train.parallel, zoo.train.throughput\n"
        "import zoo.models, zoo.tasks, zoo.train.step, zoo.train.optimizer, zoo.train.schedules\n"
        "import zoo.train.state\n"
        "import zoo.tasks.causal_lm, zoo.tasks.masked_lm\n")
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True)


# The zoo's parameters under the names of transformer_step's torch models.
def _np(x):
    return np.array(x, np.float32)  # a writable copy, as torch.from_numpy wants


def _attention(prefix: str, kernels: list, biases: list, out: dict) -> dict:
    """zoo (D, ..., N, H) projections (q, k, v in order) -> torch MultiheadAttention's."""
    d = _np(kernels[0]).shape[0]
    weight = np.concatenate([_np(k).reshape(d, -1) for k in kernels], axis=1).T
    return {f"{prefix}.in_proj_weight": weight,
            f"{prefix}.in_proj_bias": np.concatenate([_np(b).reshape(-1) for b in biases]),
            f"{prefix}.out_proj.weight": _np(out["kernel"]).reshape(-1, d).T,
            f"{prefix}.out_proj.bias": _np(out["bias"])}


def _pair(prefix: str, p: dict, weight: str = "kernel") -> dict:
    """A Dense (its kernel transposed) or a LayerNorm (its scale) as torch's weight and bias."""
    w = _np(p[weight])
    return {f"{prefix}.weight": w.T if weight == "kernel" else w, f"{prefix}.bias": _np(p["bias"])}


def _layer(t: str, layer: dict, norms: tuple[str, ...] = ("ln_attn", "ln_mlp")) -> dict:
    """A zoo encoder (decoder) layer as torch's nn.TransformerEncoderLayer (DecoderLayer) `t`."""
    a, mlp = layer["attn"], layer["mlp"]
    sd = _attention(f"{t}.self_attn", [a["qkv"]["kernel"]], [a["qkv"]["bias"]], a["out"])
    for i, norm in enumerate(norms):
        sd |= _pair(f"{t}.norm{i + 1}", layer[norm], "scale")
    return sd | _pair(f"{t}.linear1", mlp["fc"]) | _pair(f"{t}.linear2", mlp["proj"])


def _seq2seq_state_dict(params: dict, cfg) -> dict:
    sd = {"embed.weight": _np(params["embedding"]["embedding"])}
    for i in range(cfg.num_encoder_layers):
        sd |= _layer(f"transformer.encoder.layers.{i}", params["encoder"][f"layers_{i}"])
    for i in range(cfg.num_decoder_layers):
        layer, t = params["decoder"][f"layers_{i}"], f"transformer.decoder.layers.{i}"
        c = layer["cross_attn"]
        sd |= _layer(t, layer, ("ln_attn", "ln_cross", "ln_mlp")) | _attention(
            f"{t}.multihead_attn", [c["query"]["kernel"], c["kv"]["kernel"]],
            [c["query"]["bias"], c["kv"]["bias"]], c["out"])
    return sd


def _bert_state_dict(params: dict, cfg) -> dict:
    b = params["bert"]
    sd = {"word.weight": _np(b["word_embeddings"]["embedding"]),
          "position": _np(b["position_embeddings"]),
          "segment.weight": _np(b["segment_embeddings"]["embedding"]),
          "mlm_bias": _np(params["mlm_bias"])}
    sd |= _pair("ln_embeddings", b["ln_embeddings"], "scale") | _pair("pooler", b["pooler"])
    for i in range(cfg.num_layers):
        sd |= _layer(f"encoder.layers.{i}", b[f"layers_{i}"])
    return sd | _pair("mlm_dense", params["mlm_dense"]) | _pair("mlm_ln", params["mlm_ln"], "scale")


def _losses(name: str, task: str, batch: dict, torch_side_fn, state_dict, torch_inputs,
            settings: dict | None = None, **overrides) -> tuple[float, float]:
    """Parameter counts and the loss of `batch` under the zoo's initial parameters, in the zoo
    and in the torch model `torch_side_fn(config, task)` holding them (the counts equal)."""
    import torch

    import zoo
    from benchmarks.harness import to_torch
    from zoo.tasks import get_task

    model = zoo.create_model(name, dropout_rate=0.0, **overrides)
    task = get_task(task, model.config, **(settings or {}))
    example = task.example_inputs(model.config, batch["inputs"].shape[1])
    params = jax.jit(model.init)(jax.random.key(0), *example)["params"]
    loss_sum, sums = jax.jit(lambda p, b: task.loss(model.apply, p, b, jax.random.key(3),
                                                    train=False))(params, batch)
    torch_side = torch_side_fn(model.config, task)
    assert torch_side.num_params == sum(x.size for x in jax.tree.leaves(params))
    torch_side.model.load_state_dict(to_torch(state_dict(params, model.config)))
    with torch.no_grad():
        torch_loss = torch_side.loss_fn(torch_side.model, *to_torch(
            {i: np.array(x) for i, x in enumerate(torch_inputs)}).values())
    return float(loss_sum / sums["weight"]), float(torch_loss)


@pytest.mark.slow
def test_transformer_step_torch_models_compute_the_zoos_loss():
    """transformer_step's PyTorch sides are the zoo's models: the same parameter counts (BERT's
    with the unused pooler), and the zoo's initial parameters loaded into them give the zoo's
    loss (BERT: on the positions and corruption the zoo's task draws)."""
    pytest.importorskip("torch")
    from benchmarks import transformer_step as ts
    from zoo.tasks.masked_lm import mask_tokens

    shape = dict(emb_dim=32, num_heads=2, mlp_dim=64, vocab_size=120, max_len=16)
    batch = ts.seq2seq_batch(2, 12, 10, 120, 0.5, seed=7)
    zoo_loss, torch_loss = _losses(
        "transformer_tiny", "seq2seq", batch,
        lambda cfg, task: ts.TorchSeq2SeqStep(cfg, batch, task.label_smoothing),
        _seq2seq_state_dict, (batch["inputs"], batch["targets"], batch["weights"]),
        {"label_smoothing": 0.1}, num_encoder_layers=2, num_decoder_layers=2, **shape)
    assert torch_loss == pytest.approx(zoo_loss, rel=1e-5)

    batch = ts.mlm_batch(2, 16, 120, 0.5, seed=7)
    valid = batch["weights"] > 0  # the task's own masking of this batch, with _losses' rng
    corrupted, positions, weights = (np.asarray(x) for x in mask_tokens(
        jax.random.split(jax.random.key(3))[0], jnp.asarray(batch["inputs"]), jnp.asarray(valid),
        vocab_size=120, mask_token_id=103, mask_rate=0.15))
    targets = np.take_along_axis(batch["inputs"], positions, axis=1)
    zoo_loss, torch_loss = _losses(
        "bert_tiny", "masked_lm", batch,
        lambda cfg, task: ts.TorchBertStep(cfg, batch, task.mask_rate), _bert_state_dict,
        (corrupted, valid, positions, targets, weights), num_layers=2, mask_token_id=103,
        **shape)
    assert weights.sum() > 0 and torch_loss == pytest.approx(zoo_loss, rel=1e-5)
