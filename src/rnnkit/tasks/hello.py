"""The lecture's toy example: a vanilla RNN learns the word "hello".

Vocabulary [h, e, l, o]; the inputs are the one-hot vectors of "hell" and the
targets the next characters "ello". The network is the lecture's

    h_t = tanh(W_hh h_{t-1} + W_xh x_t + b),   y_t = W_hy h_t + b_y

with 3 hidden units. Before training its scores are noise; after, the correct next
character scores highest at every step, and sampling from "h" gives back "hello".
Note that "l" is followed by "l" once and by "o" once: only the hidden state can
tell the two apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..cells import RNNCell
from ..decoding import greedy
from ..layers import Recurrent

VOCAB = ["h", "e", "l", "o"]


@dataclass
class HelloConfig:
    word: str = "hello"  # the word to learn, in the letters h, e, l, o
    hidden_size: int = 3  # the lecture's slide uses 3 hidden units
    steps: int = 300  # Adam steps on the one sequence
    lr: float = 0.05  # Adam learning rate
    seed: int = 0  # the initialisation


class HelloRNN(nn.Module):
    """Embedding-free char RNN: one-hot x_t -> RNNCell -> W_hy."""

    def __init__(self, vocab_size: int, hidden_size: int) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.rnn = Recurrent(RNNCell(vocab_size, hidden_size))
        self.W_hy = nn.Linear(hidden_size, vocab_size)

    def forward(self, idx: torch.Tensor, state=None):
        x = nn.functional.one_hot(idx, self.vocab_size).float()  # (B, T, V)
        h, state = self.rnn(x, state)  # (B, T, H)
        return x, h, self.W_hy(h), state  # scores y: (B, T, V)


def encode(text: str) -> torch.Tensor:
    unknown = sorted(set(text) - set(VOCAB))
    if unknown:
        raise ValueError(
            f"Argument `word` has characters outside the vocabulary {VOCAB}: {unknown}."
        )
    if len(text) < 2:
        raise ValueError(f"Argument `word` needs at least 2 characters, got {text!r}.")
    return torch.tensor([[VOCAB.index(c) for c in text]])


@torch.no_grad()
def sample(model: HelloRNN, first: str, length: int) -> str:
    """Greedy sampling, feeding each prediction back in and carrying the state
    (:func:`rnnkit.decoding.greedy`)."""

    def step(idx: torch.Tensor, state):  # idx (1,) -> scores y (1, V)
        _, _, y, state = model(idx[:, None], state)
        return y[:, -1], state

    first_id = encode(first + VOCAB[0])[0, :1]  # (1,)
    tokens = greedy(step, first_id, None, max(length - 1, 0)).tokens[0]
    return first + "".join(VOCAB[i] for i in tokens.tolist())


def _table(model: HelloRNN, word: str) -> str:
    idx = encode(word)[:, :-1]
    with torch.no_grad():
        x, h, y, _ = model(idx)
    rows = []
    for t, c in enumerate(word[:-1]):
        target = word[t + 1]
        scores = y[0, t]
        best = VOCAB[int(scores.argmax())]
        rows.append(
            f"  t={t}  input {c!r} x={x[0, t].int().tolist()}  "
            f"h=[{', '.join(f'{v:+.2f}' for v in h[0, t])}]  "
            f"y=[{', '.join(f'{v:+.2f}' for v in scores)}]  "
            f"target {target!r}, best {best!r} {'ok' if best == target else 'WRONG'}"
        )
    return "\n".join(rows)


def train_hello(config: HelloConfig, *, verbose: bool = True) -> tuple[HelloRNN, list[float]]:
    """Train the toy RNN; returns the model and its loss per step."""
    torch.manual_seed(config.seed)
    data = encode(config.word)
    inputs, targets = data[:, :-1], data[:, 1:]  # "hell" -> "ello"
    model = HelloRNN(len(VOCAB), config.hidden_size)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    say = print if verbose else (lambda *a, **k: None)
    say(f"vocabulary {VOCAB}; inputs {config.word[:-1]!r} -> targets {config.word[1:]!r}")
    say(f"before training (sample from 'h': {sample(model, 'h', len(config.word))!r}):")
    say(_table(model, config.word))
    losses = []
    for _ in range(config.steps):
        _, _, y, _ = model(inputs)
        loss = nn.functional.cross_entropy(y.reshape(-1, len(VOCAB)), targets.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    say(f"\ntrained {config.steps} steps: loss {losses[0]:.3f} -> {losses[-1]:.4f}")
    say("after training:")
    say(_table(model, config.word))
    say(f"\nsample from 'h': {sample(model, 'h', len(config.word))!r}")
    return model, losses
