"""The lecture's input/output structures as small modules around any rnnkit layer.

* :class:`ManyToOne`: read a sequence, return one vector (sentiment, video class).
* :class:`ManyToMany`: one output per input step, aligned (tagging, frame labels).
* :class:`OneToMany`: a vector seeds a generated sequence (image captioning).
* :class:`EncoderDecoder`: the encoder's final state starts the decoder (translation).

Embeddings and vocabularies belong to the tasks; these modules work on vectors, so
the same structure serves characters, words, pixels and CNN features.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .decoding import decode
from .layers import Bidirectional, Recurrent, Stack, merge_directions

POOLS = ("last", "mean", "max")


def _top_merge(encoder: nn.Module) -> str:
    top = encoder.layers[-1] if isinstance(encoder, Stack) else encoder
    return top.merge if isinstance(top, Bidirectional) else "concat"


def final_hidden(encoder: nn.Module, state) -> Tensor:
    """The top layer's final h, directions merged as the layer merges them: (B, F).

    For a bidirectional top layer this joins the forward direction's last valid step
    with the backward direction's first step: each direction's own final state.
    """
    h = state[0] if isinstance(state, tuple) else state  # (L*D, B, H)
    D = encoder.num_directions
    if D == 1:
        return h[-1]
    return merge_directions(h[-2].unsqueeze(0), h[-1].unsqueeze(0), _top_merge(encoder))[0]


def pool_steps(outputs: Tensor, lengths: Tensor | None, how: str) -> Tensor:
    """Mean or max of outputs (B, T, F) over each sequence's valid steps -> (B, F)."""
    if how not in ("mean", "max"):
        raise ValueError(f"Argument `how` must be 'mean' or 'max', got {how!r}.")
    if lengths is None:
        return outputs.mean(1) if how == "mean" else outputs.amax(1)
    T = outputs.shape[1]
    valid = (torch.arange(T).unsqueeze(0) < lengths.cpu().unsqueeze(1)).to(outputs.device)
    valid = valid.view(*valid.shape, *([1] * (outputs.dim() - 2)))  # (B, T, 1, ...)
    if how == "mean":
        return (outputs * valid).sum(1) / valid.sum(1)
    return outputs.masked_fill(~valid, float("-inf")).amax(1)


class ManyToOne(nn.Module):
    """Many to one: a sequence in, one summary vector out.

    Args:
        encoder: a :class:`Stack`, :class:`Recurrent` or :class:`Bidirectional`.
        pool: ``"last"`` (the final state after each sequence's last valid step; both
            directions' final states for a bidirectional top layer), ``"mean"`` or
            ``"max"`` over the valid steps.

    ``forward(x, lengths=None)``: x (B, T, I) -> (B, encoder.output_size).
    """

    def __init__(self, encoder: nn.Module, *, pool: str = "last") -> None:
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"Argument `pool` must be one of {POOLS}, got {pool!r}.")
        self.encoder = encoder
        self.pool = pool

    @property
    def output_size(self) -> int:
        return self.encoder.output_size

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        outputs, state = self.encoder(x, lengths=lengths)  # (B, T, F), (L*D, B, H)
        if self.pool == "last":
            return final_hidden(self.encoder, state)
        if lengths is not None:
            lengths = torch.as_tensor(lengths)
        return pool_steps(outputs, lengths, self.pool)


class ManyToMany(nn.Module):
    """Aligned many to many: an output y_t = W_hy h_t + b_y for every input step.

    ``forward(x, lengths=None)``: x (B, T, I) -> (B, T, output_size); padded steps
    give the readout of a zero vector (mask them out of the loss).
    """

    def __init__(self, encoder: nn.Module, output_size: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.readout = nn.Linear(encoder.output_size, output_size)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        outputs, _ = self.encoder(x, lengths=lengths)  # (B, T, F)
        return self.readout(outputs)  # (B, T, output_size)


def _forward_stack(decoder: nn.Module, name: str) -> None:
    layers = decoder.layers if isinstance(decoder, Stack) else [decoder]
    if not all(isinstance(la, Recurrent) and not la.reverse for la in layers):
        raise ValueError(f"Argument `{name}` must be a forward (unidirectional) Stack or layer.")


def generate(
    decoder: Stack,
    state,
    first_input: Tensor,
    steps: int,
    *,
    readout: nn.Module,
    next_input: Callable[[Tensor], Tensor],
) -> Tensor:
    """Feed each step's output back in: the loop of every one-to-many decoder.

    first_input: (B, I); ``next_input(y_t)`` turns the readout y_t (B, O) into the next
    input (B, I) (argmax + embedding, a sample, or y_t itself). Returns (B, steps, O).
    It is :func:`rnnkit.decoding.decode` with ``next_input`` as the pick; beam search
    and end tokens are there too.
    """
    ys = []

    def step(x: Tensor, state):
        h, state = decoder.step(x, state)  # (B, H)
        y = readout(h)  # (B, O)
        ys.append(y)
        return y, state

    for _ in decode(step, first_input, state, steps, next_input):
        pass
    return torch.stack(ys, 1)


class _StateBridge(nn.Module):
    """Map a vector per layer to a decoder's initial state (L, B, H).

    h_0 = tanh(W_h s + b_h) for each layer; for the LSTM also c_0 = W_c s + b_c.
    """

    def __init__(self, in_size: int, decoder: Stack) -> None:
        super().__init__()
        L, H = decoder.num_layers, decoder.hidden_size
        n_states = decoder.layers[0].cell.num_state_tensors
        self.maps = nn.ModuleList(
            nn.ModuleList(nn.Linear(in_size, H) for _ in range(L)) for _ in range(n_states)
        )

    def forward(self, s: Tensor):
        # s: (B, S) shared by every layer, or (L, B, S) one per layer
        per_layer = [s] * len(self.maps[0]) if s.dim() == 2 else list(s.unbind(0))
        parts = []
        for k, maps in enumerate(self.maps):
            v = torch.stack([lin(x) for lin, x in zip(maps, per_layer)])  # (L, B, H)
            parts.append(torch.tanh(v) if k == 0 else v)
        return parts[0] if len(parts) == 1 else tuple(parts)


class OneToMany(nn.Module):
    """One to many: a vector seeds a generated sequence.

    The seed s (an image's CNN features, a class embedding, ...) sets the decoder's
    initial state, h_0 = tanh(W s + b) in every layer; then each step reads an input
    (the previous output, during training the true one: teacher forcing).

    Args:
        seed_size: features of the seed vector.
        decoder: a forward :class:`Stack` (e.g. ``rnnkit.LSTM(I, H, 2)``).
        output_size: size of the readout y_t = W_hy h_t + b_y.
    """

    def __init__(self, seed_size: int, decoder: Stack, output_size: int) -> None:
        super().__init__()
        _forward_stack(decoder, "decoder")
        self.decoder = decoder
        self.bridge = _StateBridge(seed_size, decoder)
        self.readout = nn.Linear(decoder.output_size, output_size)

    def forward(self, seed: Tensor, inputs: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Teacher forcing: seed (B, S), inputs (B, T, I) -> outputs (B, T, output_size)."""
        outputs, _ = self.decoder(inputs, self.bridge(seed), lengths=lengths)
        return self.readout(outputs)

    @torch.no_grad()
    def generate(
        self,
        seed: Tensor,
        first_input: Tensor,
        steps: int,
        next_input: Callable[[Tensor], Tensor],
    ) -> Tensor:
        """Free running: seed (B, S), first_input (B, I) -> (B, steps, output_size)."""
        return generate(
            self.decoder,
            self.bridge(seed),
            first_input,
            steps,
            readout=self.readout,
            next_input=next_input,
        )


class EncoderDecoder(nn.Module):
    """Sequence to sequence: the encoder's final state starts the decoder.

    Args:
        encoder: any :class:`Stack` (bidirectional allowed).
        decoder: a forward :class:`Stack` with the same cell kind as the encoder.
        output_size: size of the decoder's readout.
        bridge: ``"auto"`` passes the state through unchanged when the shapes agree
            (same layers, one direction, same hidden size) and learns
            h_0 = tanh(W [h_fwd; h_bwd] + b) per layer otherwise; ``"linear"`` always
            learns it; ``"none"`` requires matching shapes.

    ``forward(src, tgt_inputs, *, src_lengths=None, tgt_lengths=None)`` ->
    (B, T_tgt, output_size), with the target inputs fed in (teacher forcing).
    """

    BRIDGES = ("auto", "linear", "none")

    def __init__(
        self, encoder: Stack, decoder: Stack, output_size: int, *, bridge: str = "auto"
    ) -> None:
        super().__init__()
        if bridge not in self.BRIDGES:
            raise ValueError(f"Argument `bridge` must be one of {self.BRIDGES}, got {bridge!r}.")
        _forward_stack(decoder, "decoder")
        enc_cell = encoder.layers[0]
        enc_cell = (
            enc_cell.forward_layer.cell if isinstance(enc_cell, Bidirectional) else enc_cell.cell
        )
        dec_cell = decoder.layers[0].cell
        if enc_cell.num_state_tensors != dec_cell.num_state_tensors:
            raise ValueError(
                f"The encoder ({type(enc_cell).__name__}) and decoder ({type(dec_cell).__name__}) "
                f"states differ in kind; use the same cell type for both."
            )
        if encoder.num_layers != decoder.num_layers:
            raise ValueError(
                f"The encoder has num_layers={encoder.num_layers}, the decoder "
                f"{decoder.num_layers}; each decoder layer starts from its encoder layer."
            )
        same = encoder.num_directions == 1 and encoder.hidden_size == decoder.hidden_size
        if bridge == "none" and not same:
            raise ValueError(
                "bridge='none' needs a unidirectional encoder with the decoder's hidden_size."
            )
        self.encoder = encoder
        self.decoder = decoder
        self.bridge = None
        if bridge == "linear" or (bridge == "auto" and not same):
            self.bridge = _StateBridge(encoder.num_directions * encoder.hidden_size, decoder)
        self.readout = nn.Linear(decoder.output_size, output_size)

    def encode(self, src: Tensor, src_lengths: Tensor | None = None):
        """src (B, S, I) -> (encoder outputs (B, S, F), decoder initial state)."""
        outputs, state = self.encoder(src, lengths=src_lengths)
        if self.bridge is None:
            return outputs, state
        D = self.encoder.num_directions
        L = self.encoder.num_layers

        def per_layer(s: Tensor) -> Tensor:  # (L*D, B, H) -> (L, B, D*H)
            return s.view(L, D, *s.shape[1:]).permute(0, 2, 1, 3).reshape(L, s.shape[1], -1)

        h = per_layer(state[0] if isinstance(state, tuple) else state)
        return outputs, self.bridge(h)

    def forward(
        self,
        src: Tensor,
        tgt_inputs: Tensor,
        *,
        src_lengths: Tensor | None = None,
        tgt_lengths: Tensor | None = None,
    ) -> Tensor:
        _, state = self.encode(src, src_lengths)
        outputs, _ = self.decoder(tgt_inputs, state, lengths=tgt_lengths)  # (B, T, H)
        return self.readout(outputs)

    @torch.no_grad()
    def generate(
        self,
        src: Tensor,
        first_input: Tensor,
        steps: int,
        next_input: Callable[[Tensor], Tensor],
        *,
        src_lengths: Tensor | None = None,
    ) -> Tensor:
        """Greedy or sampled decoding with fed-back outputs -> (B, steps, output_size)."""
        _, state = self.encode(src, src_lengths)
        return generate(
            self.decoder, state, first_input, steps, readout=self.readout, next_input=next_input
        )


__all__ = [
    "ManyToOne",
    "ManyToMany",
    "OneToMany",
    "EncoderDecoder",
    "generate",
    "pool_steps",
    "final_hidden",
]
