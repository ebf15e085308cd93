"""ADE20K (SceneParsing, 150 classes) in the official ADEChallengeData2016 layout.

    root/images/{training,validation}/ADE_{train,val}_%08d.jpg
    root/annotations/{training,validation}/ADE_{train,val}_%08d.png   (one channel, 0..150)

Labels follow the benchmark and mmsegmentation: annotation 0 ("other") becomes 255 (ignored) and
k becomes k - 1, giving classes 0..149. The split is checked when the dataset is made (file names
only, so it is quick): images without annotations, annotations without images and an empty split
are errors. Each file is checked when it is read: an unreadable or truncated image, an annotation
of another size than its image, or annotation values above 150 raise DatasetError naming the file.
Nothing is dropped or repaired silently.

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

SPLITS = {"training": "training", "train": "training", "validation": "validation", "val": "validation"}
NUM_CLASSES = 150
SHOWN_NAMES = 5


class DatasetError(ValueError):
    """A dataset folder or file that is not what ADE20K's layout promises."""


def to_train_ids(annotation):
    """Annotation values 0..150 -> training labels: 0 -> 255 (ignored), k -> k - 1."""
    label = annotation.astype(np.int16) - 1
    label[annotation == 0] = T.IGNORE
    return label.astype(np.uint8)


def _stems(folder, suffix):
    return {name[:-len(suffix)] for name in os.listdir(folder) if name.endswith(suffix)}


def _named(stems, suffix):
    names = sorted(stems)
    more = f" and {len(names) - SHOWN_NAMES} more" if len(names) > SHOWN_NAMES else ""
    return ", ".join(n + suffix for n in names[:SHOWN_NAMES]) + more


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
    images, labels = _stems(image_dir, ".jpg"), _stems(label_dir, ".png")
    problems = []
    if images - labels:
        problems.append(f"{len(images - labels)} images without annotations in {image_dir} "
                        f"({_named(images - labels, '.jpg')})")
    if labels - images:
        problems.append(f"{len(labels - images)} annotations without images in {label_dir} "
                        f"({_named(labels - images, '.png')})")
    if problems:
        raise DatasetError("; ".join(problems))
    if not images:
        raise DatasetError(f"{image_dir}: the split is empty (no .jpg files)")
    return [(os.path.join(image_dir, s + ".jpg"), os.path.join(label_dir, s + ".png")) for s in sorted(images)]


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


def read_annotation(path, image_shape):
    """The annotation as training labels, after checking its mode, size and values."""
    try:
        with Image.open(path) as im:
            im.load()
            annotation = np.asarray(im)
    except (OSError, ValueError, SyntaxError) as error:
        raise DatasetError(f"{path}: unreadable annotation ({error})") from None
    if annotation.ndim != 2:
        raise DatasetError(f"{path}: expected a one-channel annotation, got shape {annotation.shape}")
    if annotation.shape != tuple(image_shape[:2]):
        raise DatasetError(f"{path}: annotation is {annotation.shape[1]}x{annotation.shape[0]} but its "
                           f"image is {image_shape[1]}x{image_shape[0]} (width x height)")
    if annotation.max() > NUM_CLASSES:
        raise DatasetError(f"{path}: annotation values must be 0..{NUM_CLASSES}, found {annotation.max()}")
    return to_train_ids(annotation)


class ADE20K:
    """ADE20K samples by draw: (image float32 3 x H x W normalised for `backbone`, label int32 H x W).

    `normalization` (a transforms.Normalization) replaces the backbone's, e.g. a checkpoint's own.

    With `augment` (the default for "training") a sample is a crop_size crop of the training
    transforms; without (the default for "validation") the whole image resized to (2048, 512),
    with its label at full size. `shuffle` (the order of each epoch's files) defaults to `augment`.
    len() is the number of files, one epoch of draws.
    """

    def __init__(self, root, split, backbone="resnet101", crop_size=512, seed=0, augment=None,
                 shuffle=None, scale=T.SCALE, normalization=None):
        self.augment = SPLITS.get(split) == "training" if augment is None else augment
        self.shuffle = self.augment if shuffle is None else shuffle
        self.files = list_split(root, split)
        self.normalization = normalization or T.normalization_for(backbone)
        self.crop_size = crop_size
        self.scale = tuple(scale)
        self.seed = seed
        self._order = (None, None)  # (epoch, file order) of the last epoch used

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
        return image, read_annotation(label_path, image.shape)

    def __getitem__(self, draw):
        image, label = self.read(self.file_index(draw))
        if self.augment:
            rng = np.random.default_rng([self.seed, draw])
            image, label = T.train_transform(image, label, rng, self.normalization, self.crop_size, self.scale)
        else:
            image = T.val_transform(image, self.normalization, self.scale)
        return image, label.astype(np.int32)
