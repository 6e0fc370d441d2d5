"""The embedded "zoo_text" TFDS corpus (array_record, no TensorFlow) and the byte tokenizer."""
import os
import subprocess
import sys
import textwrap

import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from zoo.data.builders import preparation, zoo_text
from zoo.data.pipelines.lm_batches import load_texts
from zoo.data.pipelines.tokenizers import ByteTokenizer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPLITS = ("train", "validation")


def read_split(data_dir, split):
    """[(source, text)] of a prepared split, in index order, through `tfds.data_source`."""
    source = tfds.data_source("zoo_text", split=split, data_dir=data_dir)
    return [(ex["source"].decode(), ex["text"].decode()) for ex in source]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return zoo_text.prepare(str(tmp_path_factory.mktemp("tfds")))


@pytest.fixture(scope="module")
def examples(data_dir):
    return {split: read_split(data_dir, split) for split in SPLITS}


def test_splits_nonempty_disjoint_and_sized(examples):
    train, val = ({s for s, _ in examples[split]} for split in SPLITS)
    assert train and val and not train & val
    assert len(train) == len(examples["train"]) and len(val) == len(examples["validation"])
    assert 0.03 <= len(val) / (len(train) + len(val)) <= 0.08
    assert all(zoo_text.split_of(s) == "validation" for s in val)
    assert any(s.startswith("pydoc_data.topics:") for s in train | val)
    assert any(s.startswith("json") for s in train | val)  # a stdlib docstring
    texts = [t for split in SPLITS for _, t in examples[split]]
    assert len(set(texts)) == len(texts)
    assert min(map(len, texts)) >= zoo_text.MIN_DOCSTRING_CHARS
    assert sum(map(len, texts)) > 500_000


def test_load_texts_matches_data_source(data_dir, examples):
    for split in SPLITS:
        assert load_texts("zoo_text", split, data_dir) == [t for _, t in examples[split]]


def test_prepare_is_idempotent(data_dir, examples):
    version_dir = os.path.join(data_dir, "zoo_text", "1.0.0")
    before = {f: os.stat(os.path.join(version_dir, f)).st_mtime_ns for f in os.listdir(version_dir)}
    assert zoo_text.prepare(data_dir) == data_dir
    after = {f: os.stat(os.path.join(version_dir, f)).st_mtime_ns for f in os.listdir(version_dir)}
    assert before == after
    assert {split: read_split(data_dir, split) for split in SPLITS} == examples


def test_data_source_reads_are_repeatable(data_dir):
    for split in SPLITS:
        assert read_split(data_dir, split) == read_split(data_dir, split)


def test_loaded_without_tensorflow(examples):
    # tfds imports TensorFlow only lazily, on first use of a tf-backed API; none was used.
    # (It is not installed here at all; where it is, this checks that it stays unused.)
    assert "tensorflow" not in sys.modules


def test_independent_build_is_identical(data_dir, examples, tmp_path):
    """A second build, in a fresh process (new hash seed), gives identical texts, without TF."""
    other_dir = tmp_path / "tfds"
    script = textwrap.dedent(f"""
        import sys
        from zoo.data.builders import zoo_text
        zoo_text.prepare({str(other_dir)!r})
        assert "tensorflow" not in sys.modules
    """)
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    run = subprocess.run([sys.executable, "-c", script], env=env, cwd=REPO,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    # Same texts, sources and order. (The files themselves may differ: protobuf serialises
    # the example's feature map in a per-process order.)
    assert {split: read_split(str(other_dir), split) for split in SPLITS} == examples


def test_default_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("ZOO_DATA_DIR", str(tmp_path))
    assert preparation.default_data_dir() == str(tmp_path)
    monkeypatch.delenv("ZOO_DATA_DIR")
    assert preparation.default_data_dir().endswith(os.path.join("zoo", "tensorflow_datasets"))


@pytest.mark.parametrize("text", ["", "Hello, world!\n", "héllo wörld — 日本語 🙂"])
def test_byte_tokenizer_round_trip(text):
    tok = ByteTokenizer()
    ids = tok.encode(text)
    assert ids.dtype == np.int32 and ids.shape == (len(text.encode("utf-8")),)
    assert ((ids >= 0) & (ids < tok.vocab_size)).all()
    assert tok.decode(ids) == text
    assert tok.decode(ids.tolist()) == text
    assert tok.decode(jnp.asarray(ids)) == text


def test_byte_tokenizer_rejects_out_of_range_ids():
    tok = ByteTokenizer()
    assert tok.vocab_size == 256
    for bad in (256, -1):
        with pytest.raises(ValueError, match=str(bad)):
            tok.decode([104, 105, bad])


def test_byte_tokenizer_replaces_invalid_utf8():
    assert ByteTokenizer().decode([104, 0xFF, 105]) == "h\ufffdi"
