"""Bookkeeping of the benchmarks (no timing: performance is measured in benchmarks/, not here)."""
import json

import pytest

from benchmarks import mfu
from benchmarks.gpt_step import step_flops
from benchmarks.matmul_ceiling import step_matmuls


def test_ceiling_products_add_up_to_the_steps_analytic_flops():
    L, D, F, V, B, T = 4, 256, 1024, 256, 16, 256
    products = step_matmuls(L, D, F, V, B * T)
    dense = sum(2 * m * k * n * count for _, m, k, n, count in products)
    attention = L * 12 * T * D * B * T  # the causal-attention row, full T x T as in step_flops
    assert dense + attention == step_flops(L, D, F, V, B, T)["per_step"]
    assert len(products) == 3 * 5  # forward, input and weight gradient of 5 kinds of kernel


def test_mfu_runs_both_workloads_with_shrunken_models(tmp_path):
    """benchmarks.mfu end to end on CPU (its real use is on a GPU: gpt2_small and bert_base)."""
    out = mfu.main([
        "--batch", "2", "--gpt-seq-len", "16", "--bert-seq-len", "16", "--steps", "1",
        "--repeats", "1", "--warmup", "0", "--peak-sizes", "64", "--peak-repeats", "1",
        "--override", "num_layers=1", "emb_dim=32", "num_heads=2", "mlp_dim=64",
        "vocab_size=128", "--json", str(tmp_path / "mfu.json")])
    assert [r["workload"] for r in out["results"]] == ["gpt2_small", "bert_base"]
    for r in out["results"]:
        assert r["dtype"] == "bfloat16" and r["num_params"] < 100_000
        assert r["achieved_tflops"] > 0 and r["mfu_vs_measured_peak"] > 0
        assert r["mfu_vs_datasheet"] is None  # no datasheet peak for a CPU
    assert json.loads((tmp_path / "mfu.json").read_text())["results"][1]["seq_len"] == 16
    gpt = out["results"][0]  # 6 * matmul params * tokens + logits + attention, by hand:
    L, D, F, V, B, T = 1, 32, 64, 128, 2, 16
    assert gpt["model_flops_per_step"] == B * T * (
        6 * L * (4 * D * D + 2 * D * F) + 6 * D * V + 12 * L * T * D)


def test_mfu_datasheet_peaks_and_overrides():
    datasheet_peak, parse_overrides = mfu.datasheet_peak, mfu.parse_overrides
    assert datasheet_peak("NVIDIA H100 80GB HBM3", "bfloat16") == 989.4
    assert datasheet_peak("NVIDIA H100 PCIe", "bfloat16") == 756.0
    assert datasheet_peak("NVIDIA H100 80GB HBM3", "float32") is None
    assert datasheet_peak("cpu", "bfloat16") is None
    assert parse_overrides(["num_layers=2", "attention_implementation=cudnn", "remat=True"]) == {
        "num_layers": 2, "attention_implementation": "cudnn", "remat": True}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_overrides(["num_layers"])
