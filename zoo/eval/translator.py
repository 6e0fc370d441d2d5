"""A trained seq2seq workdir, ready to translate: `load_translator(workdir)(texts)`.

Also the attention heatmap of one translation (`Translator.attention`, `save_heatmap`).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any


@dataclasses.dataclass
class Translator:
    """A trained seq2seq model ready to translate: `translator(texts) -> outputs`."""

    model: Any
    decoder: Any
    params: Any
    vocab: Any
    meta: dict[str, Any]
    step: int

    @property
    def config(self) -> dict[str, Any]:
        return self.meta["config"]

    def __call__(self, texts, *, beam_size: int = 1, length_penalty: float = 0.6,
                 batch_size: int = 250, unknown: str = "error",
                 max_len: int | None = None) -> list[str]:
        """`max_len`: output tokens at most (default and cap: the run's seq_len)."""
        from zoo.decode.translate import translate

        empty = [i for i, text in enumerate(texts) if not text]
        if empty:
            raise ValueError(f"text {empty[0]} of {len(texts)} is empty: there is nothing to "
                             "translate; pass the source sentence.")
        seq_len = self.config["seq_len"]
        return translate(self.decoder, self.params, self.vocab, texts, seq_len=seq_len,
                         max_len=seq_len if max_len is None else min(max_len, seq_len),
                         batch_size=min(batch_size, len(texts)), beam_size=beam_size,
                         length_penalty=length_penalty,
                         reverse_source=self.config.get("reverse_source", False),
                         unknown=unknown)

    def attention(self, text: str, output: str):
        """Attention weights (output chars + EOS, source chars) of the teacher-forced output."""
        import numpy as np

        from zoo.decode.translate import encode_sources
        from zoo.special_tokens import EOS_ID
        from zoo.tasks.seq2seq import shift_right

        reverse = self.config.get("reverse_source", False)
        inputs = encode_sources(self.vocab, [text], len(text), reverse_source=reverse,
                                unknown="unk")
        targets = np.append(self.vocab.encode(output, unknown="unk"), EOS_ID)[None]
        try:
            _, weights = self.model.apply({"params": self.params}, inputs, shift_right(targets),
                                          return_attention=True)
        except TypeError:
            weights = None  # the model's __call__ has no return_attention
        if weights is None:
            raise ValueError(f"model {self.meta['model']!r} does not return attention "
                             "weights; use a seq2seq model with attention.")
        weights = np.asarray(weights[0])  # (T, S)
        return weights[:, ::-1] if reverse else weights


def load_translator(workdir: str, step: int | None = None) -> Translator:
    from zoo.train.workdir import load_trained

    return translator_from(workdir, *load_trained(workdir, step))


def translator_from(workdir: str, spec, model, params, meta) -> Translator:
    """A Translator from what `zoo.train.workdir.load_trained(workdir)` returned."""
    from zoo.data.pipelines.char_vocab import CharVocab
    from zoo.train.workdir import VOCAB_FILE

    if spec.task != "seq2seq":
        raise ValueError(f"{workdir} holds {meta['model']!r}, a {spec.task} model; translate "
                         "needs a seq2seq model.")
    vocab = CharVocab.load(os.path.join(workdir, VOCAB_FILE))
    return Translator(model, spec.decoder_cls(model), params, vocab, meta, meta["step"])


def save_heatmap(weights, source: str, output: str, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(output) + ["</s>"]
    fig, ax = plt.subplots(figsize=(max(4, 0.25 * len(source)), max(3, 0.25 * len(rows))))
    ax.imshow(weights, cmap="Greys", aspect="auto", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(source)), list(source), fontsize=7)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    ax.set_xlabel("source")
    ax.set_ylabel("output")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
