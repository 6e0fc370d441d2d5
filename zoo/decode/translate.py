"""Text to text with a trained seq2seq model: encode sources, decode greedily or by beam search
(`zoo.decode.search`), turn the ids back into text.

`translate` batches the sources at a fixed shape (padding the last batch) so decoding compiles
once. Metrics over the outputs are in `zoo.eval.translation_metrics`.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from zoo.data.pipelines.char_vocab import CharVocab
from zoo.data.pipelines.padding import pad_rows
from zoo.decode.search import beam_search, greedy_search
from zoo.special_tokens import UNK_ID


def encode_sources(vocab: CharVocab, texts: Sequence[str], seq_len: int, *,
                   reverse_source: bool = False, unknown: str = "error") -> np.ndarray:
    """texts -> (N, seq_len) int32 ids padded with PAD_ID; a too-long text is a ValueError."""
    rows = [vocab.encode(text[::-1] if reverse_source else text, unknown=unknown)
            for text in texts]
    for text, ids in zip(texts, rows):
        if len(ids) > seq_len:
            raise ValueError(f"source {text!r} has {len(ids)} characters; the model was trained "
                             f"with seq_len={seq_len}. Shorten it.")
    return pad_rows(rows, seq_len)


def translate(decoder: Any, params: Any, vocab: CharVocab, texts: Sequence[str], *,
              seq_len: int, max_len: int, batch_size: int = 128, beam_size: int = 1,
              length_penalty: float = 0.6, reverse_source: bool = False,
              unknown: str = "error") -> list[str]:
    """Decoded output strings, one per text. `max_len` bounds the output tokens (EOS included)."""
    sources = encode_sources(vocab, texts, seq_len, reverse_source=reverse_source,
                             unknown=unknown)
    outputs: list[str] = []
    for lo in range(0, len(sources), batch_size):
        batch = sources[lo:lo + batch_size]
        real = len(batch)
        if real < batch_size:  # pad to one shape: a single compilation
            batch = np.concatenate([batch, np.repeat(batch[-1:], batch_size - real, 0)])
        if beam_size == 1:
            tokens = greedy_search(decoder, params, batch, max_len=max_len)  # (B, max_len)
        else:
            tokens, _ = beam_search(decoder, params, batch, beam_size=beam_size,
                                    max_len=max_len, length_penalty=length_penalty)
            tokens = tokens[:, 0]  # the best beam
        outputs += [vocab.decode(row) for row in in_vocab(vocab, tokens[:real])]
    return outputs


def in_vocab(vocab: CharVocab, tokens: Any) -> np.ndarray:
    """Ids the vocabulary lacks (a model vocab_size larger than the data's) -> UNK_ID."""
    tokens = np.asarray(tokens)
    return np.where(tokens < vocab.size, tokens, UNK_ID)


def translation_samples(decoder: Any, params: Any, vocab: CharVocab, batch: dict[str, Any], *,
                        num_samples: int, max_len: int, reverse_source: bool = False) -> list[str]:
    """"source -> output (reference: target)" lines for the first rows of an eval batch."""
    inputs = np.asarray(batch["inputs"])[:num_samples]
    tokens = in_vocab(vocab, greedy_search(decoder, params, inputs, max_len=max_len))
    lines = []
    for source_ids, output_ids, target_ids in zip(inputs, tokens, batch["targets"]):
        source = vocab.decode(source_ids)
        lines.append(f"{source[::-1] if reverse_source else source!r} -> "
                     f"{vocab.decode(output_ids)!r} (reference: {vocab.decode(target_ids)!r})")
    return lines
