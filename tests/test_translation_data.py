"""The embedded seq2seq TFDS datasets (zoo.data.builders), CharVocab and the seq2seq pipeline.

The datasets are prepared once per module at reduced sizes (SMALL_*), which keeps the file fast.
"""
import sys

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds
from num2words import num2words

from zoo.data.builders import seq2seq_datasets, zoo_num2words, zoo_synthetic_seq2seq
from zoo.data.pipelines import PIPELINES, create_data, seq2seq_batches
from zoo.data.pipelines.char_vocab import CharVocab
from zoo.errors import ConfigError
from zoo.special_tokens import BOS_ID, EOS_ID, PAD_ID, UNK_ID

SPLITS = ("train", "validation", "test")
SMALL_NUM2WORDS = {"train": 4_200, "validation": 100, "test": 200}
SMALL_SYNTHETIC = {"train": 400, "validation": 50, "test": 100}
PREPARED = ("zoo_num2words/en_fr", "zoo_num2words/en_de",
            *(f"zoo_synthetic_seq2seq/{task}" for task in zoo_synthetic_seq2seq.SYNTHETIC_TASKS))


@pytest.fixture(scope="module")
def small_sizes():
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(zoo_num2words, "NUM2WORDS_SIZES", SMALL_NUM2WORDS)
        patch.setattr(zoo_synthetic_seq2seq, "SYNTHETIC_SIZES", SMALL_SYNTHETIC)
        yield


def read_split(data_dir, dataset, split):
    """The examples of a prepared split as plain Python values, in index order."""
    source = tfds.data_source(dataset, split=split, data_dir=data_dir)
    return [{k: v.decode() if isinstance(v, bytes) else int(v) for k, v in ex.items()}
            for ex in source.__getitems__(list(range(len(source))))]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, small_sizes):
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    for dataset in PREPARED:
        assert seq2seq_datasets.prepare(dataset, data_dir) == data_dir
    return data_dir


@pytest.fixture(scope="module")
def examples(data_dir):
    return {dataset: {split: read_split(data_dir, dataset, split) for split in SPLITS}
            for dataset in PREPARED}


def config(data_dir, **fields):
    return ml_collections.ConfigDict({"dataset": "zoo_num2words/en_fr", "data_dir": data_dir,
                                      "eval_split": "test", "seq_len": 80, "seed": 0, **fields})


def test_prepared_offline_and_read_without_tensorflow(examples):
    for dataset in PREPARED:
        sizes = SMALL_NUM2WORDS if dataset.startswith("zoo_num2words") else SMALL_SYNTHETIC
        assert {split: len(examples[dataset][split]) for split in SPLITS} == sizes
    assert set(examples["zoo_num2words/en_fr"]["test"][0]) == {"number", "source", "target"}
    assert set(examples["zoo_synthetic_seq2seq/copy"]["test"][0]) == {"source", "target"}
    assert "tensorflow" not in sys.modules


def test_bare_name_is_the_first_config(data_dir, examples):
    assert read_split(data_dir, "zoo_num2words", "validation") == (
        examples["zoo_num2words/en_fr"]["validation"])


def test_independent_build_is_identical(examples, small_sizes, tmp_path):
    for dataset in ("zoo_num2words/en_fr", "zoo_synthetic_seq2seq/addition"):
        other_dir = seq2seq_datasets.prepare(dataset, str(tmp_path))
        assert {s: read_split(other_dir, dataset, s) for s in SPLITS} == examples[dataset]


def test_unknown_config_names_the_configs():
    with pytest.raises(ValueError, match="no config 'en_xx'; it has en_fr, en_de, en_it, en_pt"):
        seq2seq_datasets.prepare("zoo_num2words/en_xx")


def test_num2words_splits_are_disjoint_and_train_has_the_building_blocks(examples):
    for language in ("fr", "de"):
        splits = examples[f"zoo_num2words/en_{language}"]
        numbers = {split: {ex["number"] for ex in splits[split]} for split in SPLITS}
        sources = {split: {ex["source"] for ex in splits[split]} for split in SPLITS}
        for a, b in (("train", "test"), ("train", "validation"), ("validation", "test")):
            assert not numbers[a] & numbers[b] and not sources[a] & sources[b]
        assert set(range(zoo_num2words.NUM_BUILDING_BLOCKS)) <= numbers["train"]
        assert min(numbers["test"] | numbers["validation"]) >= zoo_num2words.NUM_BUILDING_BLOCKS
        assert max(numbers["train"]) < zoo_num2words.MAX_NUMBER


def test_full_size_number_splits():
    """The default sizes: disjoint splits; a larger test split extends the smaller one."""
    full = zoo_num2words.number_splits()
    assert {split: len(full[split]) for split in SPLITS} == zoo_num2words.NUM2WORDS_SIZES
    distinct = [np.unique(numbers) for numbers in full.values()]
    assert len(np.unique(np.concatenate(distinct))) == sum(map(len, distinct))  # disjoint
    counts = np.bincount(full["train"][full["train"] < zoo_num2words.NUM_BUILDING_BLOCKS])
    assert (counts == zoo_num2words.BUILDING_BLOCK_REPEATS).all()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(zoo_num2words, "NUM2WORDS_SIZES", SMALL_NUM2WORDS)
        small = zoo_num2words.number_splits()
    np.testing.assert_array_equal(small["test"], full["test"][:SMALL_NUM2WORDS["test"]])


def test_num2words_examples_are_num2words_output(examples):
    assert num2words(2026, lang="en") == "two thousand and twenty-six"
    assert num2words(2026, lang="fr") == "deux mille vingt-six"
    for language in ("fr", "de"):
        for split in SPLITS:
            for ex in examples[f"zoo_num2words/en_{language}"][split]:
                assert ex["source"] == num2words(ex["number"], lang="en")
                assert ex["target"] == num2words(ex["number"], lang=language)
    train = {ex["number"]: ex for ex in examples["zoo_num2words/en_de"]["train"]}
    assert train[21]["source"] == "twenty-one" and train[21]["target"] == "einundzwanzig"


def test_synthetic_targets(examples):
    def pairs(task, split):
        return [(ex["source"], ex["target"]) for ex in examples[f"zoo_synthetic_seq2seq/{task}"][split]]

    for split in SPLITS:
        copy = pairs("copy", split)
        assert all(s == t and 1 <= len(s) <= zoo_synthetic_seq2seq.MAX_SYMBOLS for s, t in copy)
        assert all(set(s) <= set(zoo_synthetic_seq2seq.LETTERS) for s, _ in copy)
        assert [s for s, _ in pairs("reverse", split)] == [s for s, _ in copy]
        assert all(t == s[::-1] for s, t in pairs("reverse", split))
        assert all(list(t) == sorted(s) for s, t in pairs("sort", split))
        for s, t in pairs("addition", split):
            a, b = s.split("+")
            assert int(t) == int(a) + int(b) and t == str(int(t))
            assert all(x == str(int(x)) and len(x) <= zoo_synthetic_seq2seq.MAX_DIGITS
                       for x in (a, b))
    for task in zoo_synthetic_seq2seq.SYNTHETIC_TASKS:
        sources = [s for split in SPLITS for s, _ in pairs(task, split)]
        assert len(set(sources)) == len(sources)  # unique, so the splits are disjoint
    assert zoo_synthetic_seq2seq.TARGETS["addition"]("123+4567") == "4690"


def test_char_vocab(tmp_path):
    vocab = CharVocab.build(["deux", "six", "é"])
    assert vocab.chars == ("d", "e", "i", "s", "u", "x", "é") and vocab.size == 11
    assert vocab.vocab_size == vocab.size
    ids = vocab.encode("six")
    np.testing.assert_array_equal(ids, [7, 6, 9])
    assert ids.dtype == np.int32 and vocab.encode("").shape == (0,)
    assert vocab.decode(vocab.encode("deuxé")) == "deuxé"
    assert vocab.decode([BOS_ID, 4, 5, PAD_ID, EOS_ID, 6, 6]) == "de"
    assert vocab.decode(np.array([[4, UNK_ID], [5, PAD_ID]])) == "d\ufffde"
    with pytest.raises(ValueError, match=r"characters ' z' of 'six z' are not in the vocabulary "
                                         "built from the training split"):
        vocab.encode("six z")
    np.testing.assert_array_equal(vocab.encode("six z", unknown="unk"), [7, 6, 9, UNK_ID, UNK_ID])
    with pytest.raises(ValueError, match="token id 11 is outside"):
        vocab.decode([4, 11])
    vocab.save(str(tmp_path / "vocab.json"))
    assert CharVocab.load(str(tmp_path / "vocab.json")).chars == vocab.chars


def test_batches(data_dir, examples):
    data = seq2seq_batches.create_seq2seq_data(config(data_dir), 8)
    train, test = examples["zoo_num2words/en_fr"]["train"], examples["zoo_num2words/en_fr"]["test"]
    vocab = data.tokenizer
    assert vocab.chars == tuple(sorted(set("".join(e["source"] + e["target"] for e in train))))
    batch = data.train.get(2)
    assert set(batch) == {"inputs", "targets", "weights"}
    for key, dtype in (("inputs", np.int32), ("targets", np.int32), ("weights", np.float32)):
        assert batch[key].shape == (8, 80) and batch[key].dtype == dtype
    lengths = batch["weights"].sum(1).astype(int)
    np.testing.assert_array_equal(batch["targets"][np.arange(8), lengths - 1], EOS_ID)
    np.testing.assert_array_equal(batch["weights"], batch["targets"] != PAD_ID)
    assert (batch["inputs"] != EOS_ID).all() and (batch["inputs"] != BOS_ID).all()
    # Eval: split order, one pass, no partial batch; rows decode to the example pair.
    assert len(data.eval) == len(test) // 8
    first = data.eval.get(0)
    for row, ex in enumerate(test[:8]):
        assert vocab.decode(first["inputs"][row]) == ex["source"]
        assert vocab.decode(first["targets"][row]) == ex["target"]
        assert first["weights"][row].sum() == len(ex["target"]) + 1
    assert data.baselines["majority_exact_match"] == 0.0
    assert 1.5 < data.baselines["unigram_entropy"] < np.log(vocab.size)
    # Deterministic, and split over processes.
    again = seq2seq_batches.create_seq2seq_data(config(data_dir), 8)
    np.testing.assert_array_equal(again.train.get(2)["inputs"], batch["inputs"])
    parts = [seq2seq_batches.create_seq2seq_data(config(data_dir), 8, process_index=p,
                                                 process_count=2).train.get(2)
             for p in range(2)]
    for key in batch:
        np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), batch[key])


def test_reverse_source(data_dir, examples):
    data = seq2seq_batches.create_seq2seq_data(
        config(data_dir, dataset="zoo_synthetic_seq2seq/sort", eval_split="validation",
               reverse_source=True, seq_len=24), 4)
    first = data.eval.get(0)
    for row, ex in enumerate(examples["zoo_synthetic_seq2seq/sort"]["validation"][:4]):
        assert data.tokenizer.decode(first["inputs"][row]) == ex["source"][::-1]
        assert data.tokenizer.decode(first["targets"][row]) == ex["target"]


def test_seq_len_too_short_names_the_length(data_dir, examples):
    splits = examples["zoo_synthetic_seq2seq/addition"]
    longest = max(max(len(ex["source"]), len(ex["target"]) + 1)
                  for split in ("train", "test") for ex in splits[split])
    with pytest.raises(ValueError, match=f"needs {longest} positions .* raise --config.seq_len "
                                         f"to at least {longest}"):
        seq2seq_batches.create_seq2seq_data(
            config(data_dir, dataset="zoo_synthetic_seq2seq/addition", seq_len=longest - 1), 4)
    data = seq2seq_batches.create_seq2seq_data(
        config(data_dir, dataset="zoo_synthetic_seq2seq/addition", seq_len=longest), 4)
    assert data.train.get(0)["inputs"].shape == (4, longest)


def test_registered_pipeline(data_dir):
    assert PIPELINES["seq2seq"] == "zoo.data.pipelines.seq2seq_batches:create_seq2seq_data"
    data = create_data("seq2seq", config(data_dir, dataset="zoo_synthetic_seq2seq/copy",
                                         seq_len=21), 4)
    assert data.train.get(0)["targets"].shape == (4, 21)


def test_real_tfds_translation_dataset_by_name():
    """A real TFDS dataset whose features are language codes (ted_hrlr_translate), mocked."""
    dataset = "ted_hrlr_translate/pt_to_en"
    with tfds.testing.mock_data(num_examples=20):
        with pytest.raises(ValueError, match="no feature 'source', 'target'; its features are "
                                             "'pt', 'en'. Set --config.source_key"):
            seq2seq_batches.load_pairs(dataset, "train")
        sources, targets = seq2seq_batches.load_pairs(dataset, "validation", source_key="pt",
                                                      target_key="en")
        data = seq2seq_batches.create_seq2seq_data(
            config(None, dataset=dataset, eval_split="validation", source_key="pt",
                   target_key="en", seq_len=64), 4)
    assert len(sources) == len(targets) == 20 and all(isinstance(s, str) for s in sources)
    assert len(data.eval) == 5
    first = data.eval.get(0)
    for row in range(4):
        assert data.tokenizer.decode(first["inputs"][row]) == sources[row]
        assert data.tokenizer.decode(first["targets"][row]) == targets[row]


def test_missing_tfds_dataset_names_the_fix(tmp_path):
    with pytest.raises(ConfigError, match=r"TFDS dataset 'wmt14_translate/de-en' is not prepared"
                                          r" .*zoo_num2words/"):
        seq2seq_batches.load_pairs("wmt14_translate/de-en", "train", str(tmp_path))
