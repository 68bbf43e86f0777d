"""Draw docs/wesnoth-actions.png: one test sequence of each action of wesnoth-actions,
its frames in a row (the README shows it).

    python scripts/wesnoth_sheet.py [--out docs/wesnoth-actions.png] [--frames 8]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from rnnkit.data import wesnoth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="docs/wesnoth-actions.png")
    parser.add_argument("--frames", type=int, default=8, help="frames shown per sequence")
    args = parser.parse_args()
    test = wesnoth.wesnoth_actions(log=print)["test"]
    names = list(wesnoth.ACTIONS)
    rows = []
    for action in range(len(names)):
        found = np.flatnonzero(test.clip_labels == action)
        if len(found):  # the longest test sequence of this action
            rows.append(max(found, key=lambda k: test.lengths[k]))
    label_w, side, pad = 150, 72, 4
    sheet = Image.new("RGB", (label_w + args.frames * (side + pad), len(rows) * (side + pad)),
                      "white")  # fmt: skip
    draw = ImageDraw.Draw(sheet)
    for r, k in enumerate(rows):
        y = r * (side + pad)
        name = test.names[k].split(":", 1)[1]
        draw.text((4, y + 20), f"{names[test.clip_labels[k]]}", fill="black")
        draw.text((4, y + 38), name.split("/")[-1][:22], fill="grey")
        for t in range(min(args.frames, int(test.lengths[k]))):
            frame = Image.fromarray(test.frames[k, t])
            sheet.paste(frame, (label_w + t * (side + pad), y))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
