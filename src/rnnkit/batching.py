"""Variable-length batches: the lecture's four ways, as small tools.

1. **One sequence at a time**: call the layer on a (1, T_i, ...) batch per sequence.
2. **Zero padding with masks**: :func:`pad_batch` right-pads to (B, T_max, ...) and
   returns the lengths; every rnnkit layer takes ``lengths=`` and never lets a padded
   step touch the state. :func:`lengths_to_mask` and :func:`masked_mean` make losses
   ignore the padding.
3. **Sorting and packing**: :func:`pack_batch` sorts by length and packs
   (``torch.nn.utils.rnn.PackedSequence``); rnnkit layers take packed input directly.
4. **Bucketing**: :class:`BucketBatchSampler` groups sequences of similar length, so
   a batch carries little padding (a ``batch_sampler`` for ``torch.utils.data.DataLoader``).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_sequence
from torch.utils.data import Sampler


def pad_batch(
    sequences: Sequence[Tensor], *, padding_value: float = 0.0, batch_first: bool = True
) -> tuple[Tensor, Tensor]:
    """Right-pad sequences of shape (T_i, ...) into one tensor.

    Returns ``(padded, lengths)``: padded (B, T_max, ...) (or (T_max, B, ...)) and
    lengths (B,) int64 on the CPU, as rnnkit layers and torch's packing expect.
    """
    if len(sequences) == 0:
        raise ValueError("Argument `sequences` is empty: a batch needs at least one sequence.")
    for i, s in enumerate(sequences):
        if s.dim() == 0 or s.shape[0] == 0:
            raise ValueError(
                f"Argument `sequences`: sequence {i} has shape {tuple(s.shape)}; every sequence "
                f"needs at least one step."
            )
    lengths = torch.tensor([s.shape[0] for s in sequences], dtype=torch.int64)
    return pad_sequence(
        list(sequences), batch_first=batch_first, padding_value=padding_value
    ), lengths


def lengths_to_mask(lengths: Tensor, max_len: int | None = None) -> Tensor:
    """(B,) lengths -> (B, T) bool mask, True at valid steps."""
    lengths = torch.as_tensor(lengths)
    T = int(lengths.max()) if max_len is None else max_len
    return torch.arange(T, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` (B, T, ...) over the valid steps of ``mask`` (B, T)."""
    mask = mask.to(values.device)
    while mask.dim() < values.dim():
        mask = mask.unsqueeze(-1)
    mask = mask.expand_as(values)
    return (values * mask).sum() / mask.sum()


def pack_batch(sequences: Sequence[Tensor]) -> PackedSequence:
    """Sort by length and pack: the input format of cuDNN and torch.nn.LSTM.

    The original order is kept in the PackedSequence, so outputs unpack in the order
    the sequences were given.
    """
    padded, lengths = pad_batch(sequences, batch_first=True)
    return pack_padded_sequence(padded, lengths, batch_first=True, enforce_sorted=False)


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of indices whose sequences have similar lengths.

    Indices are shuffled, cut into pools of ``pool_batches * batch_size``, each pool is
    sorted by length and cut into batches, and the batches are shuffled again. So a
    batch wastes little on padding, yet batches still differ from epoch to epoch. With
    ``shuffle=False`` all indices are sorted by length once (evaluation).

    Args:
        lengths: the length of every example in the data set.
        batch_size: examples per batch.
        pool_batches: how many batches' worth of examples are sorted together; larger
            gives tighter buckets but less randomness.
        shuffle: shuffle pools and batches (call :meth:`set_epoch` each epoch).
        drop_last: drop the last, smaller batch of each pool.
        seed: base seed; the order is a function of (seed, epoch) only.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        *,
        pool_batches: int = 50,
        shuffle: bool = True,
        drop_last: bool = False,
        seed: int = 0,
    ) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(
                f"Argument `batch_size` must be a positive integer, got {batch_size!r}."
            )
        if not isinstance(pool_batches, int) or pool_batches < 1:
            raise ValueError(
                f"Argument `pool_batches` must be a positive integer, got {pool_batches!r}."
            )
        self.lengths = [int(n) for n in lengths]
        if len(self.lengths) == 0:
            raise ValueError("Argument `lengths` is empty: nothing to batch.")
        self.batch_size = batch_size
        self.pool_batches = pool_batches
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        rng = random.Random(self.seed * 100_003 + self.epoch)
        indices = list(range(len(self.lengths)))
        if not self.shuffle:
            pools = [sorted(indices, key=lambda i: self.lengths[i])]
        else:
            rng.shuffle(indices)
            size = self.pool_batches * self.batch_size
            pools = [
                sorted(indices[s : s + size], key=lambda i: self.lengths[i])
                for s in range(0, len(indices), size)
            ]
        batches = []
        for pool in pools:
            for s in range(0, len(pool), self.batch_size):
                batch = pool[s : s + self.batch_size]
                if len(batch) == self.batch_size or not self.drop_last:
                    batches.append(batch)
        if self.shuffle:
            rng.shuffle(batches)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._batches())

    def __len__(self) -> int:
        return len(self._batches())

    def padding_fraction(self) -> float:
        """Share of padded steps over an epoch's batches (0 = no padding)."""
        total = padded = 0
        for batch in self._batches():
            lens = [self.lengths[i] for i in batch]
            total += max(lens) * len(lens)
            padded += max(lens) * len(lens) - sum(lens)
        return padded / total
