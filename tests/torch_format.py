"""PyTorch's file formats written without torch, for tests that need files torch would not write:
malicious ones (a global that runs code, anywhere in the file) and damaged ones.

`Global("posix", "system")` pickles as that global without importing it; `Call(func, *args)` as
func(*args). Arrays pickle as PyTorch tensors (`torch._utils._rebuild_tensor_v2` over a storage);
`Tensor` writes one whose size, stride or storage length are given.
"""
import io
import pickle
import zipfile
from collections import OrderedDict

import numpy as np

MAGIC = 0x1950A86A20F9469CFC6C
STORAGES = {np.dtype("float32"): "FloatStorage", np.dtype("int64"): "LongStorage",
            np.dtype("float64"): "DoubleStorage", np.dtype("uint8"): "ByteStorage"}


class Global:
    def __init__(self, module, name):
        self.module, self.name = module, name

    def __call__(self, *args):  # pickle requires a reduce function to be callable
        raise TypeError(f"{self.module}.{self.name} only names a global in a pickle")


class Call:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


class Tensor:
    """An array pickled as a tensor whose size, stride or storage length may lie (damaged files)."""

    def __init__(self, array, size=None, stride=None, numel=None):
        self.array = np.ascontiguousarray(array)
        self.size = self.array.shape if size is None else size
        self.stride = tuple(s // self.array.itemsize for s in self.array.strides) if stride is None else stride
        self.numel = self.array.size if numel is None else numel


class _Pickler(pickle._Pickler):
    """Writes Global as a GLOBAL opcode and (with `tensors`) each array as a tensor over a numbered storage."""

    def __init__(self, file, legacy, tensors=True, protocol=2):
        super().__init__(file, protocol=protocol)
        self.legacy, self.tensors, self.storages = legacy, tensors, []

    def save(self, obj, save_persistent_id=True):
        if isinstance(obj, Global):
            self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
        elif isinstance(obj, np.ndarray) and self.tensors and not isinstance(obj, _Stored):
            self.save(Tensor(obj if obj.flags.c_contiguous else obj.copy()))  # (ascontiguousarray makes 0-d 1-d)
        elif isinstance(obj, Tensor):
            self.storages.append(obj.array)
            super().save(Call(Global("torch._utils", "_rebuild_tensor_v2"), _Stored(obj.array, obj.numel), 0,
                              obj.size, obj.stride, False, OrderedDict()))
        else:
            super().save(obj, save_persistent_id)

    def persistent_id(self, obj):
        if not isinstance(obj, _Stored):
            return None
        key = str(next(i for i, a in enumerate(self.storages) if a is obj.array))
        kind = Global("torch", STORAGES[obj.array.dtype])
        if self.legacy:
            return ("storage", kind, key, "cpu", obj.numel, None)
        return ("storage", kind, key, "cpu", obj.numel)


class _Stored(np.ndarray):
    """Marks an array's storage (a persistent id), not a tensor."""

    def __new__(cls, array, numel):
        obj = np.zeros(0).view(cls)
        obj.array, obj.numel = array, numel
        return obj


def dumps(obj, legacy=False):
    """(the pickle of obj, the arrays it refers to as storages)."""
    buffer = io.BytesIO()
    pickler = _Pickler(buffer, legacy)
    pickler.dump(obj)
    return buffer.getvalue(), pickler.storages


def plain_pickle(obj, protocol=4):
    """A pickle with arrays as NumPy pickles them (jt.save's protocol by default)."""
    buffer = io.BytesIO()
    _Pickler(buffer, legacy=False, tensors=False, protocol=protocol).dump(obj)
    return buffer.getvalue()


def write_zip(path, obj, name="archive"):
    data, storages = dumps(obj)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr(f"{name}/data.pkl", data)
        archive.writestr(f"{name}/byteorder", "little")
        for key, array in enumerate(storages):
            archive.writestr(f"{name}/data/{key}", array.tobytes())
        archive.writestr(f"{name}/version", "3\n")


def write_legacy(path, obj, magic=MAGIC, info=None, keys=None):
    """PyTorch's legacy format; `magic`, `info` and `keys` replace its other pickles."""
    data, storages = dumps(obj, legacy=True)
    info = {"protocol_version": 1001, "little_endian": True} if info is None else info
    keys = [str(i) for i in range(len(storages))] if keys is None else keys
    with open(path, "wb") as f:
        for header in (magic, 1001, info):
            f.write(plain_pickle(header, protocol=2))
        f.write(data)
        f.write(plain_pickle(keys, protocol=2))
        for array in storages:
            f.write(array.size.to_bytes(8, "little"))
            f.write(array.tobytes())
