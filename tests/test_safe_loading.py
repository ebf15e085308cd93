"""No file we read can run code. Malicious files of every format a user can hand us (a .pkl in plain
pickle and in jt.save's format, PyTorch zip and legacy files, a .pth.tar), each shown to run its
payload in Jittor's own readers, are refused by every command that reads weights, with one line
naming the file and the global, nothing executed and nothing written; the real fixtures of every
kind read exactly as Jittor's readers read them."""
import argparse
import hashlib
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

import jittor as jt
from jittor_utils.load_pytorch import load_pytorch

import test as test_script
import train
from checkpoints import read_checkpoint, read_state_dict, write_checkpoint
from models.van import VAN
from weight_pickles import GLOBALS, Inert, read_pickled
from torch_format import Call, Global, Tensor, plain_pickle, write_legacy, write_zip

from tools import convert_weights
from datasets import synthetic
from tools import show_attention

FIXTURES = Path(__file__).parent / "fixtures"
OFFICIAL = FIXTURES / "ccnet_official_tiny.pth"
TORCH_FIXTURES = [OFFICIAL, FIXTURES / "resnet_mit_tiny.pth", FIXTURES / "van_tiny.pth.tar",
                  FIXTURES / "ccnet_r50-d8_512x512_80k_ade20k_tiny.pth"]
JITTOR_TRAILER = b"HCAJSLHD"


def touch(marker, how):
    """A pickled call that creates `marker` when an unrestricted reader loads it."""
    return {"system": Call(Global("posix", "system"), f"touch {marker}"),
            "exec": Call(Global("builtins", "exec"), f"open({str(marker)!r}, 'w').close()"),
            "open": Call(Global("builtins", "open"), str(marker), "w"),
            "numpy": Call(Global("numpy.testing._private.utils", "runstring"),
                          f"open({str(marker)!r}, 'w').close()", {})}[how]


def jittor_format(data):
    """jt.save's layout: the pickle, its SHA-1 and a marker."""
    return data + hashlib.sha1(data).digest() + JITTOR_TRAILER


@pytest.fixture(scope="module")
def evaluation_checkpoint(tmp_path_factory):
    """A real evaluation checkpoint: the tiny official CCNet, converted."""
    path = tmp_path_factory.mktemp("eval") / "official.safetensors"
    assert convert_weights.main(["official", str(OFFICIAL), str(path)]) == 0
    return read_checkpoint(str(path))


# the six malicious files: (name, global that runs, writer)
def write_plain_pkl(path, marker, checkpoint):
    path.write_bytes(plain_pickle({**checkpoint, "meta": touch(marker, "system")}))


def write_jittor_pkl(path, marker, checkpoint):
    path.write_bytes(jittor_format(plain_pickle({**checkpoint, "meta": touch(marker, "exec")})))


def write_zip_in_a_weight(path, marker, checkpoint):
    state = OrderedDict((f"module.{k}", v) for k, v in checkpoint["model"].items())
    state["module.bn1.num_batches_tracked"] = touch(marker, "open")
    write_zip(path, state)


def write_legacy_in_a_weight(path, marker, checkpoint):
    state = OrderedDict((f"module.{k}", v) for k, v in checkpoint["model"].items())
    state["module.bn1.num_batches_tracked"] = touch(marker, "numpy")
    write_legacy(path, state)


def write_legacy_in_the_magic_number(path, marker, checkpoint):
    write_legacy(path, OrderedDict(checkpoint["model"]), magic=touch(marker, "system"))


def write_pth_tar(path, marker, checkpoint):
    write_zip(path, {"epoch": 300, "state_dict": checkpoint["model"], "args": touch(marker, "exec")})


MALICIOUS = [("plain.pkl", "posix.system", write_plain_pkl),
             ("jittor.pkl", "builtins.exec", write_jittor_pkl),
             ("zip.pth", "builtins.open", write_zip_in_a_weight),
             ("legacy.pth", "numpy.testing._private.utils.runstring", write_legacy_in_a_weight),
             ("legacy_magic.pth", "posix.system", write_legacy_in_the_magic_number),
             ("van.pth.tar", "builtins.exec", write_pth_tar)]


@pytest.fixture(scope="module")
def malicious(tmp_path_factory, evaluation_checkpoint):
    """{name: (path, marker, global)}; the markers do not exist yet."""
    folder = tmp_path_factory.mktemp("malicious")
    files = {}
    for name, global_name, write in MALICIOUS:
        marker = folder / f"{name}.ran"
        write(folder / name, marker, evaluation_checkpoint)
        files[name] = (folder / name, marker, global_name)
    return files


def unrestricted_read(path):
    """What Jittor reads files with (jt.load; load_pytorch for PyTorch files, named .pth)."""
    if path.name.endswith(".pkl"):
        return jt.load(str(path))
    link = path.with_name(path.name.replace(".", "_") + "_link.pth")
    link.symlink_to(path)
    try:
        return load_pytorch(str(link))
    finally:
        link.unlink()


@pytest.mark.parametrize("name", [name for name, _, _ in MALICIOUS])
def test_each_malicious_file_runs_its_payload_in_jittors_readers(malicious, name):
    """The control: these files are real attacks on an unrestricted reader."""
    path, marker, _ = malicious[name]
    try:
        unrestricted_read(path)
    except Exception:
        pass  # after the payload ran, the rest of the file may not make sense to the reader
    assert marker.exists(), "the payload did not run: the refusal tests below would prove nothing"
    marker.unlink()


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    synthetic.write_ade20k(str(root), train=2, val=1, size=64)
    return root


def entry_points(path, out, data_root):
    """Every command that reads a weight file, each with `path` as its input and `out` as its output."""
    image = next((data_root / "images" / "validation").glob("*.jpg"))
    tiny = ["--backbone", "van_b0", "--data-root", str(data_root), "--work-dir", str(out), "--crop-size", "32",
            "--batch-size", "1", "--workers", "0", "--iters", "1", "--eval-interval", "0"]
    return {
        "test.py --ckpt": lambda: test_script.main(["--ckpt", str(path), "--out", str(out)]),
        "test.py --image": lambda: test_script.main(["--ckpt", str(path), "--image", str(image), "--out", str(out)]),
        "train.py --resume": lambda: train.main(["--resume", str(path), "--work-dir", str(out)]),
        "train.py --pretrained": lambda: train.main([*tiny, "--pretrained", str(path)]),
        **{f"convert_weights.py {kind}": (lambda kind=kind: convert_weights.main([kind, str(path), str(out / "w.safetensors")]))
           for kind in ("mmseg", "official", "mit-resnet101", "van")},
        "show_attention.py": lambda: show_attention.main(["--ckpt", str(path), "--image", str(image),
                                                         "--out", str(out / "a.png")]),
    }


ENTRY_POINTS = ["test.py --ckpt", "test.py --image", "train.py --resume", "train.py --pretrained",
                "convert_weights.py mmseg", "convert_weights.py official", "convert_weights.py mit-resnet101",
                "convert_weights.py van", "show_attention.py"]


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_every_command_refuses_every_malicious_file_in_one_line(malicious, data_root, tmp_path, capsys, entry):
    for name, (path, marker, global_name) in malicious.items():
        out = tmp_path / name
        code = entry_points(path, out, data_root)[entry]()
        err = capsys.readouterr().err
        assert code == 2, f"{name}: exit code {code}"
        assert err.startswith(f"error: {path}: refused: it names {global_name},") and err.count("\n") == 1, err
        assert not marker.exists(), f"{name}: the payload ran"
        assert not out.exists(), f"{name}: {entry} wrote {sorted(p.name for p in out.rglob('*'))}"


@pytest.mark.parametrize("where", ["sys_info", "storage keys", "a list in the meta data", "a dict key"])
def test_a_payload_anywhere_in_a_file_is_refused(tmp_path, where):
    marker = tmp_path / "ran"
    weights = OrderedDict(w=np.ones(3, np.float32))
    path = tmp_path / "file.pth"
    if where == "sys_info":
        write_legacy(path, weights, info=touch(marker, "system"))
    elif where == "storage keys":
        write_legacy(path, weights, keys=[touch(marker, "system")])
    elif where == "a list in the meta data":
        write_zip(path, {"meta": {"hooks": [1, {"x": touch(marker, "exec")}]}, "state_dict": weights})
    else:
        path.write_bytes(jittor_format(plain_pickle({touch(marker, "open"): 1})))
    with pytest.raises(Exception, match="refused: it names"):
        read_checkpoint(str(path))
    assert not marker.exists()


def test_an_allowed_global_is_inert_data_never_called(malicious, tmp_path, capsys):
    """--allow-global lets a trusted file with other objects load; even a payload stays inert."""
    path, marker, global_name = malicious["van.pth.tar"]
    checkpoint = read_checkpoint(str(path), allow=[global_name])
    assert isinstance(checkpoint["args"], Inert) and checkpoint["args"].args[0].startswith("open(")
    assert not marker.exists()
    dst = tmp_path / "out.safetensors"
    code = convert_weights.main(["mmseg", str(path), str(dst), "--allow-global", global_name])
    err = capsys.readouterr().err
    assert code == 2 and "not an mmsegmentation CCNet checkpoint" in err  # read, then judged as weights
    assert not marker.exists() and not dst.exists()


def test_an_allowed_global_where_weights_belong_is_named(tmp_path):
    path = tmp_path / "w.pth"
    write_zip(path, OrderedDict(w=np.ones(2, np.float32), bad=Call(Global("posix", "system"), "true")))
    with pytest.raises(Exception, match=r"entry 'bad' is not an array of numbers \(<inert posix.system>\)"):
        read_state_dict(str(path), allow=["posix.system"])


def test_timm_checkpoints_keep_their_arguments_beside_the_weights(tmp_path, capsys):
    """timm's saver (the VAN authors' training code) stores the command line as argparse.Namespace:
    read as plain data, with no flag."""
    weights = read_state_dict(str(FIXTURES / "van_tiny.pth.tar"), "state_dict")
    path = tmp_path / "van_timm.pth.tar"
    write_zip(path, {"epoch": 309, "arch": "van_b2", "state_dict": OrderedDict(weights), "version": 2,
                     "args": argparse.Namespace(model="van_b2", lr=1e-3, input_size=None, scale=[0.08, 1.0]),
                     "metric": 82.8})
    checkpoint = read_checkpoint(str(path))
    assert checkpoint["args"].model == "van_b2" and checkpoint["args"].scale == [0.08, 1.0]
    state, _, _, _ = convert_weights.convert("van", path, model=VAN((8, 8, 16, 16), (1, 1, 2, 1)))
    assert state and all(np.array_equal(value, weights[key]) for key, value in state.items())


# ---- the real files of every kind read exactly as before ----------------------------------------

@pytest.mark.parametrize("path", TORCH_FIXTURES, ids=lambda p: p.name)
def test_pytorch_fixtures_read_exactly_as_jittors_reader_reads_them(path):
    ours = read_pickled(str(path))
    theirs = unrestricted_read(path)

    def compare(a, b, name):
        if isinstance(b, dict):
            assert set(a) == set(b), name
            for key in b:
                compare(a[key], b[key], f"{name}.{key}")
        elif isinstance(b, jt.Var):  # Jittor makes int64 int32 and 0-d arrays 1-d; we keep the file's
            assert a.dtype == b.numpy().dtype or (a.dtype, b.numpy().dtype) == (np.int64, np.int32), name
            np.testing.assert_array_equal(a.reshape(b.shape), b.numpy(), err_msg=name)
        else:
            assert a == b, name
    compare(ours, theirs, path.name)


def test_older_jittor_checkpoints_read_exactly_as_jt_load_reads_them(tmp_path):
    rng = np.random.default_rng(0)
    checkpoint = {"model": {"a.weight": rng.standard_normal((3, 4)).astype(np.float32)},
                  "optimizer": {"n_step": 7, "groups": [{"values": [rng.standard_normal(4).astype(np.float32)]}]},
                  "iteration": 7, "config": {"backbone": "van_b0", "img_scale": [2048, 512], "lr": 6e-5}}
    jt.save(checkpoint, str(tmp_path / "latest.pkl"))
    ours, theirs = read_checkpoint(str(tmp_path / "latest.pkl")), jt.load(str(tmp_path / "latest.pkl"))
    assert ours["config"] == theirs["config"] and ours["iteration"] == 7
    np.testing.assert_array_equal(ours["model"]["a.weight"], theirs["model"]["a.weight"])
    np.testing.assert_array_equal(ours["optimizer"]["groups"][0]["values"][0],
                                  theirs["optimizer"]["groups"][0]["values"][0])


def test_pytorch_files_read_as_torch_reads_them(tmp_path):
    """Views, offsets, every storage type and both formats, against torch itself (where installed)."""
    torch = pytest.importorskip("torch", reason="needs torch (pip install -r requirements-mmseg.txt)")
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    tensors = {"transposed": base.t(), "sliced": base[1:3, 2:5], "shared": base.view(-1)[5:11],
               "scalar": torch.tensor(2.5), "half": torch.randn(3).half(), "bfloat16": torch.randn(3).bfloat16(),
               "long": torch.arange(4), "bool": torch.tensor([True, False]), "uint8": torch.arange(3, dtype=torch.uint8),
               "double": torch.randn(2, dtype=torch.float64), "empty": torch.zeros(0, 3),
               "parameter": torch.nn.Parameter(torch.ones(2))}
    for legacy in (False, True):
        path = tmp_path / f"file_{legacy}.pth"
        torch.save({"state_dict": tensors, "meta": {"iter": 3}}, str(path), _use_new_zipfile_serialization=not legacy)
        read = read_checkpoint(str(path))
        assert read["meta"] == {"iter": 3}
        for name, tensor in tensors.items():
            expected = tensor.detach().float().numpy() if tensor.dtype == torch.bfloat16 else tensor.detach().numpy()
            assert read["state_dict"][name].dtype == expected.dtype, name
            np.testing.assert_array_equal(read["state_dict"][name], expected, err_msg=f"{name} legacy={legacy}")


def test_numpy_data_in_a_legacy_file_reads(tmp_path):
    """Pickle protocol 2 (PyTorch's legacy format) writes an array's bytes through _codecs.encode."""
    palette = np.arange(12, dtype=np.uint8).reshape(4, 3)
    write_legacy(tmp_path / "meta.pth", {"meta": {"PALETTE": palette}, "state_dict": {"w": np.ones(2, np.float32)}})
    np.testing.assert_array_equal(read_checkpoint(str(tmp_path / "meta.pth"))["meta"]["PALETTE"], palette)
    (tmp_path / "other.pkl").write_bytes(plain_pickle(Call(Global("_codecs", "encode"), "x", "rot13"), protocol=2))
    with pytest.raises(Exception, match="bytes encoded as 'rot13'"):
        read_checkpoint(str(tmp_path / "other.pkl"))


def test_this_projects_files_hold_no_pickle(tmp_path, evaluation_checkpoint):
    path = tmp_path / "eval.safetensors"
    write_checkpoint(evaluation_checkpoint, path)
    header = path.read_bytes()[8:8 + int.from_bytes(path.read_bytes()[:8], "little")]
    assert header.startswith(b"{") and b"\x80" not in header  # JSON text, no pickle opcodes
    read = read_checkpoint(str(path))
    assert read["arch"] == evaluation_checkpoint["arch"] and read["protocol"] == evaluation_checkpoint["protocol"]


# ---- damaged files: one clear reason, never a read outside the file -----------------------------

def test_a_damaged_jittor_file_fails_its_checksum(tmp_path):
    data = bytearray(jittor_format(plain_pickle({"w": np.ones(4, np.float32)})))
    data[40] ^= 1
    (tmp_path / "bad.pkl").write_bytes(bytes(data))
    with pytest.raises(Exception, match="checksum does not match"):
        read_checkpoint(str(tmp_path / "bad.pkl"))


@pytest.mark.parametrize("write", [write_zip, write_legacy], ids=["zip", "legacy"])
def test_a_tensor_reaching_past_its_storage_is_refused(tmp_path, write):
    """NumPy's strided views do not check bounds: the reader must, or a file could read memory."""
    for size, stride, last in (((64,), (1,), 63), ((2, 2), (3, 1), 4)):
        write(tmp_path / "bad.pth", {"w": Tensor(np.ones(4, np.float32), size, stride)})
        with pytest.raises(Exception, match=f"reaches element {last} of a storage of 4"):
            read_checkpoint(str(tmp_path / "bad.pth"))


def test_a_storage_of_the_wrong_size_is_refused(tmp_path):
    write_zip(tmp_path / "bad.pth", {"w": Tensor(np.ones(4, np.float32), numel=5)})
    with pytest.raises(Exception, match="holds 16 bytes, not 5 x 4"):
        read_checkpoint(str(tmp_path / "bad.pth"))
    write_legacy(tmp_path / "cut.pth", {"w": Tensor(np.ones(4, np.float32), numel=5)})
    with pytest.raises(Exception, match="cut short or has the wrong size"):
        read_checkpoint(str(tmp_path / "cut.pth"))


def test_the_allowed_globals_are_the_ones_weight_files_hold():
    """A change to the list is a change to what files can make this project do: keep it deliberate."""
    assert sorted(GLOBALS) == sorted(
        ["collections.OrderedDict", "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct",
         "numpy.ndarray", "numpy.dtype", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_tensor",
         "torch._utils._rebuild_parameter", "argparse.Namespace", "_codecs.encode"]
        + [f"torch.{kind}Storage" for kind in ("Double", "Float", "Half", "BFloat16", "Long", "Int", "Short",
                                               "Char", "Byte", "Bool")])
