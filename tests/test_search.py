"""Greedy decoding and beam search (zoo.decode.search) against brute force on network-free decoders.

The toy decoder is a position-dependent second-order Markov chain: the logits of target position
i are a[i, previous token] + b[i, token before it], the first two "previous tokens" being the two
source ids. Its state must be reordered correctly by beam search (the token before the previous
one comes from the parent beam), and every sequence's log-probability is easy to compute in numpy.
"""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import zoo
from zoo.decode import search
from zoo.decode.search import beam_search, greedy_search
from zoo.models.gpt import GPTDecoder
from zoo.special_tokens import EOS_ID, PAD_ID


class MarkovDecoder:
    """params = {"a": (L, V, V), "b": (L, V, V)}; inputs (B, 2): the two initial context tokens.

    State: batch-major (B,) leaves plus a scalar step counter (kept as is by the default gather).
    """

    def start(self, params, inputs):
        state = {"prev": inputs[:, 0], "prev2": inputs[:, 1], "t": jnp.array(0, jnp.int32)}
        return self._logits(params, state), state

    def step(self, params, state, token):
        state = {"prev": token, "prev2": state["prev"], "t": state["t"] + 1}
        return self._logits(params, state), state

    @staticmethod
    def _logits(params, state):
        t = state["t"]
        return params["a"][t][state["prev"]] + params["b"][t][state["prev2"]]


class TimeMajorMarkovDecoder:
    """The same chain with a (2, B) history leaf: batch on axis 1, so it needs gather_state."""

    def start(self, params, inputs):
        state = {"history": inputs[:, :2].T, "t": jnp.array(0, jnp.int32)}  # rows: prev, prev2
        return self._logits(params, state), state

    def step(self, params, state, token):
        history = jnp.stack([token, state["history"][0]])
        state = {"history": history, "t": state["t"] + 1}
        return self._logits(params, state), state

    def gather_state(self, state, index):
        return {"history": jnp.take(state["history"], index, axis=1), "t": state["t"]}

    @staticmethod
    def _logits(params, state):
        t = state["t"]
        return params["a"][t][state["history"][0]] + params["b"][t][state["history"][1]]


class CountingDecoder(MarkovDecoder):
    """Counts the `step` calls actually executed (a host callback inside the compiled loop)."""

    def __init__(self):
        self.steps = 0

    def _count(self):
        self.steps += 1

    def step(self, params, state, token):
        jax.debug.callback(self._count)
        return super().step(params, state, token)


MARKOV, TIME_MAJOR = MarkovDecoder(), TimeMajorMarkovDecoder()  # one jit cache entry each


def random_chain(seed, *, vocab, length, eos_boost=0.0, scale=2.0):
    rng = np.random.default_rng(seed)
    a = scale * rng.standard_normal((length, vocab, vocab)).astype(np.float32)
    b = scale * rng.standard_normal((length, vocab, vocab)).astype(np.float32)
    a[:, :, EOS_ID] += eos_boost
    return {"a": a, "b": b}


def next_logp(params, source, prefix):
    """log p(next token | prefix) (V,) in float64, for source (2,) and a tuple of emitted tokens."""
    prev, prev2 = int(source[0]), int(source[1])
    for token in prefix:
        prev, prev2 = token, prev
    t = len(prefix)
    logits = params["a"][t, prev].astype(np.float64) + params["b"][t, prev2]
    return logits - np.logaddexp.reduce(logits)


def sequence_logp(params, source, seq):
    return sum(next_logp(params, source, tuple(seq[:i]))[tok] for i, tok in enumerate(seq))


def penalty(length, alpha):
    return ((5.0 + length) / 6.0) ** alpha


def padded(seq, max_len):
    return list(seq) + [PAD_ID] * (max_len - len(seq))


def numpy_greedy(params, source, max_len):
    seq = []
    while len(seq) < max_len and EOS_ID not in seq:
        seq.append(int(np.argmax(next_logp(params, source, tuple(seq)))))
    return seq


def brute_force_beams(params, source, *, vocab, max_len, beam_size, alpha):
    """Every finished sequence best first, then every EOS-free one of length max_len, top K."""
    symbols = [v for v in range(vocab) if v != EOS_ID]
    finished, unfinished = [], []
    for n in range(1, max_len + 1):
        for body in itertools.product(symbols, repeat=n - 1):
            seq = body + (EOS_ID,)
            finished.append((seq, sequence_logp(params, source, seq) / penalty(n, alpha)))
    for seq in itertools.product(symbols, repeat=max_len):
        unfinished.append((seq, sequence_logp(params, source, seq) / penalty(max_len, alpha)))
    ranked = sorted(finished, key=lambda c: -c[1]) + sorted(unfinished, key=lambda c: -c[1])
    return ranked[:beam_size]


def numpy_beam_search(params, source, *, vocab, max_len, beam_size, alpha):
    """The alive/finished formulation without early stopping: top 2K candidates per step."""
    alive, finished = [((), 0.0)], []
    for t in range(max_len):
        cands = [(seq + (v,), logp + step_logp[v])
                 for seq, logp in alive
                 for step_logp in [next_logp(params, source, seq)]
                 for v in range(vocab)]
        cands = sorted(cands, key=lambda c: -c[1])[:2 * beam_size]
        alive = [c for c in cands if c[0][-1] != EOS_ID][:beam_size]
        finished += [(seq, logp / penalty(t + 1, alpha)) for seq, logp in cands
                     if seq[-1] == EOS_ID]
        finished = sorted(finished, key=lambda c: -c[1])[:beam_size]
    fill = [(seq, logp / penalty(max_len, alpha)) for seq, logp in alive]
    return (finished + fill)[:beam_size]


def check_beams(tokens, scores, expected, max_len):
    for k, (seq, score) in enumerate(expected):
        np.testing.assert_array_equal(tokens[k], padded(seq, max_len), err_msg=f"beam {k}")
        np.testing.assert_allclose(scores[k], score, rtol=1e-5, atol=1e-5, err_msg=f"beam {k}")


def test_greedy_is_the_stepwise_argmax_path():
    vocab, max_len = 7, 6
    params = random_chain(0, vocab=vocab, length=max_len, eos_boost=1.0)
    sources = np.random.default_rng(1).integers(0, vocab, (8, 2)).astype(np.int32)
    tokens = np.asarray(greedy_search(MARKOV, params, jnp.asarray(sources),
                                      max_len=max_len))
    assert tokens.shape == (8, max_len) and tokens.dtype == np.int32
    for row, source in zip(tokens, sources):
        np.testing.assert_array_equal(row, padded(numpy_greedy(params, source, max_len), max_len))


def test_rows_ending_at_different_steps_are_padded_after_eos():
    vocab, max_len = 6, 5
    params = random_chain(2, vocab=vocab, length=max_len, scale=0.1)
    # Planted greedy paths (source = (s, 0)): 3 -> EOS; 4 -> 5 4 EOS; 5 -> 3 3 3 3 3 (no EOS).
    for s, path in [(3, [EOS_ID]), (4, [5, 4, EOS_ID]), (5, [3, 3, 3, 3, 3])]:
        prev = s
        for i, tok in enumerate(path):
            params["a"][i, prev, tok] += 10.0
            prev = tok
    sources = jnp.array([[3, 0], [4, 0], [5, 0]], jnp.int32)
    expected = [[EOS_ID, 0, 0, 0, 0], [5, 4, EOS_ID, 0, 0], [3, 3, 3, 3, 3]]
    tokens = greedy_search(MARKOV, params, sources, max_len=max_len)
    np.testing.assert_array_equal(tokens, expected)

    beams, scores = beam_search(MARKOV, params, sources, beam_size=3, max_len=max_len,
                                length_penalty=0.0)
    np.testing.assert_array_equal(beams[:2, 0], expected[:2])  # the planted paths win
    for row in np.asarray(beams).reshape(-1, max_len):  # every beam: PAD after its first EOS
        ends = np.flatnonzero(row == EOS_ID)
        if ends.size:
            assert (row[ends[0] + 1:] == PAD_ID).all(), row
    assert np.isfinite(np.asarray(scores)).all()
    assert (np.diff(np.asarray(scores), axis=1) <= 1e-6).all()


@pytest.mark.parametrize("alpha", [0.0, 0.6])
def test_large_beam_is_exact_search(alpha):
    # V=5, L=4: 85 EOS-ended sequences and 256 unfinished ones; K=256 prunes nothing, so the
    # beams are every finished sequence best first, then the 171 best unfinished ones.
    vocab, max_len, beam_size = 5, 4, 256
    params = random_chain(3, vocab=vocab, length=max_len, eos_boost=0.5)
    sources = np.array([[3, 4], [0, 2]], np.int32)
    tokens, scores = beam_search(MARKOV, params, jnp.asarray(sources),
                                 beam_size=beam_size, max_len=max_len, length_penalty=alpha)
    assert tokens.shape == (2, beam_size, max_len) and tokens.dtype == jnp.int32
    assert scores.shape == (2, beam_size) and scores.dtype == jnp.float32
    for b, source in enumerate(sources):
        expected = brute_force_beams(params, source, vocab=vocab, max_len=max_len,
                                     beam_size=beam_size, alpha=alpha)
        check_beams(np.asarray(tokens[b]), np.asarray(scores[b]), expected, max_len)


@pytest.mark.parametrize("alpha, eos_boost, stops_early", [
    (0.0, 2.0, True),
    (0.6, 2.0, True),
    # A strong length bonus: short finished beams must not stop the search, since longer alive
    # ones can still win (the bound uses lp(max_len); lp(t + 1) would stop at step 6 here).
    (2.0, 3.0, False),
])
def test_small_beam_matches_reference_and_stops_early(alpha, eos_boost, stops_early):
    vocab, max_len, beam_size = 6, 10, 3
    params = random_chain(4, vocab=vocab, length=max_len, eos_boost=eos_boost)
    sources = np.random.default_rng(5).integers(0, vocab, (4, 2)).astype(np.int32)
    decoder = CountingDecoder()
    tokens, scores = beam_search(decoder, params, jnp.asarray(sources), beam_size=beam_size,
                                 max_len=max_len, length_penalty=alpha)
    jax.effects_barrier()
    assert (0 < decoder.steps < max_len - 1) if stops_early else decoder.steps == max_len - 1
    for b, source in enumerate(sources):
        expected = numpy_beam_search(params, source, vocab=vocab, max_len=max_len,
                                     beam_size=beam_size, alpha=alpha)
        check_beams(np.asarray(tokens[b]), np.asarray(scores[b]), expected, max_len)
        for k in range(beam_size):  # the scores are the beams' own length-penalised log-probs
            seq = [int(x) for x in tokens[b, k]]
            n = seq.index(EOS_ID) + 1 if EOS_ID in seq else max_len
            recomputed = sequence_logp(params, source, seq[:n]) / penalty(n, alpha)
            np.testing.assert_allclose(scores[b, k], recomputed, rtol=1e-5)


def test_greedy_stops_when_every_row_has_ended():
    vocab, max_len = 6, 8
    params = random_chain(6, vocab=vocab, length=max_len)
    params["a"][2, :, EOS_ID] += 50.0  # every row ends at position 2
    decoder = CountingDecoder()
    tokens = greedy_search(decoder, params, jnp.array([[3, 4], [5, 0]], jnp.int32),
                           max_len=max_len)
    jax.effects_barrier()
    assert decoder.steps == 2
    assert (np.asarray(tokens)[:, 2] == EOS_ID).all() and (np.asarray(tokens)[:, 3:] == 0).all()


@pytest.mark.parametrize("alpha", [0.0, 0.6, 2.0])
def test_beam_size_one_is_greedy(alpha):
    vocab, max_len = 6, 7
    params = random_chain(7, vocab=vocab, length=max_len, eos_boost=1.0)
    sources = np.random.default_rng(8).integers(0, vocab, (6, 2)).astype(np.int32)
    greedy = greedy_search(MARKOV, params, jnp.asarray(sources), max_len=max_len)
    tokens, scores = beam_search(MARKOV, params, jnp.asarray(sources), beam_size=1,
                                 max_len=max_len, length_penalty=alpha)
    assert tokens.shape == (6, 1, max_len) and scores.shape == (6, 1)
    np.testing.assert_array_equal(tokens[:, 0], greedy)
    for b, source in enumerate(sources):
        seq = numpy_greedy(params, source, max_len)
        expected = sequence_logp(params, source, seq) / penalty(len(seq), alpha)
        np.testing.assert_allclose(scores[b, 0], expected, rtol=1e-5)


def test_gather_state_reorders_a_non_batch_major_state():
    vocab, max_len = 6, 6
    params = random_chain(9, vocab=vocab, length=max_len, eos_boost=0.5)
    sources = jnp.asarray(np.random.default_rng(10).integers(0, vocab, (3, 2)), jnp.int32)
    expected = beam_search(MARKOV, params, sources, beam_size=3, max_len=max_len)
    got = beam_search(TIME_MAJOR, params, sources, beam_size=3, max_len=max_len)
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_allclose(got[1], expected[1], rtol=1e-6)
    np.testing.assert_array_equal(
        greedy_search(TIME_MAJOR, params, sources, max_len=max_len),
        greedy_search(MARKOV, params, sources, max_len=max_len))


def test_compiles_once_per_decoder_and_shapes():
    decoder, vocab, max_len = MarkovDecoder(), 5, 4
    sources = jnp.array([[3, 4]], jnp.int32)
    greedy_before = search._greedy._cache_size()
    beam_before = search._beam_search._cache_size()
    for seed in (11, 12):
        params = random_chain(seed, vocab=vocab, length=max_len)
        greedy_search(decoder, params, sources, max_len=max_len)
        beam_search(decoder, params, sources, beam_size=2, max_len=max_len)
    assert search._greedy._cache_size() == greedy_before + 1
    assert search._beam_search._cache_size() == beam_before + 1


def test_argument_errors():
    params = random_chain(13, vocab=5, length=4)
    sources = jnp.array([[3, 4]], jnp.int32)
    with pytest.raises(ValueError, match="beam_size"):
        beam_search(MARKOV, params, sources, beam_size=0, max_len=4)
    with pytest.raises(ValueError, match="beam_size"):
        beam_search(MARKOV, params, sources, beam_size=2.0, max_len=4)
    with pytest.raises(ValueError, match="max_len"):
        beam_search(MARKOV, params, sources, beam_size=2, max_len=0)
    with pytest.raises(ValueError, match="max_len"):
        greedy_search(MARKOV, params, sources, max_len=-1)
    with pytest.raises(ValueError, match="inputs"):
        greedy_search(MARKOV, params, sources[0], max_len=4)
    with pytest.raises(ValueError, match="length_penalty"):
        beam_search(MARKOV, params, sources, beam_size=2, max_len=4,
                    length_penalty=float("nan"))
    with pytest.raises(ValueError, match="eos_id"):
        greedy_search(MARKOV, params, sources, max_len=4, eos_id=5)


def test_gpt_decoder_beam_one_is_greedy_and_scores_are_the_models():
    model = zoo.create_model("gpt_tiny", num_layers=1, emb_dim=32, num_heads=2, mlp_dim=64,
                             max_len=16, vocab_size=16, dropout_rate=0.0)
    prompt = jax.random.randint(jax.random.key(1), (2, 3), 0, 16)
    params = jax.jit(model.init)(jax.random.key(0), prompt)["params"]
    decoder, max_len, alpha = GPTDecoder(model), 8, 0.6
    greedy = greedy_search(decoder, params, prompt, max_len=max_len)
    beam1, _ = beam_search(decoder, params, prompt, beam_size=1, max_len=max_len)
    np.testing.assert_array_equal(beam1[:, 0], greedy)

    tokens, scores = beam_search(decoder, params, prompt, beam_size=3, max_len=max_len,
                                 length_penalty=alpha)
    assert tokens.shape == (2, 3, max_len) and scores.shape == (2, 3)
    # Teacher-forced log-probs of every beam in one forward pass (causal: padding after is inert).
    beams = np.asarray(tokens).reshape(6, max_len)
    full = jnp.concatenate([jnp.repeat(prompt, 3, axis=0), jnp.asarray(beams[:, :-1])], axis=1)
    logp = np.asarray(jax.nn.log_softmax(jax.jit(model.apply)({"params": params}, full)[:, 2:], axis=-1))
    for row, (seq, score) in enumerate(zip(beams, np.asarray(scores).reshape(6))):
        seq = [int(x) for x in seq]
        n = seq.index(EOS_ID) + 1 if EOS_ID in seq else max_len
        total = sum(logp[row, i, seq[i]] for i in range(n))
        np.testing.assert_allclose(score, total / penalty(n, alpha), rtol=1e-4, atol=1e-5)


def test_the_beam_loop_itself_with_one_beam_and_no_length_penalty_is_greedy():
    """Without a length penalty no continuation can outscore an ended hypothesis, so the
    alive/finished loop with K = 1 must follow the greedy path (beam_search(K=1) skips it)."""
    from zoo.decode.search import _beam_search

    vocab, max_len = 6, 7
    params = random_chain(7, vocab=vocab, length=max_len, eos_boost=1.0)
    sources = jnp.asarray(np.random.default_rng(9).integers(0, vocab, (16, 2)), jnp.int32)
    greedy = greedy_search(MARKOV, params, sources, max_len=max_len)
    tokens, _ = _beam_search(MARKOV, params, sources, 1, max_len, EOS_ID, 0.0)
    np.testing.assert_array_equal(tokens[:, 0], greedy)
