"""Jittor's CUDA set-up, done before Jittor is imported (`jittor_env` calls `configure`).

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
* Jittor 1.3.11's own files get the fixes in PATCHES, each only where its CUDA or cuDNN needs it,
  written so that the patched file still works with older versions.

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

JITTOR_VERSION = "1.3.11.0"  # the Jittor whose files PATCHES fix
CPU_HINT = "to run on the CPU instead, set CUDA_VISIBLE_DEVICES=\"\""
MARK = "ccnet-jittor:"  # starts the comment that each fix leaves in Jittor's file


class GpuSetupError(SystemExit):
    """The GPU cannot be used as installed; the message is the one line the user sees."""

    def __init__(self, message):
        super().__init__(f"ccnet-jittor: {message}")


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


# ---------------------------------------------------------------- fixing Jittor's own files
@dataclass(frozen=True)
class Patch:
    path: str  # inside the jittor package
    old: str
    new: str
    needs: str  # what makes the fix necessary: "gpu" (any), "cuda13" or "cudnn9"; jittor_env's own
    # fixes: "cpu" (the CPU path) or "any" (every machine)
    replaces: tuple = ()  # what earlier versions of this fix wrote instead of `new` (upgraded in place)


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
    Patch("src/ops/transpose_op.cc",
          "        if (cutt_transpose) {\n"
          "            auto var = cutt_transpose(x, axes);\n"
          "            forward(var);\n"
          "            return;\n"
          "        }\n",
          "        if (cutt_transpose) {\n"
          "            auto var = cutt_transpose(x, axes);\n"
          "            forward(var);\n"
          "            return;\n"
          "        }\n"
          f"        // {MARK} without cuTT (off: Jittor downloads it) this op copies the tensor to the\n"
          "        // CPU and back (36 transposes took 2.9 s of a 3.6 s CCNet-R101 train step on an H100);\n"
          "        // the fused transpose, which runs on the GPU, takes it.\n"
          "        static VarPtr(*gpu_transpose)(Var*, NanoVector) = get_op_info(\"fuse_transpose\")\n"
          "            .get_constructor<VarPtr, Var*, NanoVector>();\n"
          "        forward(gpu_transpose(x, axes));\n"
          "        return;\n",
          "gpu"),
    Patch("compile_extern.py",
          'def setup_cuda_lib(lib_name, link=True, extra_flags=""):\n',
          f"# {MARK} the cuDNN 9 fixes below need the major version of the cuDNN found.\n"
          "def _cudnn_major(cudnn_h):\n"
          "    import re\n"
          "    text = ''\n"
          "    for name in ('cudnn_version.h', 'cudnn.h'):\n"
          "        path = os.path.join(os.path.dirname(cudnn_h), name)\n"
          "        if os.path.isfile(path):\n"
          "            text += open(path).read()\n"
          "    match = re.search(r'#define\\s+CUDNN_MAJOR\\s+(\\d+)', text)\n"
          "    return int(match.group(1)) if match else 0\n"
          "\n"
          'def setup_cuda_lib(lib_name, link=True, extra_flags=""):\n',
          "cudnn9"),
    Patch("compile_extern.py",
          '                libs = ["libcudnn_ops_infer.so", "libcudnn_ops_train.so", '
          '"libcudnn_cnn_infer.so", "libcudnn_cnn_train.so"]\n',
          '                libs = ["libcudnn_ops_infer.so", "libcudnn_ops_train.so", '
          '"libcudnn_cnn_infer.so", "libcudnn_cnn_train.so"]\n'
          f"                # {MARK} cuDNN 9 split its libraries under new names.\n"
          "                if _cudnn_major(cuda_include_name) >= 9:\n"
          '                    libs = ["libcudnn_graph.so", "libcudnn_engines_precompiled.so", '
          '"libcudnn_engines_runtime_compiled.so", "libcudnn_heuristic.so", "libcudnn_ops.so", '
          '"libcudnn_cnn.so", "libcudnn_adv.so"]\n'
          '                    prefer_version = ("9",)\n',
          "cudnn9"),
    Patch("compile_extern.py",
          "    for r, _, f in os.walk(culib_src_dir):\n"
          "        for fname in f:\n"
          "            culib_src_files.append(os.path.join(r, fname))\n",
          "    for r, _, f in os.walk(culib_src_dir):\n"
          "        for fname in f:\n"
          f"            # {MARK} cuDNN 9 removed the RNN API (cudnnSetRNNDescriptor_v6, ...) of these files.\n"
          '            if lib_name == "cudnn" and "rnn" in fname and _cudnn_major(cuda_include_name) >= 9:\n'
          "                continue\n"
          "            culib_src_files.append(os.path.join(r, fname))\n",
          "cudnn9"),
)


def needed_patches(cuda_version, cudnn_version):
    needs = {"gpu"}
    if cuda_version[0] >= 13:
        needs.add("cuda13")
    if cudnn_version and cudnn_version[0] >= 9:
        needs.add("cudnn9")
    return [p for p in PATCHES if p.needs in needs]


def apply_patches(jittor_dir, patches, jittor_version):
    """Apply each fix once (a fixed file is left as it is); returns the files changed."""
    if patches and jittor_version != JITTOR_VERSION:
        raise GpuSetupError(f"Jittor {jittor_version} is installed, but the fixes that make Jittor "
                            f"work with this CUDA/cuDNN are for {JITTOR_VERSION}: "
                            f"pip install jittor=={JITTOR_VERSION}")
    changed = []
    for path in sorted({p.path for p in patches}):
        full = os.path.join(jittor_dir, path)
        with open(full) as f:
            text = original = f.read()
        for patch in (p for p in patches if p.path == path):
            if patch.new in text:
                continue
            earlier = [r for r in patch.replaces if text.count(r) == 1]
            if earlier:
                text = text.replace(earlier[0], patch.new)
                continue
            if text.count(patch.old) != 1:
                raise GpuSetupError(f"{full} is not the file of Jittor {JITTOR_VERSION} that the "
                                    f"CUDA fixes expect: reinstall jittor=={JITTOR_VERSION}")
            text = text.replace(patch.old, patch.new)
        if text != original:
            write_text(full, text)
            changed.append(path)
    return changed


def write_text(path, text):
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w") as f:
            f.write(text)
        shutil.copymode(path, tmp)
        os.replace(tmp, path)
    except PermissionError:
        raise GpuSetupError(f"cannot write {path} to fix Jittor for this CUDA: install Jittor "
                            "where you can write (a virtual environment)") from None


def jittor_package():
    """(folder, version) of the installed Jittor, found without importing it."""
    dist = importlib.metadata.distribution("jittor")
    return str(Path(dist.locate_file("jittor"))), dist.version


# ---------------------------------------------------------------- the whole set-up
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
    jittor_dir, jittor_version = jittor_package()
    apply_patches(jittor_dir, needed_patches(toolkit.version, cudnn.version), jittor_version)
    cudnn_text = ".".join(map(str, cudnn.version))
    nccl_text = f"NCCL {'.'.join(map(str, nccl.version or ()))}" if nccl else "no NCCL (one GPU only)"
    return (f"CUDA {toolkit.version[0]}.{toolkit.version[1]} ({toolkit.home}), cuDNN {cudnn_text} "
            f"({cudnn.lib}), {nccl_text}")
