"""Peak memory of encoding and training a character model on a big text file.

The claim under test: a text of several GB trains without holding more than a small
multiple of its encoded size in memory (char-rnn, which reads the whole text into a
Python string and then into tensors, takes about 20x the file size).

1. A UTF-8 text of about --size-mb MB (default 1024) is built in --workdir (default
   /tmp/rnnkit-bench-mem) from the bundled Shakespeare, repeated, each copy followed by a
   few non-ASCII lines (accents, Greek, CJK, an emoji: the vocabulary is not plain ASCII,
   and decoding takes the wide-string paths); an existing file of that size is reused.
2. Each phase runs in a fresh subprocess, so ``ru_maxrss`` (the peak resident set,
   ``resource.getrusage(RUSAGE_SELF)``) is its own. Each applies rnnkit's glibc malloc
   tuning first, as the CLI does (--no-tune-malloc to compare), and records its resident
   set after importing torch and rnnkit (the baseline) before the work:

   * ``encode``: ``rnnkit.data.corpora.encode_to_memmap`` of the file into the cache
     ``$RNNKIT_DATA/encoded`` (``$RNNKIT_DATA`` = WORKDIR/data), with any earlier cache
     entry for the file removed first: the first-run encode pass. Time and peak RSS.
   * ``train``: ``rnnkit.tasks.charlm.train(text=FILE)`` with the CLI's model and batch (2x256
     LSTM, batch 32 x 64), --steps steps (default 20), evaluation only at the end on
     --eval-chars validation characters (default 50,000; ``eval_chars=0`` would read the
     whole validation tenth of the file), no progress bar; the encoding is a cache hit.
   * ``epoch``: no model, only ``StreamBatches`` over the memory-mapped ids for one whole
     pass (--epoch-fraction of it): what a long run does to the resident set, in seconds.
   * ``reference``: the same ``train`` on the bundled Shakespeare alone (5 MB), so the
     part of the peak that grows with the file is visible: train - reference.

   Peak RSS counts the file-backed pages of the memory-mapped ids that the process has
   touched (clean page cache, which the kernel may drop under memory pressure, but
   resident and counted) as well as its own anonymous memory; each phase also reports
   the two, and the resident part of the ids mapping (from /proc/self/smaps), at its end.

    python benchmarks/bench_charlm_memory.py                 # 1 GB; a few minutes
    python benchmarks/bench_charlm_memory.py --quick         # 50 MB
    python benchmarks/bench_charlm_memory.py --size-mb 4096 --json out.json

Memory is not disturbed by other work the way speed is, but times are: run on a quiet
machine to report the encoding time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

from _machine import environment, write_json
from rnnkit._malloc import tune_glibc_malloc
from rnnkit.data.corpora import cache_dir, encode_to_memmap, load_shakespeare
from rnnkit.tasks.charlm import CharLMConfig, StreamBatches, TrainConfig, load_data, train

MB = 1 << 20
NON_ASCII = (
    "\n\n¡Olé! Ça va, naïve Grüße aus Köln — «Ἀθῆναι» καὶ Σπάρτη; 東京と京都 🙂\n"
    "Ωμέγα ∑ ≤ ∞ … “quoted” ‘text’ · żółć · Dvořák · Œuvre\n\n"
)


# -- measuring a process ----------------------------------------------------------------------


def memory() -> dict[str, int]:
    """This process's resident memory in bytes: peak (ru_maxrss, VmHWM) and current."""
    out = {"ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem"):
                    out[key] = int(value.split()[0]) * 1024
    except OSError:
        pass
    out["ids_map_rss"] = mapped_npy_rss()
    return out


def mapped_npy_rss() -> int:
    """Resident bytes of this process's mappings of .npy files: the memory-mapped ids."""
    total, current = 0, ""
    try:
        with open("/proc/self/smaps") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 5 and "-" in parts[0] and not parts[0].endswith(":"):
                    current = parts[5] if len(parts) > 5 else ""  # a mapping's header line
                elif parts and parts[0] == "Rss:" and current.endswith(".npy"):
                    total += int(parts[1]) * 1024
    except OSError:
        pass
    return total


def worker(args: argparse.Namespace) -> None:
    tuned = False if args.no_tune_malloc else tune_glibc_malloc()
    if args.threads:
        torch.set_num_threads(args.threads)
    base = memory()  # torch, numpy and rnnkit imported
    text = Path(args.text)
    result: dict = {"phase": args.worker, "malloc_tuned": tuned, "baseline": base}
    start = time.perf_counter()
    if args.worker == "encode":
        ids, vocab = encode_to_memmap(text, cache_dir() / "encoded")
        result.update(chars=int(len(ids)), vocab_size=len(vocab), dtype=str(ids.dtype))
        result["encoded_bytes"] = int(ids.nbytes)
    elif args.worker == "epoch":
        data = load_data(text=text)
        cfg = TrainConfig()
        batches = StreamBatches(data.train, cfg.batch_size, cfg.seq_len)
        calls = max(1, int(batches.windows * args.epoch_fraction))
        for _ in range(calls):
            x, y = batches()
        result.update(calls=calls, windows=batches.windows, chars_read=calls * x.numel())
    else:
        cfg = TrainConfig(
            steps=args.steps,
            warmup_steps=min(5, args.steps - 1),
            eval_every=0,
            eval_chars=args.eval_chars,
            checkpoint_every=0,
            log_every=10,
            progress=False,
        )
        model, trainer = train(
            args.run_dir,
            CharLMConfig(),
            cfg,
            text=text,
            log=lambda msg: print(msg, file=sys.stderr),
        )
        result.update(steps=trainer.step, val_loss=(trainer.last_eval or {}).get("loss"))
    result["seconds"] = time.perf_counter() - start
    result["end"] = memory()
    print(json.dumps(result), flush=True)


def run_worker(phase: str, text: Path, args: argparse.Namespace, run_dir: Path) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", phase, "--text", str(text)]
    cmd += ["--steps", str(args.steps), "--eval-chars", str(args.eval_chars)]
    cmd += ["--run-dir", str(run_dir), "--epoch-fraction", str(args.epoch_fraction)]
    cmd += ["--no-tune-malloc"] if args.no_tune_malloc else []
    cmd += ["--threads", str(args.threads)] if args.threads else []
    env = {**os.environ, "RNNKIT_DATA": str(args.workdir / "data")}
    print(f"  {phase}: {text.name} ...", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"phase {phase} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- the text --------------------------------------------------------------------------------


def build_text(workdir: Path, size_mb: int) -> tuple[Path, float]:
    """WORKDIR/text-{size_mb}mb.txt, made on first use; (path, seconds spent making it)."""
    path = workdir / f"text-{size_mb}mb.txt"
    if path.is_file():
        return path, 0.0
    start = time.perf_counter()
    block = (load_shakespeare() + NON_ASCII).encode("utf-8")
    target = size_mb * MB
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        for _ in range(target // len(block)):
            f.write(block)
        rest = block[: target % len(block)]
        f.write(rest[: rest.rfind(b"\n") + 1])  # end on a line: never cut a character
    tmp.replace(path)
    return path, time.perf_counter() - start


def reference_text(workdir: Path) -> Path:
    path = workdir / "shakespeare.txt"
    if not path.is_file():
        tmp = path.with_suffix(".tmp")
        tmp.write_text(load_shakespeare(), encoding="utf-8")
        tmp.replace(path)
    return path


def drop_cached_encoding(workdir: Path, text: Path) -> int:
    """Remove the encode cache entries of `text` so the encode pass runs; returns how many."""
    encoded = workdir / "data" / "encoded"
    removed = 0
    for entry in encoded.glob(f"{text.name}.*") if encoded.is_dir() else []:
        entry.unlink()
        removed += 1
    return removed


# -- reporting -------------------------------------------------------------------------------


def mib(n: float) -> str:
    return f"{n / MB:,.1f}"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a 50 MB text instead of 1 GB")
    p.add_argument("--size-mb", type=int, default=None, help="text size in MiB (default 1024)")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/rnnkit-bench-mem"))
    p.add_argument("--steps", type=int, default=20, help="training steps (default 20)")
    p.add_argument("--eval-chars", type=int, default=50_000, help="validation characters")
    p.add_argument("--keep-cache", action="store_true", help="reuse an earlier encoding")
    p.add_argument("--no-reference", action="store_true", help="skip the 5 MB reference run")
    p.add_argument("--no-tune-malloc", action="store_true", help="keep glibc's defaults")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--json", default=None, help="also write the results to this file")
    p.add_argument(
        "--epoch-fraction",
        type=float,
        default=1.0,
        help="of one pass for the epoch phase (default 1: all of it; 0: skip the phase)",
    )
    p.add_argument("--worker", choices=("encode", "train", "epoch"), help=argparse.SUPPRESS)
    p.add_argument("--text", help=argparse.SUPPRESS)
    p.add_argument("--run-dir", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.steps < 2:
        p.error("--steps must be at least 2")
    if args.eval_chars < 2:
        p.error("--eval-chars must be at least 2 (0 would evaluate the whole validation part)")
    if args.worker:
        worker(args)
        return
    args.size_mb = args.size_mb or (50 if args.quick else 1024)

    env = environment()
    print(
        f"torch {env['torch']}, python {env['python']}, {env['threads']} threads, "
        f"{env['cpus']} CPUs: {env['cpu']}, {mib(env['mem_total'] or 0)} MiB RAM\n"
        f"glibc malloc tuned in the phases: {not args.no_tune_malloc}, "
        f"LD_PRELOAD={env['LD_PRELOAD']}, GLIBC_TUNABLES={env['GLIBC_TUNABLES']}"
    )
    la = env["loadavg"]
    print(f"load average {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}")
    if la[0] > 0.5:
        print("WARNING: the machine is busy: times are contended, do not report them")

    args.workdir.mkdir(parents=True, exist_ok=True)
    text, build_s = build_text(args.workdir, args.size_mb)
    file_bytes = text.stat().st_size
    made = f"made in {build_s:.1f} s" if build_s else "reused"
    print(f"text: {text} ({mib(file_bytes)} MiB, {made})")
    if not args.keep_cache:
        drop_cached_encoding(args.workdir, text)

    phases: dict[str, dict] = {}
    runs = args.workdir / "runs"
    runs.mkdir(exist_ok=True)
    jobs = [("encode", "encode", text), ("train", "train", text)]
    if args.epoch_fraction > 0:
        jobs.append(("epoch", "epoch", text))
    if not args.no_reference:
        jobs.append(("reference", "train", reference_text(args.workdir)))
    for name, phase, path in jobs:
        run_dir = runs / f"{name}-{os.getpid()}"
        try:
            phases[name] = run_worker(phase, path, args, run_dir)
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)
        phases[name]["file_bytes"] = path.stat().st_size
    enc = phases["encode"]
    encoded = enc["encoded_bytes"]
    print(
        f"encoded: {enc['chars']:,} characters, vocabulary {enc['vocab_size']}, "
        f"{enc['dtype']}: {mib(encoded)} MiB; encoding took {enc['seconds']:.1f} s "
        f"({file_bytes / MB / enc['seconds']:.1f} MiB/s)"
    )

    print(
        f"\n{'phase':<10} {'text MiB':>9} {'seconds':>8} {'base RSS':>9} {'peak RSS':>9} "
        f"{'peak-base':>10} {'/file':>6} {'/encoded':>8} {'end anon':>9} {'end file':>9} "
        f"{'ids map':>8}"
    )
    for name, r in phases.items():
        peak, base = r["end"]["ru_maxrss"], r["baseline"]["VmRSS"]
        r["increment"] = peak - base
        print(
            f"{name:<10} {mib(r['file_bytes']):>9} {r['seconds']:8.1f} {mib(base):>9} "
            f"{mib(peak):>9} {mib(peak - base):>10} {(peak - base) / file_bytes:6.3f} "
            f"{(peak - base) / encoded:8.3f} {mib(r['end'].get('RssAnon', 0)):>9} "
            f"{mib(r['end'].get('RssFile', 0)):>9} {mib(r['end']['ids_map_rss']):>8}"
        )
    print(
        "(RSS in MiB; /file and /encoded: peak-base over the big text's file and encoded "
        "sizes; end anon/file: resident anonymous and file-backed memory when the phase "
        "ended; ids map: the part of it in the memory-mapped ids)"
    )
    summary = {
        "file_bytes": file_bytes,
        "encoded_bytes": encoded,
        "encode_seconds": enc["seconds"],
        "encode_peak_over_base": phases["encode"]["increment"],
        "train_peak_over_base": phases["train"]["increment"],
    }
    if "reference" in phases:
        grow = phases["train"]["end"]["ru_maxrss"] - phases["reference"]["end"]["ru_maxrss"]
        summary["train_peak_minus_reference"] = grow
        print(
            f"training peak, {mib(file_bytes)} MiB text minus 5 MB text: {mib(grow)} MiB "
            f"({grow / encoded:.3f} x the encoded size)"
        )
    if "epoch" in phases:
        ep = phases["epoch"]
        print(
            f"one pass of StreamBatches ({ep['calls']:,} of {ep['windows']:,} windows, "
            f"{ep['seconds']:.1f} s) left {mib(ep['end']['ids_map_rss'])} MiB of the "
            f"{mib(encoded)} MiB memory-mapped ids resident (clean file pages the kernel may "
            "drop under pressure, but counted in RSS) and "
            f"{mib(ep['end'].get('RssAnon', 0) - ep['baseline'].get('RssAnon', 0))} MiB more "
            "anonymous memory than at its start"
        )
    worst = max(summary["encode_peak_over_base"], summary["train_peak_over_base"])
    print(
        f"largest increment over the import baseline: {mib(worst)} MiB = "
        f"{worst / encoded:.3f} x encoded, {worst / file_bytes:.3f} x the file"
    )
    report = {"environment": env, "args": vars(args), "text": text, "summary": summary}
    write_json(args.json, {**report, "phases": phases})


if __name__ == "__main__":
    main()
