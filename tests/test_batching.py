"""Variable-length batches: the four ways give the same loss and gradients."""

import pytest
import torch

import rnnkit
from rnnkit.batching import BucketBatchSampler, lengths_to_mask, masked_mean, pack_batch, pad_batch

LENGTHS = [5, 3, 8, 1, 6, 2, 4]


def _data(seed=0):
    g = torch.Generator().manual_seed(seed)
    xs = [torch.randn(n, 3, generator=g, dtype=torch.float64) for n in LENGTHS]
    ys = [torch.randn(n, 2, generator=g, dtype=torch.float64) for n in LENGTHS]
    return xs, ys


def _model(kind, fused):
    torch.manual_seed(0)
    cls = {"lstm": rnnkit.LSTM, "gru": rnnkit.GRU, "rnn": rnnkit.RNN}[kind]
    rnn = cls(3, 4, 2, bidirectional=True, fused=fused).double()
    readout = torch.nn.Linear(8, 2).double()
    return rnn, readout


def _grads(modules):
    return [p.grad.clone() for m in modules for p in m.parameters()]


def _zero(modules):
    for m in modules:
        m.zero_grad(set_to_none=True)


@pytest.mark.parametrize("fused", [None, False])
@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_four_ways_same_loss_and_gradients(kind, fused):
    """Padding+masks, sorting+packing, bucketing and one-by-one agree to 1e-10."""
    xs, ys = _data()
    rnn, readout = _model(kind, fused)
    total_steps = sum(LENGTHS)
    results = {}

    # 1. zero padding with masks
    _zero([rnn, readout])
    x, lengths = pad_batch(xs)
    y, _ = pad_batch(ys)
    out, _ = rnn(x, lengths=lengths)
    sq = ((readout(out) - y) ** 2).sum(-1)  # (B, T)
    loss = (sq * lengths_to_mask(lengths, x.shape[1])).sum() / total_steps
    loss.backward()
    results["padded"] = (loss.item(), _grads([rnn, readout]))

    # 2. sorting and packing
    _zero([rnn, readout])
    packed_out, _ = rnn(pack_batch(xs))
    packed_y = pack_batch(ys)
    assert torch.equal(packed_out.batch_sizes, packed_y.batch_sizes)
    loss = ((readout(packed_out.data) - packed_y.data) ** 2).sum() / total_steps
    loss.backward()
    results["packed"] = (loss.item(), _grads([rnn, readout]))

    # 3. bucketing: batches of similar lengths, losses summed over batches
    _zero([rnn, readout])
    total = 0.0
    for batch in BucketBatchSampler(LENGTHS, 3, seed=1):
        x, lengths = pad_batch([xs[i] for i in batch])
        y, _ = pad_batch([ys[i] for i in batch])
        out, _ = rnn(x, lengths=lengths)
        sq = ((readout(out) - y) ** 2).sum(-1)
        loss = (sq * lengths_to_mask(lengths, x.shape[1])).sum() / total_steps
        loss.backward()
        total += loss.item()
    results["bucketed"] = (total, _grads([rnn, readout]))

    # 4. one sequence at a time
    _zero([rnn, readout])
    total = 0.0
    for x, y in zip(xs, ys):
        out, _ = rnn(x.unsqueeze(0))
        loss = ((readout(out[0]) - y) ** 2).sum() / total_steps
        loss.backward()
        total += loss.item()
    results["one_by_one"] = (total, _grads([rnn, readout]))

    ref_loss, ref_grads = results["one_by_one"]
    for way, (loss, grads) in results.items():
        assert loss == pytest.approx(ref_loss, rel=1e-12, abs=1e-12), way
        for g, r in zip(grads, ref_grads):
            torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-12, msg=way)


def test_masked_mean_ignores_padding():
    values = torch.tensor([[1.0, 2.0, 100.0], [3.0, -50.0, -50.0]])
    mask = lengths_to_mask(torch.tensor([2, 1]), 3)
    assert mask.tolist() == [[True, True, False], [True, False, False]]
    assert masked_mean(values, mask).item() == pytest.approx(2.0)


def test_pad_batch_shapes_and_errors():
    x, lengths = pad_batch([torch.ones(2, 3), torch.ones(4, 3)])
    assert x.shape == (2, 4, 3) and lengths.tolist() == [2, 4]
    assert x[0, 2:].abs().sum() == 0
    with pytest.raises(ValueError, match="sequences"):
        pad_batch([])
    with pytest.raises(ValueError, match="sequence 1"):
        pad_batch([torch.ones(2, 3), torch.ones(0, 3)])


def test_bucket_sampler_covers_everything_once_and_reduces_padding():
    g = torch.Generator().manual_seed(0)
    lengths = (torch.distributions.Exponential(0.05).sample((1000,)).long() + 1).tolist()
    sampler = BucketBatchSampler(lengths, 32, seed=3)
    batches = list(sampler)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(1000))
    assert all(1 <= len(b) <= 32 for b in batches)

    # random batching of the same data, for comparison
    perm = torch.randperm(1000, generator=g).tolist()
    random_pad = total = 0
    for s in range(0, 1000, 32):
        lens = [lengths[i] for i in perm[s : s + 32]]
        total += max(lens) * len(lens)
        random_pad += max(lens) * len(lens) - sum(lens)
    assert sampler.padding_fraction() < 0.25 * (random_pad / total)


def test_bucket_sampler_deterministic_per_epoch():
    a = BucketBatchSampler(LENGTHS * 10, 4, seed=7)
    b = BucketBatchSampler(LENGTHS * 10, 4, seed=7)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    assert len(a) == len(list(a))
    ordered = list(BucketBatchSampler(LENGTHS, 3, shuffle=False))
    assert [LENGTHS[i] for b in ordered for i in b] == sorted(LENGTHS)


@pytest.mark.parametrize(
    "kwargs, name",
    [({"batch_size": 0}, "batch_size"), ({"batch_size": 2, "pool_batches": 0}, "pool_batches")],
)
def test_bucket_sampler_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        BucketBatchSampler(LENGTHS, **kwargs)
