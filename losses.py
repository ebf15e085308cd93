"""The training losses of the official CCNet code.

Logits (stride 8) are upsampled bilinearly with align_corners=True to the label size, then
cross-entropy is averaged over the valid pixels only (label != 255). A batch whose pixels are all
ignored gives 0 (Jittor's own loss would give NaN). With OHEM, only the pixels whose probability
of the true class is at most 0.7 are kept, but never fewer than 100,000 (the lowest-probability
ones), as the official OhemCrossEntropy2d.
"""
from dataclasses import dataclass

import numpy as np

import jittor_env  # noqa: F401
import jittor as jt
from jittor import nn

from models.resize import resize_bilinear

IGNORE = 255


@dataclass(frozen=True)
class Ohem:
    threshold: float = 0.7
    min_kept: int = 100_000


def pixel_nll(logits, labels):
    """Per-pixel negative log-likelihood [N, H, W] of logits upsampled to the labels; 0 where ignored."""
    logits = resize_bilinear(logits, labels.shape[1:], align_corners=True)
    return nn.cross_entropy_loss(logits, labels, ignore_index=IGNORE, reduction="none").reshape(labels.shape)


def ohem_mask(nll, valid, ohem):
    """The valid pixels OHEM keeps: true-class probability <= max(threshold, k-th lowest)."""
    prob = np.exp(-nll.numpy())
    valid_np = valid.numpy()
    count = int(valid_np.sum())
    if count <= ohem.min_kept:
        return valid
    kth = np.partition(prob[valid_np], ohem.min_kept - 1)[ohem.min_kept - 1]
    threshold = max(ohem.threshold, float(kth))
    return jt.array(valid_np & (prob <= threshold))


def segmentation_loss(logits, labels, ohem=None):
    """Mean cross-entropy over the valid (and, with OHEM, kept) pixels."""
    nll = pixel_nll(logits, labels)
    keep = labels != IGNORE
    if ohem is not None:
        keep = ohem_mask(nll, keep, ohem)
    keep = keep.float32()
    return (nll * keep).sum() / keep.sum().maximum(1.0)
