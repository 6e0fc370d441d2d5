"""Translate texts with a trained seq2seq model and score the output.

Metrics (`translation_metrics`):
* exact_match: share of outputs equal to their reference string;
* token_accuracy: share of reference tokens (characters, plus the final EOS) that the output
  has at the same position;
* bleu: corpus BLEU of sacrebleu (default 13a tokenisation). For character-level data such
  as numbers in words, the words are the tokens sacrebleu scores.

`translate` batches the sources at a fixed shape (padding the last batch) so decoding compiles
once, and decodes greedily or with beam search through `zoo.decode.search`.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import sacrebleu

from zoo.data.seq2seq import pad_rows
from zoo.data.vocab import EOS_ID, UNK_ID, CharVocab
from zoo.decode.search import beam_search, greedy_search


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
        outputs += [vocab.decode(row) for row in _in_vocab(vocab, tokens[:real])]
    return outputs


def _in_vocab(vocab: CharVocab, tokens: Any) -> np.ndarray:
    """Ids the vocabulary lacks (a model vocab_size larger than the data's) -> UNK_ID."""
    tokens = np.asarray(tokens)
    return np.where(tokens < vocab.size, tokens, UNK_ID)


def token_accuracy(vocab: CharVocab, hypotheses: Sequence[str],
                   references: Sequence[str]) -> float:
    """Share of reference tokens (+ EOS) matched position by position by the hypothesis."""
    correct = total = 0
    for hyp, ref in zip(hypotheses, references, strict=True):
        ref_ids = np.append(vocab.encode(ref, unknown="unk"), EOS_ID)
        hyp_ids = np.append(vocab.encode(hyp, unknown="unk"), EOS_ID)[:len(ref_ids)]
        correct += int(np.sum(hyp_ids == ref_ids[:len(hyp_ids)]))
        total += len(ref_ids)
    return correct / max(total, 1)


def translation_metrics(vocab: CharVocab, hypotheses: Sequence[str],
                        references: Sequence[str]) -> dict[str, float]:
    """{"exact_match", "token_accuracy", "bleu", "num_examples"} of outputs vs references."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references.")
    exact = float(np.mean([h == r for h, r in zip(hypotheses, references)])) if references else 0.0
    return {"exact_match": exact,
            "token_accuracy": token_accuracy(vocab, hypotheses, references),
            "bleu": float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score),
            "num_examples": len(references)}


def translation_samples(decoder: Any, params: Any, vocab: CharVocab, batch: dict[str, Any], *,
                        num_samples: int, max_len: int, reverse_source: bool = False) -> list[str]:
    """"source -> output (reference: target)" lines for the first rows of an eval batch."""
    inputs = np.asarray(batch["inputs"])[:num_samples]
    tokens = _in_vocab(vocab, greedy_search(decoder, params, inputs, max_len=max_len))
    lines = []
    for source_ids, output_ids, target_ids in zip(inputs, tokens, batch["targets"]):
        source = vocab.decode(source_ids)
        lines.append(f"{source[::-1] if reverse_source else source!r} -> "
                     f"{vocab.decode(output_ids)!r} (reference: {vocab.decode(target_ids)!r})")
    return lines
