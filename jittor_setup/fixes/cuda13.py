"""Jittor 1.3.11, extern/cuda/inc/helper_cuda.h, compiler.py, other/code_softmax.py,
depthwise_conv.py, extern/cuda/cub/ops/cub_where_op.cc: what CUDA 13 removed or requires.

CUDA 13 removed two cudaDeviceProp fields that Jittor's sample helpers read, and from CUB 3
`cub::Max`, `cub::LaneId` and CUB's iterators; its CUB, Thrust and libcu++ need C++17. Each
change keeps the file working with older CUDA (`CUDART_VERSION`, `CUB_VERSION`, the nvcc
version).

Verified: tests/test_jittor_cuda.py: applied once and only for CUDA 13, on copies of Jittor's files;
the GPU check on an H100 with CUDA 13.0 (docs/gpu.md).
"""
from ..patches import MARK, Patch

PATCHES = (
    Patch("extern/cuda/inc/helper_cuda.h",
          "#ifdef __CUDA_RUNTIME_H__\n// General GPU Device CUDA Initialization\n",
          f"// {MARK} CUDA 13 removed cudaDeviceProp::computeMode and ::clockRate, which these\n"
          "// sample helpers (unused by Jittor) read.\n"
          "#if defined(__CUDA_RUNTIME_H__) && CUDART_VERSION < 13000\n"
          "// General GPU Device CUDA Initialization\n",
          "cuda13"),
    Patch("compiler.py",
          '        nvcc_flags = nvcc_flags.replace("-Wall", "")\n',
          f"        # {MARK} CUDA 13's CUB, Thrust and libcu++ need C++17.\n"
          "        if nvcc_version >= [13]:\n"
          '            nvcc_flags = nvcc_flags.replace("-std=c++14", "-std=c++17")\n'
          '        nvcc_flags = nvcc_flags.replace("-Wall", "")\n',
          "cuda13"),
    Patch("other/code_softmax.py",
          "    auto tmp = BlockReduce(temp_storage).Reduce(v1, cub::Max());\n",
          f"    // {MARK} CUB 3 (CUDA 13) removed cub::Max; libcu++'s cuda::maximum replaces it.\n"
          "#if CUB_VERSION >= 300000\n"
          "    auto tmp = BlockReduce(temp_storage).Reduce(v1, ::cuda::maximum<>());\n"
          "#else\n"
          "    auto tmp = BlockReduce(temp_storage).Reduce(v1, cub::Max());\n"
          "#endif\n",
          "cuda13"),
    Patch("depthwise_conv.py",
          "    if (cub::LaneId() == 0) \n",
          f"    // {MARK} CUB 3 (CUDA 13) removed cub::LaneId; the lane is read from PTX as it did.\n"
          "    unsigned lane_id;\n"
          '    asm("mov.u32 %0, %%laneid;" : "=r"(lane_id));\n'
          "    if (lane_id == 0)\n",
          "cuda13"),
    Patch("extern/cuda/cub/ops/cub_where_op.cc",
          "#include <thrust/transform.h>\n#endif\n",
          "#include <thrust/transform.h>\n"
          f"// {MARK} Thrust's iterators replace the ones CUB 3 (CUDA 13) removed.\n"
          "#include <thrust/iterator/counting_iterator.h>\n"
          "#include <thrust/iterator/transform_iterator.h>\n"
          "#endif\n",
          "cuda13"),
    Patch("extern/cuda/cub/ops/cub_where_op.cc",
          "    cub::CountingInputIterator<To> counting_itr(0);\n"
          "    cub::TransformInputIterator<bool, NonZeroOp<Ti>, Ti*> itr(cond->ptr<Ti>(), NonZeroOp<Ti>());\n",
          "#if CUB_VERSION >= 300000\n"
          "    thrust::counting_iterator<To> counting_itr(0);\n"
          "    thrust::transform_iterator<NonZeroOp<Ti>, Ti*, bool> itr(cond->ptr<Ti>(), NonZeroOp<Ti>());\n"
          "#else\n"
          "    cub::CountingInputIterator<To> counting_itr(0);\n"
          "    cub::TransformInputIterator<bool, NonZeroOp<Ti>, Ti*> itr(cond->ptr<Ti>(), NonZeroOp<Ti>());\n"
          "#endif\n",
          "cuda13"),
)
