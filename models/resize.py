"""Bilinear resizing of NCHW maps as two matrix products, the project's one resize for logits and
features.

Bilinear interpolation is separable: out = R_h x R_w^T with R_h [out_h, in_h] and R_w
[out_w, in_w] holding each output's two neighbour weights. Written as 2-D matmuls, Jittor runs it
(and its backward) on oneDNN's multithreaded GEMM; its own `nn.interpolate` gathers pixel by pixel
on one core, which cost a quarter second per CCNet train step at 128 x 128 (loss upsampling).
Same arithmetic as PyTorch's `F.interpolate(mode="bilinear")`, either `align_corners`.
"""
from functools import lru_cache

import numpy as np

import jittor_env  # noqa: F401
import jittor as jt


@lru_cache(maxsize=64)
def interpolation_matrix(size_in, size_out, align_corners):
    """[size_out, size_in] weights of 1-D linear interpolation (PyTorch's source-index rule), in
    float64; the resize casts them to the input's dtype."""
    out = np.arange(size_out, dtype=np.float64)
    if align_corners:
        source = out * ((size_in - 1) / (size_out - 1)) if size_out > 1 else np.zeros(size_out)
    else:
        source = np.maximum((out + 0.5) * (size_in / size_out) - 0.5, 0)
    low = np.minimum(np.floor(source).astype(np.int64), size_in - 1)
    high = np.minimum(low + 1, size_in - 1)
    frac = source - low
    matrix = np.zeros((size_out, size_in), np.float64)
    np.add.at(matrix, (np.arange(size_out), low), 1 - frac)
    np.add.at(matrix, (np.arange(size_out), high), frac)
    return matrix


def chained_matrix(size_in, sizes, align_corners):
    """[sizes[-1], size_in]: the 1-D resizes to sizes[0], then sizes[1], ... as one matrix."""
    matrix = np.eye(size_in)
    for size in sizes:
        if size != matrix.shape[0]:
            matrix = interpolation_matrix(matrix.shape[0], size, align_corners) @ matrix
    return matrix


def constant(matrix, dtype):
    """A NumPy matrix as a Jittor array of `dtype` that no gradient flows into."""
    var = jt.array(matrix)
    return (var if var.dtype == dtype else var.cast(dtype)).stop_grad()


@lru_cache(maxsize=256)
def resize_matrix(size_in, sizes, align_corners, dtype):
    """chained_matrix as a Jittor array, made once per sizes and dtype: an array built from NumPy
    runs as a host operator, which on a GPU makes Jittor wait for the device and copy (a drain of
    its queue inside every step, for each resize of every forward)."""
    var = constant(chained_matrix(size_in, sizes, align_corners), dtype)
    var.sync()  # computed now, so that no later graph runs its operator again
    return var


def resize_bilinear(x, size, align_corners=False, via=()):
    """x [N, C, H, W] -> [N, C, size[0], size[1]].

    `via`: sizes (h, w) to pass through first, as if resized to each in turn; being linear, the
    chain is one resize by the product of its matrices (evaluation resizes logits to the resized
    image and then to the original: the full-resolution step would cost ten times the rest)."""
    _, _, h, w = x.shape
    sizes = tuple(via) + (tuple(size),)
    if all(tuple(s) == (h, w) for s in sizes):
        return x
    dtype = str(x.dtype)
    return separable_map(x, resize_matrix(h, tuple(s[0] for s in sizes), align_corners, dtype),
                         resize_matrix(w, tuple(s[1] for s in sizes), align_corners, dtype))


def separable_map(x, rows, cols):
    """rows @ x[n, c] @ cols^T for every map of x [N, C, H, W]; rows [out_h, H] and cols [out_w, W]
    are Jittor arrays of x's dtype (`constant`, `resize_matrix`).

    Rows first, on the input transposed: the only transposes (and their gradients') are of the
    input and of the half-resized map, never of the output, which upsampling makes the largest."""
    n, c, h, w = x.shape
    out_h, out_w = rows.shape[0], cols.shape[0]
    t = x.reshape(n * c, h, w).transpose(0, 2, 1).reshape(n * c * w, h)
    t = jt.matmul(t, rows.transpose())                                   # [N C W, out_h]
    t = t.reshape(n * c, w, out_h).transpose(0, 2, 1).reshape(n * c * out_h, w)
    t = jt.matmul(t, cols.transpose())                                   # [N C out_h, out_w]
    return t.reshape(n, c, out_h, out_w)
