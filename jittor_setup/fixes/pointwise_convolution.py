"""Jittor 1.3.11, extern/mkl/ops/mkl_conv_op.cc: 1x1 convolutions run in the caller's plain layout;
the output is written in place where the layouts agree.

Jittor 1.3.11's oneDNN convolution lets oneDNN choose a blocked layout and reorders input and
output into it and back on every call. For a 1x1 convolution on a small map those copies cost
more than the convolution (up to twice PyTorch's time for ResNet-101's 1x1 convolutions;
docs/benchmarks.md); 3x3 and depthwise convolutions stay faster blocked.

Verified: tests/test_jittor_env.py: the pointwise convolution and its gradients against NumPy, every
oneDNN convolution and its gradients against NumPy, the fix applied once to copies of Jittor's
files; docs/benchmarks.md: the CPU speed rows.
"""
from ..patches import MARK, Patch

PATCHES = (
    Patch(
        "extern/mkl/ops/mkl_conv_op.cc",
        "    auto conv1_src_md = memory::desc({ conv1_src_tz }, dt::@Tx, tag::any);\n"
        "    auto conv1_weights_md\n"
        "            = memory::desc({ conv1_weights_tz }, dt::@Tw, tag::any);\n"
        "    auto conv1_dst_md = memory::desc({ conv1_dst_tz }, dt::@Ty, tag::any);\n",
        f"    // {MARK} a 1x1 convolution runs in the caller's plain layout: reordering its\n"
        "    // input and output to a blocked layout and back cost more than the convolution.\n"
        "    bool pointwise = wh == 1 && ww == 1 && groups == 1;\n"
        "    auto conv1_src_md = memory::desc({ conv1_src_tz }, dt::@Tx, pointwise ? tag::@XFORMAT : tag::any);\n"
        "    auto conv1_weights_md\n"
        "            = memory::desc({ conv1_weights_tz }, dt::@Tw, tag::any);\n"
        "    auto conv1_dst_md = memory::desc({ conv1_dst_tz }, dt::@Ty, pointwise ? tag::@YFORMAT : tag::any);\n",
        "cpu"),
    Patch(
        "extern/mkl/ops/mkl_conv_op.cc",
        "    auto conv1_dst_memory = memory(conv1_prim_desc.dst_desc(), eng);\n",
        f"    // {MARK} write into the output itself where the layouts agree (no copy).\n"
        "    auto conv1_dst_memory = user_dst_memory;\n"
        "    if (conv1_prim_desc.dst_desc() != user_dst_memory.get_desc())\n"
        "        conv1_dst_memory = scratch(conv1_prim_desc.dst_desc(), eng);\n",  # see ONEDNN_BUFFERS
        "cpu",
        replaces=(f"    // {MARK} write into the output itself where the layouts agree (no copy).\n"
                  "    auto conv1_dst_memory = user_dst_memory;\n"
                  "    if (conv1_prim_desc.dst_desc() != user_dst_memory.get_desc())\n"
                  "        conv1_dst_memory = memory(conv1_prim_desc.dst_desc(), eng);\n",)),
)
