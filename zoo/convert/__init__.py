"""Converters from other frameworks' checkpoints to zoo params, one job per module.

* `zoo.convert.reader`: checkpoint files (safetensors, `pytorch_model.bin`, a `save_pretrained()`
  directory) -> a flat dict of NumPy arrays.
* `zoo.convert.hf`: the entry point for Hugging Face checkpoints, `load_hf_checkpoint(path)` /
  `from_hf_state_dict(config, state_dict)` -> (registered name, zoo model, params).
* `zoo.convert.gpt2`, `zoo.convert.bert`: each family's config.json fields and weight key map.
* `zoo.convert.hf_tokenizer`: the directory's tokenizer (`tokenizer.json`, GPT-2's `vocab.json`
  + `merges.txt`, BERT's `vocab.txt`) through the `tokenizers` library, `load_hf_tokenizer(path)`.
* `zoo.convert.keymap`: what the key maps share (checked look-ups, Linear / LayerNorm layouts).
* `zoo.convert.torch_rnn`: `torch.nn.RNN / LSTM / GRU` state dicts -> `RecurrentStack` params.

Nothing is imported here, so `import zoo.convert.torch_rnn` stays free of torch.
"""
