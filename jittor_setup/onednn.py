"""oneDNN for Jittor's CPU convolutions, from PyPI, without a download.

Jittor 1.3.11 only looks for oneDNN 2.2 in `<JITTOR_HOME>/.cache/jittor/mkl/` and downloads it from
its own server when missing. The project installs the same library from PyPI (`onednn-cpu-gomp`,
`onednn-devel-cpu-gomp` 2021.2.0) and links it there, so no download happens. Without oneDNN,
Jittor's CPU convolutions are about 150x slower.
"""
import importlib.metadata
import json
import os
import shutil
from pathlib import Path

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
