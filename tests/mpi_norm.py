"""One training-mode norm (ABN, LeakyReLU, a residual joining) on this MPI process's half of a fixed
batch of 4, or on the whole batch without MPI; saves its output, gradients and running statistics
as norm_rank{R}.npz (norm_single.npz without MPI) in the folder given."""
import os
import sys

import numpy as np

import jittor_env  # noqa: F401
import jittor as jt

from models.norm import ABN

SHAPE = (4, 6, 5, 7)

if __name__ == "__main__":
    rng = np.random.default_rng(0)
    x, upstream, residual = (rng.normal(1.0, 2.0, SHAPE).astype(np.float32) for _ in range(3))
    part = slice(2 * jt.rank, 2 * jt.rank + 2) if jt.in_mpi else slice(None)
    norm = ABN(SHAPE[1], activation="leaky_relu")
    norm.weight.assign(jt.array(rng.uniform(-1.5, 1.5, SHAPE[1]).astype(np.float32)))
    norm.bias.assign(jt.array(rng.normal(size=SHAPE[1]).astype(np.float32)))
    inputs = [jt.array(x[part]), norm.weight, norm.bias, jt.array(residual[part])]
    y = norm(inputs[0], residual=inputs[3])
    grads = jt.grad((y * jt.array(upstream[part])).sum(), inputs)
    name = f"norm_rank{jt.rank}.npz" if jt.in_mpi else "norm_single.npz"
    np.savez(os.path.join(sys.argv[1], name), y=y.numpy(), **{f"d{k}": g.numpy() for k, g in
                                                              zip(("x", "weight", "bias", "residual"), grads)},
             running_mean=norm.running_mean.numpy(), running_var=norm.running_var.numpy())
