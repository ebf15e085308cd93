"""The project's one Jittor bootstrap: import this module instead of `jittor` first.

Jittor reads its configuration from environment variables when it is first imported, so they
are set here, before that import, and never over a value the user already set:

* Python: 3.10 to 3.13, and Jittor compiles against this interpreter's own headers and build
  configuration, wherever it came from (`jittor_python`).
* No visible NVIDIA GPU: `nvcc_path=""`. Otherwise Jittor finds a CUDA toolkit, tries to use
  it and fails on a machine whose driver has no device.
* oneDNN: Jittor 1.3.11 only looks for oneDNN 2.2 in `<JITTOR_HOME>/.cache/jittor/mkl/` and
  downloads it from its own server when missing. The project installs the same library from
  PyPI (`onednn-cpu-gomp`, `onednn-devel-cpu-gomp` 2021.2.0) and links it there, so no download
  happens. Without oneDNN, Jittor's CPU convolutions are about 150x slower.
* GPU visible: the CUDA toolkit, cuDNN and NCCL are found and Jittor's files fixed for them
  (`jittor_cuda`), then `jt.flags.use_cuda = 1`; cuDNN's workspace is capped at
  `CCNET_CUDNN_WORKSPACE` (default 0.01) of GPU memory. A GPU that cannot be used stops the
  start with one line saying why; Jittor never falls back to its 100x slower convolutions.
* Jittor's own log (`log_silent`) is off unless `CCNET_VERBOSE=1`.
* Jittor's kernel cache is one folder (`cache_name=default`), not one per git branch of the checkout.
* Jittor does not import torch at start-up (`FIX_TORCH_ERROR=0`), which it otherwise does whenever
  torch is installed.
* Jittor 1.3.11's oneDNN convolution runs 1x1 kernels in the caller's plain layout, without the
  two reorders per call that made them up to 2x slower than PyTorch's (`POINTWISE_CONVOLUTION`).
* Jittor 1.3.11's oneDNN convolution ops take their blocked copies of inputs, weights and outputs
  from Jittor's caching allocator, not from malloc on every call, and the backward-data op copies
  the weights once, not twice: 15-20% less peak memory in a CCNet-R101 train step (`ONEDNN_BUFFERS`).
* Jittor 1.3.11's parallel op compiler runs its two graph-changing tuners one thread at a time:
  its threads changed the shared graph at once and crashed about one process in 50 on its first
  step (`SERIAL_RELAY_TUNERS`; where it cannot be applied, `use_parallel_op_compiler=0`).
* Jittor 1.3.11 compiles each CPU kernel in one compiler call where its source has no assembly
  tuning marks, not through a Python script, an assembly pass and a second compiler call: a
  quarter less time to compile the kernels of a cold first step (`COMPILE_IN_ONE_CALL`).
* Jittor 1.3.11 reads the modules it compiles back from locals() after an exec, which Python 3.13
  no longer writes into; they are read from an explicit namespace (`EXEC_NAMESPACE`).
* NumPy's float limits are computed before Jittor's CPU kernels switch denormals off: asked for
  the first time after that, `np.finfo` (matplotlib, `np.nan_to_num`) warns that the smallest
  subnormal is zero.
* Freed memory stays in the process for the next step (glibc's mallopt, `keep_freed_memory`): large
  blocks freed to the C library went back to the kernel, and faulting them in again took 0.26 s of
  system time per CCNet-R101 train step.
* SIGCHLD gets its default action back (Jittor's handler ends the process when a child is killed).
* A crash (SIGSEGV, SIGBUS, SIGILL, SIGFPE) prints Python's traceback and ends the process
  (`end_on_crash`); Jittor's own handler could hang in gdb or in exit() instead.
* Jittor's kernel-compiling process pool is ended at exit by killing its processes
  (`end_compiler_pool`), not by `Pool.terminate`, which waits forever when a signal sent to the
  whole process group (Ctrl-C, `kill -TERM -PGID`, a batch scheduler) has killed one of them.
"""
import atexit
import ctypes
import faulthandler
import importlib.metadata
import json
import os
import shutil
import signal
import sys
from pathlib import Path

import numpy as np

import jittor_cuda
import jittor_python
from jittor_cuda import gpu_visible

ONEDNN_DIR = "dnnl_lnx_2.2.0_cpu_gomp"  # the folder name Jittor's installer looks for
ONEDNN_WHEELS = ("onednn-cpu-gomp", "onednn-devel-cpu-gomp")


def jittor_home():
    """The folder Jittor puts `.cache/jittor` under (same rule as `jittor_utils.home`)."""
    if "JITTOR_HOME" in os.environ:
        return os.path.abspath(os.environ["JITTOR_HOME"])
    config = Path.home() / ".cache" / "jittor" / "config.json"
    if config.is_file():
        try:
            return json.loads(config.read_text()).get("JITTOR_HOME", str(Path.home()))
        except (OSError, ValueError):
            pass
    return str(Path.home())


def onednn_dir():
    return os.path.join(jittor_home(), ".cache", "jittor", "mkl", ONEDNN_DIR)


def onednn_usable(folder):
    return (os.path.isfile(os.path.join(folder, "lib", "libmkldnn.so"))
            and os.path.isfile(os.path.join(folder, "include", "dnnl.h")))


def wheel_files():
    """Absolute paths of the oneDNN wheels' libraries and headers, or None if not installed."""
    files = []
    for name in ONEDNN_WHEELS:
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            return None
        files += [Path(dist.locate_file(f)).resolve() for f in dist.files or []]
    return files


def link_onednn():
    """Make Jittor's oneDNN folder point at the PyPI wheels; True if oneDNN is then usable.

    A folder that is missing, half-written or whose links dangle (a removed venv) is rebuilt.
    """
    target = onednn_dir()
    if onednn_usable(target):
        return True
    files = wheel_files()
    if files is None:
        return False
    libs = [f for f in files if f.parent.name == "lib" and f.name.startswith(("libdnnl", "libmkldnn"))]
    include = next(f.parent for f in files if f.name == "dnnl.h")
    headers = {include / f.relative_to(include).parts[0] for f in files if include in f.parents}
    tmp = target + f".tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    for sub, entries in (("lib", libs), ("include", headers)):
        os.makedirs(os.path.join(tmp, sub))
        for entry in entries:
            os.symlink(entry, os.path.join(tmp, sub, entry.name))
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return onednn_usable(target)


GPU_STACK = None  # what jittor_cuda set up, in one line, when a GPU is used

# Jittor 1.3.11's oneDNN convolution lets oneDNN choose a blocked layout and reorders input and
# output into it and back on every call. For a 1x1 convolution on a small map those copies cost
# more than the convolution (ResNet-101's layer3 at 16 x 16: 1024 -> 256 took 3.2 ms, PyTorch
# 1.8 ms, in the caller's plain layout 1.5 ms); 3x3 and depthwise convolutions stay faster blocked.
POINTWISE_CONVOLUTION = (
    jittor_cuda.Patch(
        "extern/mkl/ops/mkl_conv_op.cc",
        "    auto conv1_src_md = memory::desc({ conv1_src_tz }, dt::@Tx, tag::any);\n"
        "    auto conv1_weights_md\n"
        "            = memory::desc({ conv1_weights_tz }, dt::@Tw, tag::any);\n"
        "    auto conv1_dst_md = memory::desc({ conv1_dst_tz }, dt::@Ty, tag::any);\n",
        f"    // {jittor_cuda.MARK} a 1x1 convolution runs in the caller's plain layout: reordering its\n"
        "    // input and output to a blocked layout and back cost more than the convolution.\n"
        "    bool pointwise = wh == 1 && ww == 1 && groups == 1;\n"
        "    auto conv1_src_md = memory::desc({ conv1_src_tz }, dt::@Tx, pointwise ? tag::@XFORMAT : tag::any);\n"
        "    auto conv1_weights_md\n"
        "            = memory::desc({ conv1_weights_tz }, dt::@Tw, tag::any);\n"
        "    auto conv1_dst_md = memory::desc({ conv1_dst_tz }, dt::@Ty, pointwise ? tag::@YFORMAT : tag::any);\n",
        "cpu"),
    jittor_cuda.Patch(
        "extern/mkl/ops/mkl_conv_op.cc",
        "    auto conv1_dst_memory = memory(conv1_prim_desc.dst_desc(), eng);\n",
        f"    // {jittor_cuda.MARK} write into the output itself where the layouts agree (no copy).\n"
        "    auto conv1_dst_memory = user_dst_memory;\n"
        "    if (conv1_prim_desc.dst_desc() != user_dst_memory.get_desc())\n"
        "        conv1_dst_memory = scratch(conv1_prim_desc.dst_desc(), eng);\n",  # see ONEDNN_BUFFERS
        "cpu",
        replaces=(f"    // {jittor_cuda.MARK} write into the output itself where the layouts agree (no copy).\n"
                  "    auto conv1_dst_memory = user_dst_memory;\n"
                  "    if (conv1_prim_desc.dst_desc() != user_dst_memory.get_desc())\n"
                  "        conv1_dst_memory = memory(conv1_prim_desc.dst_desc(), eng);\n",)),
)


# Jittor 1.3.11's oneDNN convolutions let oneDNN allocate their blocked copies of input, weights and
# output with malloc on every call: 1.6 GB in 880 calls per CCNet-R101 train step at 2 x 3 x 128 x
# 128, up to 97 MiB at once, placed in the C heap between the blocks of Jittor's own allocator, where
# they left 110-200 MiB of holes. These copies now come from Jittor's caching allocator (`scratch`).
# The backward-data op reordered the weights into the forward layout and from there into its own
# (two copies of the weights, 45 MiB each for the head's 3 x 3 convolution); now straight into its own.
# Peak memory of that train step: 1151-1180 -> 972 MiB; results bit for bit the same.
ONEDNN_SCRATCH = (
    '#include "mem/allocator.h"\n'
    "namespace jittor {\n"
    "namespace {\n"
    f"// {jittor_cuda.MARK} oneDNN's blocked copies live in blocks of Jittor's caching allocator,\n"
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
        jittor_cuda.Patch(path, "using namespace dnnl;\n", "using namespace dnnl;\n" + ONEDNN_SCRATCH, "cpu"),
        jittor_cuda.Patch(path, "    stream s(eng);\n", "    stream s(eng);\n    DnnlScratch scratch;\n", "cpu"),
    ) + tuple(jittor_cuda.Patch(path, f"memory({desc}, eng)", f"scratch({desc}, eng)", "cpu") for desc in descs)


ONEDNN_BUFFERS = (
    onednn_scratch("mkl_conv_op", ["conv1_prim_desc.src_desc()", "conv1_prim_desc.weights_desc()"])
    + onednn_scratch("mkl_conv_backward_x_op", [
        "conv_bwd_data_pd.diff_dst_desc()", "conv_bwd_data_pd.weights_desc()", "conv_bwd_data_pd.diff_src_desc()"])
    + onednn_scratch("mkl_conv_backward_w_op", [
        "conv_pd.src_desc()", "conv_bwd_weights_pd.src_desc()", "conv_bwd_weights_pd.diff_dst_desc()",
        "conv_bwd_weights_pd.diff_weights_desc()"])
    + (jittor_cuda.Patch(
        "extern/mkl/ops/mkl_conv_backward_x_op.cc",
        "    auto conv_weights_memory = conv_user_weights_memory;\n"
        "    if (conv_pd.weights_desc() != conv_user_weights_memory.get_desc()) {\n"
        "        conv_weights_memory = memory(conv_pd.weights_desc(), eng);\n"
        "        net_bwd.push_back(\n"
        "                reorder(conv_user_weights_memory, conv_weights_memory));\n"
        "        net_bwd_args.push_back({{DNNL_ARG_FROM, conv_user_weights_memory},\n"
        "                {DNNL_ARG_TO, conv_weights_memory}});\n"
        "    }\n",
        f"    // {jittor_cuda.MARK} the weights are reordered once, below, straight into the\n"
        "    // backward-data layout (through the forward layout they were copied twice).\n"
        "    auto conv_weights_memory = conv_user_weights_memory;\n",
        "cpu"),)
)


# Jittor 1.3.11 makes the source of new kernels in several threads at once (its parallel op
# compiler, also at each process's first step with a warm cache). Two of the tuners that run there
# change the graph that the threads share: a matrix product or convolution relayed to oneDNN or
# cuDNN becomes a new operator on variables that other threads' kernels also read (their edges and
# reference counts), and the relay search marks nodes with one global traversal flag. One process
# in about 50 crashed (SIGSEGV in VarRelayManager::get_relay_src) or failed a check
# (`op_compiler.cc:832`) on its first training step. The fix runs those two tuners one thread at a
# time; the rest of the source making and the C++ compiler still run in parallel.
SERIAL_RELAY_TUNERS = (
    jittor_cuda.Patch(
        "src/opt/tuner_manager.cc",
        '#include "opt/tuner/conv_tuner.h"\n',
        '#include "opt/tuner/conv_tuner.h"\n'
        f"#include <mutex>  // {jittor_cuda.MARK} for the relaying tuners' lock\n",
        "any"),
    jittor_cuda.Patch(
        "src/opt/tuner_manager.cc",
        "    run_tuner<MatmulTuner>(&pm);\n"
        "    run_tuner<ConvTuner>(&pm);\n",
        f"    // {jittor_cuda.MARK} these two add operators to the graph that the parallel op\n"
        "    // compiler's threads share: one thread at a time.\n"
        "    static std::mutex relay_lock;\n"
        "    {\n"
        "        std::lock_guard<std::mutex> relay_guard(relay_lock);\n"
        "        run_tuner<MatmulTuner>(&pm);\n"
        "        run_tuner<ConvTuner>(&pm);\n"
        "    }\n",
        "any"),
)
# Jittor 1.3.11 compiles each CPU kernel through utils/asm_tuner.py: a new Python process that
# imports Jittor's utilities (which run the compiler twice for its version), compiles to assembly
# with debug information, rewrites the assembly where the source has tuning marks ("@begin",
# written only by the use_movnt pass), then assembles and links. A kernel without marks gets the
# same code from one compiler call: 0.65-0.80 s instead of 0.87-0.99 s per kernel here.
COMPILE_IN_ONE_CALL = (
    jittor_cuda.Patch(
        "utils/asm_tuner.py",
        'import sys\nimport os\nos.environ["log_silent"] = "1"\n',
        "import sys\nimport os\n"
        f"# {jittor_cuda.MARK} a kernel source without tuning marks compiles in one compiler call.\n"
        'if (sys.argv[1].startswith("--cc_path=") and sys.argv[2].endswith("_op.cc")\n'
        '        and any(arg.endswith("_op.so") for arg in sys.argv[3:])\n'
        '        and "@begin" not in open(sys.argv[2]).read()):\n'
        '    compiler = sys.argv[1][len("--cc_path="):]\n'
        "    os.execvp(compiler, [compiler] + sys.argv[2:])\n"
        'os.environ["log_silent"] = "1"\n',
        "any"),
)
# Jittor 1.3.11 imports the modules it has just compiled with exec("import NAME") and then reads
# NAME from locals(). From Python 3.13 on (PEP 667) locals() in a function is a snapshot that exec
# does not write into: the lookup fails (KeyError 'gen_ops_mkl_...') on the first custom op. An
# explicit namespace works on every version.
EXEC_NAMESPACE = (
    jittor_cuda.Patch("compiler.py",
          '            exec(f"import {gen_name}")\n'
          "    mod = locals()[gen_name]\n",
          f"            # {jittor_cuda.MARK} exec writes into this namespace; into locals() it does not (3.13)\n"
          "            namespace = {}\n"
          '            exec(f"import {gen_name}", namespace)\n'
          "    mod = namespace[gen_name]\n",
          "any"),
    jittor_cuda.Patch("../jittor_utils/__init__.py",
          "    with lock.unlock_scope():\n"
          "        try:\n"
          "            with import_scope(os.RTLD_GLOBAL | os.RTLD_NOW):\n"
          '                exec(f"import {hash}")\n'
          "        except Exception as e:\n"
          "            with import_scope(os.RTLD_GLOBAL | os.RTLD_LAZY):\n"
          '                exec(f"import {hash}")\n'
          "\n"
          "    mod = locals()[hash]\n",
          f"    # {jittor_cuda.MARK} exec writes into this namespace; into locals() it does not (3.13)\n"
          "    namespace = {}\n"
          "    with lock.unlock_scope():\n"
          "        try:\n"
          "            with import_scope(os.RTLD_GLOBAL | os.RTLD_NOW):\n"
          '                exec(f"import {hash}", namespace)\n'
          "        except Exception as e:\n"
          "            with import_scope(os.RTLD_GLOBAL | os.RTLD_LAZY):\n"
          '                exec(f"import {hash}", namespace)\n'
          "\n"
          "    mod = namespace[hash]\n",
          "any"),
)
JITTOR_FIXES = POINTWISE_CONVOLUTION + ONEDNN_BUFFERS + SERIAL_RELAY_TUNERS + COMPILE_IN_ONE_CALL + EXEC_NAMESPACE


def fix_jittor():
    """Apply JITTOR_FIXES to the installed Jittor 1.3.11 (once; Jittor recompiles what changed).
    Where they cannot be applied (another Jittor version, a changed file, a read-only install),
    Jittor compiles one kernel at a time instead (a slower cold start; no race), each through
    its assembly script, and 1x1 convolutions keep Jittor's own layout (slower)."""
    try:
        jittor_dir, version = jittor_cuda.jittor_package()
        if version == jittor_cuda.JITTOR_VERSION:
            jittor_cuda.apply_patches(jittor_dir, JITTOR_FIXES, version)
            return
    except (jittor_cuda.GpuSetupError, OSError, importlib.metadata.PackageNotFoundError):
        pass
    if sys.version_info >= (3, 13):
        raise jittor_python.PythonSetupError(
            f"Jittor's files could not be fixed for Python 3.13 (EXEC_NAMESPACE): install "
            f"jittor=={jittor_cuda.JITTOR_VERSION} where you can write (pip install -r requirements.txt in a venv)")
    os.environ.setdefault("use_parallel_op_compiler", "0")


def keep_freed_memory():
    """Keep memory the process frees for its next allocation instead of giving it back to the OS.

    Large blocks freed to the C library were unmapped or trimmed from the heap, so every train step
    faulted its buffers in anew: CCNet-R101 at 2 x 3 x 128 x 128 took 95,000 page faults (370 MiB)
    and 0.26 s of system time per step, the criss-cross attention module 8,500 per forward+backward.
    Most were oneDNN's copies, which ONEDNN_BUFFERS has since moved to Jittor's allocator; the R-101
    step still ran faster with this setting (1.55-1.59 against 1.71-1.84 s). glibc's mallopt: blocks
    of any size come from the heap (M_MMAP_THRESHOLD) and the heap is never trimmed
    (M_TRIM_THRESHOLD). A user's own setting of either (MALLOC_MMAP_THRESHOLD_,
    MALLOC_TRIM_THRESHOLD_, GLIBC_TUNABLES), or a C library without mallopt, leaves the defaults."""
    if ({"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"} & set(os.environ)
            or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", "")):
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold, largest = -1, -3, 2**31 - 1
    mallopt(m_mmap_threshold, largest)
    mallopt(m_trim_threshold, largest)


def configure_environment():
    """Set Jittor's start-up variables; the user's own values always win."""
    global GPU_STACK
    jittor_python.check_version()
    jittor_python.configure(os.environ, os.path.join(jittor_home(), ".cache", "jittor", "ccnet_python"))
    use_gpu = gpu_visible()
    if use_gpu:
        cache = os.path.join(jittor_home(), ".cache", "jittor", "ccnet_cuda")
        GPU_STACK = jittor_cuda.configure(os.environ, cache)
    else:
        os.environ.setdefault("nvcc_path", "")
    fix_jittor()
    if "use_mkl" not in os.environ and not link_onednn():
        os.environ["use_mkl"] = "0"
        if not use_gpu:
            print("ccnet-jittor: oneDNN not found (pip install -r requirements.txt installs it); "
                  "Jittor's CPU convolutions will be very slow.", file=sys.stderr)
    if os.environ.get("CCNET_VERBOSE", "0") != "1":
        os.environ.setdefault("log_silent", "1")
    # Jittor names its cache folder after the git branch of the folder it is installed in: the
    # project's own branch when .venv sits in the checkout, so every branch switch recompiled
    # Jittor's core and kernels.
    os.environ.setdefault("cache_name", "default")
    # Jittor imports torch at start-up whenever it is installed (its FIX_TORCH_ERROR) and ORs
    # RTLD_DEEPBIND into os.RTLD_GLOBAL for the rest of the process: 1.2 s of start-up and
    # 470 MiB of torch's libraries in every process, for nothing this project runs.
    os.environ.setdefault("FIX_TORCH_ERROR", "0")
    keep_freed_memory()
    return use_gpu


_use_gpu = configure_environment()
for _dtype in (np.float16, np.float32, np.float64):
    np.finfo(_dtype)  # cached by NumPy from now on
import jittor as jt  # noqa: E402  (must follow configure_environment)

if _use_gpu:
    if not jt.has_cuda or jt.compile_extern.cudnn is None:
        raise jittor_cuda.GpuSetupError(f"Jittor did not load {'cuDNN' if jt.has_cuda else 'CUDA'} "
                                        f"({GPU_STACK}); rerun with CCNET_VERBOSE=1 to see why")
    if "use_cuda" not in os.environ:
        jt.flags.use_cuda = 1
    # cuDNN's algorithm search may take a workspace of up to this share of GPU memory, which
    # Jittor then keeps: its default 0.25 held 17.9 GB for a CCNet-R101 eval on an H100
    # (PyTorch 1.4 GB), 0.01 held 1.9 GB at 15% more convolution time.
    jt.cudnn.set_max_workspace_ratio(float(os.environ.get("CCNET_CUDNN_WORKSPACE", "0.01")))

# Jittor's SIGCHLD handler ends the whole process when any child is killed by a signal; the data
# workers, Jittor's compiler pool at exit and the tests' processes are ended on purpose, and the
# code that started each of them reports a death it did not ask for.
signal.signal(signal.SIGCHLD, signal.SIG_DFL)


def end_on_crash():
    """Make a crash end the process at once, with Python's traceback of every thread.

    Jittor's handler for SIGSEGV and the like attaches gdb to the process and then calls exit()
    from inside the handler (neither is safe there): a crashed test run hung in it until the
    batch system's time limit instead of failing."""
    if faulthandler.is_enabled():  # enabled before Jittor replaced its handlers (-X faulthandler)
        faulthandler.disable()
    for fatal in (signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE):
        signal.signal(fatal, signal.SIG_DFL)
    try:
        faulthandler.enable()
    except (AttributeError, OSError, RuntimeError, ValueError):  # a stderr without a file (None, notebook)
        pass


end_on_crash()


def end_compiler_pool():
    """Kill and reap the processes of Jittor's compiler pool (created on the first kernel compile).

    Pool.terminate, which Jittor and multiprocessing call at exit, first takes a lock that an idle
    pool process holds while it waits for work; if that process was killed, by a signal meant for
    the whole process group, the lock is never released and the exit hangs. Closing the pool stops
    it from replacing dead processes; the rest are killed here."""
    import jittor_utils
    pool = getattr(jittor_utils, "p", None)
    if pool is None:
        return
    pool.close()
    pool._worker_handler.join(timeout=1)  # it replaces dead processes until it sees the pool closed
    for process in pool._pool:
        process.kill()
        process.join()
    pool._terminate.cancel()  # the Pool.terminate that multiprocessing's own exit handler would call
    del jittor_utils.p


def replace_pool_cleanup():
    """Make Jittor's exit handler for its compiler pool end_compiler_pool, whether the pool exists
    (created while Jittor compiled its core) or comes later (Jittor registers the name it finds)."""
    import jittor_utils
    if getattr(jittor_utils, "p", None) is not None:
        atexit.unregister(jittor_utils.pool_cleanup)
        atexit.register(end_compiler_pool)
    jittor_utils.pool_cleanup = end_compiler_pool


replace_pool_cleanup()
