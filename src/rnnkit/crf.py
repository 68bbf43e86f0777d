"""A linear-chain conditional random field: the structured output layer for tagging.

Per-step softmax tagging scores each tag alone; a CRF scores whole tag sequences, so
it can learn that I-PER never follows B-LOC. For emissions e (B, T, K) from an
encoder (e.g. a bidirectional LSTM) and tags y_1..y_n of a sequence of length n::

    score(y) = start[y_1] + sum_{t=1..n} e[t, y_t] + sum_{t=2..n} A[y_{t-1}, y_t] + end[y_n]
    p(y | x) = exp(score(y)) / Z,   log Z = logsumexp over all K^n tag sequences

log Z comes from the forward algorithm in O(n K^2), the most likely sequence from
Viterbi in the same time; both are checked against brute-force enumeration in the
tests. Sequences are right-padded; ``mask`` (B, T) marks the valid steps and every
sequence has at least one.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class LinearChainCRF(nn.Module):
    """A linear-chain CRF over `num_tags` tags.

    Attributes:
        transitions: (K, K) parameter, ``transitions[i, j]`` the score of tag j after tag i.
        start, end: (K,) scores of the first and of the last tag.
    """

    def __init__(self, num_tags: int) -> None:
        super().__init__()
        if not isinstance(num_tags, int) or num_tags < 1:
            raise ValueError(f"Argument `num_tags` must be a positive integer, got {num_tags!r}")
        self.num_tags = num_tags
        self.transitions = nn.Parameter(torch.empty(num_tags, num_tags).uniform_(-0.1, 0.1))
        self.start = nn.Parameter(torch.empty(num_tags).uniform_(-0.1, 0.1))
        self.end = nn.Parameter(torch.empty(num_tags).uniform_(-0.1, 0.1))

    def extra_repr(self) -> str:
        return f"num_tags={self.num_tags}"

    # -- checks -------------------------------------------------------------------------
    def _check(self, emissions: Tensor, mask: Tensor | None, tags: Tensor | None = None) -> Tensor:
        if emissions.dim() != 3 or emissions.shape[-1] != self.num_tags:
            raise ValueError(
                f"Argument `emissions` must be (B, T, num_tags={self.num_tags}), "
                f"got shape {tuple(emissions.shape)}"
            )
        B, T, _ = emissions.shape
        if mask is None:
            mask = emissions.new_ones(B, T, dtype=torch.bool)
        if mask.shape != (B, T):
            raise ValueError(
                f"Argument `mask` must be (B, T) = {(B, T)}, got shape {tuple(mask.shape)}"
            )
        mask = mask.bool()
        if T == 0 or not bool(mask[:, 0].all()):
            raise ValueError("Argument `mask`: every sequence needs a valid first step")
        if bool((mask[:, 1:] & ~mask[:, :-1]).any()):
            raise ValueError("Argument `mask` must be right-padded (no valid step after a pad)")
        if tags is not None:
            if tags.shape != (B, T):
                raise ValueError(
                    f"Argument `tags` must be (B, T) = {(B, T)}, got shape {tuple(tags.shape)}"
                )
            valid = tags[mask]
            if valid.numel() and (int(valid.min()) < 0 or int(valid.max()) >= self.num_tags):
                raise ValueError(
                    f"Argument `tags` holds values outside [0, {self.num_tags}): "
                    f"{int(valid.min())}..{int(valid.max())}"
                )
        return mask

    # -- the two dynamic programmes -----------------------------------------------------
    def log_partition(self, emissions: Tensor, mask: Tensor | None = None) -> Tensor:
        """log Z (B,) by the forward algorithm."""
        mask = self._check(emissions, mask)
        alpha = self.start + emissions[:, 0]  # (B, K): log-sum of paths ending in each tag
        for t in range(1, emissions.shape[1]):
            # (B, K_prev, 1) + (K_prev, K) + (B, 1, K) -> logsumexp over K_prev
            step = torch.logsumexp(
                alpha.unsqueeze(2) + self.transitions + emissions[:, t].unsqueeze(1), dim=1
            )
            alpha = torch.where(mask[:, t : t + 1], step, alpha)
        return torch.logsumexp(alpha + self.end, dim=1)

    def score(self, emissions: Tensor, tags: Tensor, mask: Tensor | None = None) -> Tensor:
        """score(y) (B,) of the given tag sequences (padding ignored)."""
        mask = self._check(emissions, mask, tags)
        tags = tags.masked_fill(~mask, 0).long()
        emit = emissions.gather(2, tags.unsqueeze(2)).squeeze(2)  # (B, T)
        trans = self.transitions[tags[:, :-1], tags[:, 1:]]  # (B, T-1)
        total = self.start[tags[:, 0]] + (emit * mask).sum(1) + (trans * mask[:, 1:]).sum(1)
        last = tags.gather(1, (mask.sum(1) - 1).unsqueeze(1)).squeeze(1)
        return total + self.end[last]

    def nll(
        self, emissions: Tensor, tags: Tensor, mask: Tensor | None = None, reduction: str = "mean"
    ) -> Tensor:
        """-log p(tags | x) = log Z - score(tags); "mean" averages over valid steps
        ("sum" sums, "none" gives (B,))."""
        out = self.log_partition(emissions, mask) - self.score(emissions, tags, mask)
        if reduction == "none":
            return out
        if reduction == "sum":
            return out.sum()
        if reduction == "mean":
            steps = emissions.shape[0] * emissions.shape[1] if mask is None else mask.sum()
            return out.sum() / steps
        raise ValueError(f"Argument `reduction` must be 'mean', 'sum' or 'none', got {reduction!r}")

    @torch.no_grad()
    def decode(self, emissions: Tensor, mask: Tensor | None = None) -> list[list[int]]:
        """The most likely tag sequence of each batch row (Viterbi), cut to its length."""
        mask = self._check(emissions, mask)
        best = self.start + emissions[:, 0]  # (B, K): best score of a path ending in each tag
        back = []  # back[t - 1][b, k]: the best previous tag before tag k at step t
        for t in range(1, emissions.shape[1]):
            cand = best.unsqueeze(2) + self.transitions  # (B, K_prev, K)
            top, arg = cand.max(dim=1)
            best = torch.where(mask[:, t : t + 1], top + emissions[:, t], best)
            back.append(arg)
        last = (best + self.end).argmax(dim=1).tolist()
        lengths = mask.sum(1).tolist()
        back = torch.stack(back, 1).cpu().numpy() if back else None  # (B, T - 1, K)
        paths = []
        for b, (tag, n) in enumerate(zip(last, lengths)):
            path = [tag]
            for t in range(n - 1, 0, -1):
                tag = int(back[b, t - 1, tag])
                path.append(tag)
            paths.append(path[::-1])
        return paths
