"""The training losses of the official CCNet code.

Logits (stride 8) are upsampled bilinearly with align_corners=True to the label size, then
cross-entropy is averaged over the valid pixels only (label != 255). A batch whose pixels are all
ignored gives 0 (Jittor's own loss would give NaN). Under MPI the mean is over the valid pixels
of the global batch.

OHEM is the official OhemCrossEntropy2d: the pixels kept are those whose probability of the true
class is at most a threshold, which is 0.7 unless that would keep too few. The threshold is chosen
on the class probabilities and labels zoomed to 1/8 (scipy.ndimage.zoom, linear and nearest, ends
aligned) with min_kept / 64 pixels: if the zoomed map has no more valid pixels than that, every
pixel is kept; otherwise the threshold is the larger of 0.7 and the min_kept/64-th lowest zoomed
probability. It is chosen in each process from its own images, as the official code does per GPU.

The category consistent loss (CCNet, TPAMI version) pulls the RCCA features of a class together
and pushes the class centres apart: on the embedding (the RCCA output reduced 16 times by a 1x1
conv) and the labels resized to it (nearest), for each image with class centres mu_c,

    l_var = mean over classes c of the mean over pixels i of c of phi_var(||mu_c - h_i||)
    phi_var(d) = d - dd + (dd - dv)^2 if d > dd;  (d - dv)^2 if dv < d <= dd;  0 otherwise
    l_dis = mean over pairs a != b of (2 dd - ||mu_a - mu_b||)^2 where that distance <= 2 dd, else 0
    l_reg = mean over classes of ||mu_c||
    l_ccl = alpha l_var + beta l_dis + gamma l_reg, averaged over the images of the batch.
"""
from dataclasses import dataclass

import numpy as np

import jittor_env  # noqa: F401
import jittor as jt
from jittor import nn

import kernels
from datasets import IGNORE
from models.resize import resize_bilinear



@dataclass(frozen=True)
class CategoryConsistency:
    delta_v: float = 0.5
    delta_d: float = 1.5
    alpha: float = 1.0
    beta: float = 1.0
    gamma: float = 0.001


@dataclass(frozen=True)
class Ohem:
    threshold: float = 0.7
    min_kept: int = 100_000
    factor: int = 8  # the threshold is chosen on maps zoomed to 1 / factor


def zoom_positions(size, factor):
    """Where scipy.ndimage.zoom (grid_mode=False) samples one axis zoomed by 1 / factor: the output
    has round(size / factor) entries and the ends of input and output are aligned."""
    out = round(size * (1.0 / factor))
    step = (size - 1) / (out - 1) if out > 1 else 1.0
    return np.arange(out) * step


def zoomed_true_class_probability(prob, labels, factor):
    """The labels zoomed by nearest neighbour [N, h, w] and, where they are valid, the probability
    of that class zoomed linearly (prob: Jittor [N, C, H, W]; labels: NumPy [N, H, W])."""
    rows, cols = zoom_positions(labels.shape[1], factor), zoom_positions(labels.shape[2], factor)
    small = labels[:, np.floor(rows + 0.5).astype(np.int64)][:, :, np.floor(cols + 0.5).astype(np.int64)]
    n, i, j = np.nonzero(small != IGNORE)
    classes = small[n, i, j]
    if len(n) == 0:
        return small, np.zeros(0, np.float32)
    corners = [(y, x, wy * wx) for y, wy in axis_neighbours(rows[i], labels.shape[1])
               for x, wx in axis_neighbours(cols[j], labels.shape[2])]
    index = [np.tile(n, 4), np.tile(classes, 4)] + [np.concatenate(a) for a in list(zip(*corners))[:2]]
    samples = prob[tuple(jt.array(a.astype(np.int32)) for a in index)].numpy().reshape(4, -1)
    value = sum(weight * sample for (_, _, weight), sample in zip(corners, samples))
    return small, value.astype(samples.dtype)  # as scipy, which keeps the input's dtype


def axis_neighbours(position, size):
    """The two samples of linear interpolation at `position` and their weights."""
    low = np.minimum(np.floor(position).astype(np.int64), size - 1)
    frac = position - low
    return (low, 1 - frac), (np.minimum(low + 1, size - 1), frac)


def ohem_threshold(prob, labels, ohem):
    """OhemCrossEntropy2d's threshold, from the zoomed probabilities of the true classes."""
    small, zoomed = zoomed_true_class_probability(prob, labels, ohem.factor)
    min_kept = ohem.min_kept // ohem.factor ** 2
    if min_kept >= len(zoomed):
        return 1.0
    if min_kept == 0:
        return ohem.threshold
    kth = np.partition(zoomed, min_kept - 1)[min_kept - 1]
    return max(ohem.threshold, float(kth))


def segmentation_loss(logits, labels, ohem=None):
    """Mean cross-entropy over the valid (and, with OHEM, kept) pixels of logits upsampled to the
    labels' size."""
    logits = resize_bilinear(logits, labels.shape[1:], align_corners=True)
    kernel = kernels.choose("pixel_cross_entropy", logits)
    nll = kernel.pixel_cross_entropy(logits, labels) if kernel else pixel_cross_entropy(logits, labels)
    keep = labels != IGNORE
    if ohem is not None:
        prob = nn.softmax(logits.detach(), dim=1)
        threshold = ohem_threshold(prob, labels.numpy(), ohem)
        true_class = jt.gather(prob, 1, (labels * keep.int32()).unsqueeze(1))[:, 0]
        keep = keep & (true_class <= threshold)
    keep = keep.cast(nll.dtype)
    return (nll * keep).sum() / valid_pixels_per_process(keep)


def pixel_cross_entropy(logits, labels):
    """nll [N, H, W] of logits [N, C, H, W] against integer labels [N, H, W], 0 where a label is not
    one of the C classes: kernels/cross_entropy_cpu.py's function (which the CPU uses) as Jittor operators that
    reduce over the classes in place. Jittor's own cross_entropy_loss transposes the logits to rows
    [N H W, C] first, a copy of a step's largest tensor (and one of its gradient), and neighbouring
    GPU threads then read C values apart."""
    peak = logits.max(1).detach()  # any per-pixel constant would do: the gradient is softmax's
    log_sum = (logits - peak.unsqueeze(1)).exp().sum(1).log() + peak
    is_label = (jt.index(logits.shape, 1) == labels.unsqueeze(1)).cast(logits.dtype)
    valid = ((labels >= 0) & (labels < logits.shape[1])).cast(logits.dtype)
    return (log_sum - (logits * is_label).sum(1)) * valid


def valid_pixels_per_process(keep):
    """The count to divide by: under MPI the mean count over processes, so that the average of the
    processes' losses (and gradients) is the mean over all valid pixels of the global batch."""
    count = keep.sum()
    if jt.in_mpi:
        count = count.mpi_all_reduce("mean")
    return count.maximum(1.0)


def nearest_labels(labels, size):
    """Labels [N, H, W] (NumPy) resized to `size` by nearest neighbour."""
    rows = np.arange(size[0]) * labels.shape[1] // size[0]
    cols = np.arange(size[1]) * labels.shape[2] // size[1]
    return labels[:, rows][:, :, cols]


def vector_norm(x, dim):
    """Euclidean norm with a tiny floor, so that its gradient stays finite at 0."""
    return (x.sqr().sum(dim) + 1e-12).sqrt()


def image_consistency(embedding, labels, weights):
    """alpha l_var + beta l_dis + gamma l_reg of one image: embedding [D, P], labels [P] (NumPy)."""
    classes = np.unique(labels[labels != IGNORE])
    members = jt.array((labels[None] == classes[:, None]).astype(np.float32))  # [K, P]
    counts = members.sum(1, keepdims=True)
    centres = jt.matmul(members, embedding.transpose(1, 0)) / counts  # [K, D]
    d = vector_norm(jt.matmul(members.transpose(1, 0), centres) - embedding.transpose(1, 0), 1)  # [P]
    w = weights
    phi = jt.minimum(nn.relu(d - w.delta_v), w.delta_d - w.delta_v).sqr() + nn.relu(d - w.delta_d)
    l_var = (jt.matmul(members, phi.reshape(-1, 1)) / counts).mean()
    l_reg = vector_norm(centres, 1).mean()
    k = len(classes)
    if k < 2:
        return w.alpha * l_var + w.gamma * l_reg
    apart = vector_norm(centres.reshape(k, 1, -1) - centres.reshape(1, k, -1), 2)
    off_diagonal = jt.array(1 - np.eye(k, dtype=np.float32))
    l_dis = (nn.relu(2 * w.delta_d - apart).sqr() * off_diagonal).sum() / (k * (k - 1))
    return w.alpha * l_var + w.beta * l_dis + w.gamma * l_reg


def category_consistent_loss(embedding, labels, weights=CategoryConsistency()):
    """The CCL of a batch: embedding [N, D, h, w], labels [N, H, W]; 0 if no pixel is labelled."""
    n, dims, h, w = embedding.shape
    small = nearest_labels(labels.numpy(), (h, w)).reshape(n, -1)
    losses = [image_consistency(embedding[i].reshape(dims, -1), small[i], weights)
              for i in range(n) if (small[i] != IGNORE).any()]
    return sum(losses) / len(losses) if losses else embedding.sum() * 0
