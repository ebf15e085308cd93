"""What the project's Jittor start-up finds and changes, and a way back, without starting Jittor.

    python -m jittor_setup status     Jittor, this Python, oneDNN, the GPU stack, each fix's state
    python -m jittor_setup restore    Jittor's original files back (each checked by its SHA-256)

After `restore`, the next start of the project applies the fixes again, unless CCNET_JITTOR_FIXES=0
(the CPU fixes then stay off; the GPU fixes and, on Python 3.13, the fix it needs are required).
"""
import argparse
import os
import sys

from . import SetupError, cuda, fixes, onednn, patches, python


def fix_rows(jittor_dir, gpu_needs):
    """(fix, file, state) of every patch of every fix."""
    rows = []
    for fix in fixes.CPU_FIXES + fixes.GPU_FIXES:
        name = fix.__name__.rsplit(".", 1)[1]
        for patch in fix.PATCHES:
            with open(os.path.join(jittor_dir, patch.path)) as f:
                where = patches.state(patch, f.read())
            if patch.needs not in ("cpu", "any") and patch.needs not in gpu_needs and where != "applied":
                where = "not needed here"
            rows.append((name, patch.path, where))
    return rows


def gpu_stack():
    """(one line on the GPU stack, the `needs` of the GPU fixes it wants)."""
    if not cuda.gpu_visible():
        return "no NVIDIA GPU visible", set()
    toolkit = cuda.find_toolkit(os.environ)
    if toolkit is None:
        return "a GPU is visible, no CUDA toolkit found", set()
    cudnn = cuda.find_library(toolkit, "cudnn", "cudnn.h", "CUDNN", "libcudnn.so")
    found = (f"CUDA {toolkit.version[0]}.{toolkit.version[1]} ({toolkit.home}), "
             + (f"cuDNN {'.'.join(map(str, cudnn.version))} ({cudnn.lib})" if cudnn and cudnn.version else "no cuDNN"))
    return found, fixes.gpu_needs(toolkit.version, cudnn.version if cudnn else None)


def status():
    jittor_dir, version = patches.jittor_package()
    print(f"Jittor {version} at {jittor_dir}" + ("" if version == patches.JITTOR_VERSION else
                                                f" (the fixes are for {patches.JITTOR_VERSION})"))
    print(f"Python {sys.version.split()[0]} ({sys.executable}); build configuration: "
          f"{os.environ.get('python_config_path') or python.own_config_script() or 'written from sysconfig at start-up'}")
    print(f"oneDNN: {'linked at ' + onednn.onednn_dir() if onednn.onednn_usable(onednn.onednn_dir()) else 'not linked yet'}")
    found, needs = gpu_stack()
    print(f"GPU: {found}")
    print()
    rows = fix_rows(jittor_dir, needs)
    width = max(len(name) for name, _, _ in rows)
    for name, path, where in rows:
        print(f"{name:<{width}}  {where:<16} {path}")
    return 0


def restore():
    jittor_dir, version = patches.jittor_package()
    if version != patches.JITTOR_VERSION:
        raise SetupError(f"Jittor {version} is installed; this project fixes only {patches.JITTOR_VERSION}, "
                         "so it has changed nothing to restore")
    for path, what in patches.restore(jittor_dir, fixes.CPU + fixes.GPU):
        print(f"{path}: {what}")
    print("the next start of the project applies the fixes again; CCNET_JITTOR_FIXES=0 keeps the CPU ones off")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m jittor_setup", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("status", "restore"))
    args = parser.parse_args(argv)
    return status() if args.command == "status" else restore()


if __name__ == "__main__":
    sys.exit(main())
