"""The recurrence ablation: a task where R = 0 cannot see the deciding context, R = 1 sees it only
along a pixel's row and column, and R = 2 sees it from anywhere.

    python tools/ablation.py                     (R = 0 1 2, seeds 0 1 2)
    python tools/ablation.py --recurrences 1 2 --seeds 0 --iters 200

Each generated 32 x 32 picture is grey noise with a 2 x 2 marker, red or blue, at a random place.
The marker is its own class; every other pixel is "red picture" or "blue picture" after the
marker's colour, so its label is decided by context alone. The model is the paper's RCCA head
(models/rcca.py, unchanged) on a backbone of one 3 x 3 and one 1 x 1 convolution at full
resolution: without attention a pixel sees NEAR = 4 pixels in each direction (the backbone's 3 x 3
and the head's three). Scored pixels are at least FAR = 7 from the marker, and of two kinds:
  cross: on the marker's rows or columns;  away: at least FAR from all of them.
What the mechanism predicts:
  R = 0: no pixel reaches the marker: both kinds are a guess (50% right);
  R = 1: one criss-cross pass brings the marker's colour along its rows and columns: cross pixels;
  R = 2: the second pass carries it from those rows and columns to every pixel: away pixels too.

Every run trains from scratch (AdamW, poly schedule) on its seed's stream of pictures; the 256
validation pictures are the same for all. The table gives mean and spread (min-max) over seeds of
mIoU, the share of cross and of away pixels labelled right, and the mean size of the learned gamma
(its sign is the value projection's to choose). Results go to
OUT/results.json and OUT/table.md; OUT/attention.png shows where one away pixel of the last R = 2
model looks (tools/show_attention.py's picture).
"""
import argparse
import json
import os
import sys
import time

import numpy as np


import jittor_env  # noqa: F401
import jittor as jt
from jittor import nn

from losses import segmentation_loss
from metrics import SegmentationMetrics
from models.norm import make_norm
from models.rcca import RCCAHead
from tools.show_attention import draw, recurrence_queries_keys, spread

SIZE = 32  # picture side
MARKER = 2  # marker side
# How far the convolutions alone reach: the backbone's 3x3 and the head's conva (before the
# attention), convb and bottleneck (after it) each add one pixel in every direction.
NEAR = 4
FAR = NEAR + 3  # scored pixels are at least this far from the marker (a margin of 3 pixels)
CLASSES = ("marker", "red picture", "blue picture")
COLOURS = np.array([(0.9, 0.1, 0.1), (0.1, 0.2, 0.9)], np.float32)  # the marker's: red, blue
GREY, NOISE = 0.5, 0.1
VALIDATION_SEED = 12345  # the validation pictures are the same for every run
CROSS, AWAY = 1, 2  # kinds of scored pixels in the `kind` map; 0: not scored


def gaps(start):
    """Distance of each of the SIZE rows (or columns) from the marker's MARKER rows at `start`."""
    index = np.arange(SIZE)
    return np.maximum(np.maximum(start - index, index - (start + MARKER - 1)), 0)


def make_scene(rng):
    """(image [3, SIZE, SIZE] float32, label [SIZE, SIZE] int32, kind [SIZE, SIZE] int32).

    Grey noise with a marker of random colour and place; every pixel but the marker's is labelled
    with the marker's colour. kind: CROSS on the marker's rows and columns at least FAR away, AWAY
    at least FAR from all of them, 0 in between (where the convolutions blur the line)."""
    corner = rng.integers(0, SIZE - MARKER + 1, size=2)
    colour = rng.integers(2)
    image = rng.normal(GREY, NOISE, (3, SIZE, SIZE)).astype(np.float32)
    window = np.s_[corner[0]:corner[0] + MARKER, corner[1]:corner[1] + MARKER]
    image[(slice(None),) + window] = COLOURS[colour][:, None, None]
    label = np.full((SIZE, SIZE), 1 + colour, np.int32)
    label[window] = 0
    row_gap, column_gap = np.meshgrid(gaps(corner[0]), gaps(corner[1]), indexing="ij")
    nearer, further = np.minimum(row_gap, column_gap), np.maximum(row_gap, column_gap)
    kind = np.where((nearer == 0) & (further >= FAR), CROSS, np.where(nearer >= FAR, AWAY, 0))
    return image, label, kind.astype(np.int32)


def make_batch(rng, count):
    scenes = [make_scene(rng) for _ in range(count)]
    return tuple(np.stack(part) for part in zip(*scenes))


class SmallCCNet(nn.Module):
    """A 3 x 3-receptive-field backbone (conv3x3 -> norm, conv1x1 -> norm) and the RCCA head."""

    def __init__(self, recurrence, width=64):
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1, bias=False),
                                  make_norm("inplace_abn", width, "leaky_relu"),
                                  nn.Conv2d(width, width, 1, bias=False),
                                  make_norm("inplace_abn", width, "leaky_relu"))
        self.head = RCCAHead(width, len(CLASSES), recurrence, out_channels=width, inter_channels=width // 2)

    def features(self, x):
        """(input of the RCCA head,): the form tools/show_attention.py reads."""
        return (self.stem(x),)

    def execute(self, x):
        return self.head(self.features(x)[0])


def train_one(recurrence, seed, iters, batch, lr):
    jt.set_global_seed(seed)
    model = SmallCCNet(recurrence)
    optimizer = nn.AdamW(model.parameters(), lr, weight_decay=1e-4)
    rng = np.random.default_rng(seed)
    for iteration in range(iters):
        optimizer.lr = lr * (1 - iteration / iters) ** 0.9
        images, labels, _ = make_batch(rng, batch)
        loss = segmentation_loss(model(jt.array(images)), jt.array(labels))
        optimizer.step(loss)
        if iteration % 50 == 0 or iteration == iters - 1:
            print(f"  R={recurrence} seed={seed} iter {iteration}: loss {loss.item():.4f}", flush=True)
    return model


def score(model, images, labels, kinds, batch=64):
    model.eval()
    metrics = SegmentationMetrics(len(CLASSES))
    predictions = []
    with jt.no_grad():
        for start in range(0, len(images), batch):
            predictions.append(model(jt.array(images[start:start + batch])).argmax(1)[0].numpy())
    prediction = np.concatenate(predictions)
    for p, t in zip(prediction, labels):
        metrics.update(p, t)
    correct = prediction == labels
    return {"mIoU": metrics.results()["mIoU"],
            "cross": float(correct[kinds == CROSS].mean()),
            "away": float(correct[kinds == AWAY].mean())}


def table(rows, recurrences):
    lines = ["| R | mIoU (%) | cross pixels right (%) | away pixels right (%) | abs(gamma) | runs |",
             "|---|---|---|---|---|---|"]
    for r in recurrences:
        mine = [row for row in rows if row["recurrence"] == r]
        cells = []
        for key in ("mIoU", "cross", "away"):
            values = 100 * np.array([row[key] for row in mine])
            cells.append(f"{values.mean():.1f} ({values.min():.1f}-{values.max():.1f})")
        cells.append(f"{np.mean([abs(row['gamma']) for row in mine]):.3f}" if r else "-")
        lines.append(f"| {r} | " + " | ".join(cells) + f" | {len(mine)} |")
    return "\n".join(lines)


def draw_attention(model, images, kinds, path):
    """Where the AWAY pixel nearest the centre of the first validation picture looks, after one and
    two passes."""
    away = np.argwhere(kinds[0] == AWAY)
    pixel = tuple(int(i) for i in away[np.abs(away - (SIZE - 1) / 2).sum(axis=1).argmin()])
    pairs = recurrence_queries_keys(model, jt.array(images[:1]))
    picture = np.clip(images[0].transpose(1, 2, 0), 0, 1)
    draw(picture, spread(pairs, pixel), pixel[::-1], path,
         f"criss-cross attention of pixel {pixel[::-1]}, R = {model.head.recurrence}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recurrences", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--iters", type=int, default=300, help="training iterations of every run")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3, help="AdamW's, poly-decayed to 0")
    p.add_argument("--val", type=int, default=256, help="validation pictures")
    p.add_argument("--out", default="work_dirs/ablation")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    val = make_batch(np.random.default_rng(VALIDATION_SEED), args.val)
    rows = []
    for seed in args.seeds:
        for r in args.recurrences:
            start = time.time()
            model = train_one(r, seed, args.iters, args.batch_size, args.lr)
            rows.append({"recurrence": r, "seed": seed, **score(model, *val),
                         "gamma": model.head.cca.gamma.item() if r else None, "seconds": time.time() - start})
            print(json.dumps(rows[-1]), flush=True)
            if r == 2:
                draw_attention(model, val[0], val[2], os.path.join(args.out, "attention.png"))
    text = table(rows, args.recurrences)
    print(text)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(rows, f, indent=2)
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write(f"{args.iters} iterations, batch {args.batch_size}, {SIZE} x {SIZE} pictures, AdamW lr {args.lr}; "
                f"{args.val} validation pictures; mean (min-max) over seeds {args.seeds}\n\n{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
