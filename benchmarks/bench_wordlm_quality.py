"""Penn Treebank perplexity at time budgets: the README's table of the word model.

One run per budget of `--minutes` (each measured alone, one after another: a second
process on two cores halves the speed), the README's command: a 2x200 LSTM with the
adaptive softmax and dropout 0.2, Adam at 3e-3 decaying linearly to the end of the
budget; validation and test perplexity with the best validation weights, beside the
published anchor (Zaremba et al. 2014, the 2x200 LSTM without dropout: 114.5 on test).

    python benchmarks/bench_wordlm_quality.py --minutes 10 30 60
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from _machine import environment, parse_setting
from rnnkit.tasks import wordlm
from rnnkit.tasks.wordlm import TrainConfig, WordLMConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[10.0, 30.0, 60.0])
    parser.add_argument(
        "--set", nargs="*", default=["softmax=adaptive", "dropout=0.2"], metavar="KEY=VALUE",
        help="model settings (default: the README's)",
    )  # fmt: skip
    args = parser.parse_args()
    settings = dict(parse_setting(kv) for kv in args.set)
    print(f"# ptb, {settings}")
    print(json.dumps(environment()))
    print("| minutes | steps | epochs | validation | **test** | published (2x200, no dropout) |")
    print("|---|---|---|---|---|---|")
    for minutes in args.minutes:
        with tempfile.TemporaryDirectory(prefix="bench-wordlm-") as tmp:
            _, r = wordlm.train(
                Path(tmp) / "run", WordLMConfig(**settings),
                TrainConfig(minutes=minutes, progress=False), data="ptb", log=lambda m: None,
            )  # fmt: skip
        steps = r["train"]["steps"]
        config = TrainConfig()
        epochs = steps * config.batch_size * config.seq_len / 929_589  # training words
        print(f"| {minutes:g} | {steps:,} | {epochs:.1f} | {r['val']['ppl']:.1f} | "
              f"**{r['test']['ppl']:.1f}** | 114.5 |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
