"""Pascal VOC 2012 (21 classes with background) in the VOCdevkit layout, with the SBD-augmented
training set as mmsegmentation's "voc12aug" uses it.

    root/JPEGImages/NAME.jpg
    root/SegmentationClass/NAME.png            (palette PNG: class index 0..20, 255 = border)
    root/SegmentationClassAug/NAME.png         (only for "aug": SBD labels, one channel, same values)
    root/ImageSets/Segmentation/{train,val,trainval,aug}.txt   (one NAME per line)

root is VOCdevkit/VOC2012. Split "aug" is mmsegmentation's voc12aug training set: train.txt with
SegmentationClass labels and aug.txt with SegmentationClassAug labels (10,582 images); "val" is
its test set (1,449). A split file naming a missing image or label, and label values other than
0..20 and 255, are errors naming the file.
"""
import os

import numpy as np

from .segmentation import DatasetError, SegmentationDataset, check_values, read_label_png
from .transforms import IGNORE

CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
           "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
           "tvmonitor")
# split -> (split file, label folder) parts; "aug" is two lists in two folders
SPLITS = {
    "train": (("train.txt", "SegmentationClass"),),
    "val": (("val.txt", "SegmentationClass"),),
    "trainval": (("trainval.txt", "SegmentationClass"),),
    "aug": (("train.txt", "SegmentationClass"), ("aug.txt", "SegmentationClassAug")),
}
VALID = (np.arange(256) < len(CLASSES)) | (np.arange(256) == IGNORE)


def voc_palette(count):
    """The VOC colour map: bits 0, 1, 2 of the class index go to the top bits of R, G, B, the next
    three to the next bits, and so on (so class 1 is (128, 0, 0), class 15 (192, 128, 128))."""
    palette = np.zeros((count, 3), np.uint8)
    for index in range(count):
        value, shift = index, 7
        while value:
            for channel in range(3):
                palette[index, channel] |= ((value >> channel) & 1) << shift
            value >>= 3
            shift -= 1
    return palette


PALETTE = voc_palette(len(CLASSES))


def read_names(path):
    try:
        with open(path) as f:
            return [line.strip() for line in f if line.strip()]
    except OSError as error:
        raise DatasetError(f"{path}: cannot read the split file ({error}); expected the VOCdevkit layout "
                           f"VOC2012/ImageSets/Segmentation/*.txt") from None


def list_split(root, split):
    """(image, label) pairs in the split files' order, each file checked to exist."""
    if split not in SPLITS:
        raise DatasetError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    pairs = []
    for list_name, label_folder in SPLITS[split]:
        list_path = os.path.join(root, "ImageSets", "Segmentation", list_name)
        for line, name in enumerate(read_names(list_path), 1):
            image = os.path.join(root, "JPEGImages", name + ".jpg")
            label = os.path.join(root, label_folder, name + ".png")
            for path in (image, label):
                if not os.path.isfile(path):
                    raise DatasetError(f"{list_path}, line {line}: {name} has no file {path}")
            pairs.append((image, label))
    if not pairs:
        raise DatasetError(f"{root}: split {split!r} is empty")
    return pairs


def read_label(path, image_shape):
    label = read_label_png(path, image_shape)
    check_values(label, VALID, path, f"classes 0..{len(CLASSES) - 1} or 255")
    return label.astype(np.uint8)


class PascalVOC(SegmentationDataset):
    NAME = "voc12aug"
    TITLE = "Pascal VOC"
    CLASSES = NAMES = CLASSES
    PALETTE = PALETTE
    SCALE = (2048, 512)
    TRAIN_SPLIT, VAL_SPLIT = "aug", "val"
    DEFAULT_ROOT = "data/VOCdevkit/VOC2012"
    list_split = staticmethod(list_split)
    read_label = staticmethod(read_label)
