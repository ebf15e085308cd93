"""Faster implementations of a few of the model's operations, behind one small interface.

Jittor runs some operations slowly on the CPU (batched products on one core, reductions over a
map with one thread per channel, oneDNN's depthwise gradients through its GEMM fallback) and, on a
GPU, spends host time on every operator it runs. The kernels here compute the same functions as
the model's own Jittor formulations, faster where they apply. Each module is one kernel:

    available(*inputs)  whether it applies to these inputs (device, dtype, shape, MPI)
    <functions>         the operation(s) of its family below, with the model's signatures

A model file asks `choose(family, *inputs)` for the module to use, and runs its own formulation
where that is None. Deleting a kernel is deleting its module and its entry in FAMILIES.
"""
from . import cca_cpu, cross_entropy_cpu, depthwise_cpu, norm_cpu, norm_gpu

# family -> the kernels that implement it, tried in order, and the functions each provides
FAMILIES = {
    "criss_cross_attention": (cca_cpu,),   # criss_cross_attention(query, key, value)
    "scaled_residual": (cca_cpu,),         # scaled_residual(gamma, out, x)
    "norm": (norm_cpu, norm_gpu),          # batch_statistics(x), norm_activation(x, weight, bias, stats, ...)
    "depthwise_conv2d": (depthwise_cpu,),  # depthwise_conv2d(x, weight, bias, padding, dilation)
    "pixel_cross_entropy": (cross_entropy_cpu,),  # pixel_cross_entropy(logits, labels)
}


def choose(family, *inputs):
    """The first kernel of `family` that applies to `inputs`, or None."""
    return next((kernel for kernel in FAMILIES[family] if kernel.available(*inputs)), None)
