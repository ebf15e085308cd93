"""Jittor on a GPU: the CUDA toolkit, cuDNN and NCCL found before Jittor is imported (`jittor_env`
calls `configure`).

Jittor 1.3.11 finds the toolkit through `nvcc_path`, looks for cuDNN only inside that toolkit and
/usr, and downloads NCCL, cuTT and CUTLASS sources at import when they are missing. On a current
machine (CUDA 13, cuDNN 9 from PyPI, no internet) its start fails in six places. Here:

* the toolkit is `nvcc_path` as the user set it, else `nvcc` on PATH, /usr/local/cuda, /usr, /opt/cuda;
* cuDNN is the toolkit's, the system's, or this Python's PyPI wheel `nvidia-cudnn-cu<major>`. A wheel's
  cuDNN reaches Jittor through a mirror of the toolkit under Jittor's cache (an `nvcc` that runs the
  real one; the toolkit's include and lib64 entries plus cuDNN's), because Jittor reads exactly
  `<toolkit>/include/cudnn.h` and `<toolkit>/lib64/libcudnn.so`;
* NCCL (several GPUs under MPI) is the system's or the wheel `nvidia-nccl-cu<major>`, passed as
  `nccl_include_path` / `nccl_lib_path`; cuTT and CUTLASS, optional in Jittor, are off;
* Jittor 1.3.11's own files get the GPU fixes of jittor_setup/fixes, each only where this CUDA or
  cuDNN needs it, written so that the patched file still works with older versions.

A GPU stack that cannot work stops the start with one line saying what is missing (`GpuSetupError`).
"""
import glob
import hashlib
import importlib.metadata
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from . import SetupError, fixes, patches

CPU_HINT = "to run on the CPU instead, set CUDA_VISIBLE_DEVICES=\"\""


class GpuSetupError(SetupError):
    """The GPU cannot be used as installed; the message is the one line the user sees."""


@dataclass(frozen=True)
class Toolkit:
    nvcc: str
    home: str
    include: str
    lib: str
    version: tuple


@dataclass(frozen=True)
class Library:
    include: str
    lib: str
    version: tuple


# ---------------------------------------------------------------- finding the CUDA stack
def gpu_visible():
    """True when an NVIDIA device node exists and neither CUDA_VISIBLE_DEVICES nor use_cuda=0 hides it."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1") or os.environ.get("use_cuda") == "0":
        return False
    return bool(glob.glob("/dev/nvidia[0-9]*"))


def nvcc_version(nvcc):
    try:
        out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"release (\d+)\.(\d+)", out)
    return (int(match.group(1)), int(match.group(2))) if match else None


def find_toolkit(environ):
    """The CUDA toolkit Jittor would use, searched in Jittor's order; None if there is none."""
    candidates = [environ.get("nvcc_path"), shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc",
                  "/usr/bin/nvcc", "/opt/cuda/bin/nvcc"]
    for nvcc in filter(None, candidates):
        version = nvcc_version(nvcc)
        if version is None:
            continue
        if os.path.realpath(nvcc) == "/usr/bin/nvcc":  # a distribution's package, not a toolkit tree
            return Toolkit(nvcc, "/usr", "/usr/include", "/usr/lib/x86_64-linux-gnu", version)
        home = os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))
        return Toolkit(nvcc, home, os.path.join(home, "include"), os.path.join(home, "lib64"), version)
    return None


def header_version(include, prefix):
    """(major, minor, patch) from `<prefix>_MAJOR` ... in the headers of `include`, or None."""
    text = ""
    for name in ("cudnn_version.h", "cudnn.h", "nccl.h"):
        path = os.path.join(include, name)
        if os.path.isfile(path):
            with open(path, errors="replace") as f:
                text += f.read()
    parts = [re.search(rf"#define\s+{prefix}_{key}\w*\s+(\d+)", text) for key in ("MAJOR", "MINOR", "PATCH")]
    if parts[0] is None:
        return None
    return tuple(int(p.group(1)) if p else 0 for p in parts)


def wheel_dir(distribution, package):
    """The folder `nvidia/<package>` of an installed PyPI wheel, or None."""
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
    folder = Path(dist.locate_file(f"nvidia/{package}"))
    return str(folder) if folder.is_dir() else None


def find_library(toolkit, name, header, prefix, lib_names):
    """A library as (include, lib, version): in the toolkit, the system, then this Python's wheel."""
    places = [(toolkit.include, toolkit.lib),
              (os.path.join(toolkit.home, "targets/x86_64-linux/include"),
               os.path.join(toolkit.home, "targets/x86_64-linux/lib")),
              ("/usr/include", "/usr/lib/x86_64-linux-gnu"),
              ("/usr/include/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu")]
    wheel = wheel_dir(f"nvidia-{name}-cu{toolkit.version[0]}", name)
    if wheel:
        places.append((os.path.join(wheel, "include"), os.path.join(wheel, "lib")))
    for include, lib in places:
        has_lib = any(f.startswith(lib_names) for f in (os.listdir(lib) if os.path.isdir(lib) else ()))
        if os.path.isfile(os.path.join(include, header)) and has_lib:
            return Library(include, lib, header_version(include, prefix))
    return None


def jittor_finds_cudnn(toolkit, cudnn):
    """Jittor reads cudnn.h from the toolkit or /usr/include and needs an unversioned libcudnn.so."""
    headers = (toolkit.include, os.path.join(toolkit.home, "targets/x86_64-linux/include"), "/usr/include")
    return cudnn.include in headers and os.path.isfile(os.path.join(cudnn.lib, "libcudnn.so"))


# ---------------------------------------------------------------- showing a wheel's cuDNN to Jittor
def link_entries(source, dest):
    for name in sorted(os.listdir(source)) if os.path.isdir(source) else ():
        link = os.path.join(dest, name)
        if not os.path.lexists(link):
            os.symlink(os.path.join(source, name), link)


def unversioned_links(folder, stem):
    """libX.so -> libX.so.N for each versioned library of `stem` (Jittor links `-lX`)."""
    for name in sorted(os.listdir(folder)):
        match = re.fullmatch(rf"({re.escape(stem)}\w*\.so)\.[\d.]+", name)
        if match and not os.path.lexists(os.path.join(folder, match.group(1))):
            os.symlink(name, os.path.join(folder, match.group(1)))


def toolkit_mirror(toolkit, cudnn, cache):
    """A folder that Jittor takes for a toolkit with cuDNN inside; returns its `nvcc`."""
    key = hashlib.sha1(f"{toolkit}{cudnn}".encode()).hexdigest()[:10]
    home = os.path.join(cache, f"cuda{toolkit.version[0]}.{toolkit.version[1]}-{key}")
    nvcc = os.path.join(home, "bin", "nvcc")
    if os.path.isfile(nvcc):
        return nvcc
    tmp = f"{home}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    for sub in ("bin", "include", "lib64"):
        os.makedirs(os.path.join(tmp, sub))
    # A script, not a link: Jittor resolves links to find the toolkit, nvcc finds its own files
    # from where it really is.
    with open(os.path.join(tmp, "bin", "nvcc"), "w") as f:
        f.write(f'#!/bin/sh\nexec "{os.path.realpath(toolkit.nvcc)}" "$@"\n')
    os.chmod(os.path.join(tmp, "bin", "nvcc"), 0o755)
    link_entries(cudnn.include, os.path.join(tmp, "include"))
    link_entries(toolkit.include, os.path.join(tmp, "include"))
    link_entries(cudnn.lib, os.path.join(tmp, "lib64"))
    link_entries(os.path.realpath(toolkit.lib), os.path.join(tmp, "lib64"))
    unversioned_links(os.path.join(tmp, "lib64"), "libcudnn")
    try:
        os.rename(tmp, home)
    except OSError:  # another process (mpirun's first start) made it first, or a half-made one is there
        if not os.path.isfile(nvcc):
            shutil.rmtree(home, ignore_errors=True)
            os.rename(tmp, home)
        shutil.rmtree(tmp, ignore_errors=True)
    return nvcc


def nccl_folder(nccl, cache):
    """Jittor wants `<lib>/libnccl.so`; a wheel ships only libnccl.so.2."""
    if os.path.isfile(os.path.join(nccl.lib, "libnccl.so")):
        return nccl.lib
    folder = os.path.join(cache, "nccl-" + hashlib.sha1(nccl.lib.encode()).hexdigest()[:10])
    os.makedirs(folder, exist_ok=True)
    link_entries(nccl.lib, folder)
    unversioned_links(folder, "libnccl")
    return folder


def configure(environ, cache):
    """Set Jittor's CUDA variables in `environ`, fix Jittor's files; returns a one-line summary."""
    toolkit = find_toolkit(environ)
    if toolkit is None:
        raise GpuSetupError("an NVIDIA GPU is visible but no CUDA toolkit was found (nvcc on PATH, "
                            "/usr/local/cuda or nvcc_path=...): install the CUDA toolkit; "
                            + CPU_HINT)
    cudnn = find_library(toolkit, "cudnn", "cudnn.h", "CUDNN", "libcudnn.so")
    if cudnn is None or cudnn.version is None:
        raise GpuSetupError(f"CUDA {toolkit.version[0]}.{toolkit.version[1]} at {toolkit.home} "
                            f"has no cuDNN: pip install nvidia-cudnn-cu{toolkit.version[0]}, or put "
                            "cudnn.h and libcudnn.so in the toolkit; " + CPU_HINT)
    os.makedirs(cache, exist_ok=True)
    if jittor_finds_cudnn(toolkit, cudnn):
        environ.setdefault("nvcc_path", toolkit.nvcc)
    else:  # also over the user's nvcc_path: the mirror runs that nvcc
        environ["nvcc_path"] = toolkit_mirror(toolkit, cudnn, cache)
    for name in ("use_cutt", "use_cutlass"):
        environ.setdefault(name, "0")
    nccl = find_library(toolkit, "nccl", "nccl.h", "NCCL", "libnccl.so")
    if nccl is None:
        environ.setdefault("use_nccl", "0")
    elif "nccl_lib_path" not in environ:
        environ.setdefault("nccl_include_path", nccl.include)
        environ["nccl_lib_path"] = nccl_folder(nccl, cache)
    jittor_dir, jittor_version = patches.jittor_package()
    patches.apply_patches(jittor_dir, fixes.for_gpu(toolkit.version, cudnn.version), jittor_version)
    cudnn_text = ".".join(map(str, cudnn.version))
    nccl_text = f"NCCL {'.'.join(map(str, nccl.version or ()))}" if nccl else "no NCCL (one GPU only)"
    return (f"CUDA {toolkit.version[0]}.{toolkit.version[1]} ({toolkit.home}), cuDNN {cudnn_text} "
            f"({cudnn.lib}), {nccl_text}")
