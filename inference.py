"""From an image to a full-resolution prediction, and a whole split to its metrics.

The protocol and its order of operations are mmsegmentation's (version 0.x, with which its published
numbers were made). Each scale ratio r resizes the image keeping its aspect ratio to (2048 r, 512 r)
(the protocol's `scale` times r; OpenCV bilinear on uint8); the model then sees either the whole
resized image ("whole"), its logits resized to that image, or crop x crop tiles every `stride`
pixels, each tile's logits resized to the tile and averaged where tiles overlap ("slide"). Those
logits are resized to the original image size, softmaxed, and with `flip` (the mirrored image run
too) mirrored back; the probabilities of all views are averaged and the prediction is their argmax.
Every bilinear resize of logits uses the protocol's `align_corners`, which must be the one the
model was trained with (a checkpoint records it). One scale (1.0), no flip, whole is the
single-scale number.
"""
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
from tqdm import tqdm

import jittor_env  # noqa: F401
import jittor as jt
from jittor import nn

from datasets import transforms as T
from metrics import SegmentationMetrics
from models.resize import chained_matrix, constant, interpolation_matrix, resize_bilinear, separable_map


@dataclass(frozen=True)
class Protocol:
    mode: str = "whole"
    scales: tuple = (1.0,)
    flip: bool = False
    crop_size: int = 512
    stride: int = 341
    scale: tuple = T.SCALE  # (long, short) limits of the keep-ratio resize at ratio 1.0
    align_corners: bool = True  # of every logit resize; this project trains with True

    def __post_init__(self):
        if self.mode not in ("whole", "slide"):
            raise ValueError(f"mode must be 'whole' or 'slide', got {self.mode!r}")
        if not self.scales or min(self.scales) <= 0:
            raise ValueError(f"scales must be positive, got {self.scales}")
        if self.mode == "slide" and not 0 < self.stride <= self.crop_size:
            raise ValueError(f"stride must be in 1..crop_size ({self.crop_size}), got {self.stride}")

    def describe(self):
        return asdict(self)


def tile_starts(size, crop, stride):
    """Tile offsets covering 0..size with crop-sized windows, the last one flush with the end."""
    if size <= crop:
        return [0]
    starts = list(range(0, size - crop, stride))
    return starts + [size - crop]


def coverage(full, crop, starts):
    """How many windows of `crop` starting at `starts` cover each of `full` positions."""
    count = np.zeros(full)
    for start in starts:
        count[start:start + crop] += 1
    return count


def window_matrix(start, crop, count, logits_size, out_size, align_corners):
    """[out_size, logits_size]: along one axis, a window's logits resized to the window, placed at
    `start` in the image, divided by how many windows cover each position (`count`), and resized to
    out_size."""
    full = len(count)
    extent = min(crop, full - start)
    placed = np.zeros((full, logits_size))
    placed[start:start + extent] = interpolation_matrix(logits_size, extent, align_corners)
    return chained_matrix(full, [out_size], align_corners) @ (placed / count[:, None])


@lru_cache(maxsize=256)
def window_constant(start, crop, stride, full, logits_size, out_size, align_corners, dtype):
    """window_matrix as a Jittor array, made once per window and image size (images of a dataset
    mostly share their size): an array built from NumPy is a host operator, a wait on GPUs."""
    count = coverage(full, crop, tile_starts(full, crop, stride))
    matrix = constant(window_matrix(start, crop, count, logits_size, out_size, align_corners), dtype)
    matrix.sync()
    return matrix


def slide_logits(model, image, crop, stride, align_corners, size):
    """The average of the logits of every crop x crop window of image [1, 3, H, W] (each resized to
    its window) where windows overlap, resized to `size`.

    The windows form a grid, so the number covering a pixel is (row windows covering its row) x
    (column windows covering its column): resizing, placing, averaging and the final resize are then
    one linear map along rows and one along columns per window, and each window's logits go to
    `size` in one separable product instead of through a full-resolution canvas."""
    _, _, h, w = image.shape
    total = None
    for top in tile_starts(h, crop, stride):
        for left in tile_starts(w, crop, stride):
            logits = model(image[:, :, top:top + crop, left:left + crop])
            (lh, lw), dtype = logits.shape[2:], str(logits.dtype)
            out = separable_map(logits, window_constant(top, crop, stride, h, lh, size[0], align_corners, dtype),
                                window_constant(left, crop, stride, w, lw, size[1], align_corners, dtype))
            total = out if total is None else total + out
    return total


def scale_logits(model, image, protocol, size):
    """Logits [1, K, H, W] of one normalised image [3, h, w], resized to it and then to `size`."""
    x = jt.array(image[None])
    if protocol.mode == "whole":
        return resize_bilinear(model(x), size, protocol.align_corners, via=(image.shape[1:],))
    return slide_logits(model, x, protocol.crop_size, protocol.stride, protocol.align_corners, size)


def predict(model, image, normalization, protocol):
    """Class probabilities [K, H, W] for an H x W x 3 uint8 RGB image (model in eval mode)."""
    height, width = image.shape[:2]
    total = None
    with jt.no_grad():
        for ratio in protocol.scales:
            scale = (int(protocol.scale[0] * ratio), int(protocol.scale[1] * ratio))
            resized, _ = T.resize(image, None, T.keep_ratio_size(height, width, scale))
            for flipped in ((False, True) if protocol.flip else (False,)):
                view = np.ascontiguousarray(resized[:, ::-1]) if flipped else resized
                logits = scale_logits(model, normalization(view), protocol, (height, width))
                probs = nn.softmax(logits, dim=1).numpy()[0]
                if flipped:
                    probs = probs[:, :, ::-1]
                total = probs if total is None else total + probs
    return total / (len(protocol.scales) * (2 if protocol.flip else 1))


def evaluate(model, dataset, protocol, num_classes, progress=True, on_prediction=None):
    """Metrics of `model` over every file of `dataset` (an ADE20K split), as metrics.py defines.

    `on_prediction(index, image, label, prediction)` is called for each image, e.g. to save it.
    Under MPI each process takes every world_size-th image and the areas are added up at the end.
    """
    model.eval()
    metrics = SegmentationMetrics(num_classes)
    indices = range(jt.rank, len(dataset.files), jt.world_size)
    for index in tqdm(indices, desc="eval", unit="img", disable=not progress or jt.rank != 0):
        image, label = dataset.read(index)
        prediction = predict(model, image, dataset.normalization, protocol).argmax(axis=0)
        metrics.update(prediction, label)
        if on_prediction is not None:
            on_prediction(index, image, label, prediction)
    if jt.in_mpi:
        sum_over_processes(metrics)
    return metrics.results()


def sum_over_processes(metrics):
    """Add up the areas each process accumulated (exact: counts stay far below 2^53)."""
    for name in ("intersection", "predicted", "labelled"):
        total = jt.array(getattr(metrics, name).astype(np.float64)).mpi_all_reduce("add")
        setattr(metrics, name, np.rint(total.numpy()).astype(np.int64))
