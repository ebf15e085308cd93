"""Writing files so that neither a crash nor a failed write loses what was saved before.

Every file the project writes whole (checkpoints, config.json, metrics, pictures) goes to a
temporary name in its folder, is flushed to disk and then renamed over the old one: a reader, a
crash or a full disk at any moment finds the old file or the new one, never a part. Any error of
the operating system while writing (a full disk, a read-only or removed folder, a quota) becomes
one WriteError that names the file, because Python's own error does not always say which file it
was (ENOSPC at close has no file name).
"""
import os
import shutil
import tempfile
from contextlib import contextmanager

PARTIAL_PREFIX = ".tmp-"  # the temporary files of the atomic writes below


class WriteError(Exception):
    """A file could not be written; the message is '<file>: <reason>'."""


@contextmanager
def writing(path):
    """Turn an OSError inside the block into a WriteError naming `path`."""
    try:
        yield
    except OSError as error:
        raise WriteError(f"{path}: {error.strerror or error}") from None


def _sync_folder(folder):
    """Make a rename in `folder` durable (where the platform can open folders)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def replace_atomic(path, write):
    """Call write(temporary path), flush it to disk, then rename it to `path`. The temporary file
    keeps `path`'s extension, so writers that choose a format by extension choose the right one.
    The folder must exist: a folder removed during a run is an error, not silently made again."""
    folder = os.path.dirname(os.path.abspath(path))
    with writing(path):
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=PARTIAL_PREFIX, suffix=os.path.splitext(path)[1])
        os.close(fd)
        try:
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would hide files from a shared group
            write(tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
            _sync_folder(folder)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)


def write_bytes(path, data):
    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(data)
    replace_atomic(path, write)


def write_text(path, text):
    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)
    replace_atomic(path, write)


def append_line(path, line):
    """Append one line. A write cut short leaves a partial last line, which readers skip."""
    with writing(path):
        with open(path, "a") as f:
            f.write(line + "\n")


def link_atomic(source, path):
    """Make `path` another name of the file `source` (a hard link, so no second copy is written),
    replacing what `path` was in one step."""
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f"{PARTIAL_PREFIX}{os.getpid()}-{os.path.basename(path)}")
    with writing(path):
        if os.path.lexists(tmp):
            os.remove(tmp)
        try:
            os.link(source, tmp)
        except OSError:  # a file system without hard links: a copy, written as atomically
            replace_atomic(path, lambda copy: shutil.copyfile(source, copy))
            return
        os.replace(tmp, path)
        _sync_folder(folder)


def remove_partial_saves(folder):
    """Delete the temporary files that a process killed during an atomic write left in `folder`."""
    with writing(folder):
        for name in os.listdir(folder):
            if name.startswith(PARTIAL_PREFIX):
                os.remove(os.path.join(folder, name))


def make_folder(folder):
    with writing(folder):
        os.makedirs(folder, exist_ok=True)
