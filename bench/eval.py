"""Evaluation throughput: images/s of test.py's prediction for a full CCNet on this machine.

    python bench/eval.py --root ../shared/data/ade20k_sample --backbone resnet101
    python bench/eval.py --root ../shared/data/ade20k_sample --backbone resnet101 --layout mmseg
    python bench/eval.py --root ../shared/data/ade20k_sample --mode slide --scales 0.5 1.0 1.5 --flip

Runs inference.predict (what test.py runs per image: resize, forward, softmax resized back to
the original size, argmax excluded) on every image of the split, --passes times after one pass
that compiles the kernels, with freshly initialised weights (speed does not depend on them), and
prints the table. "forward" is the time inside the model's calls (each call's output computed
before the clock stops), the bare forward passes the protocol needs; "predict / forward" is what
the rest (resizes, softmax, the copy to NumPy) adds. Whole mode resizes ADE20K images to a 512 short side (2048 x 512 limits). The
protocol is the one a checkpoint of that layout records (checkpoints.py): --layout mmseg times a
converted mmsegmentation model.
"""
import argparse
import time

import numpy as np


from checkpoints import make_protocol, protocol_normalization
from datasets import ADE20K
from datasets.transforms import normalization_for
from inference import Protocol, predict
from models import build_ccnet


class TimedModel:
    """The model, with the time spent computing its outputs added up in `seconds`."""

    def __init__(self, model):
        self.model, self.seconds = model, 0.0

    def __call__(self, x):
        start = time.perf_counter()
        out = self.model(x)
        out.sync()
        self.seconds += time.perf_counter() - start
        return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", required=True, help="dataset root (ADE20K layout)")
    p.add_argument("--split", default="validation")
    p.add_argument("--backbone", default="resnet101")
    p.add_argument("--layout", default="official", choices=["official", "mmseg"])
    p.add_argument("--mode", default="whole", choices=["whole", "slide"])
    p.add_argument("--scales", type=float, nargs="+", default=[1.0])
    p.add_argument("--flip", action="store_true")
    p.add_argument("--passes", type=int, default=2, help="timed passes over the split (default 2)")
    args = p.parse_args()
    saved = make_protocol(args.layout, "ade20k-512x512",
                          normalization_for(args.backbone) if args.layout == "official" else None)
    dataset = ADE20K(args.root, args.split, normalization=protocol_normalization(saved))
    images = [dataset.read(i)[0] for i in range(len(dataset.files))]
    model = TimedModel(build_ccnet(args.backbone, layout=args.layout).eval())
    protocol = Protocol(args.mode, tuple(args.scales), args.flip, align_corners=saved["align_corners"])
    for image in images:  # the first pass compiles the kernels of each input size
        predict(model, image, dataset.normalization, protocol)
    times, forward = [], []
    for _ in range(args.passes):
        for image in images:
            model.seconds = 0.0
            start = time.perf_counter()
            predict(model, image, dataset.normalization, protocol)
            times.append(time.perf_counter() - start)
            forward.append(model.seconds)
    sizes = " ".join(f"{im.shape[1]}x{im.shape[0]}" for im in images)
    print("| backbone | layout | protocol | images (W x H) | s/image (mean, min-max) | forward s/image "
          "| predict / forward | images/s |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {args.backbone} | {args.layout} | {args.mode}, scales {args.scales}{', flip' if args.flip else ''} | {sizes} "
          f"| {np.mean(times):.2f} ({min(times):.2f}-{max(times):.2f}) | {np.mean(forward):.2f} "
          f"| {np.sum(times) / np.sum(forward):.2f} | {1 / np.mean(times):.2f} |")


if __name__ == "__main__":
    main()
