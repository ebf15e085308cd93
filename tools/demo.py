"""The whole pipeline in a few minutes on a CPU: data, training, evaluation, pictures.

    make demo          (or: python tools/demo.py)

1. writes a generated dataset in the ADE20K layout (tools/make_synthetic_ade20k.py) to
   data/synthetic: 300 training and 60 validation images of 128 x 128;
2. trains CCNet with the smallest VAN backbone (van_b0, from scratch, R = 2) for 300 iterations of
   batch 8 at crop 128, evaluating every 100 iterations, into work_dirs/demo (curves.png, log.jsonl,
   checkpoints);
3. evaluates the final checkpoint with test.py (whole images), saves its predictions and stacks
   the first four (image | prediction | ground truth) into predictions.jpg;
4. draws the criss-cross attention of a pixel of the long-range object (sofa or armchair, decided
   only by a painting in the opposite corner) with tools/show_attention.py;
and prints the mIoU and where everything is.
"""
import glob
import json
import os
import sys

import numpy as np
from PIL import Image


from datasets import synthetic
from tools import show_attention
import test as test_script
import train
from datasets.ade20k import list_split, read_annotation
from datasets.segmentation import read_image
from datasets.ade20k_classes import NAMES

DATA = "data/synthetic"
WORK = "work_dirs/demo"
TRAIN = ["--backbone", "van_b0", "--data-root", DATA, "--work-dir", WORK, "--overwrite",
         "--crop-size", "128", "--img-scale", "512", "128", "--batch-size", "8", "--iters", "300",
         "--lr", "1e-3", "--warmup-iters", "0", "--eval-interval", "100", "--ckpt-interval", "100",
         "--log-interval", "5", "--workers", "2"]


def long_range_pixel(root):
    """(image path, (x, y)) of the centre of the first validation image's sofa / armchair."""
    image_path, label_path = list_split(root, "validation")[0]
    label = read_annotation(label_path, read_image(image_path).shape)
    ys, xs = np.nonzero(np.isin(label, [synthetic.SOFA - 1, synthetic.ARMCHAIR - 1]))
    return image_path, (int(xs.mean()), int(ys.mean()))


def montage(paths, out):
    """The pictures one above the other, with a white line between them."""
    pictures = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    gap = np.full((4, pictures[0].shape[1], 3), 255, np.uint8)
    rows = [row for picture in pictures for row in (picture, gap)][:-1]
    Image.fromarray(np.concatenate(rows)).save(out, quality=92)


def step(title):
    print(f"\n=== {title} ===", flush=True)


def main():
    step("1/4 generating the dataset")
    synthetic.main(["--out", DATA, "--train", "300", "--val", "60", "--size", "128"])
    step("2/4 training CCNet (van_b0, R = 2) on the CPU")
    if train.main(TRAIN) != 0:
        return 1
    step("3/4 evaluating the final checkpoint with test.py")
    ckpt = os.path.join(WORK, "latest.safetensors")
    out = os.path.join(WORK, "test")
    if test_script.main(["--ckpt", ckpt, "--save-pred", "--out", out]) != 0:
        return 1
    predictions = os.path.join(WORK, "predictions.jpg")
    montage(sorted(glob.glob(os.path.join(out, "vis", "*.jpg")))[:4], predictions)
    step("4/4 drawing where a pixel of the long-range object looks")
    image, (x, y) = long_range_pixel(DATA)
    attention = os.path.join(WORK, "attention.png")
    show_attention.main(["--ckpt", ckpt, "--image", image, "--pixel", str(x), str(y), "--out", attention])

    results = json.load(open(os.path.join(out, "metrics.json")))
    present = [i for i, iou in enumerate(results["IoU"]) if iou == iou]
    print(f"\nmIoU {100 * results['mIoU']:.2f} over the {len(present)} classes of the generated set "
          f"({', '.join(NAMES[i] for i in present)}); aAcc {100 * results['aAcc']:.2f}")
    print(f"  curves:      {WORK}/curves.png\n  predictions: {predictions}, all in {out}/vis/ "
          f"(image | prediction | truth)\n"
          f"  metrics:     {out}/metrics.md\n  attention:   {attention}\n  checkpoint:  {ckpt}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
