"""Jittor 1.3.11, extern/mkl/ops/mkl_conv_op.cc, mkl_conv_backward_x_op.cc,
mkl_conv_backward_w_op.cc: oneDNN's blocked copies come from Jittor's caching allocator; the
backward-data op reorders the weights once.

Jittor 1.3.11's oneDNN convolutions let oneDNN allocate their blocked copies of input, weights and
output with malloc on every call, gigabytes per CCNet-R101 train step, placed in the C heap between
the blocks of Jittor's own allocator, where they left holes of a hundred megabytes and more. These
copies come from Jittor's caching allocator instead (`scratch`). The backward-data op reordered
the weights into the forward layout and from there into its own (two copies of the weights); it
reorders them straight into its own. Results are bit for bit the same; peak memory is lower
(docs/benchmarks.md).

Verified: tests/test_jittor_env.py: the oneDNN convolutions and their gradients against NumPy, the
copies taken from Jittor's allocator (the C heap does not grow); docs/benchmarks.md: peak memory.
"""
from ..patches import MARK, Patch

ONEDNN_SCRATCH = (
    '#include "mem/allocator.h"\n'
    "namespace jittor {\n"
    "namespace {\n"
    f"// {MARK} oneDNN's blocked copies live in blocks of Jittor's caching allocator,\n"
    "// 64-byte aligned as oneDNN aligns its own, and are given back when the op returns.\n"
    "struct DnnlScratch {\n"
    "    std::vector<Allocation> blocks;\n"
    "    DnnlScratch() { blocks.reserve(8); }\n"
    "    dnnl::memory operator()(const dnnl::memory::desc& desc, const dnnl::engine& eng) {\n"
    "        blocks.emplace_back(get_allocator(), desc.get_size() + 64);\n"
    "        auto aligned = ((uintptr_t)blocks.back().ptr + 63) & ~(uintptr_t)63;\n"
    "        return dnnl::memory(desc, eng, (void*)aligned);\n"
    "    }\n"
    "};\n"
    "}\n"
    "}\n")


def onednn_scratch(op, descs):
    """The patches that make one oneDNN convolution op take the copies of `descs` from `scratch`."""
    path = f"extern/mkl/ops/{op}.cc"
    return (
        Patch(path, "using namespace dnnl;\n", "using namespace dnnl;\n" + ONEDNN_SCRATCH, "cpu"),
        Patch(path, "    stream s(eng);\n", "    stream s(eng);\n    DnnlScratch scratch;\n", "cpu"),
    ) + tuple(Patch(path, f"memory({desc}, eng)", f"scratch({desc}, eng)", "cpu") for desc in descs)


PATCHES = (
    onednn_scratch("mkl_conv_op", ["conv1_prim_desc.src_desc()", "conv1_prim_desc.weights_desc()"])
    + onednn_scratch("mkl_conv_backward_x_op", [
        "conv_bwd_data_pd.diff_dst_desc()", "conv_bwd_data_pd.weights_desc()", "conv_bwd_data_pd.diff_src_desc()"])
    + onednn_scratch("mkl_conv_backward_w_op", [
        "conv_pd.src_desc()", "conv_bwd_weights_pd.src_desc()", "conv_bwd_weights_pd.diff_dst_desc()",
        "conv_bwd_weights_pd.diff_weights_desc()"])
    + (Patch(
        "extern/mkl/ops/mkl_conv_backward_x_op.cc",
        "    auto conv_weights_memory = conv_user_weights_memory;\n"
        "    if (conv_pd.weights_desc() != conv_user_weights_memory.get_desc()) {\n"
        "        conv_weights_memory = memory(conv_pd.weights_desc(), eng);\n"
        "        net_bwd.push_back(\n"
        "                reorder(conv_user_weights_memory, conv_weights_memory));\n"
        "        net_bwd_args.push_back({{DNNL_ARG_FROM, conv_user_weights_memory},\n"
        "                {DNNL_ARG_TO, conv_weights_memory}});\n"
        "    }\n",
        f"    // {MARK} the weights are reordered once, below, straight into the\n"
        "    // backward-data layout (through the forward layout they were copied twice).\n"
        "    auto conv_weights_memory = conv_user_weights_memory;\n",
        "cpu"),)
)
