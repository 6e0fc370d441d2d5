"""Bookkeeping of the benchmarks (no timing: performance is measured in benchmarks/, not here)."""
from benchmarks.gpt_step import step_flops
from benchmarks.matmul_ceiling import step_matmuls


def test_ceiling_products_add_up_to_the_steps_analytic_flops():
    L, D, F, V, B, T = 4, 256, 1024, 256, 16, 256
    products = step_matmuls(L, D, F, V, B * T)
    dense = sum(2 * m * k * n * count for _, m, k, n, count in products)
    attention = L * 12 * T * D * B * T  # the causal-attention row, full T x T as in step_flops
    assert dense + attention == step_flops(L, D, F, V, B, T)["per_step"]
    assert len(products) == 3 * 5  # forward, input and weight gradient of 5 kinds of kernel
