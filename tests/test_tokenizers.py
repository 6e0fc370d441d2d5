"""SentencePiece tokenizers: round trips, the cache, the workdir copy that generate uses, and
the refusals (vocabulary sizes that do not fit, another tokenizer in a trained workdir)."""
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from zoo.data.pipelines import sentencepiece_tokenizer as spm_lib
from zoo.data.pipelines.lm_batches import load_texts
from zoo.data.pipelines.sentencepiece_tokenizer import (SentencePieceTokenizer,
                                                        cached_sentencepiece, train_sentencepiece)
from zoo.data.pipelines.tokenizers import ByteTokenizer, sentencepiece_cache_dir
from zoo.errors import CheckpointError, ConfigError
from zoo.special_tokens import BOS_ID, EOS_ID, PAD_ID
from zoo.train import config as run_config
from zoo.train.config import base_config, validate
from zoo.train.workdir import TOKENIZER_FILE, load_tokenizer, load_trained, save_built_vocab

from run_configs import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OLD_GPT = os.path.join(REPO, "tests", "data", "e83a4e5", "gpt_tiny")
STRINGS = ["The zoo", "  two  spaces and a tab\there\n\nnew paragraph\n",
           "unseen: 日本語 🦀 é ø ß", "x\x00y\r\n", "def f(x):\n        return x  # code", ""]


@pytest.fixture(scope="module")
def texts():
    return load_texts("zoo_text", "train")[:150]


@pytest.fixture(scope="module", params=["bpe", "unigram"])
def tokenizer(request, texts):
    return train_sentencepiece(texts, model_type=request.param, vocab_size=600)


def test_round_trip_is_exact(tokenizer):
    assert tokenizer.vocab_size == 600
    valid = "\n\n".join(load_texts("zoo_text", "validation")[:5])
    for text in STRINGS + [valid]:
        ids = tokenizer.encode(text)
        assert ids.dtype == np.int32 and ids.ndim == 1
        assert tokenizer.decode(ids) == text
    assert len(tokenizer.encode(valid)) < len(valid.encode()) / 1.5  # subwords, not bytes


def test_special_ids_newline_piece_and_bad_ids(tokenizer):
    assert tokenizer.decode([PAD_ID, BOS_ID, EOS_ID]) == ""
    assert len(tokenizer.encode("\n")) == 1
    assert tokenizer.decode(tokenizer.encode("ab")[None]) == "ab"  # any shape, read flat
    with pytest.raises(ValueError, match=r"token id 600 is outside \[0, 600\)"):
        tokenizer.decode([5, 600])
    with pytest.raises(ValueError, match="integers"):
        tokenizer.decode(np.array([1.5]))


def test_save_load_and_pickle_give_the_same_model(tokenizer, tmp_path):
    tokenizer.save(str(tmp_path / "t.model"))
    again = SentencePieceTokenizer.load(str(tmp_path / "t.model"))
    unpickled = pickle.loads(pickle.dumps(tokenizer))  # as data worker processes receive it
    for copy in (again, unpickled):
        assert copy.model_proto == tokenizer.model_proto
        np.testing.assert_array_equal(copy.encode(STRINGS[1]), tokenizer.encode(STRINGS[1]))


def test_cache_is_reused_and_keyed_by_texts_and_options(texts, tmp_path, monkeypatch):
    first, path = cached_sentencepiece(texts, str(tmp_path), model_type="bpe", vocab_size=500)
    assert os.path.isfile(path)

    def no_training(*args, **kwargs):
        raise AssertionError("trained again instead of reading the cache")

    monkeypatch.setattr(spm_lib, "train_sentencepiece", no_training)
    second, again = cached_sentencepiece(texts, str(tmp_path), model_type="bpe", vocab_size=500)
    assert again == path and second.model_proto == first.model_proto
    monkeypatch.undo()
    for other in (dict(texts=texts[:-1], model_type="bpe", vocab_size=500),
                  dict(texts=texts, model_type="unigram", vocab_size=500),
                  dict(texts=texts, model_type="bpe", vocab_size=520)):
        _, other_path = cached_sentencepiece(other.pop("texts"), str(tmp_path), **other)
        assert other_path != path
    assert len(os.listdir(tmp_path)) == 4


def test_cache_dir_is_in_the_data_dir(tmp_path):
    assert sentencepiece_cache_dir("ted_hrlr_translate/pt_to_en", "train", "en", str(tmp_path)) \
        == str(tmp_path / "tokenizers" / "ted_hrlr_translate" / "pt_to_en" / "train" / "en")


@pytest.mark.parametrize("model,overrides,message", [
    ("gpt_tiny", dict(spm_vocab_size=1000),
     r"spm_vocab_size=1000 exceeds the model's vocab_size=256.*--config\.vocab_size=1000"),
    ("bert_tiny", dict(), r"mask_token_id=256 is one of the 264 SentencePiece ids.*"
                          r"--config\.spm_vocab_size=256"),
    ("lstm_classifier", dict(), r"serves the language-model tasks.*--config\.tokenizer=byte"),
    ("gpt_tiny", dict(spm_model_type="wordpiece"), r"spm_model_type must be one of"),
])
def test_vocabulary_sizes_that_do_not_fit_the_model_are_refused(model, overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate(base_config(model, tokenizer="sentencepiece", **overrides))
    validate(base_config("gpt_tiny", tokenizer="sentencepiece", vocab_size=1000))
    validate(base_config("bert_tiny", tokenizer="sentencepiece", spm_vocab_size=256))
    assert run_config.SPM_MODEL_TYPES == spm_lib.MODEL_TYPES  # named in two layers


def test_a_vocabulary_the_texts_cannot_fill_is_a_config_error(texts):
    with pytest.raises(ConfigError, match=r"vocabulary of 100000 pieces from the texts: they "
                                          r"hold at most \d+; lower --config\.spm_vocab_size"):
        train_sentencepiece(texts[:20], model_type="bpe", vocab_size=100_000, what="the texts")
    with pytest.raises(ConfigError, match=r"need at least \d+; raise --config\.vocab_size to "
                                          r"that or more"):
        train_sentencepiece(texts[:20], model_type="unigram", vocab_size=100, what="the texts")


def test_a_trained_workdir_refuses_another_tokenizer(tokenizer, texts, tmp_path):
    save_built_vocab(str(tmp_path), tokenizer)
    other = train_sentencepiece(texts[:50], model_type="bpe", vocab_size=400)
    save_built_vocab(str(tmp_path), other)  # no checkpoint yet: replaced
    assert SentencePieceTokenizer.load(str(tmp_path / TOKENIZER_FILE)).vocab_size == 400
    os.makedirs(tmp_path / "checkpoints" / "2")
    save_built_vocab(str(tmp_path), other)  # the same model: fine
    with pytest.raises(CheckpointError, match="not the SentencePiece model this run trained"):
        save_built_vocab(str(tmp_path), tokenizer)


def test_old_byte_workdirs_load_the_byte_tokenizer():
    spec, model, params, meta = load_trained(OLD_GPT)
    assert not os.path.exists(os.path.join(OLD_GPT, TOKENIZER_FILE))
    assert isinstance(load_tokenizer(OLD_GPT, meta, model), ByteTokenizer)


def _start(module: str, *args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, "-m", module, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)


@pytest.mark.slow
def test_generate_and_evaluate_use_the_workdirs_sentencepiece_model(tmp_path):
    """Train a few steps with a SentencePiece vocabulary; the workdir holds the cached model,
    experiments.generate decodes greedily exactly what that tokenizer gives in process, and
    experiments.evaluate scores the validation split as the run's final (whole-split) eval."""
    import json

    from zoo.decode.text import sample_texts
    from zoo.train.loop import train_and_evaluate

    config = tiny_config(tokenizer="sentencepiece", spm_model_type="bpe", vocab_size=512,
                         num_train_steps=4, num_eval_batches=1000)
    summary = train_and_evaluate(config, str(tmp_path))
    assert np.isfinite(summary["eval"]["loss"])
    assert summary["baselines"]["eval_bytes_per_token"] > 1.3  # subwords, bytes: 1.0
    saved = SentencePieceTokenizer.load(str(tmp_path / TOKENIZER_FILE))
    texts = load_texts("zoo_text", "train")
    cached, _ = cached_sentencepiece(texts, sentencepiece_cache_dir("zoo_text", "train", "text"),
                                     model_type="bpe", vocab_size=512)
    assert saved.vocab_size == 512 and saved.model_proto == cached.model_proto

    spec, model, params, meta = load_trained(str(tmp_path))
    tokenizer = load_tokenizer(str(tmp_path), meta, model)
    assert tokenizer.model_proto == saved.model_proto
    expected = sample_texts(spec.decoder_cls(model), params, tokenizer, "The zoo", num_samples=1,
                            max_new_tokens=6, max_len=model.config.max_len, temperature=0.0,
                            top_k=0, top_p=1.0, seed=0)[0]
    generate = _start("experiments.generate", "--workdir", str(tmp_path), "--prompt", "The zoo",
                      "--temperature", "0", "--max_new_tokens", "6")
    evaluate = _start("experiments.evaluate", "--workdir", str(tmp_path))
    stdout, stderr = generate.communicate(timeout=300)
    assert generate.returncode == 0, stderr
    assert stdout.split("\n" + "-" * 40)[0] == expected
    stdout, stderr = evaluate.communicate(timeout=300)
    assert evaluate.returncode == 0, stderr
    metrics = json.loads(stdout.strip().splitlines()[-1])
    assert metrics["tokenizer"] == "SentencePieceTokenizer" and metrics["split"] == "validation"
    assert metrics["loss"] == pytest.approx(summary["eval"]["loss"], rel=1e-5)
    bytes_per_token = summary["baselines"]["eval_bytes_per_token"]
    assert metrics["loss_per_byte"] == pytest.approx(metrics["loss"] / bytes_per_token, rel=1e-6)
