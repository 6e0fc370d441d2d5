"""Hugging Face tokenizers beside imported checkpoints (`zoo.convert.hf_tokenizer`): GPT-2's
byte-level BPE and BERT's WordPiece, trained offline on the embedded corpus, give the ids
`transformers` gives; experiments.generate continues a text prompt on a GPT-2 directory."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from zoo.convert.hf_tokenizer import load_hf_tokenizer
from zoo.data.pipelines.lm_batches import load_texts

tokenizers = pytest.importorskip("tokenizers")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STRINGS = ["The zoo's café", "  two  spaces\tand a tab\n\nnew paragraph", "unseen: 日本語 🦀",
           "end<|endoftext|>start"]


@pytest.fixture(scope="module")
def texts():
    return load_texts("zoo_text", "train")[:150]


@pytest.fixture(scope="module")
def gpt2_tokenizer_dir(tmp_path_factory, texts):
    """GPT-2's files: vocab.json + merges.txt of a byte-level BPE trained on the corpus."""
    bpe = tokenizers.ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=400, special_tokens=["<|endoftext|>"],
                            show_progress=False)
    path = tmp_path_factory.mktemp("gpt2_tokenizer")
    bpe.save_model(str(path))
    return path, bpe


@pytest.fixture(scope="module")
def bert_tokenizer_dir(tmp_path_factory, texts):
    """BERT's file: vocab.txt of a WordPiece trained on the corpus."""
    wordpiece = tokenizers.BertWordPieceTokenizer(lowercase=True)
    wordpiece.train_from_iterator(texts, vocab_size=500, show_progress=False)
    path = tmp_path_factory.mktemp("bert_tokenizer")
    wordpiece.save_model(str(path))
    return path


def test_gpt2_byte_level_bpe_round_trips_and_matches_transformers(gpt2_tokenizer_dir):
    path, _ = gpt2_tokenizer_dir
    tokenizer = load_hf_tokenizer(path)
    assert tokenizer.vocab_size == 400
    for text in STRINGS:
        ids = tokenizer.encode(text)
        assert ids.dtype == np.int32 and tokenizer.decode(ids) == text
    eot = tokenizer.encode("<|endoftext|>")
    assert eot.tolist() == [tokenizer.token_to_id("<|endoftext|>")]  # one special token
    transformers = pytest.importorskip("transformers")
    reference = transformers.AutoTokenizer.from_pretrained(str(path), tokenizer_type="gpt2")
    for text in STRINGS:
        assert tokenizer.encode(text).tolist() == reference(text)["input_ids"]


def test_tokenizer_json_is_read_first(gpt2_tokenizer_dir, tmp_path):
    path, bpe = gpt2_tokenizer_dir
    bpe.save(str(tmp_path / "tokenizer.json"))
    from_json, from_files = load_hf_tokenizer(tmp_path), load_hf_tokenizer(path)
    for text in STRINGS[:3]:
        np.testing.assert_array_equal(from_json.encode(text), from_files.encode(text))
        assert from_json.decode(from_json.encode(text)) == text


def test_bert_wordpiece_matches_transformers(bert_tokenizer_dir, tmp_path):
    tokenizer = load_hf_tokenizer(bert_tokenizer_dir)
    text = "The Zoo's café, naïve!  x"
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == "the zoo ' s cafe, naive! x"  # WordPiece normalises
    with_specials = tokenizer.encode(text, add_special_tokens=True)
    assert with_specials[0] == tokenizer.token_to_id("[CLS]")
    assert with_specials[-1] == tokenizer.token_to_id("[SEP]")
    transformers = pytest.importorskip("transformers")
    reference = transformers.BertTokenizerFast.from_pretrained(str(bert_tokenizer_dir))
    assert with_specials.tolist() == reference(text)["input_ids"]

    cased = tmp_path / "cased"  # tokenizer_config.json's do_lower_case is honoured
    cased.mkdir()
    (cased / "vocab.txt").write_text((bert_tokenizer_dir / "vocab.txt").read_text())
    (cased / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False}))
    assert load_hf_tokenizer(cased).encode("The").tolist() != tokenizer.encode("The").tolist()


def test_a_directory_without_tokenizer_files_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no tokenizer in .*tokenizer\.json, vocab\.json "
                                                r"\+ merges\.txt, vocab\.txt"):
        load_hf_tokenizer(tmp_path)


@pytest.mark.slow
def test_generate_continues_a_prompt_on_an_imported_gpt2(gpt2_tokenizer_dir, tmp_path):
    """A tiny GPT-2 saved by transformers with its tokenizer files: experiments.generate's greedy
    continuation is the text transformers' own greedy generate gives."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    path, _ = gpt2_tokenizer_dir
    for name in ("vocab.json", "merges.txt"):
        (tmp_path / name).write_bytes((path / name).read_bytes())
    tokenizer = load_hf_tokenizer(tmp_path)
    config = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                     vocab_size=tokenizer.vocab_size)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for p in model.parameters():  # away from the init, so the argmax is decisive
            p.add_(0.3 * torch.randn(p.shape))
    model.save_pretrained(tmp_path)
    prompt, new = "The zoo", 8
    ids = torch.tensor([tokenizer.encode(prompt).tolist()])
    with torch.no_grad():
        generated = ids
        for _ in range(new):  # greedy, written out: no generation config to depend on
            next_id = model(generated).logits[:, -1].argmax(-1, keepdim=True)
            generated = torch.cat([generated, next_id], dim=1)
    expected = prompt + tokenizer.decode(generated[0, ids.shape[1]:].numpy())

    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-m", "experiments.generate", "--workdir",
                          str(tmp_path), "--prompt", prompt, "--temperature", "0",
                          "--max_new_tokens", str(new)], capture_output=True, text=True,
                         env=env, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n" + "-" * 40)[0] == expected
