"""Jittor 1.3.11, src/ops/transpose_op.cc: transposes run on the GPU when cuTT is off.

Without cuTT (off: Jittor would download it), Jittor's transpose op copied the tensor to the CPU and
back on every call, most of a CCNet-R101 train step's time on an H100; the fused transpose, which
runs on the GPU, takes it.

Verified: tests/test_jittor_cuda.py: applied once to copies, the fused transpose moving the last
axis; the GPU check on an H100 (docs/gpu.md).
"""
from ..patches import MARK, Patch

CUTT_BRANCH = ("        if (cutt_transpose) {\n"
               "            auto var = cutt_transpose(x, axes);\n"
               "            forward(var);\n"
               "            return;\n"
               "        }\n")
GPU_TRANSPOSE = ("        static VarPtr(*gpu_transpose)(Var*, NanoVector) = get_op_info(\"fuse_transpose\")\n"
                 "            .get_constructor<VarPtr, Var*, NanoVector>();\n"
                 "        forward(gpu_transpose(x, axes));\n"
                 "        return;\n")

PATCHES = (
    Patch("src/ops/transpose_op.cc", CUTT_BRANCH,
          CUTT_BRANCH
          + f"        // {MARK} without cuTT (off: Jittor downloads it) this op copies the tensor to the\n"
          "        // CPU and back; the fused transpose, which runs on the GPU, takes it.\n"
          + GPU_TRANSPOSE,
          "gpu",
          replaces=(CUTT_BRANCH  # the first version of this fix, with a timing in its comment
                    + f"        // {MARK} without cuTT (off: Jittor downloads it) this op copies the tensor to the\n"
                    "        // CPU and back (36 transposes took 2.9 s of a 3.6 s CCNet-R101 train step on an H100);\n"
                    "        // the fused transpose, which runs on the GPU, takes it.\n"
                    + GPU_TRANSPOSE,)),
)
