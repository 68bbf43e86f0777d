"""rnnkit._malloc: the glibc mallopt tuning is applied where it can be, and harmless."""

from __future__ import annotations

import platform

import torch

from rnnkit._malloc import tune_glibc_malloc


def test_tune_glibc_malloc():
    applied = tune_glibc_malloc()
    assert isinstance(applied, bool)
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert applied
    x = torch.randn(3000, 3000)  # a 36 MB block after the change: still allocates fine
    assert torch.isfinite(x @ x[:, :10]).all()
