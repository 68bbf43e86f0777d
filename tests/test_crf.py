"""The linear-chain CRF against brute-force enumeration of every tag sequence."""

from __future__ import annotations

import itertools

import pytest
import torch

from rnnkit import LinearChainCRF


@torch.no_grad()
def brute_force(crf: LinearChainCRF, emissions: torch.Tensor, length: int):
    """(log Z, best path, its score) of one sequence by enumerating all K^n paths."""
    K = crf.num_tags
    scores = {}
    for path in itertools.product(range(K), repeat=length):
        s = crf.start[path[0]] + crf.end[path[-1]]
        s = s + sum(emissions[t, path[t]] for t in range(length))
        s = s + sum(crf.transitions[path[t - 1], path[t]] for t in range(1, length))
        scores[path] = s
    values = torch.stack(list(scores.values()))
    best = max(scores, key=lambda p: scores[p].item())
    return torch.logsumexp(values, 0), list(best), scores


@pytest.fixture
def crf():
    torch.manual_seed(0)
    crf = LinearChainCRF(3).double()
    with torch.no_grad():
        for p in crf.parameters():
            p.normal_(0, 1.0)  # far from uniform, so the transitions matter
    return crf


def test_forward_algorithm_viterbi_and_score_match_brute_force(crf):
    torch.manual_seed(1)
    lengths = [5, 3, 1, 4]
    emissions = torch.randn(4, 5, 3, dtype=torch.float64)
    mask = torch.arange(5)[None] < torch.tensor(lengths)[:, None]
    log_z = crf.log_partition(emissions, mask)
    paths = crf.decode(emissions, mask)
    tags = torch.randint(0, 3, (4, 5))
    scores = crf.score(emissions, tags, mask)
    for b, n in enumerate(lengths):
        ref_z, ref_best, ref_scores = brute_force(crf, emissions[b], n)
        torch.testing.assert_close(log_z[b], ref_z)
        assert paths[b] == ref_best and len(paths[b]) == n
        torch.testing.assert_close(scores[b], ref_scores[tuple(tags[b, :n].tolist())])


def test_padding_never_changes_a_result(crf):
    torch.manual_seed(2)
    emissions = torch.randn(1, 4, 3, dtype=torch.float64)
    tags = torch.tensor([[2, 0, 1, 1]])
    padded = torch.cat([emissions, torch.randn(1, 3, 3, dtype=torch.float64) * 50], 1)
    padded_tags = torch.cat([tags, torch.tensor([[1, 2, 0]])], 1)
    mask = torch.tensor([[True] * 4 + [False] * 3])
    torch.testing.assert_close(
        crf.nll(padded, padded_tags, mask, "none"), crf.nll(emissions, tags, None, "none")
    )
    assert crf.decode(padded, mask) == crf.decode(emissions)


def test_nll_is_a_proper_negative_log_probability_and_has_exact_gradients(crf):
    torch.manual_seed(3)
    emissions = torch.randn(2, 3, 3, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[True, True, True], [True, True, False]])
    # probabilities of all paths of the length-3 row sum to one
    paths = torch.tensor(list(itertools.product(range(3), repeat=3)))
    e = emissions[:1].detach().expand(len(paths), -1, -1)
    total = torch.exp(-crf.nll(e, paths, None, "none")).sum()
    torch.testing.assert_close(total, torch.tensor(1.0, dtype=torch.float64))
    tags = torch.tensor([[0, 2, 1], [1, 1, 0]])
    assert torch.autograd.gradcheck(lambda em: crf.nll(em, tags, mask, "sum"), (emissions,))


def test_training_learns_a_transition_rule_emissions_cannot_show():
    # Tag 1 always follows tag 0 and tag 0 always follows 1, from any start: the emissions
    # say nothing (all zero), so only the transitions can fit the data.
    torch.manual_seed(4)
    crf = LinearChainCRF(2)
    opt = torch.optim.Adam(crf.parameters(), lr=0.1)
    tags = torch.tensor([[0, 1, 0, 1, 0], [1, 0, 1, 0, 1]])
    emissions = torch.zeros(2, 5, 2)
    for _ in range(100):
        opt.zero_grad()
        crf.nll(emissions, tags).backward()
        opt.step()
    assert crf.nll(emissions, tags).item() < 0.2
    assert crf.transitions[0, 1] > crf.transitions[0, 0] + 2
    assert crf.transitions[1, 0] > crf.transitions[1, 1] + 2
    emissions[0, 0, 1] = 3.0  # the first tag is clearly 1: the rest follows by transition
    assert crf.decode(emissions[:1]) == [[1, 0, 1, 0, 1]]


def test_bad_input_gets_a_clear_error(crf):
    e = torch.zeros(2, 4, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"`emissions` must be \(B, T, num_tags=3\)"):
        crf.log_partition(torch.zeros(2, 4, 5))
    with pytest.raises(ValueError, match=r"`mask` must be \(B, T\)"):
        crf.decode(e, torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="valid first step"):
        crf.decode(e, torch.tensor([[True] * 4, [False] * 4]))
    with pytest.raises(ValueError, match="right-padded"):
        crf.decode(e, torch.tensor([[True, False, True, True], [True] * 4]))
    with pytest.raises(ValueError, match=r"`tags` holds values outside \[0, 3\): 0..7"):
        crf.score(e, torch.tensor([[0, 1, 2, 7], [0, 0, 0, 0]]))
    with pytest.raises(ValueError, match="`num_tags`"):
        LinearChainCRF(0)
