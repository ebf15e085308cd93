"""The project's one checked way to read weights and load them into a model.

Jittor's own `load_state_dict` only logs a warning on missing or mis-shaped keys; here every
missing, unexpected or mis-shaped key is an error that names the file and the first keys, so a
model is never silently half-loaded.
"""
import os
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


def save_atomic(obj, path):
    """jt.save `obj` to `path` through a temporary file and a rename: a crash leaves the old file."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".pkl")
    os.close(fd)
    try:
        jt.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_state_dict(state, path):
    """Write {name: array} as a Jittor checkpoint, atomically."""
    save_atomic({k: _to_numpy(v) for k, v in state.items()}, path)
