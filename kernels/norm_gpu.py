"""Batch normalisation with its activation for training on GPUs: the function and the backward of
kernels/norm_cpu.py (statistics, y; then the two per-channel sums and dx), written as Jittor
operators whose every per-channel sum is a matrix product.

Jittor reduces a map [N, C, H, W] over N, H and W at once with one thread per channel, several times
slower on a GPU than the same sum as a matrix-vector product (cuBLAS; docs/gpu.md has the
measurements). So each sum adds the N images first (one element-wise
pass that Jittor fuses with the term being summed, such as dz * xhat) and multiplies the [C, H * W]
result by a column of ones. The backward uses the sums of dz and dz * xhat as kernels/norm_cpu.py
does, instead of the dozen reductions Jittor's autograd makes of the plain formulation.

Jittor spends host time on every operator it runs, on a GPU more than most of these kernels take,
so the operators are few: mean, variance, weight and bias stay separate arrays (never stacked into
one and sliced again), divisions by the pixel count ride in the column of a mean's product or in
dx's pass, and the products are the BLAS operator itself, not jt.matmul's broadcast product that
Jittor replaces with it at run time (a test counts them).

Under MPI the sums are added over the processes, so that the statistics are the whole batch's
(synchronised batch norm), also on CPUs, whose kernels see one process's part of the batch. In eval
models.norm keeps the plain formulation.
"""
import functools

import numpy as np

import jittor_env  # noqa: F401
import jittor as jt

from .norm_cpu import activation_data


def available(x):
    """True where this formulation is used: on GPUs, and under MPI also on CPUs (the CPU kernels see
    one process's part of the batch), for a float32 or float64 map [N, C, H, W]."""
    return (jt.flags.use_cuda or jt.in_mpi) and x.ndim == 4 and x.dtype in (jt.float32, jt.float64)


@functools.lru_cache(maxsize=None)
def constant_column(rows, value, dtype):
    """The column a sum multiplies by (ones; 1 / count for a mean), made once per map size (from
    NumPy: jt.full rounds the value to float32 first)."""
    return jt.array(np.full((rows, 1), value, dtype)).stop_grad()


def matrix_product(a, b):
    """a @ b for 2-D float32 a, b, as the BLAS operator itself (cuBLAS on GPUs, oneDNN on CPUs):
    jt.matmul builds a broadcast product and a sum that Jittor replaces with that operator when it
    runs them, host time on every call. Other dtypes go through jt.matmul."""
    if a.dtype == jt.float32:
        if jt.flags.use_cuda and jt.compile_extern.cublas_ops:
            return jt.compile_extern.cublas_ops.cublas_matmul(a, b, False, False)
        if not jt.flags.use_cuda and jt.compile_extern.mkl_ops:
            return jt.compile_extern.mkl_ops.mkl_matmul(a, b, False, False)
    return jt.matmul(a, b)


def channel_sums(x, scale=1.0):
    """Per-channel sums of x [N, C, H, W] over N, H, W, times `scale`: the images added, then a
    matrix-vector product."""
    _, c, h, w = x.shape
    return matrix_product(x.sum(0).reshape(c, h * w), constant_column(h * w, scale, str(x.dtype))).reshape(c)


def all_processes(sums):
    """Sums over every MPI process's part of the batch (the batch statistics are the whole batch's)."""
    return sums.mpi_all_reduce("add") if jt.in_mpi else sums


def batch_count(x):
    """Pixels per channel in the whole batch, over every process."""
    return x.numel() // x.shape[1] * jt.world_size


def per_channel(v):
    return v.reshape(1, -1, 1, 1)


def scalar(value, dtype):
    """`value` in `dtype`: Jittor takes a Python number as a float32 constant (0.01 is 2e-8 off)."""
    return value if dtype == jt.float32 else jt.array(np.array(value)).cast(dtype)


def batch_statistics(x):
    """(mean, biased variance) [C] of x [N, C, H, W] over N, H, W (two passes), as constants."""
    # each process's sums over the whole batch's count: their sum over processes is the mean
    x, inverse_count = x.detach(), 1.0 / batch_count(x)
    mean = all_processes(channel_sums(x, inverse_count))
    var = all_processes(channel_sums((x - per_channel(mean)).sqr(), inverse_count))
    return mean, var


class NormActivation(jt.Function):
    """y = act(x * scale + shift [+ residual]); backward: the sums, then dx (and dr)."""

    def execute(self, x, weight, bias, mean, var, residual, data):
        self.joins, self.slope = data["residual"], scalar(data["slope"], x.dtype)
        invstd = (var + scalar(data["eps"], x.dtype)).rsqrt()
        scale = weight * invstd
        z = x * per_channel(scale) + per_channel(bias - mean * scale)
        if self.joins:
            z = z + residual
        y = jt.ternary(z > 0, z, z * self.slope)
        self.saved = [x, scale, mean, invstd, y]
        return y

    def grad(self, dy):
        x, scale, mean, invstd, y = self.saved
        # y > 0 exactly where z > 0, for every activation here (slope 1, 0 or 0.01)
        dz = jt.ternary(y > 0, dy, dy * self.slope)
        xhat = (x - per_channel(mean)) * per_channel(invstd)
        # the affine gradients are this process's sums (the optimizer averages them over processes);
        # the input's gradient runs through the statistics of the whole batch
        sum_dz_xhat, sum_dz = channel_sums(dz * xhat), channel_sums(dz)
        # dz minus the means of dz and of dz * xhat (times xhat): the division by the count happens
        # in dx's own pass, not as operators of their own
        means = per_channel(all_processes(sum_dz)) + xhat * per_channel(all_processes(sum_dz_xhat))
        dx = per_channel(scale) * (dz - means * scalar(1.0 / batch_count(x), x.dtype))
        return dx, sum_dz_xhat, sum_dz, None, None, dz if self.joins else None, None


def norm_activation(x, weight, bias, stats, activation, slope, eps, residual=None):
    """act((x - mean) / sqrt(var + eps) * weight + bias [+ residual]) per channel, (mean, var) =
    stats, x's own batch statistics: the gradient of x includes their dependence on x."""
    residual, data = activation_data(x, activation, slope, eps, residual)
    mean, var = stats
    return NormActivation.apply(x, weight.cast(x.dtype), bias.cast(x.dtype), mean.detach(), var.detach(),
                                residual, data)
