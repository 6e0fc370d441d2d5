"""Sequence packing: segment-masked attention on every implementation, per-segment positions,
packed losses equal to each document's alone, the packing of documents into rows, the kernel
choice with segment ids, and a packed training run."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import zoo
from zoo.data.pipelines.packing import PackedLMRows, best_fit
from zoo.errors import ConfigError
from zoo.nn.attention import choose_implementation, dot_product_attention, mask_kind
from zoo.nn.transformer import segment_positions
from zoo.tasks import get_task
from zoo.tasks.losses import head_cross_entropy

SMALL = dict(emb_dim=16, num_heads=2, num_layers=1, mlp_dim=32, max_len=32, dropout_rate=0.0)
DOCS_LENGTHS = (5, 9, 3, 12, 7)  # two packed rows of T = 16 (best fit)


def _docs(lengths=DOCS_LENGTHS, seed=0, low=1, high=200):
    rng = np.random.default_rng(seed)
    return [rng.integers(low, high, n).astype(np.int32) for n in lengths]


def _batch(rows: PackedLMRows) -> dict:
    items = [rows[i] for i in range(len(rows))]
    return {k: jnp.asarray(np.stack([item[k] for item in items])) for k in items[0]}


# ------------------------------------------------------------------------------------------
# Attention never crosses segments, on every implementation that runs on CPU.

SEGMENTS = np.array([[1, 1, 1, 2, 2, 2, 2, 3, 3, 0, 0, 0],
                     [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]], np.int32)  # (B, T)


@pytest.mark.parametrize("implementation", ["xla", "blocked", "cudnn"])
@pytest.mark.parametrize("causal", [False, True])
def test_no_gradient_crosses_segments(implementation, causal):
    """d(outputs of segment 2) / d(q, k, v of every other position) is exactly 0 ("cudnn" takes
    no segment mask, so it must run XLA's, which also works on CPU)."""
    q, k, v = jax.random.normal(jax.random.key(0), (3, 2, 12, 2, 8))  # each (B, T, N, H)
    segments = jnp.asarray(SEGMENTS)

    def segment_two(q, k, v):
        out = dot_product_attention(q, k, v, causal=causal, implementation=implementation,
                                    q_segment_ids=segments, kv_segment_ids=segments)
        return jnp.sum(out * (segments == 2)[:, :, None, None])

    grads = jax.grad(segment_two, argnums=(0, 1, 2))(q, k, v)
    outside = np.asarray(segments != 2)[:, :, None, None]
    for g in grads:
        assert np.all(np.asarray(g)[np.broadcast_to(outside, g.shape)] == 0)
        assert np.any(np.asarray(g) != 0)  # the segment itself does get a gradient
    reference = jax.nn.dot_product_attention(
        q, k, v, is_causal=causal,
        mask=(segments[:, :, None] == segments[:, None, :])[:, None])
    out = dot_product_attention(q, k, v, causal=causal, implementation=implementation,
                                q_segment_ids=segments, kv_segment_ids=segments)
    chex.assert_trees_all_close(out, reference, atol=1e-5)


@pytest.mark.parametrize("implementation", ["xla", "blocked"])
def test_cross_attention_sees_the_same_segment_of_the_source_only(implementation):
    q = jax.random.normal(jax.random.key(1), (1, 5, 2, 8))
    k, v = jax.random.normal(jax.random.key(2), (2, 1, 7, 2, 8))
    q_seg, kv_seg = jnp.array([[1, 1, 2, 2, 0]]), jnp.array([[1, 1, 1, 2, 2, 0, 0]])

    def target_segment_one(k, v):
        out = dot_product_attention(q, k, v, implementation=implementation,
                                    q_segment_ids=q_seg, kv_segment_ids=kv_seg)
        return jnp.sum(out * (q_seg == 1)[:, :, None, None])

    for g in jax.grad(target_segment_one, argnums=(0, 1))(k, v):
        assert np.all(np.asarray(g)[0, 3:] == 0) and np.any(np.asarray(g)[0, :3] != 0)


# ------------------------------------------------------------------------------------------
# The kernel choice with segment ids.

def _choose(requested=None, platform="cuda", kind="segments", dtype=jnp.bfloat16, length=1024):
    return choose_implementation(requested, platform=platform, dtype=dtype, head_dim=64,
                                 q_len=length, kv_len=length, mask_kind=kind)


@pytest.mark.parametrize("kind", ["segments", "causal_segments"])
def test_implementation_choice_with_segments(kind):
    assert _choose(kind=kind) == "xla"  # cuDNN takes no segment mask
    assert _choose("cudnn", kind=kind) == "xla"
    assert _choose(platform="rocm", kind=kind) == "xla"
    assert _choose(platform="cpu", kind=kind, dtype=jnp.float32) == "blocked"
    assert _choose(platform="tpu", kind=kind) == "pallas"  # the TPU kernel takes segment ids
    assert _choose(platform="tpu", kind=kind, length=1000) == "xla"
    assert _choose("blocked", kind=kind) == "blocked"


def test_mask_kind_of_segments():
    lengths = jnp.ones((2,), jnp.int32)
    assert mask_kind(causal=False, key_lengths=None, mask=None, segments=True) == "segments"
    assert mask_kind(causal=True, key_lengths=None, mask=None,
                     segments=True) == "causal_segments"
    assert mask_kind(causal=True, key_lengths=lengths, mask=None, segments=True) == "dense"
    with pytest.raises(ValueError, match="both"):
        dot_product_attention(*jnp.zeros((3, 1, 4, 1, 8)), q_segment_ids=jnp.ones((1, 4)))


# ------------------------------------------------------------------------------------------
# Positions restart per segment; packed losses equal each document's alone.

def test_positions_restart_per_segment():
    expected = [[0, 1, 2, 0, 1, 2, 3, 0, 1, 0, 1, 2], list(range(12))]
    np.testing.assert_array_equal(segment_positions(jnp.asarray(SEGMENTS)), expected)
    row = PackedLMRows(_docs(), 16)[0]
    for segment in range(1, row["segment_ids"].max() + 1):
        at = row["segment_ids"] == segment
        np.testing.assert_array_equal(row["position_ids"][at], np.arange(at.sum()))
    np.testing.assert_array_equal(segment_positions(jnp.asarray(row["segment_ids"])[None])[0],
                                  row["position_ids"])


def _alone(docs, seq_len=16):
    """Each document in a row of its own, right-padded with 0: (tokens (D, T), lengths (D,))."""
    tokens = np.zeros((len(docs), seq_len), np.int32)
    for i, doc in enumerate(docs):
        tokens[i, :len(doc)] = doc
    return jnp.asarray(tokens), jnp.array([len(d) for d in docs])


def test_packed_causal_lm_loss_equals_each_document_alone():
    model = zoo.create_model("gpt_tiny", **SMALL)
    docs = _docs()
    rows = PackedLMRows(docs, 16)
    assert len(rows) < len(docs)  # documents share rows
    batch = _batch(rows)
    variables = model.init(jax.random.key(0), batch["inputs"])
    task = get_task("causal_lm", model.config)
    packed, sums = task.loss(model.apply, variables["params"], batch, jax.random.key(1),
                             train=False)
    tokens, lengths = _alone(docs)  # causal: the padding after a document changes nothing
    logits = model.apply(variables, tokens)[:, :-1]  # (D, T - 1, V)
    token_loss = (jax.nn.logsumexp(logits, axis=-1)
                  - jnp.take_along_axis(logits, tokens[:, 1:, None], axis=-1)[..., 0])
    real = jnp.arange(1, 16)[None] < lengths[:, None]  # (D, T - 1): targets inside the doc
    np.testing.assert_allclose(float(packed), float(jnp.sum(token_loss * real)), rtol=2e-5)
    assert float(sums["weight"]) == sum(len(d) - 1 for d in docs)
    # Without segment ids the documents of a row would see each other: a different loss.
    unpacked = {k: v for k, v in batch.items() if k not in ("segment_ids", "position_ids")}
    crossed, _ = task.loss(model.apply, variables["params"], unpacked, jax.random.key(1),
                           train=False)
    assert abs(float(crossed) - float(packed)) > 1e-3


def test_packed_mlm_loss_with_a_fixed_mask_equals_each_document_alone():
    model = zoo.create_model("bert_tiny", **SMALL)
    docs = _docs(low=1, high=256)
    batch = _batch(PackedLMRows(docs, 16))
    variables = model.init(jax.random.key(0), batch["inputs"])
    mask_id = model.config.mask_token_id
    # A fixed mask: the 2nd and the last token of every document, replaced by [MASK].
    segments = np.asarray(batch["segment_ids"])
    slots = [[int(i) for s in range(1, row.max() + 1) for i in np.flatnonzero(row == s)[[1, -1]]]
             for row in segments]
    width = max(map(len, slots))
    positions = np.array([p + [0] * (width - len(p)) for p in slots], np.int32)  # (R, P)
    weights = (np.arange(width)[None] < np.array([len(p) for p in slots])[:, None])
    corrupted = np.array(batch["inputs"])
    targets = np.take_along_axis(corrupted, positions, axis=1)
    np.put_along_axis(corrupted, positions, mask_id, axis=1)
    head = model.apply(variables, jnp.asarray(corrupted), positions=jnp.asarray(positions),
                       segment_ids=batch["segment_ids"], position_ids=batch["position_ids"],
                       output_head=True)
    packed, _ = head_cross_entropy(head, jnp.asarray(targets), jnp.asarray(weights, np.float32))
    tokens, lengths = _alone(docs)
    alone_slots = jnp.stack([jnp.ones_like(lengths), lengths - 1], axis=1)  # (D, 2)
    rows = jnp.arange(len(docs))[:, None]
    head = model.apply(variables, tokens.at[rows, alone_slots].set(mask_id), lengths,
                       positions=alone_slots, output_head=True)
    alone, _ = head_cross_entropy(head, jnp.take_along_axis(tokens, alone_slots, axis=1),
                                  jnp.ones(alone_slots.shape))
    np.testing.assert_allclose(float(packed), float(alone), rtol=2e-5)
    # The task: packed rows give predictions; eval's padding rows (weights 0) give none.
    task = get_task("masked_lm", model.config)
    _, sums = task.loss(model.apply, variables["params"], batch, jax.random.key(1), train=False)
    assert float(sums["weight"]) > 0
    padding_rows = dict(batch, weights=jnp.zeros_like(batch["weights"]))
    _, sums = task.loss(model.apply, variables["params"], padding_rows, jax.random.key(1),
                        train=False)
    assert float(sums["weight"]) == 0


def test_packed_seq2seq_loss_equals_each_pair_alone():
    from zoo.data.pipelines.packing import PackedPairRows
    from zoo.data.pipelines.padding import pad_rows

    model = zoo.create_model("transformer_tiny", num_encoder_layers=1, num_decoder_layers=1,
                             emb_dim=16, num_heads=2, mlp_dim=32, max_len=32, dropout_rate=0.0)
    sources = _docs((3, 6, 2, 5), seed=1, low=4, high=64)
    targets = [np.append(t, 2).astype(np.int32) for t in _docs((4, 2, 6, 3), seed=2, low=4,
                                                                 high=64)]  # EOS = 2
    rows = PackedPairRows(sources, targets, 12)
    assert len(rows) < len(sources)
    packed_batch = _batch(rows)
    alone_batch = {"inputs": jnp.asarray(pad_rows(sources, 12)),
                   "targets": jnp.asarray(pad_rows(targets, 12))}
    alone_batch["weights"] = (alone_batch["targets"] != 0).astype(jnp.float32)
    variables = model.init(jax.random.key(0), alone_batch["inputs"], alone_batch["targets"])
    task = get_task("seq2seq", model.config)
    packed, sums = task.loss(model.apply, variables["params"], packed_batch, jax.random.key(1),
                             train=False)
    alone, _ = task.loss(model.apply, variables["params"], alone_batch, jax.random.key(1),
                         train=False)
    np.testing.assert_allclose(float(packed), float(alone), rtol=2e-5)
    assert float(sums["weight"]) == sum(map(len, targets))


# ------------------------------------------------------------------------------------------
# Packing documents into rows.

def test_best_fit_is_deterministic_and_fills_rows():
    lengths = [9, 3, 7, 5, 1, 16, 4]
    rows = best_fit(lengths, 16)
    assert rows == best_fit(lengths, 16)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= 16 for row in rows)
    assert len(rows) == -(-sum(lengths) // 16)  # these lengths pack perfectly
    with pytest.raises(ValueError, match="1..16"):
        best_fit([17], 16)


def test_packing_covers_every_token_of_every_document_exactly_once():
    seq_len = 16
    docs = _docs((5, 40, 0, 16, 1, 17, 3, 9), seed=3)  # longer than T, empty, exactly T
    rows = PackedLMRows(docs, seq_len)
    pieces, targets, weights = [], [], 0.0
    for i in range(len(rows)):
        row = rows[i]
        assert all(row[k].shape == (seq_len,) for k in row)
        segments = row["segment_ids"]
        used = segments > 0
        assert np.all(np.diff(used.astype(int)) <= 0)  # real tokens first, then padding
        assert np.all(np.diff(segments[used]) >= 0)  # segments 1, 2, ... in order
        for s in range(1, segments.max() + 1):
            at = segments == s
            pieces.append(tuple(row["inputs"][at]))
            targets.append(tuple(row["targets"][at][row["weights"][at] > 0]))
        assert np.all(row["weights"][~used] == 0)
        weights += row["weights"].sum()
    expected = [tuple(d[lo:lo + seq_len]) for d in docs for lo in range(0, len(d), seq_len)]
    assert sorted(pieces) == sorted(expected)
    # Targets: each token's successor within its document, every token but the first once.
    expected_targets = [tuple(d[lo + 1:lo + seq_len + 1]) for d in docs
                        for lo in range(0, len(d), seq_len)]
    assert sorted(targets) == sorted(expected_targets)
    assert weights == sum(len(d) - 1 for d in docs if len(d))
    assert rows.num_documents == 7


def test_create_lm_data_packs_the_corpus(tmp_path):
    from zoo.data.pipelines.lm_batches import create_lm_data, load_texts
    from run_configs import tiny_config

    config = tiny_config(packing=True, seq_len=32)
    data = create_lm_data(config, 4)
    batch = data.train.get(0)
    assert set(batch) == {"inputs", "targets", "weights", "segment_ids", "position_ids"}
    assert batch["inputs"].shape == (4, 32)
    assert data.baselines["packed_fill"] > 0.95
    texts = load_texts(config.dataset, config.eval_split, config.data_dir)
    total = sum(data.eval.get(i)["weights"].sum() for i in range(len(data.eval)))
    assert total == sum(len(t.encode()) - 1 for t in texts if t)


def test_create_seq2seq_data_packs_train_pairs_only():
    import ml_collections
    from zoo.data.pipelines.seq2seq_batches import create_seq2seq_data

    config = ml_collections.ConfigDict(dict(dataset="zoo_synthetic_seq2seq/copy", data_dir=None,
                                            seq_len=64, seed=0, packing=True))
    data = create_seq2seq_data(config, 4)
    batch = data.train.get(0)
    assert batch["targets_segment_ids"].max() > 1  # several pairs in a row
    np.testing.assert_array_equal(batch["weights"], batch["targets_segment_ids"] > 0)
    assert "inputs_segment_ids" not in data.eval.get(0)  # eval: one pair per row


def test_packing_is_refused_where_it_cannot_apply():
    from zoo.train.config import base_config, validate

    validate(base_config("gpt_tiny", packing=True))
    validate(base_config("bert_tiny", packing=True))
    with pytest.raises(ConfigError, match="packing"):
        validate(base_config("lstm_lm", packing=True))
    with pytest.raises(ConfigError, match="packing"):
        validate(base_config("bert_tiny_classifier", packing=True))
    validate(base_config("transformer_tiny", packing=True))
    with pytest.raises(ConfigError, match="packing"):
        validate(base_config("seq2seq_lstm", packing=True))
    with pytest.raises(ConfigError, match="one of them"):
        validate(base_config("transformer_tiny", packing=True, bucket_by_length=True))


@pytest.mark.slow
def test_a_packed_run_trains(tmp_path):
    from zoo.train.loop import train_and_evaluate
    from run_configs import tiny_config

    summary = train_and_evaluate(tiny_config(packing=True, num_train_steps=2), str(tmp_path))
    assert np.isfinite(summary["eval"]["loss"])
