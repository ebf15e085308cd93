"""The project's one checked way to read weights and load them into a model.

Jittor's own `load_state_dict` only logs a warning on missing or mis-shaped keys; here every
missing, unexpected or mis-shaped key is an error that names the file and the first keys, so a
model is never silently half-loaded.
"""
import os
import shutil
import tempfile

import numpy as np

import jittor_env  # noqa: F401
import jittor as jt

PYTORCH_SUFFIXES = (".pth", ".pt", ".bin")  # the names Jittor's PyTorch reader accepts
SHOWN_KEYS = 5


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or whose keys or shapes do not fit the model."""


def _to_numpy(value):
    if isinstance(value, jt.Var):
        return value.numpy()
    return np.asarray(value)


def _flatten(tree, prefix=""):
    """{"a": {"b": x}} -> {"a.b": x}: what dfs-style checkpoint readers hand back, flattened."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _read_pytorch(path):
    from jittor_utils.load_pytorch import load_pytorch
    if path.endswith(PYTORCH_SUFFIXES):
        return load_pytorch(path)
    with tempfile.TemporaryDirectory() as tmp:  # e.g. van_base_828.pth.tar
        link = os.path.join(tmp, "checkpoint.pth")
        os.symlink(os.path.abspath(path), link)
        return load_pytorch(link)


def read_checkpoint(path):
    """The top-level object of a Jittor (.pkl) or PyTorch (zip or legacy) checkpoint."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such file")
    try:
        if path.endswith(".pkl"):
            return jt.load(path)
        return _read_pytorch(path)
    except Exception as error:  # every reader failure means the same thing to the user
        reason = " ".join(str(error).split())
        raise CheckpointError(f"{path}: not a readable checkpoint "
                              f"({type(error).__name__}: {reason})") from None


def read_state_dict(path, nested_under=None):
    """A flat {name: numpy array} from `path`, taken from `obj[nested_under]` when given."""
    obj = read_checkpoint(path)
    if nested_under is not None:
        if not isinstance(obj, dict) or nested_under not in obj:
            found = sorted(obj)[:SHOWN_KEYS] if isinstance(obj, dict) else type(obj).__name__
            raise CheckpointError(f"{path}: expected the weights under '{nested_under}', found {found}")
        obj = obj[nested_under]
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dictionary of weights, found {type(obj).__name__}")
    state = {}
    for key, value in _flatten(obj).items():
        try:
            state[key] = _to_numpy(value)
        except Exception:
            raise CheckpointError(f"{path}: entry '{key}' is not an array "
                                  f"({type(value).__name__})") from None
    return state


def list_keys(keys):
    """'a, b, c, d, e and 3 more'."""
    keys = sorted(keys)
    more = f" and {len(keys) - SHOWN_KEYS} more" if len(keys) > SHOWN_KEYS else ""
    return ", ".join(keys[:SHOWN_KEYS]) + more


def check_state_dict(state, expected, source, may_miss=()):
    """Raise CheckpointError unless `state` has exactly the keys and shapes of `expected`.

    expected: {name: shape}. Keys starting with a prefix in `may_miss` may be absent.
    """
    missing = [k for k in expected if k not in state and not k.startswith(tuple(may_miss))]
    unexpected = [k for k in state if k not in expected]
    misshaped = [f"{k} {list(state[k].shape)} (expected {list(expected[k])})"
                 for k in state if k in expected and list(state[k].shape) != list(expected[k])]
    problems = [f"{len(keys)} {what}: {list_keys(keys)}" for what, keys in
                (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)) if keys]
    if problems:
        raise CheckpointError(f"{source}: does not fit the model; " + "; ".join(problems))


def model_shapes(module):
    return {k: list(v.shape) for k, v in module.state_dict().items()}


def load_checked(module, state, source, may_miss=()):
    """Check `state` against `module` (see check_state_dict), then copy it in."""
    check_state_dict(state, model_shapes(module), source, may_miss)
    module.load_parameters(state)


PARTIAL_PREFIX = ".tmp-"  # the temporary files of the atomic writes below


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


def _replace_atomic(path, write, suffix):
    """Call write(temporary path), flush it to disk, then rename it to `path`: readers and a crash
    at any point see the old file or the new one, never a part."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=PARTIAL_PREFIX, suffix=suffix)
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would hide checkpoints from a shared group
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _sync_folder(folder)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_atomic(obj, path):
    """jt.save `obj` to `path` atomically (see _replace_atomic)."""
    _replace_atomic(path, lambda tmp: jt.save(obj, tmp), ".pkl")


def write_atomic(path, text):
    """Write a text file atomically (see _replace_atomic)."""
    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)
    _replace_atomic(path, write, os.path.splitext(path)[1])


def link_atomic(source, path):
    """Make `path` another name of the file `source` (a hard link, so no second copy is written),
    replacing what `path` was in one step."""
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f"{PARTIAL_PREFIX}{os.getpid()}-{os.path.basename(path)}")
    if os.path.lexists(tmp):
        os.remove(tmp)
    try:
        os.link(source, tmp)
    except OSError:  # a file system without hard links: a copy, written as atomically
        _replace_atomic(path, lambda copy: shutil.copyfile(source, copy), os.path.splitext(path)[1])
        return
    os.replace(tmp, path)
    _sync_folder(folder)


def remove_partial_saves(folder):
    """Delete the temporary files that a process killed during an atomic write left in `folder`."""
    for name in os.listdir(folder):
        if name.startswith(PARTIAL_PREFIX):
            os.remove(os.path.join(folder, name))


def save_state_dict(state, path):
    """Write {name: array} as a Jittor checkpoint, atomically."""
    save_atomic({k: _to_numpy(v) for k, v in state.items()}, path)
