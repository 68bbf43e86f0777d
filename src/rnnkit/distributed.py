"""Data-parallel training on ``torch.distributed``: ranks, shares of the data, reductions.

A plain ``rnnkit train ...`` is one process and nothing here does anything. Started by
``torchrun`` (or ``rnnkit train ... --nproc N``, which starts torchrun's launcher),
every process joins one process group -- ``gloo`` on CPUs, ``nccl`` on GPUs, on one
machine or many (torchrun's ``--nnodes`` and rendezvous) -- and the shared trainer
trains data-parallel:

* every rank starts from rank 0's weights (:func:`broadcast_module`) and reads its own
  share of every global batch (the character model's streams, a bucketed batch's
  examples), so ``--batch-size`` is the global batch and the run takes the same
  optimizer steps on any number of processes;
* after backward one allreduce of every gradient weighted by the rank's share of the
  batch, together with the loss and the logged stats (:func:`average_gradients`), makes
  each rank's gradient exactly the gradient of the global batch's mean loss, also when
  the shares are unequal (a bucketed batch of 33 sequences on 2 ranks), so every rank
  takes the same optimizer step;
* evaluation is sharded too and reduced (:func:`sum_floats`, :func:`gather_by_index`);
* only rank 0 writes (:func:`is_main`): checkpoints, metrics, plots and logs.

The helpers are safe to call in a plain process: a share is everything, a reduction
is the identity.

Why not :class:`~torch.nn.parallel.DistributedDataParallel`: its allreduce in buckets
during backward overlaps communication with computation, which pays for models with
hundreds of MB of gradients. rnnkit's recurrent models have a few MB (the default
character model: 4.9 MB, one gloo allreduce of it on localhost 6 ms), and on the CPU
DDP with bfloat16 autocast measured 355 ms a step against 134 ms for the same step
without it (2 processes x 1 thread, the default character model, this 2-core
machine), where one allreduce after backward adds about 7 ms. One collective per step
also carries the loss and statistics, needs no wrapper between a task and its model
(``model.loss(...)``, a CRF's parameters used outside ``forward``), and has no rule
about unused parameters.
"""

from __future__ import annotations

import contextlib
import os
import random
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

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
        _die_with_launcher()
        cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
        if cuda:
            if not torch.cuda.is_available():
                raise ValueError(
                    "Argument `device` is 'cuda', but CUDA is not available on this machine"
                )
            torch.cuda.set_device(local_rank())
        dist.init_process_group("nccl" if cuda else "gloo")
    return True


def _die_with_launcher() -> None:
    """Let the kernel kill this worker when its launcher dies (Linux ``PR_SET_PDEATHSIG``).

    torchrun starts every worker in a session of its own, so a launcher killed outright
    (``kill -9``, the machine's OOM killer) would leave its workers training on as
    orphans and still writing into the run directory. The launcher forwards SIGINT and
    SIGTERM itself; this covers the signal it cannot forward. Elsewhere: nothing."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the launcher died before the call took effect
        os.kill(os.getpid(), signal.SIGKILL)


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


def average_gradients(
    params: Sequence[Tensor], weight: float | Tensor, values: Sequence[Tensor]
) -> tuple[float, list[Tensor]]:
    """Make every rank's gradients the global batch's, in one collective after backward.

    A rank's gradients and `values` (0-dim, e.g. its loss) are means over its `weight`
    items (0 for a rank with nothing to do this step). Summing ``weight x gradient``
    and `weight` over the ranks and dividing gives the gradient of the mean loss over
    every rank's items together -- exactly one process's on the whole batch. Returns
    (total weight, each value's mean over every item).
    """
    device = values[0].device
    w = torch.as_tensor(weight, dtype=torch.float32).to(device).reshape(1)
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat(
        [g.detach().reshape(-1).float() for g in grads]
        + [torch.ones(1, device=device)]
        + [v.detach().float().reshape(1) for v in values]
    )
    flat.mul_(w)
    flat = all_reduce(flat)
    n = sum(g.numel() for g in grads)
    total = float(flat[n])
    flat.div_(total)
    offset = 0
    for p, g in zip(params, grads):
        part = flat[offset : offset + g.numel()].view_as(g).to(p.dtype)
        if p.grad is None:
            p.grad = part.clone()
        else:
            p.grad.copy_(part)
        offset += g.numel()
    return total, [flat[n + 1 + i] for i in range(len(values))]


def broadcast_module(model: nn.Module) -> None:
    """Every rank starts from rank 0's parameters and buffers."""
    if not active():
        return
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            out = t.detach().to(_device(), copy=True)
            dist.broadcast(out, src=0)
            t.copy_(out.to(t.device))
