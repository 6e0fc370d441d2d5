"""Length bucketing: every example once per epoch, less padding, few shapes, a pure function of
(seed, index), the same rows per process as without it, and the pipelines and a run using it."""
import numpy as np
import pytest

from zoo.data.pipelines.bucketing import BucketedStream, LengthBucketedBatches, bucket_lengths
from zoo.errors import ConfigError

SEQ_LEN, BATCH, NUM = 64, 8, 256


class _Examples:
    """Tagging-like items: id i at its first `length` positions, padded with 0 to SEQ_LEN."""

    def __init__(self, lengths):
        self.lengths = lengths

    def __len__(self):
        return len(self.lengths)

    def __getitem__(self, i):
        n = self.lengths[i]
        inputs = np.zeros(SEQ_LEN, np.int32)
        inputs[:n] = i + 1
        return {"inputs": inputs, "weights": (np.arange(SEQ_LEN) < n).astype(np.float32),
                "lengths": np.asarray(n, np.int32)}


def _lengths(seed=0):
    return np.random.default_rng(seed).integers(1, SEQ_LEN + 1, NUM)


def _batches(lengths, window_batches=16, **kwargs):
    return LengthBucketedBatches(_Examples(lengths), {"tokens": (("inputs", "weights"), lengths)},
                                 BATCH, SEQ_LEN, seed=7, window_batches=window_batches, **kwargs)


def test_bucket_lengths():
    assert bucket_lengths(256) == [32, 64, 128, 256]
    assert bucket_lengths(100) == [16, 32, 56, 100]
    assert bucket_lengths(8) == [8]


def test_every_example_once_per_epoch_cut_to_a_bucket_that_holds_it():
    lengths = _lengths()
    batches = _batches(lengths)
    per_epoch = NUM // BATCH
    for epoch in range(2):
        seen = []
        for i in range(epoch * per_epoch, (epoch + 1) * per_epoch):
            batch = batches(i)
            width = batch["inputs"].shape[1]
            assert width in bucket_lengths(SEQ_LEN)
            ids = batch["inputs"][:, 0] - 1
            assert np.all(batch["lengths"] <= width)
            assert width == min(b for b in bucket_lengths(SEQ_LEN) if b >= lengths[ids].max())
            np.testing.assert_array_equal(batch["weights"].sum(1), lengths[ids])  # nothing cut
            seen += ids.tolist()
        assert sorted(seen) == list(range(NUM))
    assert not np.array_equal(batches.batch_indices(0), batches.batch_indices(per_epoch))


def test_bucketing_reduces_padding():
    lengths = _lengths()
    sorted_windows, unsorted = _batches(lengths), _batches(lengths, window_batches=1)
    steps = range(NUM // BATCH)
    real = lengths.sum()  # one epoch holds every example once (BATCH divides NUM)
    padding = [sum(b(i)["inputs"].size for i in steps) - real for b in (sorted_windows, unsorted)]
    assert padding[0] < 0.5 * padding[1]
    assert padding[1] <= len(steps) * BATCH * SEQ_LEN - real  # never more than at seq_len


def test_batches_are_a_pure_function_of_seed_and_index():
    lengths = _lengths()
    first, second = _batches(lengths), _batches(lengths)
    order = [45, 3, 3, 70, 0]  # any order, across epochs, repeated
    for i in order:
        np.testing.assert_array_equal(first(i)["inputs"], second(i)["inputs"])
    for i in reversed(order):
        np.testing.assert_array_equal(first.batch_indices(i), _batches(lengths).batch_indices(i))
    other_seed = LengthBucketedBatches(_Examples(lengths), {"t": (("inputs",), lengths)}, BATCH,
                                       SEQ_LEN, seed=8)
    assert not np.array_equal(first.batch_indices(0), other_seed.batch_indices(0))


def test_processes_read_their_rows_of_the_same_global_batch():
    lengths = _lengths()
    whole = BucketedStream(_Examples(lengths), {"t": (("inputs", "weights"), lengths)}, BATCH,
                           SEQ_LEN, seed=1)
    parts = [BucketedStream(_Examples(lengths), {"t": (("inputs", "weights"), lengths)}, BATCH,
                            SEQ_LEN, seed=1, process_index=p, process_count=2) for p in (0, 1)]
    for i in (0, 5, 40):
        joined = np.concatenate([part.get(i)["inputs"] for part in parts])
        np.testing.assert_array_equal(joined, whole.get(i)["inputs"])
    assert whole.local_batches[3:][0]["inputs"].shape == whole.get(3)["inputs"].shape


def test_labelled_and_seq2seq_pipelines_bucket_their_train_batches():
    import ml_collections
    from zoo.data.pipelines.labelled_batches import create_tagging_data
    from zoo.data.pipelines.seq2seq_batches import create_seq2seq_data

    config = ml_collections.ConfigDict(dict(
        dataset=None, data_dir=None, tokenizer="byte", eval_split=None, seq_len=128, seed=0,
        bucket_by_length=True))
    data = create_tagging_data(config, 8)
    for i in range(6):
        batch = data.train.get(i)
        width = batch["inputs"].shape[1]
        assert width in bucket_lengths(128) and batch["targets"].shape[1] == width
        assert batch["lengths"].max() <= width
    assert data.eval.get(0)["inputs"].shape == (8, 128)  # eval stays at seq_len
    config.update(dataset="zoo_synthetic_seq2seq/copy", seq_len=64)
    data = create_seq2seq_data(config, 8)
    batch = data.train.get(0)
    assert batch["inputs"].shape[1] in bucket_lengths(64)
    assert batch["targets"].shape == batch["weights"].shape
    longest = int(batch["weights"].sum(1).max())  # target + EOS, nothing cut
    assert batch["targets"].shape[1] == min(b for b in bucket_lengths(64) if b >= longest)


def test_bucketing_is_refused_for_language_models():
    from zoo.train.config import base_config, validate

    validate(base_config("lstm_classifier", bucket_by_length=True))
    with pytest.raises(ConfigError, match="bucket_by_length"):
        validate(base_config("gpt_tiny", bucket_by_length=True))


@pytest.mark.slow
def test_a_bucketed_run_trains(tmp_path):
    from experiments.configs import lstm_classify
    from zoo.train.loop import train_and_evaluate

    config = lstm_classify.get_config("runlocal")
    config.unlock()
    config.update(num_train_steps=3, bucket_by_length=True, num_eval_batches=1, num_samples=0)
    summary = train_and_evaluate(config, str(tmp_path))
    assert summary["step"] == 3 and np.isfinite(summary["eval"]["loss"])
