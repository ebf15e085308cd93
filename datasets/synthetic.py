"""Generated datasets in ADE20K's, Cityscapes' and Pascal VOC's layouts, where some pixels need
far context: the demo, the tests and the ablation train and evaluate on them where there is no
real data (tools/make_synthetic_ade20k.py and tools/make_synthetic_layouts.py write them).

In ADE20K's layout (`write_ade20k`) the files, names and label convention are ADE20K's (images/{training,validation}/*.jpg,
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

The same scenes in the Cityscapes or VOC layout (`write_cityscapes`, `write_voc`) have their
classes renamed into the target dataset's (SCENE_CLASSES) and their files laid out as the real
dataset's; what is learnable in them is the same.
"""
import os

import numpy as np
from PIL import Image
from tqdm import tqdm

from .cityscapes import EVALUATED_IDS
from .transforms import IGNORE
from .voc import PALETTE as VOC_PALETTE

WALL, FLOOR, BED, TABLE, CHAIR, LAMP, PAINTING, SOFA, ARMCHAIR = 1, 4, 8, 16, 20, 37, 23, 24, 31
OBJECTS = {BED: (150, 60, 60), TABLE: (120, 90, 40), CHAIR: (40, 140, 60), LAMP: (230, 210, 60)}
BACKGROUND = {WALL: (215, 200, 170), FLOOR: (110, 80, 60)}
CUE_COLOUR = {SOFA: (220, 30, 30), ARMCHAIR: (30, 60, 220)}
GREY = (128, 128, 128)
FRAME = 2
SPLITS = {"training": ("train", 0), "validation": ("val", 1)}
# scene class (ADE20K annotation value) -> (Cityscapes train id, VOC class); 0 (the painting's frame) -> 255
SCENE_CLASSES = {
    WALL: (2, 0), FLOOR: (0, 0), BED: (13, 18), TABLE: (14, 11), CHAIR: (15, 9),
    LAMP: (6, 5), PAINTING: (7, 20), SOFA: (11, 15), ARMCHAIR: (12, 8),
}
CITIES = ("aachen", "bremen")


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


def write_split(out, split, count, size, seed, progress=True):
    prefix, code = SPLITS[split]
    image_dir = os.path.join(out, "images", split)
    label_dir = os.path.join(out, "annotations", split)
    os.makedirs(image_dir, exist_ok=True)
    os.makedirs(label_dir, exist_ok=True)
    for index in tqdm(range(count), desc=split, unit="img", disable=not progress):
        image, label = draw_scene(np.random.default_rng([seed, code, index]), size)
        name = f"ADE_{prefix}_{index + 1:08d}"
        Image.fromarray(image).save(os.path.join(image_dir, name + ".jpg"), quality=95)
        Image.fromarray(label).save(os.path.join(label_dir, name + ".png"))

def checked_counts(train, val, size):
    """{"train": train, "val": val}, after checking the sizes a scene needs."""
    if size < 64:
        raise ValueError(f"the image side must be at least 64 pixels, got {size}")
    if train < 1 or val < 1:
        raise ValueError(f"at least one training and one validation image, got {train} and {val}")
    return {"train": train, "val": val}


def write_ade20k(out, train, val, size, seed=0, progress=True):
    """`train` and `val` scenes of `size` x `size` in the ADEChallengeData2016 layout under `out`."""
    checked_counts(train, val, size)
    write_split(out, "training", train, size, seed, progress)
    write_split(out, "validation", val, size, seed, progress)


def renamed(label, column):
    """Scene labels -> the target dataset's training labels (255 where the scene has 0)."""
    table = np.full(256, IGNORE, np.uint8)
    for scene_class, targets in SCENE_CLASSES.items():
        table[scene_class] = targets[column]
    return table[label]


def scene(seed, split_code, index, size):
    return draw_scene(np.random.default_rng([seed, split_code, index]), size)


def write_cityscapes(out, train, val, size, seed=0, train_ids=False):
    """Scenes in the Cityscapes layout: leftImg8bit/ and gtFine/ (label ids, or train ids with
    `train_ids`), frames spread over two cities per split."""
    counts = checked_counts(train, val, size)
    id_of_train_id = np.full(256, 0, np.uint8)  # ignored pixels become id 0 ("unlabeled")
    id_of_train_id[:len(EVALUATED_IDS)] = EVALUATED_IDS
    for code, (split, count) in enumerate(counts.items()):
        for index in range(count):
            city = CITIES[index % len(CITIES)]
            stem = f"{city}_000000_{index:06d}"
            image, label = scene(seed, code, index, size)
            image_dir, label_dir = (os.path.join(out, kind, split, city) for kind in ("leftImg8bit", "gtFine"))
            os.makedirs(image_dir, exist_ok=True)
            os.makedirs(label_dir, exist_ok=True)
            train_label = renamed(label, 0)
            Image.fromarray(image).save(os.path.join(image_dir, stem + "_leftImg8bit.png"))
            if train_ids:
                Image.fromarray(train_label).save(os.path.join(label_dir, stem + "_gtFine_labelTrainIds.png"))
            else:
                Image.fromarray(id_of_train_id[train_label]).save(os.path.join(label_dir, stem + "_gtFine_labelIds.png"))


def write_voc(out, train, val, size, seed=0, aug=False):
    """Scenes in the Pascal VOC layout: JPEGImages/, SegmentationClass/ (palette PNGs, 255 on the
    painting's frame), the ImageSets lists; with `aug` also SegmentationClassAug/ and aug.txt for a
    second half of training images (mmsegmentation's voc12aug split)."""
    counts = checked_counts(train, val, size)
    folders = {kind: os.path.join(out, kind) for kind in
               ("JPEGImages", "SegmentationClass", "SegmentationClassAug", os.path.join("ImageSets", "Segmentation"))}
    for folder in folders.values():
        os.makedirs(folder, exist_ok=True)
    palette = np.zeros((256, 3), np.uint8)
    palette[:len(VOC_PALETTE)] = VOC_PALETTE
    palette[255] = (224, 224, 192)  # VOC's border colour
    lists = {"train": [], "val": [], "aug": []}
    for code, (split, count) in enumerate(counts.items()):
        total = count * (2 if aug and split == "train" else 1)
        for index in range(total):
            name = f"2012_{code}{index:05d}"
            in_aug = split == "train" and index >= count
            image, label = scene(seed, code, index, size)
            Image.fromarray(image).save(os.path.join(folders["JPEGImages"], name + ".jpg"), quality=95)
            target = Image.fromarray(renamed(label, 1))
            if in_aug:  # SBD labels as mmsegmentation converts them: one-channel PNGs
                target.save(os.path.join(folders["SegmentationClassAug"], name + ".png"))
            else:
                target = target.convert("P")
                target.putpalette(palette.ravel().tolist())
                target.save(os.path.join(folders["SegmentationClass"], name + ".png"))
            lists["aug" if in_aug else split].append(name)
    lists["trainval"] = lists["train"] + lists["val"]
    for split, names in lists.items():
        if split != "aug" or aug:
            with open(os.path.join(folders[os.path.join("ImageSets", "Segmentation")], split + ".txt"), "w") as f:
                f.write("".join(name + "\n" for name in names))
