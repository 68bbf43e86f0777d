"""Kill -9 a training run at random moments, resume it each time, and show that nothing
is lost: the run that was killed N times ends with the same weights and the same
per-step losses as one never stopped, and after every kill each checkpoint on disk
loads (its files match the sha256 recorded in it).

A tiny character model and a tiny classifier are trained with ``python -m rnnkit``
exactly as a user would (a checkpoint every few steps); each kill lands at a uniformly
random moment of a run's life -- start-up, training, evaluation, the middle of a
checkpoint's write or swap: after the command's start-up (measured) and within the
first 30% of a whole run's training time, so that every attempt is likely to be cut
while it trains -- and the next attempt resumes (``--resume``), or starts
afresh when no checkpoint exists yet.

    python benchmarks/bench_kill_resume.py                 # 20 kills per task
    python benchmarks/bench_kill_resume.py --kills 5 --json out.json
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from rnnkit.checkpoint import load_checkpoint, previous_path

KILL_WITHIN = 0.3  # a kill lands in the first 30% of a whole run's training time
TEXT = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n"


def task_commands(task: str, run: Path, data: Path) -> tuple[list[str], list[str]]:
    """(the command of a fresh run, the command that resumes it)."""
    rnnkit = [sys.executable, "-m", "rnnkit", "train", task, "--out", str(run), "--no-progress"]
    if task == "charlm":
        fresh = [
            *rnnkit, "--text", str(data), "--hidden-size", "32", "--embedding-size", "8",
            "--batch-size", "4", "--seq-len", "32", "--steps", "600", "--checkpoint-every", "6",
            "--eval-every", "30", "--eval-chars", "2000",
        ]  # fmt: skip
        return [*fresh, "--sample", "0"], [*rnnkit, "--resume", "--sample", "0"]
    fresh = [
        *rnnkit, "--train", str(data), "--hidden-size", "16", "--embedding-size", "16",
        "--epochs", "30", "--batch-size", "16", "--evals-per-epoch", "3",
    ]  # fmt: skip
    return fresh, [*rnnkit, "--resume"]


def write_data(task: str, folder: Path) -> Path:
    rng = random.Random(0)
    if task == "charlm":
        path = folder / "text.txt"
        path.write_text(TEXT * 60, encoding="utf-8")
        return path
    good, bad = ["great", "fine", "lovely"], ["dull", "awful", "weak"]
    filler = ["the", "film", "was", "a", "plot", "story"]
    lines = []
    for _ in range(300):
        label = rng.choice(["pos", "neg"])
        words = [rng.choice(filler) for _ in range(rng.randint(1, 8))]
        words.insert(rng.randint(0, len(words)), rng.choice(good if label == "pos" else bad))
        lines.append(f"{label}\t{' '.join(words)}")
    path = folder / "train.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def losses(run: Path) -> list[float]:
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    return [float(r["loss"]) for r in rows if r.get("loss")]


def check_on_disk(run: Path) -> int:
    """Load every checkpoint in the run directory; return how many there were."""
    found = 0
    for ckpt in (run / "latest", run / "best", previous_path(run / "latest")):
        if ckpt.exists() or ckpt.with_name(f".{ckpt.name}.old").exists():
            load_checkpoint(ckpt)  # raises if damaged (sha256) or incomplete
            found += 1
    return found


def run_to_the_end(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - start


def startup_s() -> float:
    """Seconds until ``python -m rnnkit`` can start work (importing torch and rnnkit)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "rnnkit", "--version"], check=True, capture_output=True)
    return time.perf_counter() - start


def killed_run(
    task: str, folder: Path, kills: int, life: float, start: float, rng: random.Random
) -> dict:
    run = folder / f"{task}-killed"
    data = write_data(task, folder)
    fresh, resume = task_commands(task, run, data)
    done, killed, loaded, attempts = False, 0, 0, 0
    while not done:
        started = (run / "latest").exists() or (run / ".latest.old").exists()
        cmd = resume if started else fresh
        attempts += 1
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if killed < kills:
            time.sleep(rng.uniform(0.5 * start, start + (life - start) * KILL_WITHIN))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                killed += 1
        _, err = proc.communicate()
        if proc.returncode == 0:
            done = True
        elif proc.returncode != -signal.SIGKILL:
            raise RuntimeError(f"attempt {attempts} failed: {err.decode()[-2000:]}")
        if run.exists():
            loaded += check_on_disk(run)
    return {"run": run, "kills": killed, "attempts": attempts, "checkpoints_loaded": loaded}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=20, help="kills per task (default 20)")
    p.add_argument("--tasks", default="charlm,classify")
    p.add_argument("--workdir", type=Path, default=Path("runs/bench-kill"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    rng = random.Random(args.seed)
    results = []
    for task in args.tasks.split(","):
        folder = args.workdir / task
        if folder.exists():
            import shutil

            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        whole = folder / f"{task}-whole"
        fresh, _ = task_commands(task, whole, write_data(task, folder))
        life = run_to_the_end(fresh)
        start = startup_s()
        cut = killed_run(task, folder, args.kills, life, start, rng)
        a, b = load_checkpoint(whole / "latest"), load_checkpoint(cut["run"] / "latest")
        same_weights = all(torch.equal(a.model_state[k], b.model_state[k]) for k in a.model_state)
        same_losses = losses(whole) == losses(cut["run"])
        results.append(
            {
                "task": task,
                "uninterrupted_s": round(life, 1),
                "startup_s": round(start, 1),
                "kills": cut["kills"],
                "attempts": cut["attempts"],
                "checkpoints_loaded_after_kills": cut["checkpoints_loaded"],
                "same_final_weights": same_weights,
                "same_losses_every_step": same_losses,
                "steps": a.meta["step"],
            }
        )
        print(json.dumps(results[-1]))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0 if all(r["same_final_weights"] and r["same_losses_every_step"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
