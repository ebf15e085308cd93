"""The recurrence ablation on the generated long-range dataset: R = 0, 1, 2, same seeds and budget.

    python tools/ablation.py                      (R = 0 1 2, seeds 0 1 2: about 35 min on 2 cores)
    python tools/ablation.py --recurrences 1 2 --seeds 0 --iters 200

Every run trains van_b0 from scratch with the same flags and seed set on a generated dataset of
64 x 64 images (tools/make_synthetic_ade20k.py), then scores the validation split. The table gives
mIoU and the IoU of the two classes that only long-range context can tell apart (sofa and armchair:
the same grey ellipse, decided by a painting that shares no row or column with it), as the mean and
the spread (min-max) over seeds, and the learned gamma of the criss-cross attention (0 at the
start: how far attention was switched on). Results go to OUT/results.json and OUT/table.md;
--reuse scores runs already finished in OUT instead of training them again.
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import make_synthetic_ade20k as synthetic  # noqa: E402
import train  # noqa: E402
from datasets import ADE20K  # noqa: E402
from inference import Protocol, evaluate  # noqa: E402
from checkpoints import load_model  # noqa: E402
from train import load_resume  # noqa: E402

LONG_RANGE = {"sofa": synthetic.SOFA - 1, "armchair": synthetic.ARMCHAIR - 1}  # training ids


def finished(path, iters):
    return os.path.isfile(path) and load_resume(path)["iteration"] == iters


def run(args, recurrence, seed):
    work = os.path.join(args.out, f"R{recurrence}_seed{seed}")
    ckpt = os.path.join(work, "latest.pkl")
    flags = ["--backbone", "van_b0", "--data-root", args.data, "--work-dir", work, "--overwrite",
             "--recurrence", str(recurrence), "--seed", str(seed), "--iters", str(args.iters),
             "--crop-size", "64", "--img-scale", "256", "64", "--batch-size", "8", "--lr", "1e-3",
             "--warmup-iters", "0", "--eval-interval", "0", "--log-interval", "10", "--workers", "2"]
    if not (args.reuse and finished(ckpt, args.iters)) and train.main(flags) != 0:
        raise SystemExit(f"training R={recurrence} seed={seed} failed")
    model, checkpoint = load_model(ckpt)
    results = evaluate(model, ADE20K(args.data, "validation", "van_b0"),
                       Protocol(scale=tuple(checkpoint["protocol"]["scale"])), checkpoint["arch"]["num_classes"],
                       progress=False)
    return {"recurrence": recurrence, "seed": seed, "mIoU": results["mIoU"], "gamma": model.head.cca.gamma.item(),
            **{name: results["IoU"][index] for name, index in LONG_RANGE.items()}}


def table(rows, recurrences):
    lines = ["| R | mIoU (%) | sofa IoU (%) | armchair IoU (%) | gamma | runs |", "|---|---|---|---|---|---|"]
    for r in recurrences:
        mine = [row for row in rows if row["recurrence"] == r]
        cells = []
        for key in ("mIoU", "sofa", "armchair"):
            values = 100 * np.array([row[key] for row in mine])
            cells.append(f"{values.mean():.1f} ({values.min():.1f}-{values.max():.1f})")
        gammas = [row["gamma"] for row in mine]
        cells.append(f"{np.mean(gammas):.4f}" if r else "-")
        lines.append(f"| {r} | " + " | ".join(cells) + f" | {len(mine)} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recurrences", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--iters", type=int, default=300, help="training iterations of every run")
    p.add_argument("--data", default="data/synthetic64", help="where the generated dataset is written")
    p.add_argument("--out", default="work_dirs/ablation")
    p.add_argument("--reuse", action="store_true", help="score finished runs in OUT instead of retraining")
    args = p.parse_args(argv)
    synthetic.main(["--out", args.data, "--train", "300", "--val", "60", "--size", "64"])
    rows = []
    for seed in args.seeds:
        for r in args.recurrences:
            rows.append(run(args, r, seed))
            print(json.dumps(rows[-1]), flush=True)
    text = table(rows, args.recurrences)
    print(text)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(rows, f, indent=2)
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write(f"{args.iters} iterations, batch 8, crop 64, van_b0 from scratch; mean (min-max) over seeds "
                f"{args.seeds}\n\n{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
