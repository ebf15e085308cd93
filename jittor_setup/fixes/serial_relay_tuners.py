"""Jittor 1.3.11, src/opt/tuner_manager.cc: the two graph-changing tuners of the parallel op
compiler run one thread at a time.

Jittor 1.3.11 makes the source of new kernels in several threads at once (its parallel op
compiler, also at each process's first step with a warm cache). Two of the tuners that run there
change the graph that the threads share: a matrix product or convolution relayed to oneDNN or
cuDNN becomes a new operator on variables that other threads' kernels also read (their edges and
reference counts), and the relay search marks nodes with one global traversal flag. One process
in about 50 crashed (SIGSEGV in VarRelayManager::get_relay_src) or failed a check
(`op_compiler.cc:832`) on its first training step. The fix runs those two tuners one thread at a
time; the rest of the source making and the C++ compiler still run in parallel.

Verified: bench/first_steps.py (how often a new training process fails its first step);
tests/test_jittor_env.py: applied once to copies, and where it cannot be applied Jittor compiles one
kernel at a time.
"""
from ..patches import MARK, Patch

PATCHES = (
    Patch(
        "src/opt/tuner_manager.cc",
        '#include "opt/tuner/conv_tuner.h"\n',
        '#include "opt/tuner/conv_tuner.h"\n'
        f"#include <mutex>  // {MARK} for the relaying tuners' lock\n",
        "any"),
    Patch(
        "src/opt/tuner_manager.cc",
        "    run_tuner<MatmulTuner>(&pm);\n"
        "    run_tuner<ConvTuner>(&pm);\n",
        f"    // {MARK} these two add operators to the graph that the parallel op\n"
        "    // compiler's threads share: one thread at a time.\n"
        "    static std::mutex relay_lock;\n"
        "    {\n"
        "        std::lock_guard<std::mutex> relay_guard(relay_lock);\n"
        "        run_tuner<MatmulTuner>(&pm);\n"
        "        run_tuner<ConvTuner>(&pm);\n"
        "    }\n",
        "any"),
)
