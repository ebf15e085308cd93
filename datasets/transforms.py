"""The training and evaluation transforms, on NumPy arrays.

train: keep-ratio resize to the scale ((2048, 512) for ADE20K) x a random ratio -> random crop ->
       horizontal flip (p 0.5) -> photometric distortion -> normalise -> pad to the crop size
       (image 0, label 255). An Augmentation says how: mmsegmentation's (MMSEG: ratio uniform in
       [0.5, 2.0], a crop re-drawn up to 10 times until no class covers more than 75% of it,
       photometric distortion) or the official CCNet code's Cityscapes one (OFFICIAL: ratio
       0.7, 0.8, ..., 2.0, any crop, no photometric distortion).
val:   keep-ratio resize to the scale -> normalise; the label keeps its size for scoring

Images arrive as H x W x 3 uint8 RGB, labels as H x W uint8 in the training convention (0..149,
255 = ignored). Labels are only ever resized with nearest neighbour. Every random draw comes from
the `rng` passed in, so a sample's augmentation is reproducible from its seed alone.
"""
from dataclasses import dataclass

import cv2
import numpy as np

IGNORE = 255
SCALE = (2048, 512)  # (long side, short side) limits of the keep-ratio resize
RATIO_RANGE = (0.5, 2.0)
CAT_MAX_RATIO = 0.75
CROP_TRIES = 10


@dataclass(frozen=True)
class Augmentation:
    ratio_range: tuple = RATIO_RANGE
    ratio_step: float = None  # None: a ratio uniform in the range; else one of its multiples of the step
    cat_max_ratio: float = CAT_MAX_RATIO  # None: the first crop drawn
    photometric: bool = True

    def ratio(self, rng):
        low, high = self.ratio_range
        if self.ratio_step is None:
            return rng.uniform(low, high)
        return low + self.ratio_step * rng.integers(0, int(round((high - low) / self.ratio_step)) + 1)


MMSEG = Augmentation()
OFFICIAL = Augmentation(ratio_range=(0.7, 2.0), ratio_step=0.1, cat_max_ratio=None, photometric=False)
AUGMENTATIONS = {"mmseg": MMSEG, "official": OFFICIAL}


@dataclass(frozen=True)
class Normalization:
    """What the backbone's ImageNet weights were trained on: channel order, mean and std."""
    mean: tuple
    std: tuple
    bgr: bool

    def __call__(self, image):
        """H x W x 3 uint8 RGB -> 3 x H x W float32, normalised."""
        pixels = image[:, :, ::-1] if self.bgr else image
        out = (pixels.astype(np.float32) - np.float32(self.mean)) / np.float32(self.std)
        return np.ascontiguousarray(out.transpose(2, 0, 1))


# ResNet-101: the official CCNet code reads images with OpenCV (BGR, 0-255) and subtracts this mean,
# without a std, for training and evaluation alike (the MIT weights' own code feeds RGB with ImageNet
# mean and std; CCNet does not). VAN: the usual torchvision statistics, as its segmentation code.
MIT_CAFFE = Normalization(mean=(104.00699, 116.66877, 122.67891), std=(1.0, 1.0, 1.0), bgr=True)
IMAGENET = Normalization(mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375), bgr=False)


def normalization_for(backbone):
    """The input normalisation a backbone's pretrained weights need (a property, not a flag)."""
    if backbone == "resnet101":
        return MIT_CAFFE
    if backbone.startswith("van"):
        return IMAGENET
    raise ValueError(f"no input normalisation known for backbone {backbone!r}")


def keep_ratio_size(height, width, scale):
    """(h, w) scaled so the long side fits scale[0] and the short side scale[1], rounded."""
    factor = min(max(scale) / max(height, width), min(scale) / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


def resize(image, label, size):
    """Image bilinear, label nearest neighbour, both to size = (h, w)."""
    h, w = size
    image = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
    if label is not None:
        label = cv2.resize(label, (w, h), interpolation=cv2.INTER_NEAREST)
    return image, label


def crop_box(height, width, crop, rng):
    top = rng.integers(0, max(height - crop, 0) + 1)
    left = rng.integers(0, max(width - crop, 0) + 1)
    return top, left


def random_crop(image, label, crop, rng, cat_max_ratio=CAT_MAX_RATIO):
    """A crop x crop window (smaller where the image is), where no class covers more than
    cat_max_ratio of it if possible (None: the first window drawn)."""
    for _ in range(CROP_TRIES):
        top, left = crop_box(*label.shape, crop, rng)
        window = label[top:top + crop, left:left + crop]
        if cat_max_ratio is None:
            break
        counts = np.bincount(window.ravel(), minlength=256)[:IGNORE]
        counts = counts[counts > 0]
        if len(counts) > 1 and counts.max() / counts.sum() < cat_max_ratio:
            break
    return image[top:top + crop, left:left + crop], window


def random_geometry(image, label, rng, crop, scale=SCALE, augmentation=MMSEG):
    """Random rescale, crop and horizontal flip, applied identically to image and label."""
    ratio = augmentation.ratio(rng)
    size = keep_ratio_size(*label.shape, (int(scale[0] * ratio), int(scale[1] * ratio)))
    image, label = random_crop(*resize(image, label, size), crop, rng, augmentation.cat_max_ratio)
    if rng.random() < 0.5:
        image, label = image[:, ::-1], label[:, ::-1]
    return image, label


def _affine(image, alpha=1.0, beta=0.0):
    return np.clip(image.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)


def _adjust_hsv(image, channel, change):
    hsv = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2HSV)
    hsv[:, :, channel] = change(hsv[:, :, channel])
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def photometric_distortion(image, rng, brightness=32, contrast=(0.5, 1.5), saturation=(0.5, 1.5), hue=18):
    """Brightness, contrast (first or last at random), saturation, hue; each with p = 0.5."""
    if rng.random() < 0.5:
        image = _affine(image, beta=rng.uniform(-brightness, brightness))
    contrast_first = rng.integers(2) == 1
    if contrast_first and rng.random() < 0.5:
        image = _affine(image, alpha=rng.uniform(*contrast))
    if rng.random() < 0.5:
        alpha = rng.uniform(*saturation)
        image = _adjust_hsv(image, 1, lambda s: _affine(s, alpha=alpha))
    if rng.random() < 0.5:
        delta = int(rng.integers(-hue, hue + 1))
        image = _adjust_hsv(image, 0, lambda h: ((h.astype(np.int32) + delta) % 180).astype(np.uint8))
    if not contrast_first and rng.random() < 0.5:
        image = _affine(image, alpha=rng.uniform(*contrast))
    return image


def pad(image, label, crop):
    """Pad a normalised 3 x h x w image with 0 and its label with IGNORE to crop x crop."""
    _, h, w = image.shape
    image = np.pad(image, ((0, 0), (0, crop - h), (0, crop - w)), constant_values=0)
    label = np.pad(label, ((0, crop - h), (0, crop - w)), constant_values=IGNORE)
    return image, label


def train_transform(image, label, rng, normalization, crop=512, scale=SCALE, augmentation=MMSEG):
    image, label = random_geometry(image, label, rng, crop, scale, augmentation)
    if augmentation.photometric:
        image = photometric_distortion(image, rng)
    return pad(normalization(image), label, crop)


def val_transform(image, normalization, scale=SCALE):
    """The whole image, keep-ratio resized to `scale` and normalised (labels are scored at full size)."""
    image, _ = resize(image, None, keep_ratio_size(*image.shape[:2], scale))
    return normalization(image)
