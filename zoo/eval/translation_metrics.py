"""Scores of translations against their references (`translation_metrics`):
* exact_match: share of outputs equal to their reference string;
* token_accuracy: share of reference tokens (characters, plus the final EOS) that the output
  has at the same position;
* bleu: corpus BLEU of sacrebleu (default 13a tokenisation). For character-level data such
  as numbers in words, the words are the tokens sacrebleu scores.

The translations themselves come from `zoo.decode.translate`.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import sacrebleu

from zoo.data.pipelines.char_vocab import CharVocab
from zoo.special_tokens import EOS_ID


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


