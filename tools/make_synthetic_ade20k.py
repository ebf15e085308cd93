"""Write a synthetic dataset in the ADEChallengeData2016 layout, where some pixels need far context.

    python tools/make_synthetic_ade20k.py --out data/synthetic --train 300 --val 60 --size 256

The files, names and label convention are ADE20K's (images/{training,validation}/*.jpg,
annotations/.../*.png, one channel, 0 = "other", k = ADE20K class k), so the same loader, training
and evaluation code runs on it. Every image is drawn from a generator seeded by (seed, split,
index): the same flags always write the same files. The rules:

* Local classes. The top of the scene is wall (1), the bottom floor (4), split at a random row;
  one to three objects (bed 8, table 16, chair 20, lamp 37) are rectangles or ellipses, each
  class with its own colour and texture. Their label can be read off the pixels around them.
* A long-range class. One ellipse is always painted in the same grey texture, but it is a sofa
  (24) in some images and an armchair (31) in others. Only a small square "painting" (23) in the
  diagonally opposite corner tells which: red means sofa, blue means armchair. The painting shares
  no row and no column with the ellipse, so a pixel of the ellipse cannot be labelled better than
  chance from its own neighbourhood, nor from its row and column alone (one criss-cross
  recurrence), but it can be after two recurrences, which reach the whole image.
* Unlabelled pixels. The painting has a two-pixel dark frame labelled 0, which scoring ignores.
"""
import argparse
import os
import sys

import numpy as np
from PIL import Image
from tqdm import tqdm

WALL, FLOOR, BED, TABLE, CHAIR, LAMP, PAINTING, SOFA, ARMCHAIR = 1, 4, 8, 16, 20, 37, 23, 24, 31
OBJECTS = {BED: (150, 60, 60), TABLE: (120, 90, 40), CHAIR: (40, 140, 60), LAMP: (230, 210, 60)}
BACKGROUND = {WALL: (215, 200, 170), FLOOR: (110, 80, 60)}
CUE_COLOUR = {SOFA: (220, 30, 30), ARMCHAIR: (30, 60, 220)}
GREY = (128, 128, 128)
FRAME = 2
SPLITS = {"training": ("train", 0), "validation": ("val", 1)}


def texture(rng, shape, colour, amplitude=18, stripes=None):
    """A colour with noise and optional stripes (period in pixels) along rows or columns."""
    h, w = shape
    image = np.empty((h, w, 3), np.float32)
    image[:] = colour
    image += rng.normal(0, amplitude / 3, (h, w, 1))
    if stripes:
        axis, period = stripes
        wave = amplitude * np.sin(2 * np.pi * np.arange(h if axis == 0 else w) / period)
        image += wave[:, None, None] if axis == 0 else wave[None, :, None]
    return image


def ellipse_mask(h, w, top, left, height, width):
    yy, xx = np.mgrid[0:h, 0:w]
    cy, cx = top + height / 2, left + width / 2
    return ((yy - cy) / (height / 2)) ** 2 + ((xx - cx) / (width / 2)) ** 2 <= 1


def rectangle_mask(h, w, top, left, height, width):
    mask = np.zeros((h, w), bool)
    mask[top:top + height, left:left + width] = True
    return mask


def paint(image, label, mask, pixels, value):
    image[mask] = pixels[mask]
    label[mask] = value


def draw_scene(rng, size):
    """(RGB uint8 image, annotation uint8) of one scene following the module's rules."""
    h = w = size
    image = np.zeros((h, w, 3), np.float32)
    label = np.zeros((h, w), np.uint8)
    horizon = int(rng.uniform(0.45, 0.6) * h)
    sky = np.zeros((h, w), bool)
    sky[:horizon] = True
    paint(image, label, sky, texture(rng, (h, w), BACKGROUND[WALL], stripes=(1, 24)), WALL)
    paint(image, label, ~sky, texture(rng, (h, w), BACKGROUND[FLOOR], stripes=(0, 12)), FLOOR)

    for _ in range(rng.integers(1, 4)):
        cls = int(rng.choice(list(OBJECTS)))
        oh, ow = (int(rng.uniform(0.12, 0.3) * size) for _ in range(2))
        top, left = int(rng.integers(0, h - oh)), int(rng.integers(0, w - ow))
        shape = ellipse_mask if rng.random() < 0.5 else rectangle_mask
        paint(image, label, shape(h, w, top, left, oh, ow),
              texture(rng, (h, w), OBJECTS[cls], stripes=(int(rng.integers(2)), 8)), cls)

    # The cue sits in one corner, the grey ellipse in the opposite quadrant, sharing no row or column.
    target = SOFA if rng.random() < 0.5 else ARMCHAIR
    cue = int(0.12 * size)
    flip_y, flip_x = rng.integers(2, size=2)
    margin = int(0.04 * size)
    cue_top = margin if not flip_y else h - margin - cue
    cue_left = margin if not flip_x else w - margin - cue
    eh, ew = (int(rng.uniform(0.25, 0.35) * size) for _ in range(2))
    far_rows = (cue_top + cue + margin, h - margin - eh) if not flip_y else (margin, cue_top - margin - eh)
    far_cols = (cue_left + cue + margin, w - margin - ew) if not flip_x else (margin, cue_left - margin - ew)
    top, left = int(rng.integers(*far_rows)), int(rng.integers(*far_cols))
    paint(image, label, ellipse_mask(h, w, top, left, eh, ew), texture(rng, (h, w), GREY), target)

    frame = rectangle_mask(h, w, cue_top - FRAME, cue_left - FRAME, cue + 2 * FRAME, cue + 2 * FRAME)
    paint(image, label, frame, np.full((h, w, 3), 20, np.float32), 0)
    paint(image, label, rectangle_mask(h, w, cue_top, cue_left, cue, cue),
          texture(rng, (h, w), CUE_COLOUR[target], amplitude=10), PAINTING)
    return np.clip(image, 0, 255).astype(np.uint8), label


def write_split(out, split, count, size, seed):
    prefix, code = SPLITS[split]
    image_dir = os.path.join(out, "images", split)
    label_dir = os.path.join(out, "annotations", split)
    os.makedirs(image_dir, exist_ok=True)
    os.makedirs(label_dir, exist_ok=True)
    for index in tqdm(range(count), desc=split, unit="img"):
        image, label = draw_scene(np.random.default_rng([seed, code, index]), size)
        name = f"ADE_{prefix}_{index + 1:08d}"
        Image.fromarray(image).save(os.path.join(image_dir, name + ".jpg"), quality=95)
        Image.fromarray(label).save(os.path.join(label_dir, name + ".png"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder to write (it becomes the dataset root)")
    parser.add_argument("--train", type=int, default=300, help="training images (default 300)")
    parser.add_argument("--val", type=int, default=60, help="validation images (default 60)")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels (default 256, min 64)")
    parser.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    args = parser.parse_args(argv)
    if args.size < 64:
        parser.error(f"--size must be at least 64 pixels, got {args.size}")
    if args.train < 1 or args.val < 1:
        parser.error("--train and --val must be at least 1")
    write_split(args.out, "training", args.train, args.size, args.seed)
    write_split(args.out, "validation", args.val, args.size, args.seed)
    print(f"{args.out}: {args.train} training and {args.val} validation images of {args.size}x{args.size}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
