"""Does a labelled word model write sentences of the label it is given?

The honest measure of conditioning: a sentiment classifier, trained apart on the same
sentences, reads the generated ones. Both models train on ``movie-reviews``' training
split (neither sees its held-out tenth):

1. ``rnnkit train classify --data movie-reviews`` (the preset), scored on the held-out
   tenth of real sentences, for scale;
2. ``rnnkit train wordlm --data movie-reviews --minutes M``: a 2x200 LSTM whose every
   step also reads the label's vector (the lectures' captioning equation, a label in
   place of the image);
3. ``--num`` sentences generated for each label at each temperature (an empty one, an
   ``<eos>`` written first, is left out and the count says so); the share the
   classifier labels as their condition (chance: 50%), without and with guidance
   (``rnnkit generate --guidance G``: the words that tell the labels apart pushed up).

    python benchmarks/bench_conditioned.py [--minutes 5] [--num 300]
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import rnnkit
from _machine import environment


def rnnkit_cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "rnnkit", *args], check=True, stdout=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="of the word model")
    parser.add_argument("--num", type=int, default=300, help="sentences per label")
    parser.add_argument("--temperatures", type=float, nargs="+", default=[0.7, 1.0])
    parser.add_argument("--guidance", type=float, nargs="+", default=[0.0, 2.0, 4.0],
                        help="rnnkit generate --guidance values")  # fmt: skip
    parser.add_argument("--keep", help="keep both runs in this folder")
    args = parser.parse_args()
    print(json.dumps(environment()))
    with tempfile.TemporaryDirectory(prefix="bench-conditioned-") as tmp:
        root = Path(args.keep or tmp)
        clf_dir, lm_dir = root / "classify", root / "wordlm"
        if not (clf_dir / "results.json").is_file():  # --keep: a finished run is reused
            rnnkit_cli("train", "classify", "--data", "movie-reviews", "--out", str(clf_dir),
                       "--no-progress")  # fmt: skip
        if not (lm_dir / "results.json").is_file():
            rnnkit_cli("train", "wordlm", "--data", "movie-reviews", "--minutes",
                       str(args.minutes), "--out", str(lm_dir), "--no-progress")  # fmt: skip
        clf, lm = rnnkit.load_any(clf_dir), rnnkit.load_any(lm_dir)
        real = json.loads((clf_dir / "results.json").read_text())
        lm_results = json.loads((lm_dir / "results.json").read_text())
        print(f"classifier on real held-out sentences: {json.dumps(real.get('test', real))}")
        print(f"word model: {json.dumps(lm_results)}")
        labels = list(lm.labels.labels)
        print("| temperature | guidance | label | sentences | classified as asked | example |")
        print("|---|---|---|---|---|---|")
        for t, g, (k, label) in itertools.product(
            args.temperatures, args.guidance, enumerate(labels)
        ):
            sentences = lm.generate(
                num=args.num, label=label, temperature=t, seed=k + 1, guidance=g
            )
            sentences = [x for x in sentences if x.strip()]  # <eos> at once: no sentence
            predicted = [top[0][0] for top in clf.predict(sentences)]
            agree = 100.0 * sum(p == label for p in predicted) / len(sentences)
            example = min(sentences[:20], key=lambda s: abs(len(s.split()) - 12))
            print(f"| {t} | {g} | {label} | {len(sentences)} | {agree:.1f}% | {example} |",
                  flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
