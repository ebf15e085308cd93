"""Jittor 1.3.11, utils/asm_tuner.py: a CPU kernel without assembly tuning marks compiles in one
compiler call.

Jittor 1.3.11 compiles each CPU kernel through utils/asm_tuner.py: a new Python process that
imports Jittor's utilities (which run the compiler twice for its version), compiles to assembly
with debug information, rewrites the assembly where the source has tuning marks ("@begin",
written only by the use_movnt pass), then assembles and links. A kernel without marks gets the
same code from one compiler call, in about three quarters of the time (docs/benchmarks.md).

Verified: tests/test_jittor_env.py: Jittor's script with a compiler that logs its calls (one call
for an unmarked source, the assembly pass for a marked one).
"""
from ..patches import MARK, Patch

PATCHES = (
    Patch(
        "utils/asm_tuner.py",
        'import sys\nimport os\nos.environ["log_silent"] = "1"\n',
        "import sys\nimport os\n"
        f"# {MARK} a kernel source without tuning marks compiles in one compiler call.\n"
        'if (sys.argv[1].startswith("--cc_path=") and sys.argv[2].endswith("_op.cc")\n'
        '        and any(arg.endswith("_op.so") for arg in sys.argv[3:])\n'
        '        and "@begin" not in open(sys.argv[2]).read()):\n'
        '    compiler = sys.argv[1][len("--cc_path="):]\n'
        "    os.execvp(compiler, [compiler] + sys.argv[2:])\n"
        'os.environ["log_silent"] = "1"\n',
        "any"),
)
