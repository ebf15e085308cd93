"""The project's one Jittor start-up: import this module instead of `jittor` first.

Jittor reads its configuration from environment variables when it is first imported, so they are
set here, before that import, and never over a value the user already set. In order:

1. Python 3.10 to 3.13, with Jittor pointed at this interpreter's headers (jittor_setup/python.py).
2. A visible NVIDIA GPU: the CUDA toolkit, cuDNN and NCCL found and Jittor's files fixed for them
   (jittor_setup/cuda.py); then `jt.flags.use_cuda = 1` and cuDNN's workspace capped at
   `CCNET_CUDNN_WORKSPACE` (0.01) of GPU memory. A GPU that cannot be used stops the start with
   one line saying why: Jittor never falls back to its 100x slower convolutions. No GPU:
   `nvcc_path=""` (else Jittor finds a toolkit and fails without a device).
3. The fixes to Jittor 1.3.11's own files that every machine gets (jittor_setup/fixes/; off with
   CCNET_JITTOR_FIXES=0). Where they cannot be applied, Jittor compiles one kernel at a time
   (its parallel compiler races without them).
4. oneDNN from PyPI linked where Jittor looks for it, so it downloads nothing (jittor_setup/onednn.py).
5. Jittor's log off unless `CCNET_VERBOSE=1`; one kernel cache (`cache_name=default`), not one per
   git branch of the checkout; no torch import at Jittor's start (`FIX_TORCH_ERROR=0`: it costs
   every process over a second and ORs RTLD_DEEPBIND into its dlopen flags).
6. Freed memory kept for the next step, NumPy's float limits computed before Jittor's kernels turn
   denormals off (else `np.finfo` warns), and after the import: SIGCHLD's default action back, a
   crash that ends with Python's traceback, a compiler pool that cannot hang the exit
   (jittor_setup/process.py).

`python -m jittor_setup status` shows what this found and where every fix stands.
"""
import os
import sys

import numpy as np

from jittor_setup import SetupError, cuda, fixes, onednn, patches, process, python

GPU_STACK = None  # what jittor_setup.cuda set up, in one line, when a GPU is used


def fix_jittor():
    """Apply the CPU fixes to the installed Jittor 1.3.11 (once; Jittor recompiles what changed).
    Where they cannot be applied (another Jittor version, a changed file, a read-only install),
    Jittor compiles one kernel at a time instead (a slower cold start; no race), and 1x1
    convolutions keep Jittor's own layout (slower); on Python 3.13, which needs one of them, the
    start stops in one line."""
    if os.environ.get("CCNET_JITTOR_FIXES", "1") != "0":
        try:
            jittor_dir, version = patches.jittor_package()
            if version == patches.JITTOR_VERSION:
                patches.apply_patches(jittor_dir, fixes.CPU, version)
                return
        except (SetupError, OSError, ImportError):
            pass
    if sys.version_info >= (3, 13):
        raise SetupError(f"Jittor's files could not be fixed for Python 3.13 (jittor_setup/fixes/exec_namespace.py): "
                         f"install jittor=={patches.JITTOR_VERSION} where you can write (pip install -r "
                         f"requirements.txt in a venv)")
    os.environ.setdefault("use_parallel_op_compiler", "0")


def configure_environment():
    """Set Jittor's start-up variables; the user's own values always win."""
    global GPU_STACK
    python.check_version()
    python.configure(os.environ, os.path.join(onednn.jittor_home(), ".cache", "jittor", "ccnet_python"))
    use_gpu = cuda.gpu_visible()
    if use_gpu:
        GPU_STACK = cuda.configure(os.environ, os.path.join(onednn.jittor_home(), ".cache", "jittor", "ccnet_cuda"))
    else:
        os.environ.setdefault("nvcc_path", "")
    fix_jittor()
    if "use_mkl" not in os.environ and not onednn.link_onednn():
        os.environ["use_mkl"] = "0"
        if not use_gpu:
            print("ccnet-jittor: oneDNN not found (pip install -r requirements.txt installs it); "
                  "Jittor's CPU convolutions will be very slow.", file=sys.stderr)
    if os.environ.get("CCNET_VERBOSE", "0") != "1":
        os.environ.setdefault("log_silent", "1")
    os.environ.setdefault("cache_name", "default")
    os.environ.setdefault("FIX_TORCH_ERROR", "0")
    process.keep_freed_memory()
    return use_gpu


_use_gpu = configure_environment()
for _dtype in (np.float16, np.float32, np.float64):
    np.finfo(_dtype)  # cached by NumPy from now on
import jittor as jt  # noqa: E402  (must follow configure_environment)

if _use_gpu:
    if not jt.has_cuda or jt.compile_extern.cudnn is None:
        raise cuda.GpuSetupError(f"Jittor did not load {'cuDNN' if jt.has_cuda else 'CUDA'} "
                                 f"({GPU_STACK}); rerun with CCNET_VERBOSE=1 to see why")
    if "use_cuda" not in os.environ:
        jt.flags.use_cuda = 1
    # cuDNN's algorithm search may take a workspace of up to this share of GPU memory, which Jittor
    # then keeps: its default of 0.25 kept many times PyTorch's memory in an eval (docs/gpu.md).
    jt.cudnn.set_max_workspace_ratio(float(os.environ.get("CCNET_CUDNN_WORKSPACE", "0.01")))

process.after_start()
