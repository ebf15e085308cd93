"""Fixing Jittor 1.3.11's own files, knowing which fixes are in place, and undoing them.

A fix (Patch) replaces one exact piece of one file of the installed Jittor package once, and leaves
a comment starting with MARK where it did. Applying is idempotent (a file already fixed is left as
it is; an earlier version of a fix is upgraded in place), refuses another Jittor version and a file
that is not the expected one, and writes each file atomically. `state` tells where a fix stands;
`restore` puts a file back to Jittor's original, checked against ORIGINALS, the SHA-256 of each
file as the Jittor 1.3.11.0 source distribution on PyPI ships it.
"""
import hashlib
import importlib.metadata
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from . import SetupError

JITTOR_VERSION = "1.3.11.0"  # the Jittor these fixes are for
MARK = "ccnet-jittor:"  # starts the comment that each fix leaves in Jittor's file


@dataclass(frozen=True)
class Patch:
    path: str  # inside the jittor package
    old: str
    new: str
    needs: str  # what makes the fix necessary: "cpu" (the CPU path) or "any" (every machine); on a GPU
    # "gpu" (any), "cuda13" or "cudnn9"
    replaces: tuple = ()  # what earlier versions of this fix wrote instead of `new` (upgraded in place)


def apply_patches(jittor_dir, patches, jittor_version):
    """Apply each fix once (a fixed file is left as it is); returns the files changed."""
    if patches and jittor_version != JITTOR_VERSION:
        raise SetupError(f"Jittor {jittor_version} is installed, but the fixes this project makes to Jittor's "
                         f"files are for {JITTOR_VERSION}: pip install jittor=={JITTOR_VERSION}")
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
                raise SetupError(f"{full} is not the file of Jittor {JITTOR_VERSION} that the fixes expect: "
                                 f"reinstall jittor=={JITTOR_VERSION}")
            text = text.replace(patch.old, patch.new)
        if text != original:
            write_text(full, text)
            changed.append(path)
    return changed


def write_text(path, text):
    """Replace a file of Jittor's, keeping its mode, in one rename."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w") as f:
            f.write(text)
        shutil.copymode(path, tmp)
        os.replace(tmp, path)
    except PermissionError:
        raise SetupError(f"cannot write {path} to fix Jittor: install Jittor where you can write (a virtual "
                         "environment)") from None


def jittor_package():
    """(folder, version) of the installed Jittor, found without importing it."""
    dist = importlib.metadata.distribution("jittor")
    return str(Path(dist.locate_file("jittor"))), dist.version


def state(patch, text):
    """Where `patch` stands in a file's `text`: "applied", "not applied" (it would apply),
    "earlier version" (an older text of the fix, which applying upgrades) or "refused" (the file
    is not the one the fix expects)."""
    if patch.new in text:
        return "applied"
    if any(text.count(earlier) == 1 for earlier in patch.replaces):
        return "earlier version"
    return "not applied" if text.count(patch.old) == 1 else "refused"


def unpatched(text, patches):
    """`text` with every fix in it (current or earlier version) replaced by Jittor's original."""
    for patch in patches:
        for written in (patch.new, *patch.replaces):
            text = text.replace(written, patch.old)
    return text


# SHA-256 of the files the fixes change, as Jittor 1.3.11.0's source distribution on PyPI has them.
ORIGINALS = {
    "../jittor_utils/__init__.py": "d05495d9890cd83f3a83035fff7d9296155c53495d5ddf40fff3b1429896c91c",
    "compile_extern.py": "d1d02ba4314b3390f70a91d3347267920cb77999b1241d01849c85fbcaa7d56c",
    "compiler.py": "3398b120fb43014db85d0beaccfc9775088956e46cec0b16cf62cd8581dd6898",
    "depthwise_conv.py": "ca12ae9b7262844c0b89c3865ab71ff9b89bcdbf9bf815c19766ea3e9ade8ec1",
    "extern/cuda/cub/ops/cub_where_op.cc": "b54b158ccab3204384b54728ed585f0a8c81e2575a23e867889acce5a98d7fe9",
    "extern/cuda/inc/helper_cuda.h": "5faa2b18470a970658cfc0b70504f98aa6fb85695b2a116408895ad11edc57da",
    "extern/mkl/ops/mkl_conv_backward_w_op.cc": "1182a5acb0d4607e58eb61c934c686da47885e2157a11255a2f6bbd7ee60bea3",
    "extern/mkl/ops/mkl_conv_backward_x_op.cc": "e373e1137fd3ed0179583cd6852d490897102a04a6e3ba42dee7cc4308912b62",
    "extern/mkl/ops/mkl_conv_op.cc": "8b95a1952e031b95c59ece22f28e43ce7f60d1dc1cddbe26b8829ed23f8f705b",
    "other/code_softmax.py": "d4d533239f569cbbc5586c7b72257bc59ad0359ca12f110710a5470fcb90cc40",
    "src/ops/transpose_op.cc": "baf81a3a12da245feab4acaf67904a4b3f73393758528496c58e249994d02067",
    "src/opt/tuner_manager.cc": "73b84f32a5334ca9a760f9026fb18af7d71b5edd46f89010c8222f579f7f01c4",
    "utils/asm_tuner.py": "10ae2a96d037b83c01204fcf3270e21c6bb3adecd6f6f0b08787cba631f30bfb",
}


def sha256(text):
    return hashlib.sha256(text.encode()).hexdigest()


def restore(jittor_dir, patches):
    """Put back Jittor's original text of every file `patches` change; [(path, what happened)].
    A file is written only if the result is, byte for byte, Jittor 1.3.11.0's own."""
    results = []
    for path in sorted({patch.path for patch in patches}):
        full = os.path.join(jittor_dir, path)
        with open(full) as f:
            text = f.read()
        original = unpatched(text, [patch for patch in patches if patch.path == path])
        if sha256(original) != ORIGINALS.get(path):
            results.append((path, "left as it is: not Jittor 1.3.11.0's file once the fixes are taken out"))
        elif original == text:
            results.append((path, "already Jittor's original"))
        else:
            write_text(full, original)
            results.append((path, "restored (checksum of Jittor 1.3.11.0's file)"))
    return results
