"""Reading pickled weight files without running any code they hold.

Jittor's .pkl files (jt.save) and PyTorch's files (.pth, .pt, .pth.tar; zip and legacy) are
pickles, and a pickle may name any Python function for the reader to call: Python's own pickle,
jt.load and Jittor's PyTorch reader call whatever a file names. Here a pickle may name only the
globals in GLOBALS, each replaced by a function of this module that builds data and nothing else;
any other name stops the reading before anything is called. Tensors come back as NumPy arrays
(torch is not needed).

GLOBALS lists what the weight files this project reads contain, read off them with pickletools:
this project's .pkl checkpoints (NumPy's array reconstruction, ndarray, dtype), PyTorch's zip and
legacy files (OrderedDict, the tensor rebuild functions and the storage types; the fixtures in
tests/fixtures were written as the official CCNet, MIT, mmsegmentation and VAN files were), and
`argparse.Namespace`, which timm's checkpoint saver, the one the VAN authors trained with, stores
beside the weights (the command-line arguments). PyTorch's pre-0.4 `_rebuild_tensor` and
`_rebuild_parameter` are the same data under other names, and `_codecs.encode` is how pickle
protocols 0-2 (PyTorch's legacy format) write any bytes object, a NumPy array's data included:
only its latin-1 form is accepted.

A global the user allows (`allow`) becomes an Inert object: its arguments are kept as data and it
is never imported or called, so even an allowed name cannot run code.
"""
import hashlib
import io
import pickle
import zipfile
from collections import OrderedDict
from types import SimpleNamespace

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # the first pickle of PyTorch's legacy format
LEGACY_PROTOCOL = 1001
JITTOR_TRAILER = b"HCAJSLHD"  # jt.save: pickle, SHA-1 of the pickle (20 bytes), this marker
ZIP_MAGIC = b"PK\x03\x04"


class ForbiddenGlobal(pickle.UnpicklingError):
    """The file names a global outside GLOBALS and the user's allowed names."""

    def __init__(self, name):
        super().__init__(name)
        self.name = name


class Inert:
    """A global the user allowed: what the file passes to it, kept as data."""
    name = "?"

    def __new__(cls, *args, **kwargs):  # pickle's NEWOBJ: cls.__new__(cls, *args)
        obj = super().__new__(cls)
        obj.args, obj.kwargs, obj.state, obj.items = args, kwargs, None, []
        return obj

    def __init__(self, *args, **kwargs):  # pickle's REDUCE: cls(*args)
        pass

    def __setstate__(self, state):
        self.state = state

    def __setitem__(self, key, value):
        self.items.append((key, value))

    def append(self, value):
        self.items.append(value)

    def extend(self, values):
        self.items.extend(values)

    def __repr__(self):
        return f"<inert {self.name}>"


def inert(name):
    return type("Inert", (Inert,), {"name": name})


class StorageType:
    """What torch.FloatStorage and its kin stand for: an element type."""

    def __init__(self, dtype):
        self.dtype = dtype


class Storage:
    """A PyTorch storage: a flat array, or a part of another storage (legacy views)."""

    def __init__(self, dtype, numel, root=None, offset=0):
        self.dtype, self.numel, self.root, self.offset = dtype, numel, root, offset
        self._data = None

    def fill(self, raw, byteorder):
        """Set the data from the file's bytes (bfloat16 widened to float32 exactly)."""
        if self.dtype == "bfloat16":
            bits = np.frombuffer(raw, np.dtype("u2").newbyteorder(byteorder)).astype(np.uint32)
            self._data = (bits << 16).view(np.float32)
        else:
            self._data = np.frombuffer(raw, np.dtype(self.dtype).newbyteorder(byteorder)).astype(self.dtype)

    @property
    def data(self):
        if self.root is not None:
            return self.root.data[self.offset:self.offset + self.numel]
        if self._data is None:
            raise ValueError("a tensor refers to a storage the file holds no data for")
        return self._data


class Tensor:
    """A tensor as PyTorch pickles it, turned into an array once its storage's data is read."""

    def __init__(self, storage, offset, size, stride):
        if not isinstance(storage, Storage):
            raise ValueError(f"a tensor's storage is a {type(storage).__name__}")
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)
        if not all(isinstance(n, int) and n >= 0 for n in (offset, *self.size, *self.stride)) \
                or len(self.size) != len(self.stride):
            raise ValueError(f"a tensor with offset {offset}, size {self.size} and stride {self.stride}")

    def array(self):
        data = self.storage.data
        if 0 in self.size:
            return np.zeros(self.size, data.dtype)
        last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride))
        if last >= data.size:  # as_strided does not check: it would read past the storage
            raise ValueError(f"a tensor of size {self.size} reaches element {last} of a storage of {data.size}")
        view = np.lib.stride_tricks.as_strided(data[self.offset:], self.size,
                                               [s * data.itemsize for s in self.stride])
        return np.array(view)  # owns its memory, C order


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
    return Tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, *unused):
    return data


def _latin1_bytes(text, encoding):
    if encoding != "latin1" or not isinstance(text, str):
        raise pickle.UnpicklingError(f"bytes encoded as {encoding!r}, not as pickle writes them (latin1)")
    return text.encode("latin1")


STORAGE_TYPES = {"DoubleStorage": "f8", "FloatStorage": "f4", "HalfStorage": "f2", "BFloat16Storage": "bfloat16",
                 "LongStorage": "i8", "IntStorage": "i4", "ShortStorage": "i2", "CharStorage": "i1",
                 "ByteStorage": "u1", "BoolStorage": "?"}
_RECONSTRUCT = np.zeros(0).__reduce__()[0]  # numpy.core.multiarray._reconstruct (numpy._core in 2.x)
GLOBALS = {
    "collections.OrderedDict": OrderedDict,
    "numpy.core.multiarray._reconstruct": _RECONSTRUCT,
    "numpy._core.multiarray._reconstruct": _RECONSTRUCT,
    "numpy.ndarray": np.ndarray,
    "numpy.dtype": np.dtype,
    "torch._utils._rebuild_tensor_v2": _rebuild_tensor,
    "torch._utils._rebuild_tensor": _rebuild_tensor,
    "torch._utils._rebuild_parameter": _rebuild_parameter,
    "argparse.Namespace": SimpleNamespace,
    "_codecs.encode": _latin1_bytes,
    **{f"torch.{name}": StorageType(dtype) for name, dtype in STORAGE_TYPES.items()},
}


class RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, allow=(), persistent_load=None):
        super().__init__(file, encoding="utf-8")  # PyTorch's legacy files hold Python 2 strings
        self.allow = frozenset(allow)
        self.storages = persistent_load

    def find_class(self, module, name):
        full = f"{module}.{name}"
        if full in GLOBALS:
            return GLOBALS[full]
        if full in self.allow:
            return inert(full)
        raise ForbiddenGlobal(full)

    def persistent_load(self, pid):
        if self.storages is None:
            raise pickle.UnpicklingError("a reference to outside data in a file that has none")
        return self.storages(pid)


def _storage_id(pid, fields):
    """The fields of a PyTorch storage reference ('storage', type, key, location, numel, ...)."""
    if not (isinstance(pid, tuple) and len(pid) == fields and pid[0] == "storage"
            and isinstance(pid[1], StorageType) and isinstance(pid[4], int) and pid[4] >= 0):
        raise pickle.UnpicklingError(f"an unknown reference to outside data: {pid!r:.80}")
    return pid


def resolve(obj, seen=None):
    """`obj` with every Tensor replaced by its array (in the dicts and lists a checkpoint has)."""
    seen = set() if seen is None else seen
    if isinstance(obj, Tensor):
        return obj.array()
    if id(obj) in seen:
        return obj
    if isinstance(obj, dict):
        seen.add(id(obj))
        for key, value in obj.items():
            obj[key] = resolve(value, seen)
    elif isinstance(obj, list):
        seen.add(id(obj))
        obj[:] = [resolve(value, seen) for value in obj]
    elif isinstance(obj, tuple):
        return tuple(resolve(value, seen) for value in obj)
    return obj


def _read_torch_zip(path, allow):
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        prefix = names[0].split("/")[0] + "/" if names else ""
        if f"{prefix}data.pkl" not in names:
            raise ValueError("a zip file without PyTorch's data.pkl")
        byteorder = "<"
        if f"{prefix}byteorder" in names and archive.read(f"{prefix}byteorder").strip() == b"big":
            byteorder = ">"
        storages = {}

        def storage(pid):
            _, kind, key, _, numel = _storage_id(pid, 5)
            if key not in storages:
                entry = archive.getinfo(f"{prefix}data/{key}")
                itemsize = 2 if kind.dtype == "bfloat16" else np.dtype(kind.dtype).itemsize
                if entry.file_size != numel * itemsize:
                    raise ValueError(f"storage {key} holds {entry.file_size} bytes, not {numel} x {itemsize}")
                storages[key] = Storage(kind.dtype, numel)
                storages[key].fill(archive.read(entry), byteorder)
            return storages[key]
        result = RestrictedUnpickler(io.BytesIO(archive.read(f"{prefix}data.pkl")), allow, storage).load()
    return resolve(result)


def _read_torch_legacy(stream, allow):
    """PyTorch's format before 1.6: magic number, protocol, system info, the object, the storage
    keys, then each storage's element count and bytes (all pickles read with the restricted reader)."""
    if RestrictedUnpickler(stream, allow).load() != LEGACY_PROTOCOL:
        raise ValueError("an unknown version of PyTorch's legacy format")
    info = RestrictedUnpickler(stream, allow).load()
    byteorder = ">" if isinstance(info, dict) and info.get("little_endian") is False else "<"
    roots, views = {}, {}

    def storage(pid):
        _, kind, key, _, numel, view = _storage_id(pid, 6)
        if key not in roots:
            roots[key] = Storage(kind.dtype, numel)
        if view is None:
            return roots[key]
        view_key, offset, size = view
        if view_key not in views:
            views[view_key] = Storage(kind.dtype, size, roots[key], offset)
        return views[view_key]
    result = RestrictedUnpickler(stream, allow, storage).load()
    keys = RestrictedUnpickler(stream, allow).load()
    if not isinstance(keys, list) or set(keys) != set(roots):
        raise ValueError("the storage list does not match the tensors")
    for key in keys:
        root = roots[key]
        count = int.from_bytes(stream.read(8), "little" if byteorder == "<" else "big")
        itemsize = 2 if root.dtype == "bfloat16" else np.dtype(root.dtype).itemsize
        raw = stream.read(count * itemsize)
        if count != root.numel or len(raw) != count * itemsize:
            raise ValueError(f"storage {key} is cut short or has the wrong size")
        root.fill(raw, byteorder)
    return resolve(result)


def read_pickled(path, allow=()):
    """The object in a Jittor .pkl or a PyTorch (zip or legacy) file, tensors as NumPy arrays.
    Raises ForbiddenGlobal for a global outside GLOBALS and `allow`, ValueError and pickle's
    errors for a damaged file."""
    with open(path, "rb") as f:
        if f.read(len(ZIP_MAGIC)) == ZIP_MAGIC:
            return _read_torch_zip(path, allow)
        f.seek(0)
        data = f.read()
    if data.endswith(JITTOR_TRAILER):
        data, checksum = data[:-28], data[-28:-8]
        if hashlib.sha1(data).digest() != checksum:
            raise ValueError("its checksum does not match its contents (a damaged or cut-short file)")
    stream = io.BytesIO(data)
    first = RestrictedUnpickler(stream, allow).load()
    if type(first) is int and first == LEGACY_MAGIC:
        return _read_torch_legacy(stream, allow)
    return first
