"""ADE20K (SceneParsing, 150 classes) in the official ADEChallengeData2016 layout.

    root/images/{training,validation}/ADE_{train,val}_%08d.jpg
    root/annotations/{training,validation}/ADE_{train,val}_%08d.png   (one channel, 0..150)

Labels follow the benchmark and mmsegmentation: annotation 0 ("other") becomes 255 (ignored) and
k becomes k - 1, giving classes 0..149. A split's images without annotations, annotations without
images and an empty split are errors; annotation values above 150 too (datasets/segmentation.py
has the checks and the sampling every dataset shares).
"""
import os

import numpy as np

from . import transforms as T
from .ade20k_classes import CLASSES, NAMES, PALETTE
from .segmentation import DatasetError, SegmentationDataset, check_pairs, check_values, read_label_png, stems

SPLITS = {"training": "training", "train": "training", "validation": "validation", "val": "validation"}
NUM_CLASSES = 150
VALID = np.arange(256) <= NUM_CLASSES  # annotation values allowed


def to_train_ids(annotation):
    """Annotation values 0..150 -> training labels: 0 -> 255 (ignored), k -> k - 1."""
    label = annotation.astype(np.int16) - 1
    label[annotation == 0] = T.IGNORE
    return label.astype(np.uint8)


def list_split(root, split):
    """Sorted (image path, annotation path) pairs of a split, after checking that they pair up."""
    if split not in SPLITS:
        raise DatasetError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    image_dir = os.path.join(root, "images", SPLITS[split])
    label_dir = os.path.join(root, "annotations", SPLITS[split])
    for folder in (image_dir, label_dir):
        if not os.path.isdir(folder):
            raise DatasetError(f"{folder}: no such folder; expected the ADEChallengeData2016 layout "
                               f"root/images/{SPLITS[split]} and root/annotations/{SPLITS[split]}")
    images, labels = stems(image_dir, ".jpg"), stems(label_dir, ".png")
    check_pairs(images, labels, image_dir, label_dir, ".jpg", ".png")
    if not images:
        raise DatasetError(f"{image_dir}: the split is empty (no .jpg files)")
    return [(os.path.join(image_dir, s + ".jpg"), os.path.join(label_dir, s + ".png")) for s in sorted(images)]


def read_annotation(path, image_shape):
    """The annotation as training labels, after checking its mode, size and values."""
    annotation = read_label_png(path, image_shape)
    check_values(annotation, VALID, path, f"0..{NUM_CLASSES}")
    return to_train_ids(annotation)


class ADE20K(SegmentationDataset):
    NAME = "ade20k"
    TITLE = "ADE20K"
    CLASSES, NAMES, PALETTE = CLASSES, NAMES, PALETTE
    SCALE = (2048, 512)
    TRAIN_SPLIT, VAL_SPLIT = "training", "validation"
    DEFAULT_ROOT = "data/ADEChallengeData2016"
    list_split = staticmethod(list_split)
    read_label = staticmethod(read_annotation)

    @classmethod
    def is_training_split(cls, split):
        return SPLITS.get(split) == "training"
