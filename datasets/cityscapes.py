"""Cityscapes (19 classes, fine annotations) in the official layout.

    root/leftImg8bit/{train,val}/CITY/CITY_SEQ_FRAME_leftImg8bit.png
    root/gtFine/{train,val}/CITY/CITY_SEQ_FRAME_gtFine_labelTrainIds.png   (0..18, 255 ignored)
                                    or ..._gtFine_labelIds.png             (ids 0..33)

labelTrainIds files are what cityscapesScripts' createTrainIdLabelImgs.py writes; where a frame has
none, its labelIds file is read and mapped to train ids with the benchmark's table (ID_TO_TRAIN_ID,
as the official CCNet code and cityscapesScripts' labels.py map them: ids that are not evaluated
become 255). A city folder present on one side only, a frame without its label or a label without
its frame, and an empty split are errors naming them.
"""
import os

import numpy as np

from .segmentation import (DatasetError, SegmentationDataset, check_pairs, check_values, named, read_label_png,
                           stems)
from .transforms import IGNORE

CLASSES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
           "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle",
           "bicycle")
PALETTE = np.array([(128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
                    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
                    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
                    (0, 80, 100), (0, 0, 230), (119, 11, 32)], np.uint8)
IMAGE_SUFFIX = "_leftImg8bit.png"
TRAIN_ID_SUFFIX, ID_SUFFIX = "_gtFine_labelTrainIds.png", "_gtFine_labelIds.png"
NUM_IDS = 34  # label ids 0..33
# label id -> train id: road 7, sidewalk 8, building 11, wall 12, fence 13, pole 17, traffic light 19,
# traffic sign 20, vegetation 21, terrain 22, sky 23, person 24, rider 25, car 26, truck 27, bus 28,
# train 31, motorcycle 32, bicycle 33; every other id is not evaluated (255).
EVALUATED_IDS = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)
ID_TO_TRAIN_ID = np.full(256, IGNORE, np.uint8)
ID_TO_TRAIN_ID[list(EVALUATED_IDS)] = np.arange(len(EVALUATED_IDS))
VALID_IDS = np.arange(256) < NUM_IDS
VALID_TRAIN_IDS = (np.arange(256) < len(CLASSES)) | (np.arange(256) == IGNORE)
SPLITS = ("train", "val")


def _subfolders(folder):
    return {name for name in os.listdir(folder) if os.path.isdir(os.path.join(folder, name))}


def list_city(image_dir, label_dir):
    """(image, label) pairs of one city folder; the train-id label where both kinds exist."""
    images = stems(image_dir, IMAGE_SUFFIX)
    train_ids, ids = stems(label_dir, TRAIN_ID_SUFFIX), stems(label_dir, ID_SUFFIX)
    check_pairs(images, train_ids | ids, image_dir, label_dir, IMAGE_SUFFIX, "_gtFine_*.png")
    return [(os.path.join(image_dir, s + IMAGE_SUFFIX),
             os.path.join(label_dir, s + (TRAIN_ID_SUFFIX if s in train_ids else ID_SUFFIX))) for s in sorted(images)]


def list_split(root, split):
    """Sorted (image, label) pairs of a split, after checking that cities and frames pair up."""
    if split not in SPLITS:
        raise DatasetError(f"split must be one of {', '.join(SPLITS)} (Cityscapes' test labels are not public), "
                           f"got {split!r}")
    image_root, label_root = os.path.join(root, "leftImg8bit", split), os.path.join(root, "gtFine", split)
    for folder in (image_root, label_root):
        if not os.path.isdir(folder):
            raise DatasetError(f"{folder}: no such folder; expected the Cityscapes layout root/leftImg8bit/{split}/CITY "
                               f"and root/gtFine/{split}/CITY")
    image_cities, label_cities = _subfolders(image_root), _subfolders(label_root)
    for missing, have, lack in ((image_cities - label_cities, image_root, label_root),
                                (label_cities - image_cities, label_root, image_root)):
        if missing:
            raise DatasetError(f"{lack}: missing city folder(s) {named(missing)} (present in {have})")
    pairs = [pair for city in sorted(image_cities)
             for pair in list_city(os.path.join(image_root, city), os.path.join(label_root, city))]
    if not pairs:
        raise DatasetError(f"{image_root}: the split is empty (no *{IMAGE_SUFFIX} files in its city folders)")
    return pairs


def read_label(path, image_shape):
    """Train ids of a labelTrainIds file (checked: 0..18 or 255) or of a labelIds file (0..33, mapped)."""
    label = read_label_png(path, image_shape)
    if path.endswith(TRAIN_ID_SUFFIX):
        check_values(label, VALID_TRAIN_IDS, path, f"train ids 0..{len(CLASSES) - 1} or 255")
        return label.astype(np.uint8)
    check_values(label, VALID_IDS, path, f"label ids 0..{NUM_IDS - 1}")
    return ID_TO_TRAIN_ID[label]


class Cityscapes(SegmentationDataset):
    NAME = "cityscapes"
    TITLE = "Cityscapes"
    CLASSES = NAMES = CLASSES
    PALETTE = PALETTE
    SCALE = (2048, 1024)
    DEFAULT_ROOT = "data/cityscapes"
    list_split = staticmethod(list_split)
    read_label = staticmethod(read_label)
