"""Every fix this project makes to Jittor 1.3.11's own files, one module each: the file it changes,
why, and how it was verified. A fix is a tuple PATCHES of jittor_setup.patches.Patch.

CPU fixes apply on every machine (`needs` "cpu" or "any"); the GPU fixes only where a GPU is used,
and each only where this CUDA or cuDNN needs it (`needs` "gpu", "cuda13", "cudnn9").
"""
from . import (compile_in_one_call, cuda13, cudnn9, exec_namespace, gpu_transpose, onednn_buffers,
               pointwise_convolution, serial_relay_tuners)

CPU_FIXES = (pointwise_convolution, onednn_buffers, serial_relay_tuners, compile_in_one_call, exec_namespace)
GPU_FIXES = (gpu_transpose, cuda13, cudnn9)
CPU = tuple(patch for fix in CPU_FIXES for patch in fix.PATCHES)
GPU = tuple(patch for fix in GPU_FIXES for patch in fix.PATCHES)


def gpu_needs(cuda_version, cudnn_version):
    """The `needs` of the GPU fixes a CUDA and cuDNN of these versions need."""
    needs = {"gpu"}
    if cuda_version[0] >= 13:
        needs.add("cuda13")
    if cudnn_version and cudnn_version[0] >= 9:
        needs.add("cudnn9")
    return needs


def for_gpu(cuda_version, cudnn_version):
    """The GPU patches a CUDA and cuDNN of these versions need."""
    needs = gpu_needs(cuda_version, cudnn_version)
    return [patch for patch in GPU if patch.needs in needs]
