"""Dropout2d and DropPath whose masks do not depend on how a batch is split across processes.

Under MPI each process holds a slice of the global batch. The masks here are drawn for the whole
global batch from a seed that every process shares, and each process keeps its own slice, so a
sample gets the same mask whether it is trained in one process or in several (and a multi-process
run can be checked against a single-process one).
"""
import jittor_env  # noqa: F401
import jittor as jt
from jittor import nn


def global_batch_uniform(shape):
    """Uniform [0, 1) noise of `shape` for this process's slice of the global batch."""
    local = shape[0]
    noise = jt.rand((local * jt.world_size,) + tuple(shape[1:]))
    return noise[jt.rank * local:(jt.rank + 1) * local] if jt.in_mpi else noise


class Dropout2d(nn.Module):
    """Zeroes whole channels with probability p, scales the rest by 1 / (1 - p)."""

    def __init__(self, p=0.1):
        self.p = p
        self.is_train = True

    def mask_shape(self, x):
        return x.shape[:2] + (1, 1)

    def execute(self, x):
        if not self.is_train or self.p == 0:
            return x
        keep = (global_batch_uniform(self.mask_shape(x)) >= self.p).float32()
        return x * keep / (1 - self.p)


class DropPath(Dropout2d):
    """Stochastic depth: drops a residual branch for a whole sample with probability p."""

    def mask_shape(self, x):
        return (x.shape[0], 1, 1, 1)
