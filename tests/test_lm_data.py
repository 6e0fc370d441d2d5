"""LM batching: determinism, resumability, host slices, real TFDS datasets by name (mocked)."""
import numpy as np
import pytest
import tensorflow_datasets as tfds

from zoo.data.pipelines.baselines import unigram_entropy
from zoo.data.pipelines.batch_stream import BatchStream
from zoo.data.pipelines.lm_batches import LMWindows, load_texts, token_stream
from zoo.data.pipelines.tokenizers import ByteTokenizer, get_tokenizer
from zoo.errors import ConfigError


def windows(n_tokens=1000, seq_len=8):
    return LMWindows(np.arange(n_tokens, dtype=np.int32) % 256, seq_len)


def test_windows_shift_targets_by_one():
    item = windows()[3]
    np.testing.assert_array_equal(item["targets"][:-1], item["inputs"][1:])
    assert item["inputs"][0] == 24 and item["inputs"].shape == (8,)


def test_batches_are_a_pure_function_of_seed_and_index():
    a, b = BatchStream(windows(), 4, seed=1), BatchStream(windows(), 4, seed=1)
    for i in (0, 5, 100, 7):  # any order: resuming at i needs nothing but i
        np.testing.assert_array_equal(a.get(i)["inputs"], b.get(i)["inputs"])
    other = BatchStream(windows(), 4, seed=2)
    assert not np.array_equal(a.get(0)["inputs"], other.get(0)["inputs"])


def test_each_epoch_visits_every_window_once_in_a_new_order():
    source = windows(n_tokens=8 * 16 + 1)  # 16 windows, 4 batches per epoch
    stream = BatchStream(source, 4, seed=0)
    epoch = lambda e: np.concatenate([stream.get(4 * e + i)["inputs"][:, 0] for i in range(4)])  # noqa
    first, second = epoch(0), epoch(1)
    assert sorted(first) == sorted(second) == sorted(w["inputs"][0] for w in map(source.__getitem__, range(16)))
    assert not np.array_equal(first, second)


def test_processes_take_disjoint_slices_of_the_global_batch():
    full = BatchStream(windows(), 8, seed=0).get(3)["inputs"]
    parts = [BatchStream(windows(), 8, seed=0, process_index=p, process_count=2).get(3)["inputs"]
             for p in range(2)]
    np.testing.assert_array_equal(np.concatenate(parts), full)


def test_unigram_entropy():
    assert unigram_entropy(np.array([0, 1, 0, 1]), 256) == pytest.approx(np.log(2))
    assert unigram_entropy(np.array([5, 5, 5]), 256) == pytest.approx(0.0)


def test_token_stream_is_bytes_with_separators():
    stream = token_stream(["ab", "c"], ByteTokenizer())
    assert ByteTokenizer().decode(stream) == "ab\n\nc"
    assert stream.dtype == np.int32


@pytest.mark.parametrize("name,split", [("tiny_shakespeare", "train"), ("lm1b", "test")])
def test_real_tfds_datasets_load_by_name(name, split):
    with tfds.testing.mock_data(num_examples=7):
        texts = load_texts(name, split)
    assert len(texts) == 7 and all(isinstance(t, str) and t for t in texts)


def test_missing_tfds_dataset_names_the_fix(tmp_path):
    with pytest.raises(ConfigError, match=r"TFDS dataset 'tiny_shakespeare' is not prepared in "
                                          r"the data dir .*download_and_prepare.*zoo_text"):
        load_texts("tiny_shakespeare", "train", data_dir=str(tmp_path))


def test_unknown_tokenizer():
    with pytest.raises(ValueError, match=r"unknown tokenizer 'bpe'; available: byte"):
        get_tokenizer("bpe")
