"""Real TFDS datasets by name, offline: mocked (`tfds.testing.mock_data`) and really read from
array_record files prepared here with made-up examples; missing and misspelt datasets fail fast
with one line; eval splits are covered whole, the last batch padded with zero-weight rows."""
import json
import os
import shutil
import socket
import time

import jax
import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

import zoo
from zoo.data.pipelines import create_data
from zoo.data.pipelines.batch_stream import BatchStream, eval_stream
from zoo.data.pipelines.labelled_batches import LabelledExamples
from zoo.data.pipelines.lm_batches import LMWindows, load_texts, token_stream
from zoo.data.pipelines.seq2seq_batches import load_pairs
from zoo.data.pipelines.tfds_splits import open_split
from zoo.data.pipelines.tokenizers import ByteTokenizer
from zoo.errors import ConfigError
from zoo.tasks import task_for_model

WORDS = np.array("the a zoo of small models reads every split once and pads the rest".split())
# (task, dataset, eval split, extra config fields); each dataset's features are text / labels.
PIPELINES = {
    "lm1b": ("causal_lm", "test", {}),
    "tiny_shakespeare": ("causal_lm", "validation", {}),
    "imdb_reviews": ("classification", "test", {}),
    "ted_hrlr_translate/pt_to_en": ("seq2seq", "validation",
                                    {"source_key": "pt", "target_key": "en"}),
}
SIZES = {"train": 11, "test": 3, "validation": 3}  # eval splits smaller than one batch of 8
BATCH = 8
SEQ_LEN = 128


def run_config(dataset, data_dir=None, **overrides):
    task, eval_split, extra = PIPELINES[dataset]
    fields = dict(dataset=dataset, data_dir=data_dir, tokenizer="byte", eval_split=eval_split,
                  seq_len=SEQ_LEN, seed=0, text_key=None, label_key=None, source_key=None,
                  target_key=None, reverse_source=False)
    return task, ml_collections.ConfigDict({**fields, **extra, **overrides})


@pytest.fixture
def no_network(monkeypatch):
    """Every socket connection and name lookup fails, as on a machine without network."""
    def refuse(*args, **kwargs):
        raise OSError("network access from a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def _examples(features, count, seed):
    rng = np.random.default_rng(seed)
    for i in range(count):
        example = {}
        for key, feature in features.items():
            if isinstance(feature, tfds.features.ClassLabel):
                example[key] = int(rng.integers(feature.num_classes))
            elif isinstance(feature, tfds.features.Text):
                example[key] = " ".join(rng.choice(WORDS, int(rng.integers(3, 9))))
            else:
                raise TypeError(f"no made-up values for feature {key!r}: {feature!r}")
        yield f"{seed}-{i}", example


def fake_prepare(dataset, data_dir, splits):
    """Prepares `dataset` in `data_dir` as array_record, from made-up examples instead of its
    downloads: the files `tfds.data_source` reads are those of a real preparation."""
    builder = tfds.builder(dataset, data_dir=data_dir, file_format="array_record")
    builder._split_generators = lambda dl_manager: {
        split: _examples(builder.info.features, count, seed)
        for seed, (split, count) in enumerate(splits.items())}
    # Nothing downloads, so no URL checksums: TFDS would look up the builder's checksums file
    # (with importlib_resources). Set on the builder's own class, then removed again.
    cls = type(builder)
    assert "url_infos" not in vars(cls)
    cls.url_infos = None
    try:
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    finally:
        del cls.url_infos
    assert builder.is_prepared()


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A data dir holding the datasets of PIPELINES, prepared here."""
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    for dataset, (_, eval_split, _) in PIPELINES.items():
        fake_prepare(dataset, data_dir, {"train": SIZES["train"], eval_split: SIZES[eval_split]})
    return data_dir


# Opening by name.

@pytest.mark.parametrize("dataset", PIPELINES)
def test_pipelines_open_real_datasets_by_name_under_mock_data(dataset, no_network):
    task, config = run_config(dataset)
    with tfds.testing.mock_data(num_examples=20):
        data = create_data(task, config, BATCH)
    for batch in (data.train.get(0), data.eval.get(0)):
        assert batch["inputs"].shape == (BATCH, SEQ_LEN) and batch["inputs"].dtype == np.int32
        if task == "classification":
            assert batch["labels"].shape == batch["weights"].shape == (BATCH,)
        else:
            assert batch["targets"].shape == batch["weights"].shape == (BATCH, SEQ_LEN)
    assert len(data.eval) >= 1


@pytest.mark.parametrize("dataset", PIPELINES)
def test_prepared_datasets_are_read_from_array_record_without_network(dataset, prepared,
                                                                      no_network):
    task, config = run_config(dataset, prepared)
    data = create_data(task, config, BATCH)
    batch = data.train.get(0)
    assert batch["inputs"].shape == (BATCH, SEQ_LEN)
    if task == "seq2seq":
        sources, targets = load_pairs(dataset, "validation", prepared, source_key="pt",
                                      target_key="en")
        first = data.eval.get(0)
        for row, (source, target) in enumerate(zip(sources, targets)):
            assert data.tokenizer.decode(first["inputs"][row]) == source
            assert data.tokenizer.decode(first["targets"][row]) == target


def test_data_dir_is_the_config_field_else_zoo_data_dir(prepared, tmp_path, monkeypatch,
                                                        no_network):
    monkeypatch.setenv("ZOO_DATA_DIR", prepared)
    assert len(load_texts("lm1b", "test")) == SIZES["test"]  # data_dir None: $ZOO_DATA_DIR
    with pytest.raises(ConfigError, match=f"not prepared in the data dir {tmp_path}"):
        load_texts("lm1b", "test", str(tmp_path))  # the config's data_dir comes first
    monkeypatch.delenv("ZOO_DATA_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    default = tmp_path / "home" / ".cache" / "zoo" / "tensorflow_datasets"
    with pytest.raises(ConfigError, match=f"not prepared in the data dir {default};"):
        load_texts("lm1b", "test", None)


# Datasets that cannot be opened: one line, within seconds, no network.

def _raises_fast(call) -> str:
    start = time.monotonic()
    with pytest.raises(ConfigError) as error:
        call()
    assert time.monotonic() - start < 10
    message = str(error.value)
    assert "\n" not in message, message
    return message


@pytest.mark.parametrize("network", ["open", "blocked"])
@pytest.mark.parametrize("dataset", PIPELINES)
def test_missing_dataset_names_it_the_dir_and_the_prepare_command(dataset, network, tmp_path,
                                                                  request):
    if network == "blocked":
        request.getfixturevalue("no_network")
    task, config = run_config(dataset, str(tmp_path))
    message = _raises_fast(lambda: create_data(task, config, BATCH))
    assert f"TFDS dataset {dataset!r} is not prepared in the data dir {tmp_path}" in message
    command = (f"import tensorflow_datasets as tfds; tfds.builder({dataset!r}, "
               f"data_dir={str(tmp_path)!r}, file_format='array_record').download_and_prepare()")
    assert f'python -c "{command}"' in message
    assert not os.listdir(tmp_path)  # nothing written, nothing downloaded


def test_misspelt_names_get_close_names(tmp_path, no_network):
    def error(dataset, split="train"):
        return _raises_fast(lambda: open_split(dataset, split, str(tmp_path)))

    assert "no TFDS dataset is named 'tiny_shakespear': close names: tiny_shakespeare" in (
        error("tiny_shakespear"))
    assert "close names: imdb_reviews" in error("imdb_review")
    assert "close names: ag_news_subset" in error("ag_newssubset")
    message = error("ted_hrlr_translate/pt_to_enn")
    assert "has no config 'pt_to_enn' (close: pt_to_en" in message and "its configs:" in message
    assert "no close name; list them with" in error("qwertyuiop")


def test_missing_split_and_wrong_file_format(prepared, tmp_path, no_network):
    message = _raises_fast(lambda: open_split("lm1b", "validation", prepared))
    assert "TFDS dataset 'lm1b' has no split 'validation'; its splits are 'test', 'train'" in (
        message)
    shutil.copytree(os.path.join(prepared, "lm1b"), tmp_path / "lm1b")
    info_path = tmp_path / "lm1b" / "1.1.0" / "dataset_info.json"
    info = json.loads(info_path.read_text())
    info["fileFormat"] = "tfrecord"
    info_path.write_text(json.dumps(info))
    message = _raises_fast(lambda: open_split("lm1b", "test", str(tmp_path)))
    assert "as tfrecord, not array_record" in message and "download_and_prepare()" in message


@pytest.mark.parametrize("dataset,why", [
    ("", "it is empty"), ("../x", "'..' is not a name"), ("zoo_text ", "it contains whitespace"),
    ("lm1b:1.1", "the version '1.1' is not of the form x.y.z"), ("lm1b/", "it has an empty part"),
])
def test_malformed_names_say_why_in_one_line(dataset, why, tmp_path, no_network):
    message = _raises_fast(lambda: open_split(dataset, "train", str(tmp_path)))
    assert f"{dataset!r} is not a TFDS dataset name: {why}" in message
    assert "expected 'name', 'name/config' or 'name:version'" in message


@pytest.mark.parametrize("task,dataset,overrides,expected", [
    ("classification", "lm1b", {}, "dataset 'lm1b' has no feature 'label'; its features are "
     "'text'. Classification reads a text feature (config.text_key"),
    ("tagging", "imdb_reviews", {}, "dataset 'imdb_reviews' has no feature 'tags'; its features "
     "are 'text', 'label'. Tagging reads"),
    ("tagging", "imdb_reviews", {"tags_key": "label"},
     "feature 'label' is a ClassLabel, not a sequence of ClassLabel"),
    ("classification", "imdb_reviews", {"text_key": "title"}, "has no feature 'title'"),
    ("causal_lm", "ted_hrlr_translate/pt_to_en", {}, "has no feature 'text'; its features are "
     "'pt', 'en'. Language models read a text feature (config.text_key, default 'text')"),
    ("seq2seq", "imdb_reviews", {}, "has no feature 'source', 'target'; its features are 'text', "
     "'label'. Set --config.source_key and --config.target_key"),
])
def test_datasets_without_the_task_features_name_them_in_one_line(task, dataset, overrides,
                                                                  expected, prepared, no_network):
    _, config = run_config(dataset, prepared, **overrides)
    message = _raises_fast(lambda: create_data(task, config, BATCH))
    assert expected in message


def test_an_embedded_dataset_of_another_task_names_its_task(tmp_path, no_network):
    task, config = run_config("lm1b", str(tmp_path))
    config.dataset = "zoo_docstrings"
    message = _raises_fast(lambda: create_data(task, config, BATCH))
    assert "'zoo_docstrings' is the zoo's embedded dataset for classification" in message
    assert "use --config.dataset=zoo_text" in message and "network" not in message
    assert not os.listdir(tmp_path)


# Evaluation covers every example: the last partial batch is padded with weight-0 rows.

@pytest.mark.parametrize("dataset", PIPELINES)
def test_an_eval_split_smaller_than_a_batch_is_one_padded_batch(dataset, prepared, no_network):
    task, config = run_config(dataset, prepared)
    data = create_data(task, config, BATCH)
    assert len(data.eval) == 1
    batch = data.eval.get(0)
    assert all(v.shape[0] == BATCH for v in batch.values())
    if task == "causal_lm":
        texts = load_texts(dataset, config.eval_split, prepared)
        real = len(token_stream(texts, ByteTokenizer())) - 1  # every token but the first
    elif task == "classification":
        real = SIZES[config.eval_split]
    else:
        _, targets = load_pairs(dataset, "validation", prepared, source_key="pt", target_key="en")
        real = sum(len(t) + 1 for t in targets)  # the characters and EOS
    assert batch["weights"].sum() == real
    rows = batch["weights"].reshape(BATCH, -1).sum(axis=1) > 0
    padding = np.flatnonzero(~rows)
    assert len(padding) and rows[:padding[0]].all()  # the real rows first, then the padding
    for key in batch:  # padding rows copy the first items, except for their zero weights
        if key != "weights":
            np.testing.assert_array_equal(batch[key][padding], batch[key][:len(padding)])


def test_eval_streams_pad_and_train_streams_drop_the_remainder():
    stream = np.arange(8 * 10 + 4, dtype=np.int32)  # 10 whole windows of 8, and 3 tokens more
    windows = LMWindows(stream, 8, pad_last=True)
    assert len(windows) == 11 and len(LMWindows(stream, 8)) == 10
    assert windows[10]["weights"].tolist() == [1, 1, 1, 0, 0, 0, 0, 0]
    assert windows[10]["targets"][:3].tolist() == [81, 82, 83]
    evaluation = eval_stream(windows, 4)
    assert len(evaluation) == 3  # 11 windows: 4 + 4 + 3 and one padding row
    assert sum(evaluation.get(i)["weights"].sum() for i in range(3)) == len(stream) - 1
    assert len(BatchStream(LMWindows(stream, 8), 4, seed=0, shuffle=False, repeat=False)) == 2
    train = BatchStream(LMWindows(stream, 8), 4, seed=0)
    assert all(train.get(i)["weights"].all() for i in range(6))  # whole windows only
    # Two processes: each takes its half of every padded global batch.
    halves = [eval_stream(windows, 4, process_index=p, process_count=2).get(2) for p in (0, 1)]
    for key, value in evaluation.get(2).items():
        np.testing.assert_array_equal(np.concatenate([h[key] for h in halves]), value)
    with pytest.raises(ValueError, match="pad_remainder is for one pass in order"):
        BatchStream(windows, 4, seed=0, pad_remainder=True)


def _sums(model_name, overrides, batch):
    model = zoo.create_model(model_name, **overrides)
    task = task_for_model(model_name, model.config)
    params = model.init(jax.random.key(0), *task.example_inputs(model.config, SEQ_LEN))["params"]
    task.check_batch(batch, model.config)
    batch = {key: jax.numpy.asarray(value) for key, value in batch.items()}
    _, sums = task.loss(model.apply, params, batch, jax.random.key(1), False)
    return jax.device_get(sums)


def _real_rows(batch):
    rows = batch["weights"].reshape(len(batch["weights"]), -1).sum(axis=1) > 0
    return {key: value[rows] for key, value in batch.items()}


SMALL_TRANSFORMER = dict(emb_dim=32, num_heads=2, mlp_dim=64, dropout_rate=0.0)


@pytest.mark.parametrize("dataset,model_name,overrides", [
    ("lm1b", "gpt_tiny", dict(SMALL_TRANSFORMER, num_layers=1, max_len=SEQ_LEN)),
    ("ted_hrlr_translate/pt_to_en", "transformer_tiny",
     dict(SMALL_TRANSFORMER, num_encoder_layers=1, num_decoder_layers=1, max_len=SEQ_LEN)),
])
def test_padding_rows_add_nothing_to_the_task_sums(dataset, model_name, overrides, prepared):
    task, config = run_config(dataset, prepared)
    data = create_data(task, config, BATCH)
    batch = data.eval.get(0)
    overrides = dict(overrides, vocab_size=data.tokenizer.vocab_size)
    padded, real = _sums(model_name, overrides, batch), _sums(model_name, overrides,
                                                              _real_rows(batch))
    assert padded["weight"] == batch["weights"].sum()
    for key in padded:
        np.testing.assert_allclose(padded[key], real[key], rtol=2e-5, err_msg=key)


def test_masked_lm_padding_rows_are_finite_and_weigh_nothing(prepared):
    _, config = run_config("lm1b", prepared)
    batch = create_data("masked_lm", config, BATCH).eval.get(0)
    overrides = dict(SMALL_TRANSFORMER, num_layers=1, max_len=SEQ_LEN)
    padded, real = (_sums("bert_tiny", overrides, b) for b in (batch, _real_rows(batch)))
    assert all(np.isfinite(v) for v in padded.values())
    assert padded["weight"] == real["weight"]  # how many tokens each real row predicts


def test_tagging_padding_rows_add_nothing():
    rng = np.random.default_rng(0)
    ids = [rng.integers(1, 256, n).astype(np.int32) for n in (5, 9, 3)]
    tags = [rng.integers(0, 8, len(i)).astype(np.int32) for i in ids]
    batch = eval_stream(LabelledExamples(ids, SEQ_LEN, targets=tags), BATCH).get(0)
    assert batch["weights"].sum() == 5 + 9 + 3
    overrides = dict(emb_dim=8, hidden_size=8, num_layers=1, dropout_rate=0.0)
    padded, real = (_sums("bilstm_tagger", overrides, b) for b in (batch, _real_rows(batch)))
    for key in padded:
        np.testing.assert_allclose(padded[key], real[key], rtol=2e-5, err_msg=key)


def test_classification_padding_rows_add_nothing(prepared):
    task, config = run_config("imdb_reviews", prepared)
    batch = create_data(task, config, BATCH).eval.get(0)
    overrides = dict(emb_dim=8, hidden_size=8, num_layers=1, dropout_rate=0.0)
    padded, real = (_sums("lstm_classifier", overrides, b) for b in (batch, _real_rows(batch)))
    for key in padded:
        np.testing.assert_allclose(padded[key], real[key], rtol=2e-5, err_msg=key)
