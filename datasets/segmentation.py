"""What every dataset here shares: reading and checking files, and samples indexed by draws.

A dataset class gives its name, classes and palette, its default test scale, how a split lists its
(image, label) files (`list_split`, which checks that they pair up, by name only so it is quick) and
how a label file becomes training labels (`read_label`, which checks it). Each file is checked when
it is read: an unreadable or truncated image, a label of another size than its image, or label
values outside the dataset's classes raise DatasetError naming the file. Nothing is dropped or
repaired silently.

Samples are indexed by "draws": draw d is the (d % N)-th file of epoch d // N, in an order
shuffled by (seed, epoch) for training, and its augmentation is seeded by (seed, d). So what every
draw gives is fixed by the seed alone, whatever the number of worker processes, and a training
schedule of any length is the draws 0 .. iters * batch - 1 (datasets/loader.py batches them);
resuming starts at a later draw.
"""
import os

import cv2
import numpy as np
from PIL import Image

from . import transforms as T

SHOWN_NAMES = 5


class DatasetError(ValueError):
    """A dataset folder or file that is not what the dataset's layout promises."""


def named(names, suffix=""):
    """The first few of `names` (sorted) and how many more, for an error message."""
    names = sorted(names)
    more = f" and {len(names) - SHOWN_NAMES} more" if len(names) > SHOWN_NAMES else ""
    return ", ".join(n + suffix for n in names[:SHOWN_NAMES]) + more


def stems(folder, suffix):
    """Names in `folder` that end with `suffix`, without it."""
    return {name[:-len(suffix)] for name in os.listdir(folder) if name.endswith(suffix)}


def check_pairs(images, labels, image_dir, label_dir, image_suffix, label_suffix):
    """DatasetError listing the image stems without a label stem and the reverse, if any."""
    problems = []
    if images - labels:
        problems.append(f"{len(images - labels)} images without annotations in {image_dir} "
                        f"({named(images - labels, image_suffix)})")
    if labels - images:
        problems.append(f"{len(labels - images)} annotations without images in {label_dir} "
                        f"({named(labels - images, label_suffix)})")
    if problems:
        raise DatasetError("; ".join(problems))


def jpeg_is_complete(data):
    """Whether JPEG bytes end their last scan with the end-of-image marker. Neither marker can occur
    inside entropy-coded data (0xFF is stuffed there), so an EOI after the last SOS means the file
    was not cut short; an EXIF thumbnail's own EOI lies before the image's scans."""
    return data.rfind(b"\xff\xd9") > data.rfind(b"\xff\xda") >= 0


def read_image(path):
    """H x W x 3 uint8 RGB, decoded as mmsegmentation decodes (OpenCV, colour, EXIF orientation
    applied); an unreadable or truncated file raises DatasetError. OpenCV returns a grey-filled
    picture for a cut-short JPEG, hence the explicit check."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as error:
        raise DatasetError(f"{path}: unreadable image ({error})") from None
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise DatasetError(f"{path}: unreadable image (not a format OpenCV decodes)")
    if data[:2] == b"\xff\xd8" and not jpeg_is_complete(data):
        raise DatasetError(f"{path}: unreadable image (truncated JPEG: no end-of-image marker after its data)")
    return np.ascontiguousarray(image[:, :, ::-1])


def read_label_png(path, image_shape):
    """The values of a one-channel (grey or palette) label PNG, after checking its size."""
    try:
        with Image.open(path) as im:
            im.load()
            label = np.asarray(im)
    except (OSError, ValueError, SyntaxError) as error:
        raise DatasetError(f"{path}: unreadable annotation ({error})") from None
    if label.ndim != 2:
        raise DatasetError(f"{path}: expected a one-channel annotation, got shape {label.shape}")
    if label.shape != tuple(image_shape[:2]):
        raise DatasetError(f"{path}: annotation is {label.shape[1]}x{label.shape[0]} but its "
                           f"image is {image_shape[1]}x{image_shape[0]} (width x height)")
    return label


def check_values(label, allowed, path, what):
    """DatasetError naming the file and the first value that `allowed` (a bool table) rejects."""
    index = np.clip(label, 0, len(allowed) - 1)  # 16-bit or signed PNGs may hold anything
    bad = ~allowed[index] | (label != index)
    if bad.any():
        raise DatasetError(f"{path}: annotation values must be {what}, found {label[bad][0]}")


class SegmentationDataset:
    """Samples by draw: (image float32 3 x H x W normalised for `backbone`, label int32 H x W).

    `normalization` (a transforms.Normalization) replaces the backbone's, e.g. a checkpoint's own.

    With `augment` (the default for the training split) a sample is a crop_size crop of the training
    transforms (`augmentation`: a transforms.Augmentation); without (the default otherwise) the
    whole image resized to `scale` (the dataset's SCALE by default), with its label at full size.
    `shuffle` (the order of each epoch's files) defaults to `augment`. len() is the number of files,
    one epoch of draws.

    A subclass defines list_split(root, split), the sorted (image path, label path) pairs of a
    split after checking that they pair up, and read_label(path, image_shape), the training labels
    (0..K-1, 255 ignored) of a label file after checking it; both static.
    """
    NAME = None  # what checkpoints and train.py call the dataset
    TITLE = None  # what messages call it
    CLASSES = NAMES = PALETTE = None  # full class names, short names, RGB colours [K, 3]
    SCALE = T.SCALE  # (long, short) test scale
    TRAIN_SPLIT, VAL_SPLIT = "train", "val"
    DEFAULT_ROOT = None

    def __init__(self, root, split, backbone="resnet101", crop_size=512, seed=0, augment=None,
                 shuffle=None, scale=None, normalization=None, augmentation=T.MMSEG):
        self.files = self.list_split(root, split)
        self.augment = self.is_training_split(split) if augment is None else augment
        self.shuffle = self.augment if shuffle is None else shuffle
        self.normalization = normalization or T.normalization_for(backbone)
        self.crop_size = crop_size
        self.scale = tuple(scale or self.SCALE)
        self.augmentation = augmentation
        self.seed = seed
        self._order = (None, None)  # (epoch, file order) of the last epoch used

    @classmethod
    def is_training_split(cls, split):
        return split == cls.TRAIN_SPLIT

    def __len__(self):
        return len(self.files)

    def file_index(self, draw):
        epoch, position = divmod(draw, len(self.files))
        if not self.shuffle:
            return position
        if self._order[0] != epoch:
            self._order = (epoch, np.random.default_rng([self.seed, epoch]).permutation(len(self.files)))
        return int(self._order[1][position])

    def read(self, index):
        """(image uint8 RGB, training labels) of file `index`, checked."""
        image_path, label_path = self.files[index]
        image = read_image(image_path)
        return image, self.read_label(label_path, image.shape)

    def __getitem__(self, draw):
        image, label = self.read(self.file_index(draw))
        if self.augment:
            rng = np.random.default_rng([self.seed, draw])
            image, label = T.train_transform(image, label, rng, self.normalization, self.crop_size, self.scale,
                                             self.augmentation)
        else:
            image = T.val_transform(image, self.normalization, self.scale)
        return image, label.astype(np.int32)
