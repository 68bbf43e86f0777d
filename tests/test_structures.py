"""Many-to-one, many-to-many, one-to-many and encoder-decoder building blocks."""

import pytest
import torch

import rnnkit
from rnnkit.structures import EncoderDecoder, ManyToMany, ManyToOne, OneToMany, pool_steps

LENGTHS = torch.tensor([5, 2, 4])


def _batch(seed=0, I=3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 5, I, generator=g, dtype=torch.float64)
    x[1, 2:] = 1e3  # garbage in the padding must not matter
    x[2, 4:] = -1e3
    return x


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("fused", [None, False])
def test_many_to_one_last_is_each_sequences_own_final_state(bidirectional, fused):
    torch.manual_seed(0)
    enc = rnnkit.GRU(3, 4, 2, bidirectional=bidirectional, fused=fused).double()
    model = ManyToOne(enc, pool="last")
    x = _batch()
    summary = model(x, LENGTHS)
    assert summary.shape == (3, enc.output_size)
    for b, n in enumerate(LENGTHS.tolist()):
        out, _ = enc(x[b : b + 1, :n])  # the sequence alone, no padding
        H = enc.hidden_size
        if bidirectional:  # forward's last step joined with backward's first step
            expected = torch.cat([out[0, n - 1, :H], out[0, 0, H:]])
        else:
            expected = out[0, n - 1]
        torch.testing.assert_close(summary[b], expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("how", ["mean", "max"])
def test_pooling_ignores_padding(how):
    torch.manual_seed(0)
    enc = rnnkit.LSTM(3, 4).double()
    model = ManyToOne(enc, pool=how)
    x = _batch()
    pooled = model(x, LENGTHS)
    for b, n in enumerate(LENGTHS.tolist()):
        out, _ = enc(x[b : b + 1, :n])
        expected = out[0].mean(0) if how == "mean" else out[0].amax(0)
        torch.testing.assert_close(pooled[b], expected, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="how"):
        pool_steps(x, None, "median")


def test_many_to_one_bad_pool():
    with pytest.raises(ValueError, match="pool.*'sum'"):
        ManyToOne(rnnkit.RNN(2, 3), pool="sum")


def test_many_to_many_is_a_readout_per_step():
    torch.manual_seed(0)
    enc = rnnkit.RNN(3, 4, bidirectional=True).double()
    model = ManyToMany(enc, 6).double()
    x = _batch()
    y = model(x, LENGTHS)
    assert y.shape == (3, 5, 6)
    out, _ = enc(x, lengths=LENGTHS)
    torch.testing.assert_close(y, model.readout(out))
    # the prediction at a valid step does not depend on the padding
    out_alone, _ = enc(x[1:2, :2])
    torch.testing.assert_close(y[1, :2], model.readout(out_alone[0]))


def test_one_to_many_learns_two_sequences_from_two_seeds():
    """Seed 0 -> 'abcab', seed 1 -> 'cbaac' (vocab of 4 incl. a start token 3)."""
    torch.manual_seed(0)
    V, start = 4, 3
    targets = torch.tensor([[0, 1, 2, 0, 1], [2, 1, 0, 0, 2]])
    seeds = torch.eye(2)
    embed = torch.nn.Embedding(V, 8)
    model = OneToMany(2, rnnkit.LSTM(8, 16), V)
    inputs = torch.cat([torch.full((2, 1), start), targets[:, :-1]], 1)
    params = list(model.parameters()) + list(embed.parameters())
    opt = torch.optim.Adam(params, lr=0.05)
    for _ in range(150):
        logits = model(seeds, embed(inputs))
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), targets.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    out = model.generate(seeds, embed(torch.full((2,), start)), 5, lambda y: embed(y.argmax(-1)))
    assert out.argmax(-1).tolist() == targets.tolist()


def test_encoder_state_starts_the_decoder():
    torch.manual_seed(0)
    enc, dec = rnnkit.LSTM(3, 5, 2).double(), rnnkit.LSTM(4, 5, 2).double()
    model = EncoderDecoder(enc, dec, 7, bridge="auto").double()
    assert model.bridge is None  # shapes agree: the state passes through unchanged
    src, tgt = _batch(), torch.randn(3, 4, 4, dtype=torch.float64)
    logits = model(src, tgt, src_lengths=LENGTHS)
    _, enc_state = enc(src, lengths=LENGTHS)
    dec_out, _ = dec(tgt, enc_state)
    torch.testing.assert_close(logits, model.readout(dec_out))
    # a different source changes the translation only through the state
    other = model(src.flip(0), tgt)
    assert not torch.allclose(other, logits)


def test_encoder_decoder_bridge_for_bidirectional_encoder():
    enc = rnnkit.GRU(3, 5, 2, bidirectional=True)
    dec = rnnkit.GRU(4, 6, 2)
    model = EncoderDecoder(enc, dec, 7)
    assert model.bridge is not None
    _, state = model.encode(torch.randn(2, 4, 3))
    assert state.shape == (2, 2, 6)
    with pytest.raises(ValueError, match="bridge='none'"):
        EncoderDecoder(enc, dec, 7, bridge="none")
    with pytest.raises(ValueError, match="num_layers"):
        EncoderDecoder(rnnkit.GRU(3, 5, 1), dec, 7)
    with pytest.raises(ValueError, match="same cell type"):
        EncoderDecoder(rnnkit.LSTM(3, 6, 2), dec, 7)
    with pytest.raises(ValueError, match="decoder"):
        EncoderDecoder(enc, rnnkit.GRU(4, 6, 2, bidirectional=True), 7)


def test_encoder_decoder_learns_to_reverse():
    """Sequence reversal needs the whole source in the state: a real seq2seq test."""
    torch.manual_seed(0)
    V, L, start = 5, 4, 5
    embed = torch.nn.Embedding(V + 1, 16)
    model = EncoderDecoder(
        rnnkit.GRU(16, 48, bidirectional=True), rnnkit.GRU(16, 48), V, bridge="linear"
    )
    params = list(model.parameters()) + list(embed.parameters())
    opt = torch.optim.Adam(params, lr=0.01)
    for _ in range(300):
        src = torch.randint(0, V, (64, L))
        tgt = src.flip(1)
        tgt_in = torch.cat([torch.full((64, 1), start), tgt[:, :-1]], 1)
        logits = model(embed(src), embed(tgt_in))
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), tgt.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    src = torch.randint(0, V, (200, L), generator=torch.Generator().manual_seed(9))
    out = model.generate(
        embed(src), embed(torch.full((200,), start)), L, lambda y: embed(y.argmax(-1))
    )
    accuracy = (out.argmax(-1) == src.flip(1)).float().mean().item()
    assert accuracy > 0.95
