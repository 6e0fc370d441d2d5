"""The embedded labelled TFDS datasets ("zoo_docstrings", "zoo_code_tags") and their pipelines."""
import collections
import os
import subprocess
import sys
import textwrap

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from zoo.data.builders import labelled_builder, zoo_code_tags, zoo_docstrings
from zoo.data.pipelines import PIPELINES, create_data, labelled_batches
from zoo.data.pipelines.tokenizers import ByteTokenizer
from zoo.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPLITS = ("train", "validation", "test")
DATASETS = {zoo_docstrings.NAME: zoo_docstrings, zoo_code_tags.NAME: zoo_code_tags}


def read_split(data_dir, name, split):
    """The examples of a prepared split as plain Python values, in index order."""
    source, rows = tfds.data_source(name, split=split, data_dir=data_dir), []
    for ex in source.__getitems__(list(range(len(source)))):
        row = {"text": ex["text"].decode(), "source": ex["source"].decode()}
        if name == zoo_docstrings.NAME:
            row["label"] = int(ex["label"])
        else:
            row["tags"] = [int(t) for t in ex["tags"]]
        rows.append(row)
    return rows


def read_all(data_dir):
    return {name: {split: read_split(data_dir, name, split) for split in SPLITS}
            for name in DATASETS}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    for module in DATASETS.values():
        assert module.prepare(data_dir) == data_dir
    return data_dir


@pytest.fixture(scope="module")
def examples(data_dir):
    return read_all(data_dir)


def config(data_dir, **fields):
    return ml_collections.ConfigDict({"dataset": None, "data_dir": data_dir, "tokenizer": "byte",
                                      "eval_split": "test", "seq_len": 48, "seed": 0, **fields})


def test_prepared_offline_and_read_without_tensorflow(data_dir, examples):
    for name, module in DATASETS.items():
        assert all(examples[name][split] for split in SPLITS)
        features = tfds.builder(name, data_dir=data_dir).info.features
        label = features["label"] if name == zoo_docstrings.NAME else features["tags"].feature
        names = module.CLASS_NAMES if name == zoo_docstrings.NAME else module.TAG_NAMES
        assert label.names == list(names)
        assert module.num_classes() == len(names)
    assert "tensorflow" not in sys.modules


def test_prepare_is_idempotent(data_dir):
    version_dir = os.path.join(data_dir, zoo_code_tags.NAME, "1.0.0")
    before = {f: os.stat(os.path.join(version_dir, f)).st_mtime_ns for f in os.listdir(version_dir)}
    assert zoo_code_tags.prepare(data_dir) == data_dir
    after = {f: os.stat(os.path.join(version_dir, f)).st_mtime_ns for f in os.listdir(version_dir)}
    assert before == after


def test_independent_build_is_identical(examples, tmp_path):
    """A second build, in a fresh process (new hash seed) and directory, gives the same examples."""
    other_dir = str(tmp_path / "tfds")
    script = textwrap.dedent(f"""
        import sys
        from zoo.data.builders import zoo_code_tags, zoo_docstrings
        zoo_docstrings.prepare({other_dir!r})
        zoo_code_tags.prepare({other_dir!r})
        assert "tensorflow" not in sys.modules
    """)
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    run = subprocess.run([sys.executable, "-c", script], check=False, env=env, cwd=REPO,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert read_all(other_dir) == examples


def docstring_group(source):
    """The split key of a docstring example from its source "module[:qualname:line]"."""
    return source.split(":")[1] if ":" in source else f"module:{source}"


def test_docstring_splits_are_disjoint_and_by_group(examples):
    splits = examples[zoo_docstrings.NAME]
    texts = {split: {ex["text"] for ex in splits[split]} for split in SPLITS}
    groups = {split: {docstring_group(ex["source"]) for ex in splits[split]} for split in SPLITS}
    for a, b in (("train", "test"), ("train", "validation"), ("validation", "test")):
        assert not texts[a] & texts[b] and not groups[a] & groups[b]
    assert all(labelled_builder.split_of(g) == split for split in SPLITS for g in groups[split])
    all_texts = [ex["text"] for split in SPLITS for ex in splits[split]]
    assert len(set(all_texts)) == len(all_texts)
    assert min(map(len, all_texts)) >= zoo_docstrings.MIN_CHARS
    n_test, n = len(splits["test"]), len(all_texts)
    assert 2000 <= n and 0.1 <= n_test / n <= 0.22


def test_every_class_in_train_and_test(examples):
    splits = examples[zoo_docstrings.NAME]
    counts = {split: collections.Counter(ex["label"] for ex in splits[split]) for split in SPLITS}
    for label in range(zoo_docstrings.num_classes()):
        assert counts["train"][label] >= 50 and counts["test"][label] >= 10, label
        assert sum(counts[s][label] for s in SPLITS) <= zoo_docstrings.MAX_PER_CLASS
    email = zoo_docstrings.CLASS_NAMES.index("email")
    assert any(ex["source"].startswith("email.") and ex["label"] == email for ex in splits["train"])


def test_code_tags_align_and_split_by_file(examples):
    splits = examples[zoo_code_tags.NAME]
    files = {split: {ex["source"].rsplit(":", 1)[0] for ex in splits[split]} for split in SPLITS}
    for a, b in (("train", "test"), ("train", "validation"), ("validation", "test")):
        assert not files[a] & files[b]
    assert all(labelled_builder.split_of(f) == split for split in SPLITS for f in files[split])
    assert sum(len(splits[s]) for s in SPLITS) <= zoo_code_tags.MAX_EXAMPLES
    for split in SPLITS:
        for ex in splits[split]:
            assert len(ex["tags"]) == len(ex["text"]) and ex["text"].strip()
            assert len(ex["text"]) <= zoo_code_tags.MAX_LINE_CHARS
    for split in ("train", "test"):
        seen = {t for ex in splits[split] for t in ex["tags"]}
        assert seen == set(range(zoo_code_tags.num_classes()))


def test_tag_source():
    source = 'def f(x=1):  # hi\n    """doc\n  string"""\n    return x + 0.5\n'
    tags = ["".join("_NKO#SC"[t] for t in line) for line in zoo_code_tags.tag_source(source)]
    assert tags == ["KKK_NONO#OO__CCCC", "____SSSSSS", "SSSSSSSSSSS", "____KKKKKK_N_O_###", ""]


def test_byte_tags_repeat_over_utf8_bytes():
    np.testing.assert_array_equal(labelled_batches.byte_tags("aé🙂", [1, 2, 3]),
                                  [1, 2, 2, 3, 3, 3, 3])
    with pytest.raises(ValueError, match="2 tags for a text of 3"):
        labelled_batches.byte_tags("abc", [1, 2])


def check_inputs(batch, batch_size, seq_len):
    inputs, lengths = batch["inputs"], batch["lengths"]
    assert inputs.shape == (batch_size, seq_len) and inputs.dtype == np.int32
    assert lengths.shape == (batch_size,) and lengths.dtype == np.int32
    assert ((lengths >= 1) & (lengths <= seq_len)).all()
    real = np.arange(seq_len) < lengths[:, None]
    assert (inputs[~real] == 0).all() and (inputs[real] > 0).all()
    return real


def test_classification_batches(data_dir, examples):
    data = labelled_batches.create_classification_data(config(data_dir), 8)
    batch = data.train.get(3)
    check_inputs(batch, 8, 48)
    assert batch["labels"].shape == (8,) and batch["labels"].dtype == np.int32
    assert ((batch["labels"] >= 0) & (batch["labels"] < zoo_docstrings.num_classes())).all()
    assert batch["weights"].shape == (8,) and (batch["weights"] == 1).all()
    # Eval: split order, one pass, every example once (the last batch padded with weight 0).
    test = examples[zoo_docstrings.NAME]["test"]
    assert len(data.eval) == -(-len(test) // 8)
    assert sum(data.eval.get(i)["weights"].sum() for i in range(len(data.eval))) == len(test)
    first = data.eval.get(0)
    for row, ex in enumerate(test[:8]):
        ids = ByteTokenizer().encode(ex["text"])[:48]
        np.testing.assert_array_equal(first["inputs"][row, :len(ids)], ids)
        assert first["labels"][row] == ex["label"] and first["lengths"][row] == len(ids)
    assert 0 < data.baselines["majority_accuracy"] < 0.5
    assert data.baselines["num_classes"] == zoo_docstrings.num_classes()
    # Deterministic, and split over processes.
    again = labelled_batches.create_classification_data(config(data_dir), 8)
    np.testing.assert_array_equal(again.train.get(3)["inputs"], batch["inputs"])
    parts = [labelled_batches.create_classification_data(config(data_dir), 8, process_index=p,
                                                         process_count=2).train.get(3)
             for p in range(2)]
    for key in batch:
        np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), batch[key])


def test_tagging_batches(data_dir, examples):
    data = labelled_batches.create_tagging_data(config(data_dir), 4)
    batch = data.train.get(0)
    real = check_inputs(batch, 4, 48)
    assert batch["targets"].shape == (4, 48) and batch["targets"].dtype == np.int32
    assert batch["weights"].shape == (4, 48) and batch["weights"].dtype == np.float32
    np.testing.assert_array_equal(batch["weights"], real.astype(np.float32))
    assert (batch["targets"][~real] == 0).all()
    assert (batch["targets"] < zoo_code_tags.num_classes()).all()
    first, test = data.eval.get(0), examples[zoo_code_tags.NAME]["test"]
    assert len(data.eval) == -(-len(test) // 4)
    last = data.eval.get(len(data.eval) - 1)
    real_rows = len(test) - 4 * (len(data.eval) - 1)
    assert (last["weights"][real_rows:] == 0).all()
    assert (last["weights"][:real_rows].sum(axis=1) > 0).all()
    for row, ex in enumerate(test[:4]):
        tags = labelled_batches.byte_tags(ex["text"], ex["tags"])[:48]
        np.testing.assert_array_equal(first["targets"][row, :len(tags)], tags)
        assert first["lengths"][row] == len(tags)
    assert 0 < data.baselines["majority_accuracy"] < 0.6
    assert data.baselines["num_classes"] == zoo_code_tags.num_classes()


def test_registered_pipelines(data_dir):
    assert PIPELINES["classification"] == (
        "zoo.data.pipelines.labelled_batches:create_classification_data")
    assert PIPELINES["tagging"] == "zoo.data.pipelines.labelled_batches:create_tagging_data"
    data = create_data("classification", config(data_dir, seq_len=16), 4)
    assert data.train.get(0)["inputs"].shape == (4, 16)


def test_real_tfds_classification_dataset_by_name():
    """A real TFDS dataset whose text feature is "description" (ag_news_subset), mocked."""
    with tfds.testing.mock_data(num_examples=40):
        data = labelled_batches.create_classification_data(
            config(None, dataset="ag_news_subset", seq_len=32), 8)
    assert len(data.eval) == 5
    batch = data.eval.get(0)
    check_inputs(batch, 8, 32)
    assert ((batch["labels"] >= 0) & (batch["labels"] < 4)).all()
    assert data.baselines["num_classes"] == 4
    assert 0 <= data.baselines["majority_accuracy"] <= 1


def test_missing_tfds_dataset_names_the_fix(tmp_path):
    with pytest.raises(ConfigError, match=r"TFDS dataset 'ag_news_subset' is not prepared .*zoo_"):
        labelled_batches.create_classification_data(
            config(str(tmp_path), dataset="ag_news_subset"), 8)


def test_text_key_lookup():
    assert labelled_batches.text_key_of({"title": 0, "description": 0, "label": 0}) == "description"
    assert labelled_batches.text_key_of({"text": 0}, "title") == "title"
    with pytest.raises(ValueError, match="no text feature"):
        labelled_batches.text_key_of({"title": 0})
