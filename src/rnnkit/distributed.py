"""Data-parallel training on ``torch.distributed``: ranks, shares of the data, reductions.

A plain ``rnnkit train ...`` is one process and nothing here does anything. Started by
``torchrun`` (or ``rnnkit train ... --nproc N``, which starts torchrun's launcher),
every process joins one process group -- ``gloo`` on CPUs, ``nccl`` on GPUs, on one
machine or many (torchrun's ``--nnodes`` and rendezvous) -- and the shared trainer
wraps the model in :class:`~torch.nn.parallel.DistributedDataParallel`:

* each rank reads its own share of every global batch (the character model's streams,
  a bucketed batch's examples), so ``--batch-size`` is the global batch and the run
  takes the same optimizer steps on any number of processes;
* gradients are averaged across ranks by DDP during backward; the loss each rank
  backpropagates is weighted by its share of the batch (:func:`weights`), so the
  averaged gradient is exactly the gradient of the global batch's mean loss, also when
  the shares are unequal (a bucketed batch of 33 sequences on 2 ranks);
* evaluation is sharded too and reduced (:func:`sum_floats`, :func:`gather_by_index`);
* only rank 0 writes (:func:`is_main`): checkpoints, metrics, plots and logs.

The helpers are safe to call in a plain process: a share is everything, a reduction
is the identity.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

T = TypeVar("T")
ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")  # what torchrun sets


def launched() -> bool:
    """True in a process started by torchrun (or another launcher setting its
    variables) for a group of more than one process."""
    return all(k in os.environ for k in ENV) and int(os.environ["WORLD_SIZE"]) > 1


def setup(device: str = "auto") -> bool:
    """Join the process group torchrun describes, once: ``nccl`` when the run uses CUDA
    (each process on GPU ``LOCAL_RANK``), else ``gloo``. Returns whether this process is
    one of a group; a plain process stays alone."""
    if not launched():
        return False
    if not dist.is_initialized():
        cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
        if cuda:
            if not torch.cuda.is_available():
                raise ValueError(
                    "Argument `device` is 'cuda', but CUDA is not available on this machine"
                )
            torch.cuda.set_device(local_rank())
        dist.init_process_group("nccl" if cuda else "gloo")
    return True


def teardown() -> None:
    """Leave the process group (the end of a distributed command)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def active() -> bool:
    """A process group of more than one process is in use."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def local_rank() -> int:
    """This process's index on its machine (its GPU, on CUDA)."""
    return int(os.environ.get("LOCAL_RANK", 0)) if launched() else 0


def is_main() -> bool:
    """Rank 0: the one process that writes checkpoints, metrics, plots and logs."""
    return rank() == 0


def barrier() -> None:
    if active():
        dist.barrier()


def _device() -> torch.device:
    """Where collectives take tensors: the GPU for nccl, else the CPU."""
    if active() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def offset_rng() -> None:
    """Give ranks other than 0 generators of their own (torch, NumPy, Python), derived
    from the current ones: rank 0 draws what one process would."""
    r = rank()
    if r == 0:
        return
    seed = (torch.initial_seed() + 1_000_003 * r) % 2**63
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first, the other ranks after it: what fills a cache on disk
    (a fetched data set, an encoded text) is then written once and read by the rest."""
    if not is_main():
        barrier()
    try:
        yield
    finally:
        if is_main():
            barrier()


# -- shares of the data ----------------------------------------------------------------------


def shard(items: Sequence[T]) -> Sequence[T]:
    """This rank's share of `items`: every world_size-th one from its rank (lengths stay
    balanced when `items` are sorted by length)."""
    return items[rank() :: world_size()]


def split_evenly(n: int, what: str) -> range:
    """This rank's contiguous block of ``range(n)``; ValueError naming `what` unless the
    processes divide `n` (the character model's streams: equal shares keep the
    loss curve equal to one process's)."""
    w, r = world_size(), rank()
    if n % w:
        raise ValueError(f"Argument `{what}`: {n} does not split evenly over {w} processes")
    return range(r * n // w, (r + 1) * n // w)


# -- reductions ------------------------------------------------------------------------------


def all_reduce(t: Tensor, op: str = "sum") -> Tensor:
    """The sum (or ``"max"``) of `t` over the ranks, as a new tensor on `t`'s device."""
    if not active():
        return t.clone()
    out = t.detach().to(_device(), copy=True)
    dist.all_reduce(out, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return out.to(t.device)


def sum_floats(*values: float) -> list[float]:
    """Each value summed over the ranks, in float64 (one collective)."""
    if not active():
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64)
    return all_reduce(t).tolist()


def max_float(value: float) -> float:
    """The largest `value` of any rank (so that time-based decisions agree)."""
    if not active():
        return float(value)
    return float(all_reduce(torch.tensor([float(value)], dtype=torch.float64), "max")[0])


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's `obj` (picklable), in rank order."""
    if not active():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def gather_by_index(n: int, pairs: Iterable[tuple[int, Any]]) -> list[Any]:
    """A list of `n` values assembled from each rank's ``(index, value)`` pairs (the
    predictions of a sharded evaluation)."""
    out: list[Any] = [None] * n
    for part in all_gather_objects(list(pairs)):
        for i, value in part:
            out[i] = value
    return out


def gather_rows(t: Tensor, dim: int) -> Tensor:
    """Every rank's `t` (equal shapes) concatenated along `dim` in rank order."""
    if not active():
        return t
    parts = [torch.empty_like(t, device=_device()) for _ in range(world_size())]
    dist.all_gather(parts, t.contiguous().to(_device()))
    return torch.cat(parts, dim=dim).to(t.device)


def weighted_means(weight: float | Tensor, values: Sequence[Tensor]) -> tuple[Tensor, list[Tensor]]:
    """(total weight, each value's mean over every rank's items), in one collective.

    A rank's `values` (0-dim, e.g. its loss) are means over its `weight` items (0 for a
    rank with nothing to do this step); the results weigh each rank by its items.
    """
    device = values[0].device
    w = torch.as_tensor(weight, dtype=torch.float32).to(device).reshape(())
    total = all_reduce(torch.stack([w] + [v.detach().float().reshape(()) * w for v in values]))
    return total[0], [total[i + 1] / total[0] for i in range(len(values))]


# -- the model ------------------------------------------------------------------------------


class DataParallel(DistributedDataParallel):
    """DDP whose attributes fall through to the wrapped model, so a task's step
    function calls ``model.loss(...)`` or reads ``model.config`` as on one process.
    Only ``forward`` (``model(...)``) takes part in DDP's bookkeeping."""

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.module, name)


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """`model` in :class:`DataParallel` when a process group is active, else itself.

    DDP starts every rank from rank 0's weights; buffers are not broadcast each step
    (rnnkit's buffers, such as input standardisation, never change in training)."""
    if not active():
        return model
    ids = [device.index] if device.type == "cuda" else None
    return DataParallel(model, device_ids=ids, forward_sync_buffers=False)
