"""rnnkit.decoding: the sampling loop, temperature, top-k/top-p, beam search and
completion on tiny hand-made models; the fast LSTM step against LSTMCell."""

from __future__ import annotations

import itertools
import math
from functools import partial

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import rnnkit
from rnnkit import decoding
from rnnkit._stepper import LMStepper
from rnnkit.checkpoint import save_checkpoint
from rnnkit.cli import main
from rnnkit.data.corpora import Vocab
from rnnkit.decoding import (
    apply_temperature,
    beam_search,
    complete,
    decode,
    filter_logits,
    greedy,
    length_penalty,
    next_token,
    sample,
    select_state,
)
from rnnkit.tasks import charlm
from rnnkit.tasks.charlm import CharLM, CharLMConfig

# -- tiny models given as step functions ----------------------------------------------------

# A bigram model over 4 tokens: P[a, b] = P(next b | previous a). Its argmax chain from
# 0 is 0 -> 2 -> 1 -> 3 -> 3 -> ...
BIGRAM = torch.tensor(
    [
        [0.1, 0.2, 0.6, 0.1],
        [0.1, 0.1, 0.2, 0.6],
        [0.2, 0.5, 0.1, 0.2],
        [0.3, 0.1, 0.1, 0.5],
    ]
)


def bigram_step(ids, state):
    """scores (N, 4) = log P[ids]; the state counts the steps (N,)."""
    return BIGRAM[ids].log(), state + 1


def trigram_table(V: int = 4, seed: int = 0) -> torch.Tensor:
    """P[a, b, c] = P(next c | the two before a, b): random, all probabilities distinct."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(V, V, V, generator=g, dtype=torch.float64).add(0.05).softmax(-1)


def trigram_step(table: torch.Tensor):
    """A model whose state (the token before the previous, (N,)) matters: a wrong
    reordering of the state by beam search would give wrong probabilities."""

    def step(ids, state):
        return table[state, ids].log(), ids.clone()  # (N, V), the new state

    return step


def brute_force(table, before, first, end, max_length, alpha):
    """Every sequence the beam search can return, with log P and score, best first.

    Finished: non-end tokens then an end (at most max_length tokens in all); unfinished:
    max_length non-end tokens."""
    V = table.shape[-1]
    others = [v for v in range(V) if v != end]
    out = []
    for length in range(max_length + 1):
        for seq in itertools.product(others, repeat=length):
            a, b, lp = before, first, 0.0
            for c in seq:
                lp += math.log(table[a, b, c])
                a, b = b, c
            if length < max_length:  # ... then the end
                lp += math.log(table[a, b, end])
                out.append((list(seq), lp, lp / length_penalty(length + 1, alpha), True))
            if length == max_length:
                out.append((list(seq), lp, lp / length_penalty(length, alpha), False))
    return sorted(out, key=lambda h: -h[2])


# -- the loop -------------------------------------------------------------------------------


def test_the_loop_feeds_each_choice_back_and_carries_the_state():
    seen = []

    def step(ids, state):
        seen.append(ids.tolist())
        return bigram_step(ids, state)

    out = list(decode(step, torch.tensor([0, 3]), torch.zeros(2), 4))
    assert [o.tolist() for o in out] == [[2, 3], [1, 3], [3, 3], [3, 3]]
    assert seen == [[0, 3], [2, 3], [1, 3], [3, 3]]  # each step reads the previous choice
    # the state is carried: a step function that reports it
    states = []
    list(decode(lambda i, s: states.append(s) or bigram_step(i, s), torch.tensor([0]), 5, 3))
    assert states == [5, 6, 7]


def test_greedy_stops_at_an_end_token_and_pads_after_it():
    seqs = greedy(bigram_step, torch.tensor([0, 2, 1]), torch.zeros(3), 6, end=3)
    # chains: 0 -> 2 1 3 | 2 -> 1 3 | 1 -> 3: the loop stops once every stream has ended
    assert seqs.tokens.tolist() == [[2, 1, 3], [1, 3, 3], [3, 3, 3]]
    assert seqs.lengths.tolist() == [3, 2, 1]
    seqs = greedy(bigram_step, torch.tensor([0]), torch.zeros(1), 6, end={1, 3})  # a set
    assert seqs.tokens.tolist() == [[2, 1]] and seqs.lengths.tolist() == [2]
    seqs = greedy(bigram_step, torch.tensor([0]), torch.zeros(1), 5)
    assert seqs.tokens.tolist() == [[2, 1, 3, 3, 3]] and seqs.lengths.tolist() == [5]
    assert greedy(bigram_step, torch.tensor([0]), torch.zeros(1), 0).tokens.shape == (1, 0)


# -- temperature, filtering, the draw ---------------------------------------------------------


def test_the_temperature_rule_divides_the_scores():
    s = torch.tensor([[1.0, 2.0, -3.0]])
    assert torch.equal(apply_temperature(s, 0.5), s * 2)
    assert apply_temperature(s, 1.0) is s
    a = np.array([[1.0, 2.0]], dtype=np.float32)
    out = apply_temperature(a, 4.0)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    np.testing.assert_array_equal(out, [[0.25, 0.5]])
    with pytest.raises(ValueError, match=r"`temperature`.*0"):
        apply_temperature(s, 0)


def test_temperature_towards_zero_is_greedy():
    ids = torch.tensor([0, 1, 2, 3])
    expected = greedy(bigram_step, ids, torch.zeros(4), 12).tokens
    assert torch.equal(sample(bigram_step, ids, torch.zeros(4), 12, temperature=0).tokens, expected)
    cold = sample(bigram_step, ids, torch.zeros(4), 12, temperature=1e-3, seed=0).tokens
    assert torch.equal(cold, expected)
    warm = sample(bigram_step, ids, torch.zeros(4), 12, temperature=1.0, seed=0).tokens
    assert not torch.equal(warm, expected)


@pytest.mark.parametrize("draw_with", ["numpy", "torch"])
@pytest.mark.parametrize("temperature", [1.0, 0.5, 2.0])
def test_sampling_frequencies_follow_softmax_of_scores_over_t(draw_with, temperature):
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    n = 40_000
    scores = probs.log().expand(n, -1).contiguous()  # (n, 4)
    if draw_with == "numpy":
        gen = np.random.default_rng(0)
    else:
        gen = torch.Generator().manual_seed(0)
    drawn = torch.as_tensor(next_token(scores, temperature=temperature, generator=gen))
    freq = torch.bincount(drawn, minlength=4).double() / n
    expected = (probs.double().log() / temperature).softmax(-1)  # p_i^(1/T) / sum
    sigma = (expected * (1 - expected) / n).sqrt()
    assert ((freq - expected).abs() <= 4 * sigma).all(), (freq, expected)


def test_numpy_scores_give_numpy_ids_and_draw_never_takes_minus_inf():
    scores = np.array([[math.log(0.5), math.log(0.5), -math.inf]] * 5000, dtype=np.float32)
    ids = next_token(scores, generator=np.random.default_rng(1))
    assert isinstance(ids, np.ndarray) and ids.shape == (5000,)
    assert set(ids.tolist()) == {0, 1}
    assert np.isfinite(scores).sum() == 10_000  # the input is left alone


def test_a_seed_fixes_the_sampled_sequences():
    ids = torch.tensor([0, 1, 2, 3] * 4)
    a = sample(bigram_step, ids, torch.zeros(16), 30, temperature=1.2, seed=5).tokens
    b = sample(bigram_step, ids, torch.zeros(16), 30, temperature=1.2, seed=5).tokens
    c = sample(bigram_step, ids, torch.zeros(16), 30, temperature=1.2, seed=6).tokens
    assert torch.equal(a, b) and not torch.equal(a, c)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    d = sample(bigram_step, ids, torch.zeros(16), 30, generator=g1).tokens
    assert torch.equal(d, sample(bigram_step, ids, torch.zeros(16), 30, generator=g2).tokens)


def test_top_k_and_top_p_keep_exactly_the_right_sets():
    # probabilities 0.05, 0.5, 0.15, 0.3 (ranked 1, 3, 2, 0); a second row reversed
    p = torch.tensor([[0.05, 0.5, 0.15, 0.3], [0.3, 0.15, 0.5, 0.05]])
    logits = p.log()

    def kept(**kw):
        out = filter_logits(logits, **kw)
        return [set(torch.isfinite(row).nonzero().flatten().tolist()) for row in out]

    assert kept(top_k=1) == [{1}, {2}]
    assert kept(top_k=2) == [{1, 3}, {2, 0}]
    assert kept(top_k=3) == [{1, 3, 2}, {2, 0, 1}]
    assert kept(top_k=4) == kept(top_k=10) == [{0, 1, 2, 3}] * 2
    assert kept(top_p=0.45) == [{1}, {2}]  # the most likely alone holds 0.5 >= 0.45
    assert kept(top_p=0.75) == [{1, 3}, {2, 0}]  # 0.5 < 0.75 <= 0.8
    assert kept(top_p=0.9) == [{1, 3, 2}, {2, 0, 1}]  # 0.8 < 0.9 <= 0.95
    assert kept(top_p=0.99) == kept(top_p=1.0) == [{0, 1, 2, 3}] * 2
    assert kept(top_k=3, top_p=0.75) == [{1, 3}, {2, 0}]  # both filters apply
    out = filter_logits(logits, top_k=2)
    torch.testing.assert_close(out[torch.isfinite(out)], logits[torch.isfinite(out)])
    # drawing after the filter never leaves the kept set
    g = torch.Generator().manual_seed(0)
    drawn = next_token(logits.repeat(500, 1), top_p=0.75, generator=g).view(500, 2)
    assert set(drawn[:, 0].tolist()) == {1, 3} and set(drawn[:, 1].tolist()) == {2, 0}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"temperature": -1.0}, r"`temperature`.*-1\.0"),
        ({"temperature": math.inf}, r"`temperature`.*inf"),
        ({"top_k": 0}, r"`top_k`.*0"),
        ({"top_p": 1.5}, r"`top_p`.*1\.5"),
        ({"top_p": 0.0}, r"`top_p`.*0\.0"),
        ({"end": "x"}, r"`end`.*'x'"),
    ],
)
def test_bad_sampling_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sample(bigram_step, torch.tensor([0]), torch.zeros(1), 5, **kwargs)
    with pytest.raises(ValueError, match=r"`max_length`.*-1"):
        sample(bigram_step, torch.tensor([0]), torch.zeros(1), -1)


# -- beam search ------------------------------------------------------------------------------


def test_select_state_follows_rows_through_nested_states():
    state = [(torch.arange(3), torch.arange(3) * 10), torch.arange(3)[:, None], None]
    state.append(np.array([5.0, 6.0, 7.0]))
    out = select_state(state, torch.tensor([2, 2, 0]))
    assert out[0][0].tolist() == [2, 2, 0] and out[0][1].tolist() == [20, 20, 0]
    assert out[1].tolist() == [[2], [2], [0]] and out[2] is None
    assert out[3].tolist() == [7.0, 7.0, 5.0]
    assert isinstance(out, list) and isinstance(out[0], tuple)


@pytest.mark.parametrize("alpha", [0.0, 0.6, 2.0])
def test_a_full_width_beam_ranks_every_sequence_as_brute_force_does(alpha):
    table = trigram_table()
    end, T = 3, 4
    found = beam_search(
        trigram_step(table), torch.tensor([1, 2]), torch.tensor([0, 2]), T,
        k=200, end=end, alpha=alpha, beam_size=3**T,
    )  # fmt: skip
    for n, (before, first) in enumerate([(0, 1), (2, 2)]):
        expected = brute_force(table, before, first, end, T, alpha)
        assert len(expected) == 1 + 3 + 9 + 27 + 81 == len(found[n])
        for h, (tokens, lp, score, finished) in zip(found[n], expected):
            assert h.tokens == tokens and h.finished == finished
            assert h.log_prob == pytest.approx(lp, abs=1e-5)
            assert h.score == pytest.approx(score, abs=1e-5)
    # a narrower k returns the head of the same ranking
    top3 = beam_search(
        trigram_step(table), torch.tensor([1]), torch.tensor([0]), T,
        k=3, end=end, alpha=alpha, beam_size=3**T,
    )[0]  # fmt: skip
    assert [h.tokens for h in top3] == [e[0] for e in brute_force(table, 0, 1, end, T, alpha)[:3]]


@pytest.mark.parametrize("seed", range(6))
def test_a_beam_of_one_is_greedy_decoding_ends_included(seed):
    """An end finishes a hypothesis only where it wins the beam's place, so width 1
    writes what greedy writes: where greedy ends, and unfinished where it never does."""
    table = trigram_table(V=5, seed=seed)
    starts, before = torch.tensor([0, 1, 2, 4]), torch.tensor([4, 0, 2, 1])
    step = trigram_step(table)
    g = greedy(step, starts, before, 6, end=3)
    found = beam_search(step, starts, before, 6, k=1, end=3)
    for n, (best,) in enumerate(found):
        tokens = g.tokens[n, : int(g.lengths[n])].tolist()
        assert best.tokens + [3] * best.finished == tokens
    # every end extension kept instead: unlikely early ends are finished hypotheses too
    every = beam_search(step, starts, before, 6, k=1, end=3, every_end=True)
    assert all(e[0].log_prob >= f[0].log_prob - 1e-12 for e, f in zip(every, found))


def test_the_length_penalty_reorders_as_the_formula_says():
    assert length_penalty(7, 0.0) == 1.0
    assert length_penalty(7, 0.6) == pytest.approx(2.0**0.6)  # ((5 + 7) / 6) ** alpha
    table = trigram_table()
    args = (trigram_step(table), torch.tensor([1]), torch.tensor([0]), 4)
    kw = dict(k=40, end=3, beam_size=81, keep_unfinished=False)  # all 40 finished ones
    plain = beam_search(*args, alpha=0.0, **kw)[0]
    penalised = beam_search(*args, alpha=1.5, **kw)[0]
    assert [h.tokens for h in plain] != [h.tokens for h in penalised]
    # the same hypotheses, ranked by log P / ((5 + len) / 6) ** 1.5 (end included)
    by_hand = sorted(plain, key=lambda h: -h.log_prob / ((5 + len(h.tokens) + 1) / 6) ** 1.5)
    assert len(plain) == len(penalised) == 40
    assert [h.tokens for h in penalised] == [h.tokens for h in by_hand]
    assert all(h.score == h.log_prob for h in plain)
    mean_len = [np.mean([len(h.tokens) for h in r[:10]]) for r in (plain, penalised)]
    assert mean_len[1] > mean_len[0]  # alpha > 0 favours longer outputs


def test_beam_search_results_are_sorted_and_a_narrow_beam_can_miss():
    table = trigram_table(seed=3)
    found = beam_search(trigram_step(table), torch.tensor([0]), torch.tensor([0]), 5, k=4, end=3)
    scores = [h.score for h in found[0]]
    assert len(found[0]) == 4 and scores == sorted(scores, reverse=True)
    best = brute_force(table, 0, 0, 3, 5, 0.0)[0]
    assert found[0][0].log_prob <= best[1] + 1e-9  # never better than the true best
    with pytest.raises(ValueError, match=r"`k`.*0"):
        beam_search(bigram_step, torch.tensor([0]), torch.zeros(1), 3, k=0)
    with pytest.raises(ValueError, match=r"`alpha`.*-1"):
        beam_search(bigram_step, torch.tensor([0]), torch.zeros(1), 3, alpha=-1)


def test_log_prob_scores_given_sequences_as_the_chain_rule_says():
    table = trigram_table(seed=1)
    step = trigram_step(table)
    seqs = [[2, 1, 0], [], [0, 0, 2, 1, 2]]
    first, before = torch.tensor([1, 2, 0]), torch.tensor([0, 2, 1])

    def by_hand(seq, a, b, end):
        lp = 0.0
        for c in seq + ([end] if end is not None else []):
            lp += math.log(table[a, b, c])
            a, b = b, c
        return lp

    for end in (None, 3):
        got = decoding.log_prob(step, first, before, seqs, end=end)
        assert got.shape == (3,) and got.dtype == torch.float64
        for n, seq in enumerate(seqs):
            assert float(got[n]) == pytest.approx(by_hand(seq, int(before[n]), int(first[n]), end))
    # an empty sequence without an end is certain
    assert float(decoding.log_prob(step, first, before, seqs)[1]) == 0.0
    # each hypothesis of beam search gets its own log_prob back, finished or not
    found = beam_search(step, first, before, 4, k=6, end=3, beam_size=8)
    for n, hyps in enumerate(found):
        for h in hyps:
            lp = decoding.log_prob(step, first[n : n + 1], before[n : n + 1], [h.tokens],
                                   end=3 if h.finished else None)  # fmt: skip
            assert float(lp[0]) == pytest.approx(h.log_prob, abs=1e-6)
    with pytest.raises(ValueError, match=r"`sequences`.*2 for 3"):
        decoding.log_prob(step, first, before, seqs[:2])


def test_minimum_bayes_risk_picks_the_candidate_of_the_highest_expected_utility():
    overlap = lambda a, b: len(set(a) & set(b)) / len(set(a) | set(b))  # noqa: E731
    # the likeliest candidate (0.34) shares nothing with the rest (0.66 together), which
    # agree with each other: the expected utility prefers one of them
    cands = [[9, 8], [1, 2, 3], [1, 2, 4], [1, 2, 5]]
    log_p = np.log([0.34, 0.22, 0.22, 0.22])
    p = np.exp(log_p)

    def by_hand(i):
        return sum(p[j] * overlap(cands[i], cands[j]) for j in range(len(cands)))

    expected = int(np.argmax([by_hand(i) for i in range(len(cands))]))
    assert expected == 1  # the first of the three equals
    assert decoding.minimum_bayes_risk(cands, log_p, overlap) == 1
    # without probabilities every candidate weighs the same: still one of the three
    assert decoding.minimum_bayes_risk(cands, None, overlap) == 1
    # one far likelier candidate is its own best bet
    assert decoding.minimum_bayes_risk(cands, np.log([0.97, 0.01, 0.01, 0.01]), overlap) == 0
    # equal candidates add up: [9, 8] twice at 0.25 each expects 0.5, each of the
    # three others (0.5 / 3) * (1 + 0.5 + 0.5) = 0.33
    twice = [[9, 8], [9, 8], [1, 2, 3], [1, 2, 4], [1, 2, 5]]
    p2 = np.array([0.25, 0.25, 0.5 / 3, 0.5 / 3, 0.5 / 3])
    assert decoding.minimum_bayes_risk(twice, np.log(p2), overlap) == 0
    assert decoding.minimum_bayes_risk([[1], [1]], None, overlap) == 0
    with pytest.raises(ValueError, match="`candidates`"):
        decoding.minimum_bayes_risk([], None, overlap)
    with pytest.raises(ValueError, match=r"`log_probs`: one per candidate, got 1 for 2"):
        decoding.minimum_bayes_risk([[1], [2]], [0.0], overlap)
    with pytest.raises(ValueError, match="`log_probs` must be finite"):
        decoding.minimum_bayes_risk([[1], [2]], [0.0, float("nan")], overlap)


def test_an_ensemble_decodes_with_the_mean_of_its_models_probabilities():
    a, b = trigram_table(seed=1), trigram_table(seed=2)
    mean = (a + b) / 2  # trigram models of one context: the mixture is the mean table's model
    step = decoding.ensemble([trigram_step(a), trigram_step(b)])
    ids, before = torch.tensor([1, 2]), torch.tensor([0, 2])
    scores, state = step(ids, (before, before))
    torch.testing.assert_close(scores, mean[before, ids].log())
    assert isinstance(state, tuple) and len(state) == 2
    # a full-width beam ranks every sequence as brute force over the mean table does
    T = 4
    found = beam_search(step, torch.tensor([1]), (torch.tensor([0]), torch.tensor([0])), T,
                        k=200, end=3, beam_size=3**T)[0]  # fmt: skip
    expected = {(tuple(t), f): lp for t, lp, _, f in brute_force(mean, 0, 1, 3, T, 0.0)}
    assert len(found) == len(expected)  # every sequence, each with its log P (near ties
    for h in found:  # may swap places in the ranking: the two sum in other orders)
        assert h.log_prob == pytest.approx(expected[tuple(h.tokens), h.finished], abs=1e-9)
    assert all(x.score >= y.score for x, y in zip(found, found[1:]))
    # greedy and sampling over it are those of the mean model, draw for draw
    starts, befores = torch.tensor([0, 1, 2, 0]), torch.tensor([3, 0, 2, 1])
    alone = greedy(trigram_step(mean), starts, befores, 6, end=3)
    together = greedy(step, starts, (befores, befores), 6, end=3)
    assert torch.equal(alone.tokens, together.tokens)
    drawn = [sample(f, starts, s, 6, end=3, seed=5).tokens for f, s in
             [(trigram_step(mean), befores), (step, (befores, befores))]]  # fmt: skip
    assert torch.equal(*drawn)
    # one model alone: its own log-probabilities; a state of None reaches each model so
    seen = []

    def counting(ids, state):
        seen.append(state)
        return torch.zeros(len(ids), 4), 1

    scores, state = decoding.ensemble([bigram_step])(torch.tensor([0]), torch.tensor([0]))
    torch.testing.assert_close(scores, BIGRAM[[0]].log())
    assert decoding.ensemble([counting, counting])(torch.tensor([0]), None)[1] == (1, 1)
    assert seen == [None, None]
    with pytest.raises(ValueError, match="`steps`"):
        decoding.ensemble([])


# -- completion -----------------------------------------------------------------------------

# Characters " ", "a", "e", "h", "t" (ids 0-4) and a bigram model P(next | previous):
WORDS = {
    "h": {"e": 0.6, "a": 0.3, " ": 0.1},
    "e": {" ": 0.7, "a": 0.2, "e": 0.1},
    "a": {" ": 0.5, "t": 0.5},
    "t": {" ": 0.8, "h": 0.2},
    " ": {"t": 1.0},
}
CHARS = [" ", "a", "e", "h", "t"]
# After "th", ending at a space, by hand:
#   "e"  0.6 * 0.7 = 0.42        "a"  0.3 * 0.5 = 0.15        "at" 0.3 * 0.5 * 0.8 = 0.12
#   ""   0.1                     "ea" 0.6 * 0.2 * 0.5 = 0.06  then "eat" 0.048, "ee" 0.042
EXPECTED = [("e", 0.42), ("a", 0.15), ("at", 0.12), ("", 0.1), ("ea", 0.06)]


def words_table(zero: float = -30.0) -> torch.Tensor:
    logp = torch.full((5, 5), zero)
    for a, row in WORDS.items():
        for b, p in row.items():
            logp[CHARS.index(a), CHARS.index(b)] = math.log(p)
    return logp  # (V, V) log P(next | previous); -30: never


def test_completion_finds_the_most_likely_words_by_hand():
    logp = words_table(zero=-math.inf)
    step = lambda ids, state: (logp[ids], state)  # noqa: E731
    (found,) = complete(step, torch.tensor([CHARS.index("h")]), None, CHARS.index(" "), k=5)
    got = [("".join(CHARS[i] for i in h.tokens), math.exp(h.log_prob)) for h in found]
    assert [w for w, _ in got] == [w for w, _ in EXPECTED]
    for (_, p), (_, q) in zip(got, EXPECTED):
        assert p == pytest.approx(q, rel=1e-6)
    # max_length bounds the characters before the stop: "at" needs 2
    (short,) = complete(step, torch.tensor([3]), None, 0, k=5, max_length=1)
    assert ["".join(CHARS[i] for i in h.tokens) for h in short] == ["e", "a", ""]


def hand_set_charlm() -> CharLM:
    """A CharLM that is exactly the WORDS bigram: one-hot input, h = tanh(20 x) = x,
    logits = log P(next | x)."""
    model = CharLM(CharLMConfig(cell="rnn", hidden_size=5, embedding_size=0), Vocab(CHARS))
    cell = model.rnn.layers[0].cell
    with torch.no_grad():
        cell.weight_ih.copy_(20 * torch.eye(5))
        cell.weight_hh.zero_()
        cell.bias_ih.zero_()
        cell.bias_hh.zero_()
        model.head.weight.copy_(words_table().t())
        model.head.bias.zero_()
    return model.eval()


def test_charlm_complete_and_its_command(tmp_path, capsys):
    model = hand_set_charlm()
    found = model.complete("at th", 5)
    assert [w for w, _ in found] == [w for w, _ in EXPECTED]
    assert [p for _, p in found] == pytest.approx([p for _, p in EXPECTED], rel=1e-5)
    assert model.complete("th", 2, max_length=0) == [("", pytest.approx(0.1, rel=1e-5))]
    with pytest.raises(ValueError, match=r"`prefix`.*'x'"):
        model.complete("thx", 3)
    with pytest.raises(ValueError, match=r"`stops`.*'!'"):
        model.complete("th", 3, stops=["!"])
    run = tmp_path / "words"
    meta = charlm.run_meta(model.config, model.vocab, None, {})
    save_checkpoint(run, model_state=model.state_dict(), train_state=None, meta=meta)
    assert main(["complete", str(run), "at th", "--k", "3"]) == 0
    out = capsys.readouterr().out
    assert out == "0.4200\tthe\n0.1500\ttha\n0.1200\tthat\n"
    assert main(["complete", str(run), "th", "--k", "2", "--max-length", "0"]) == 0
    assert capsys.readouterr().out == "0.1000\tth\n"
    assert main(["complete", str(run), "the\u00e9"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "rnnkit complete: error" in err
    assert "`prefix`" in err and "'\u00e9'" in err


def test_charlm_sampling_runs_through_the_one_loop():
    model = hand_set_charlm()
    # greedy from "h": e (0.6), then " " (0.7), then t (1.0), then " " (0.8), then t ...
    assert model.sample("h", 9, temperature=0) == "e t t t t"
    assert model.sample("h", 9, temperature=1e-3, seed=1) == "e t t t t"
    texts = model.sample("h", 200, temperature=1.0, num=4, seed=2)
    assert texts == model.sample("h", 200, temperature=1.0, num=4, seed=2)
    pairs = {(a, b) for t in texts for a, b in zip("h" + t, t)}
    allowed = {(a, b) for a, row in WORDS.items() for b in row}
    assert pairs <= allowed and len(pairs) >= 8  # only the model's bigrams, and many
    with pytest.raises(ValueError, match=r"`num`.*0"):
        model.generate("h", 5, num=0)  # checked at the call, before any text
    with pytest.raises(ValueError, match=r"`length`.*-2"):
        model.generate("h", -2)


# -- the fast LSTM step against LSTMCell --------------------------------------------------------


def lstm_lm(num_layers: int, seed: int = 0):
    torch.manual_seed(seed)
    V, E, H = 11, 6, 8
    embedding = torch.nn.Embedding(V, E)
    rnn = rnnkit.LSTM(E, H, num_layers)
    head = torch.nn.Linear(H, V)
    with torch.no_grad():  # biases and weights big enough that the gates saturate unevenly
        for p in rnn.parameters():
            p.uniform_(-0.8, 0.8)
    return embedding, rnn, head


def cell_reference(embedding, rnn, head, ids, states):
    """LSTMCell.recur layer by layer, then the readout: the readable step."""
    x, new = embedding(ids), []
    for layer, state in zip(rnn.layers, states):
        cell = layer.cell
        h, c = cell.recur(cell.project_input(x), state)
        new.append((h, c))
        x = h
    return head(x), new


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("kind", ["torch", "numpy", "bf16"])
def test_the_fast_lstm_step_is_the_cells_step(num_layers, kind):
    embedding, rnn, head = lstm_lm(num_layers)
    stepper = LMStepper(embedding, 11, rnn, head)
    g = torch.Generator().manual_seed(1)
    N, H = 5, 8
    states = [(torch.randn(N, H, generator=g), torch.randn(N, H, generator=g))]
    states = states * num_layers
    tol = dict(atol=1e-5, rtol=1e-5) if kind != "bf16" else dict(atol=0.05, rtol=0.05)
    with torch.inference_mode():
        ref_states, fast_states = states, states
        step, ids, fast_states = stepper.prepare(torch.tensor([0, 3, 5, 7, 10]), states, kind)
        for t in range(6):
            x = torch.tensor([(3 * t + n) % 11 for n in range(N)])
            ref, ref_states = cell_reference(embedding, rnn, head, x, ref_states)
            scores, fast_states = step(x.numpy() if kind == "numpy" else x, fast_states)
            assert isinstance(scores, np.ndarray) == (kind == "numpy")
            torch.testing.assert_close(torch.as_tensor(scores), ref, **tol)
            for (h, c), (rh, rc) in zip(fast_states, ref_states):
                torch.testing.assert_close(torch.as_tensor(h), rh, **tol)
                torch.testing.assert_close(torch.as_tensor(c), rc, **tol)
    if kind == "bf16":  # the products really were bfloat16: not float32-equal
        with torch.inference_mode():
            x = torch.arange(N)
            a, _ = stepper.step(x, states)
            b, _ = stepper.step_fn("bf16")(x, states)
        assert not torch.equal(a, b)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_greedy_text_of_every_step_kind_equals_the_forward_pass(cell):
    torch.manual_seed(0)
    vocab = Vocab("abcdefghij .\n")
    model = CharLM(
        CharLMConfig(cell=cell, num_layers=2, hidden_size=16, embedding_size=6), vocab
    ).eval()
    with torch.no_grad():
        for p in model.rnn.parameters():
            p.mul_(3)  # a livelier model than the initialisation's
    prime = model.encode("a bag")
    text = prime.clone()
    with torch.no_grad():  # the readable reference: argmax of the forward pass, growing text
        for _ in range(40):
            logits, _ = model(text[None])
            text = torch.cat([text, logits[0, -1].argmax()[None]])
    expected = text[len(prime) :].tolist()
    stepper = model.stepper()
    kinds = ["torch", "numpy"] if cell == "lstm" else ["torch"]
    for kind in kinds:
        with torch.inference_mode():
            states = stepper.read(prime[None, :-1])
            step, ids, states = stepper.prepare(prime[-1:], states, kind)
            got = greedy(step, ids, states, 40).tokens[0].tolist()
        assert got == expected, kind
    assert model.sample("a bag", 40, temperature=0) == vocab.decode(expected)


def test_structures_generate_is_the_decoding_loop():
    torch.manual_seed(0)
    decoder, readout, embed = rnnkit.GRU(4, 6), torch.nn.Linear(6, 5), torch.nn.Embedding(5, 4)
    state = torch.randn(1, 3, 6)
    with torch.no_grad():
        out = rnnkit.generate(
            decoder, state, embed(torch.zeros(3, dtype=torch.long)), 7,
            readout=readout, next_input=lambda y: embed(y.argmax(-1)),
        )  # fmt: skip

        def step(ids, s):  # the same model as a token step, state batch-first
            h, s = decoder.step(embed(ids), s.transpose(0, 1))
            return readout(h), s.transpose(0, 1)

        tokens = greedy(step, torch.zeros(3, dtype=torch.long), state.transpose(0, 1), 7).tokens
    assert torch.equal(out.argmax(-1), tokens)
    # and the same step serves beam search: a beam of 1 is greedy
    with torch.no_grad():
        (best,) = beam_search(
            step, torch.zeros(1, dtype=torch.long), state[:, :1].transpose(0, 1), 7, k=1
        )
    assert best[0].tokens == tokens[0].tolist()


def test_sample_with_a_partial_pick_equals_sample():
    ids = torch.tensor([0, 1, 2, 3])
    pick = partial(next_token, temperature=0.7, top_k=3, generator=np.random.default_rng(9))
    a = torch.stack(list(decode(bigram_step, ids, torch.zeros(4), 20, pick)), 1)
    gen = np.random.default_rng(9)
    b = sample(bigram_step, ids, torch.zeros(4), 20, temperature=0.7, top_k=3, generator=gen)
    assert torch.equal(torch.as_tensor(a), b.tokens)
    assert decoding.check_count("k", 3, 1) is None


# -- property-based: any scores and settings give valid tokens or one clear error ----------


@settings(max_examples=80, deadline=None)
@given(
    rows=st.integers(1, 4),
    vocab=st.integers(1, 9),
    scale=st.sampled_from([1e-3, 1.0, 1e3, 1e30]),
    temperature=st.sampled_from([0, 1e-3, 0.5, 1.0, 7.0]),
    top_k=st.one_of(st.none(), st.integers(1, 12)),
    top_p=st.one_of(st.none(), st.floats(1e-6, 1.0)),
    seed=st.integers(0, 2**16),
)
def test_any_scores_and_settings_give_tokens_in_the_vocabulary(
    rows, vocab, scale, temperature, top_k, top_p, seed
):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(rows, vocab, generator=g) * scale
    tempered = scores if temperature == 0 else decoding.apply_temperature(scores, temperature)
    kept = decoding.filter_logits(tempered, top_k, top_p)  # the filter sees scores / T
    assert torch.isfinite(kept).any(-1).all()  # at least one token always survives
    ids = decoding.next_token(
        scores, temperature=temperature, top_k=top_k, top_p=top_p, generator=g
    )
    assert ids.shape == (rows,) and bool(((ids >= 0) & (ids < vocab)).all())
    assert bool(torch.isfinite(kept.gather(1, ids[:, None])).all())  # never a filtered token
