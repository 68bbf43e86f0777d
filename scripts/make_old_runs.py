"""Write the tiny run directories of tests/fixtures/runs-0.1.0 and what they answer.

Run it with rnnkit 0.1.0 as it was before the house was reshaped (its modules were
rnnkit.charlm, rnnkit.classify, rnnkit.tag, rnnkit.seqtask), e.g. from a checkout of
that version: ``PYTHONPATH=OLD/src python scripts/make_old_runs.py tests/fixtures/runs-0.1.0``.
tests/test_old_runs.py then checks that today's rnnkit loads those runs, answers as
0.1.0 did (expected.json) and resumes them with the same losses.
"""

import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from rnnkit.charlm import CharLMConfig, TrainConfig
from rnnkit.seqtask import RunConfig, load_any

import seqtoys
from rnnkit import charlm, classify, tag

out = Path(sys.argv[1])
shutil.rmtree(out, ignore_errors=True)
out.mkdir(parents=True)


def quiet(msg: str) -> None:
    pass


text = out / "tiny.txt"
text.write_text(
    (
        "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n"
        * 12
    ),
    encoding="utf-8",
)
charlm.train(
    out / "charlm",
    CharLMConfig(num_layers=1, hidden_size=8, embedding_size=4),
    TrainConfig(
        batch_size=2,
        seq_len=16,
        steps=6,
        warmup_steps=2,
        eval_every=3,
        checkpoint_every=3,
        progress=False,
    ),
    text=text,
    log=quiet,
)
tsv = seqtoys.sentiment_tsv(out / "reviews.tsv", 60, 0)
classify.train(
    out / "classify",
    classify.ClassifyConfig(hidden_size=8, embedding_size=8),
    RunConfig(epochs=2, batch_size=16, progress=False),
    train=tsv,
    log=quiet,
)
conll = seqtoys.entity_conll(out / "entities.conll", 40, 0)
tag.train(
    out / "tag",
    tag.TagConfig(hidden_size=8, embedding_size=8, crf=True),
    RunConfig(epochs=2, batch_size=16, progress=False),
    train=conll,
    log=quiet,
)
print("written", out)

# What the old code answers, for the new code to match.
lm = charlm.load(out / "charlm")
expected = {
    "charlm_greedy": lm.sample("To be", 40, temperature=0),
    "charlm_seeded": lm.sample("To be", 40, temperature=0.8, seed=3),
    "charlm_nats": lm.score(text.read_text(encoding="utf-8"))["nats_per_char"],
}
clf = load_any(out / "classify")
expected["classify"] = clf.predict(["the film was great", "awful plot and acting"], top=2)
tg = load_any(out / "tag")
expected["tag"] = tg.predict(["we saw Ann Lee in Rome", "then met Bob Fox in Oslo"])
# Resuming: the old code continues each run three steps past its end.
work = out.parent / "resume-scratch"
shutil.rmtree(work, ignore_errors=True)
shutil.copytree(out / "charlm", work / "charlm")
_, t = charlm.train(
    work / "charlm", resume=True, train_config=TrainConfig(steps=9, progress=False), log=quiet
)
expected["charlm_resumed_losses"] = [r["loss"] for r in t.history if "loss" in r]
(out / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
for png in out.rglob("*.png"):
    png.unlink()
shutil.rmtree(work)
print(json.dumps(expected)[:600])
