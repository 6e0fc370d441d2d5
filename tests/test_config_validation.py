"""Out-of-range model and run config values are refused with a ConfigError naming the field, the
value and the allowed range; values inside the ranges (and every shipped config) still pass."""
import glob
import os

import pytest

import zoo
from experiments.config_check import load_config
from zoo.errors import ConfigError
from zoo.models import get_config, list_models
from zoo.train.config import base_config, check_platform, validate

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(p for p in glob.glob(os.path.join(REPO, "experiments", "configs", "*.py"))
                 if not os.path.basename(p).startswith("_"))


@pytest.mark.parametrize("model,overrides,message", [
    ("gpt_tiny", dict(dropout_rate=2.0), r"dropout_rate must be in \[0, 1\); got 2\.0"),
    ("gpt_tiny", dict(dropout_rate=-0.1), r"dropout_rate must be in \[0, 1\)"),
    ("gpt_tiny", dict(dropout_rate=1.0), r"dropout_rate must be in \[0, 1\)"),
    ("gpt_tiny", dict(emb_dim=-4), r"emb_dim must be a positive integer; got -4"),
    ("gpt_tiny", dict(emb_dim=32.0), r"emb_dim must be a positive integer; got 32\.0"),
    ("gpt_tiny", dict(num_heads=0), r"num_heads must be a positive integer; got 0"),
    ("gpt_tiny", dict(num_heads=3), r"emb_dim=256 must be divisible by num_heads=3"),
    ("gpt_tiny", dict(num_layers=0), r"num_layers must be a positive integer"),
    ("gpt_tiny", dict(mlp_dim=-1), r"mlp_dim must be a positive integer"),
    ("gpt_tiny", dict(vocab_size=0), r"vocab_size must be a positive integer"),
    ("gpt_tiny", dict(max_len=0), r"max_len must be a positive integer"),
    ("gpt_tiny", dict(scan_unroll=0), r"scan_unroll must be a positive integer"),
    ("gpt_tiny", dict(vocab_pad_multiple=0), r"vocab_pad_multiple must be None"),
    ("bert_tiny", dict(ln_epsilon=0.0), r"ln_epsilon must be > 0"),
    ("bert_tiny", dict(type_vocab_size=0), r"type_vocab_size must be a positive integer"),
    ("bert_tiny", dict(mask_token_id=264), r"mask_token_id must be in \[0, vocab_size=264\)"),
    ("bert_tiny", dict(pad_token_id=-1), r"pad_token_id must be in \[0, vocab_size=264\)"),
    ("bert_tiny_classifier", dict(num_classes=0), r"num_classes must be a positive integer"),
    ("transformer_tiny", dict(num_encoder_layers=0), r"num_encoder_layers must be a positive"),
    ("transformer_tiny", dict(emb_dim=100, num_heads=8), r"emb_dim=100 must be divisible by "
                                                           r"num_heads=8.*e\.g\. num_heads="),
    ("lstm_lm", dict(hidden_size=0), r"hidden_size must be a positive integer"),
    ("lstm_lm", dict(unroll=0), r"unroll must be a positive integer"),
    ("lstm_lm", dict(tie_embeddings=True, emb_dim=16), r"tie_embeddings needs emb_dim == "
                                                       r"hidden_size"),
    ("lstm_classifier", dict(dropout_rate=1.5), r"dropout_rate must be in \[0, 1\)"),
    ("bilstm_tagger", dict(num_layers=-2), r"num_layers must be a positive integer"),
    ("elmo_bilm", dict(emb_dim=8, hidden_size=16), r"emb_dim == hidden_size"),
    ("seq2seq_lstm", dict(max_len=-1), r"max_len must be a positive integer"),
])
def test_out_of_range_model_fields_are_refused_on_creation(model, overrides, message):
    with pytest.raises(ConfigError, match=message):
        zoo.create_model(model, **overrides)


@pytest.mark.parametrize("model,overrides,message", [
    ("gpt_tiny", dict(remat="some"), r"remat must be one of 'none', 'dots', 'full'; got 'some'"),
    ("gpt_tiny", dict(compute_dtype="float8"), r"compute_dtype must be one of .*'bfloat16'"),
    ("gpt_tiny", dict(param_dtype="int8"), r"param_dtype must be one of"),
    ("gpt_tiny", dict(attention_implementation="flash"), r"attention_implementation must be one"),
    ("bert_tiny", dict(head="qa"), r"head must be one of 'mlm', 'classification', 'tagging'"),
    ("bert_tiny", dict(pooling="max"), r"pooling must be one of 'cls', 'mean'; got 'max'"),
    ("bert_tiny", dict(activation="swish"), r"activation must be one of"),
    ("transformer_tiny", dict(positions="rope"), r"positions must be one of 'learned'"),
    ("lstm_lm", dict(cell="lstmx"), r"cell must be one of .*'gru'"),
    ("lstm_lm", dict(rnn_implementation="fast"), r"rnn_implementation must be one of .*'cudnn'"),
    ("lstm_classifier", dict(pooling="cls"), r"pooling must be one of 'last', 'mean', 'max'"),
    ("seq2seq_lstm", dict(attention="transformer"), r"attention must be one of .*'bahdanau'"),
    ("seq2seq_lstm", dict(attention="bahdanau", input_feeding=True), r"input_feeding"),
])
def test_unknown_choices_are_refused_by_validate(model, overrides, message):
    """Choices are checked by `validate()` (the run config calls it); a model made in Python
    refuses them when first called, as before."""
    config = get_config(model, **overrides)
    with pytest.raises(ConfigError, match=message):
        config.validate()


@pytest.mark.parametrize("model,overrides", [
    ("gpt_tiny", dict(dropout_rate=0.0)),
    ("gpt_tiny", dict(dropout_rate=0.999, emb_dim=12, num_heads=3, vocab_pad_multiple=1)),
    ("gpt_tiny", dict(remat="dots", compute_dtype="bfloat16", attention_implementation="xla")),
    ("gpt_tiny", dict(remat=True)),  # a boolean, as configs written before the policies hold
    ("bert_tiny_classifier", dict(vocab_size=20)),  # [MASK] is the MLM head's only
    ("bert_tiny", dict(vocab_size=40, mask_token_id=39, pooling="cls")),
    ("transformer_tiny", dict(positions="learned", num_heads=1)),
    ("lstm_lm", dict(tie_embeddings=True, emb_dim=64, hidden_size=64, cell="rnn_relu")),
    ("elmo_bilm", dict(emb_dim=8, hidden_size=8)),
])
def test_values_inside_the_ranges_are_accepted(model, overrides):
    get_config(model, **overrides).validate()


def test_every_preset_passes_its_own_checks():
    for model in list_models():
        get_config(model).validate()
        validate(base_config(model))


@pytest.mark.parametrize("model,overrides,message", [
    ("gpt_tiny", dict(num_train_steps=-5), r"config\.num_train_steps must be an integer > 0; "
                                           r"got -5"),
    ("gpt_tiny", dict(per_device_batch_size=0), r"config\.per_device_batch_size must be"),
    ("gpt_tiny", dict(grad_accum_steps=3), r"does not divide into grad_accum_steps=3"),
    ("gpt_tiny", dict(learning_rate=0.0), r"config\.learning_rate must be > 0; got 0\.0"),
    ("gpt_tiny", dict(learning_rate=float("nan")), r"config\.learning_rate must be > 0"),
    ("gpt_tiny", dict(weight_decay=-0.1), r"config\.weight_decay must be >= 0"),
    ("gpt_tiny", dict(grad_clip_norm=-1.0), r"config\.grad_clip_norm must be >= 0"),
    ("gpt_tiny", dict(adam_b1=1.0), r"config\.adam_b1 must be in \[0, 1\)"),
    ("gpt_tiny", dict(adam_b2=-0.5), r"config\.adam_b2 must be in \[0, 1\)"),
    ("gpt_tiny", dict(adam_eps=0.0), r"config\.adam_eps must be > 0"),
    ("gpt_tiny", dict(warmup_steps=-1), r"config\.warmup_steps must be an integer >= 0"),
    ("gpt_tiny", dict(warmup_steps=2000), r"warmup_steps=2000 exceeds num_train_steps=1000"),
    ("gpt_tiny", dict(schedule="cosin"), r"config\.schedule must be one of 'cosine'.*'cosin'"),
    ("gpt_tiny", dict(num_samples=-1), r"config\.num_samples must be an integer >= 0"),
    ("gpt_tiny", dict(sample_length=-1), r"config\.sample_length must be an integer >= 0"),
    ("gpt_tiny", dict(sample_temperature=-0.5), r"config\.sample_temperature must be >= 0"),
    ("gpt_tiny", dict(sample_top_p=0.0), r"config\.sample_top_p must be in \(0, 1\]"),
    ("gpt_tiny", dict(sample_top_p=1.5), r"config\.sample_top_p must be in \(0, 1\]"),
    ("gpt_tiny", dict(sample_top_k=-3), r"config\.sample_top_k must be an integer >= 0"),
    ("gpt_tiny", dict(num_eval_batches=-1), r"config\.num_eval_batches must be"),
    ("gpt_tiny", dict(keep_checkpoints=0), r"config\.keep_checkpoints must be"),
    ("gpt_tiny", dict(loss_chunk_size=0), r"config\.loss_chunk_size must be"),
    ("gpt_tiny", dict(nonfinite_policy="ignore"), r"config\.nonfinite_policy must be one of"),
    ("gpt_tiny", dict(parallel="shard_map"), r"config\.parallel must be one of"),
    ("gpt_tiny", dict(model="gpt_huge"), r"unknown model 'gpt_huge'"),
    ("transformer_tiny", dict(label_smoothing=1.0), r"config\.label_smoothing must be in "
                                                    r"\[0, 1\)"),
    ("bert_tiny", dict(mask_rate=1.5), r"config\.mask_rate must be in \[0, 1\)"),
    # The model config the run builds is checked too: its ranges and its choices.
    ("gpt_tiny", dict(dropout_rate=2.0), r"dropout_rate must be in \[0, 1\); got 2\.0"),
    ("gpt_tiny", dict(emb_dim=-4), r"emb_dim must be a positive integer; got -4"),
    ("gpt_tiny", dict(remat="sometimes"), r"remat must be one of"),
    ("seq2seq_lstm", dict(cell="lstmx"), r"cell must be one of"),
])
def test_out_of_range_run_config_values_are_refused(model, overrides, message):
    config = base_config(model)
    config.unlock()
    config.update(overrides)
    with pytest.raises(ConfigError, match=message):
        validate(config)


@pytest.mark.parametrize("overrides", [
    dict(grad_clip_norm=0.0, weight_decay=0.0, warmup_steps=0, num_samples=0, sample_length=0),
    dict(sample_temperature=0.0, sample_top_p=1.0, sample_top_k=5, adam_b1=0.0),
    dict(schedule="NOAM", warmup_steps=5000),  # rsqrt: a warm-up past the end is its business
    dict(schedule="constant", num_train_steps=1, warmup_steps=1, num_eval_batches=0),
    dict(nonfinite_policy="skip", parallel="jit", per_device_batch_size=8, grad_accum_steps=4),
])
def test_run_config_values_inside_the_ranges_are_accepted(overrides):
    validate(base_config("gpt_tiny", **overrides))


def test_a_config_error_is_still_a_value_error():
    with pytest.raises(ValueError, match="dropout_rate"):
        get_config("gpt_tiny", dropout_rate=2.0)


@pytest.mark.parametrize("path", CONFIGS, ids=[os.path.basename(p) for p in CONFIGS])
def test_every_config_file_passes_and_refuses_unknown_arguments(path):
    validate(load_config(path))
    validate(load_config(path, "runlocal"))
    with pytest.raises(ConfigError, match=r":bogus: unknown config argument 'bogus'.*'runlocal'"):
        load_config(path, "bogus")


def test_a_missing_config_file_names_the_ones_there_are(tmp_path):
    with pytest.raises(ConfigError, match=r"config file .*nope\.py' does not exist; pass one "
                                          r"of .*gpt_tiny\.py"):
        load_config(str(tmp_path / "nope.py"))


@pytest.mark.parametrize("model,key,value,home,name", [
    ("gpt_tiny", "attention_implementation", "cudnn", "cuda", "an NVIDIA GPU"),
    ("gpt_tiny", "attention_implementation", "pallas", "tpu", "a TPU"),
    ("lstm_lm", "rnn_implementation", "cudnn", "cuda", "an NVIDIA GPU"),
])
def test_platform_kernels_are_refused_elsewhere_only(model, key, value, home, name):
    config = base_config(model, **{key: value})
    validate(config)  # a config file is platform-free: the kernel is a valid choice
    check_platform(config, home)
    for platform in {"cpu", "tpu", "rocm", "cuda"} - {home}:
        with pytest.raises(ConfigError, match=f"config.{key}='{value}' needs {name}"):
            check_platform(config, platform)
    check_platform(base_config(model), "cpu")  # the automatic / scan defaults run anywhere


@pytest.mark.parametrize("model,overrides,message", [
    ("gpt_tiny", dict(seq_len=300), r"seq_len=300 exceeds the model's max_len=256"),
    ("gpt_tiny", dict(vocab_size=10), r"vocab_size=10 is below the 256 byte ids"),
    ("gpt_tiny", dict(sample_prompt=""), r"sample_prompt is empty"),
    ("gpt_tiny", dict(param_dtype="float16"), r"param_dtype='float16' cannot train"),
    ("lstm_lm", dict(seed=-1), r"seed must be an integer in \[0, 2\*\*32\)"),
    ("lstm_lm", dict(seed=2**32), r"seed must be an integer in \[0, 2\*\*32\)"),
])
def test_settings_that_fail_only_once_training_starts_are_refused(model, overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate(base_config(model, **overrides))


def test_their_neighbours_pass():
    validate(base_config("gpt_tiny", seq_len=256, sample_prompt="", num_samples=0,
                         param_dtype="bfloat16", seed=2**32 - 1))
    validate(base_config("gpt_tiny", vocab_size=100, tokenizer="sentencepiece"))
    validate(base_config("seq2seq_lstm", vocab_size=64))  # a character vocabulary, not bytes


@pytest.mark.parametrize("name", [None, 5, ["gpt_tiny"]])
def test_a_model_name_that_is_not_a_string_is_a_config_error(name):
    with pytest.raises(ConfigError, match="a model name is a string"):
        zoo.create_model(name)
    with pytest.raises(ConfigError, match="pattern string"):
        zoo.list_models(3)


def test_load_trained_names_a_wrongly_typed_argument(tmp_path):
    with pytest.raises(ConfigError, match="step must be an int"):
        zoo.load_trained(str(tmp_path), step="2")
    with pytest.raises(ConfigError, match="workdir must be a path"):
        zoo.load_trained(None)
