"""What the benchmarks print about the machine they ran on (shared by the scripts here).

The scripts run as ``python benchmarks/NAME.py``, so this folder is on ``sys.path``.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time

import torch


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(malloc_tuned: bool | None = None) -> dict:
    mem_total = None
    try:
        with open("/proc/meminfo") as f:
            mem_total = int(f.readline().split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "mem_total": mem_total,
        "onednn_enabled": torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled,
        "malloc_tuned": malloc_tuned,
        "LD_PRELOAD": os.environ.get("LD_PRELOAD"),
        "GLIBC_TUNABLES": os.environ.get("GLIBC_TUNABLES"),
        "loadavg": os.getloadavg(),
    }


def print_environment(env: dict) -> None:
    print(
        f"torch {env['torch']}, python {env['python']}, {env['threads']} threads, "
        f"{env['cpus']} CPUs: {env['cpu']}\n"
        f"oneDNN: {env['onednn_enabled']}, glibc malloc tuned (in this process): "
        f"{env['malloc_tuned']}, LD_PRELOAD={env['LD_PRELOAD']}, "
        f"GLIBC_TUNABLES={env['GLIBC_TUNABLES']}"
    )
    warn_if_loaded(env["loadavg"])


def warn_if_loaded(loadavg: tuple[float, float, float]) -> None:
    print(f"load average {loadavg[0]:.2f} {loadavg[1]:.2f} {loadavg[2]:.2f}")
    if loadavg[0] > 0.5:
        print(
            "WARNING: the machine is busy (1-minute load average > 0.5 before this run): "
            "these numbers are contended, do not report them"
        )


def print_load_after() -> tuple[float, float, float]:
    la = os.getloadavg()
    print(f"load average after (includes this run): {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}")
    return la


def write_json(path: str | None, report: dict) -> None:
    if path:
        with open(path, "w") as f:
            json.dump(report, f, indent=1, default=str)
        print(f"wrote {path}")


def timed(fn, repeats: int, *, warmup: int = 0) -> float:
    """The median seconds of `repeats` calls of `fn`, after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def parse_setting(text: str) -> tuple[str, object]:
    """``key=value`` -> (key, value): JSON where it parses (numbers, true/false), else text."""
    key, sep, value = text.partition("=")
    if not sep:
        sys.exit(f"--set: expected KEY=VALUE, got {text!r}")
    try:
        return key.replace("-", "_"), json.loads(value)
    except json.JSONDecodeError:
        return key.replace("-", "_"), value
