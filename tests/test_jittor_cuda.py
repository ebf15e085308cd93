"""The CUDA set-up, on the CPU: toolkit and cuDNN found (a PyPI wheel's through a toolkit mirror),
Jittor's files fixed once and only when they are the expected ones, one clear line when the GPU
cannot work. The fixes are applied to copies of the installed Jittor's files."""
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import jittor_env  # noqa: F401  (starts Jittor as the project does)
import jittor as jt
from jittor_setup import SetupError, cuda, fixes, patches
from jittor_setup.cuda import GpuSetupError


@pytest.fixture
def jittor_copy(tmp_path):
    """The installed Jittor's files that the GPU fixes touch, copied to a folder of the same layout."""
    source, version = patches.jittor_package()
    root = tmp_path / "jittor"
    for patch in fixes.GPU:
        (root / patch.path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(os.path.join(source, patch.path), root / patch.path)
    return root, version


def fake_toolkit(root, release="13.0"):
    """A folder laid out like a CUDA toolkit, with an nvcc that only answers --version."""
    for sub in ("bin", "include", "lib64"):
        (root / sub).mkdir(parents=True)
    nvcc = root / "bin" / "nvcc"
    nvcc.write_text(f"#!/bin/sh\necho 'Cuda compilation tools, release {release}, V{release}.88'\n")
    nvcc.chmod(0o755)
    (root / "include" / "cuda_runtime.h").write_text("// runtime\n")
    (root / "lib64" / "libcudart.so").write_text("")
    return nvcc


def fake_wheel(root, header, defines, libs):
    (root / "include").mkdir(parents=True)
    (root / "lib").mkdir()
    (root / "include" / header).write_text(
        "".join(f"#define {key} {value}\n" for key, value in defines.items()))
    for lib in libs:
        (root / "lib" / lib).write_text("")
    return str(root)


def test_patches_apply_once_and_leave_valid_files(jittor_copy):
    root, version = jittor_copy
    needed = fixes.for_gpu((13, 0), (9, 14, 0))
    assert needed == list(fixes.GPU)
    changed = patches.apply_patches(str(root), needed, version)
    assert sorted(changed) == sorted({p.path for p in fixes.GPU})
    assert patches.apply_patches(str(root), needed, version) == []  # already fixed: untouched
    for path in changed:
        text = (root / path).read_text()
        assert patches.MARK in text
        if path.endswith(".py"):
            compile(text, path, "exec")  # still Python


def test_patched_cudnn_helper_reads_the_major_version(jittor_copy, tmp_path):
    """The helper the cuDNN 9 fixes add to compile_extern.py, run on cuDNN 8 and 9 headers."""
    root, version = jittor_copy
    patches.apply_patches(str(root), fixes.for_gpu((12, 4), (9, 0, 0)), version)
    text = (root / "compile_extern.py").read_text()
    start = text.index("def _cudnn_major")
    namespace = {"os": os}
    exec(text[start:text.index("def setup_cuda_lib")], namespace)
    for major, header in ((9, "cudnn_version.h"), (8, "cudnn_version.h"), (7, "cudnn.h")):
        folder = tmp_path / f"cudnn{major}"
        folder.mkdir()
        (folder / header).write_text(f"#define CUDNN_MAJOR {major}\n#define CUDNN_MINOR 1\n")
        assert namespace["_cudnn_major"](str(folder / "cudnn.h")) == major


def test_fixes_are_chosen_by_version():
    paths = lambda patches: {p.path for p in patches}  # noqa: E731
    assert paths(fixes.for_gpu((12, 4), (8, 9, 7))) == {"src/ops/transpose_op.cc"}
    assert "compiler.py" in paths(fixes.for_gpu((13, 0), (8, 9, 7)))
    assert "compile_extern.py" not in paths(fixes.for_gpu((13, 0), (8, 9, 7)))
    assert "compile_extern.py" in paths(fixes.for_gpu((12, 4), (9, 1, 0)))


def test_other_jittor_versions_are_refused(jittor_copy):
    root, _ = jittor_copy
    with pytest.raises(SetupError, match=r"Jittor 1\.3\.9\.0 .* pip install jittor==1\.3\.11\.0"):
        patches.apply_patches(str(root), fixes.GPU, "1.3.9.0")


def test_an_unexpected_file_is_named_and_left_alone(jittor_copy):
    root, version = jittor_copy
    target = root / "compiler.py"
    target.write_text("# someone else's compiler.py\n")
    with pytest.raises(SetupError, match="compiler.py is not the file of Jittor 1.3.11.0"):
        patches.apply_patches(str(root), fixes.for_gpu((13, 0), None), version)
    assert target.read_text() == "# someone else's compiler.py\n"


def test_toolkit_and_versions_are_read(tmp_path):
    nvcc = fake_toolkit(tmp_path / "cuda", "12.4")
    toolkit = cuda.find_toolkit({"nvcc_path": str(nvcc)})
    assert toolkit.version == (12, 4)
    assert toolkit.home == str(tmp_path / "cuda")
    assert toolkit.lib == str(tmp_path / "cuda" / "lib64")
    include = tmp_path / "cudnn"
    include.mkdir()
    (include / "cudnn_version.h").write_text(textwrap.dedent("""\
        #define CUDNN_MAJOR 9
        #define CUDNN_MINOR 14
        #define CUDNN_PATCHLEVEL 0
        """))
    assert cuda.header_version(str(include), "CUDNN") == (9, 14, 0)


@pytest.fixture
def cuda13_with_wheels(tmp_path, monkeypatch, jittor_copy):
    """A CUDA 13 toolkit without cuDNN, and this Python's cuDNN 9 and NCCL wheels."""
    nvcc = fake_toolkit(tmp_path / "cuda")
    cudnn = fake_wheel(tmp_path / "wheels" / "cudnn", "cudnn_version.h",
                       {"CUDNN_MAJOR": 9, "CUDNN_MINOR": 14, "CUDNN_PATCHLEVEL": 0},
                       ["libcudnn.so.9", "libcudnn_ops.so.9", "libcudnn_graph.so.9"])
    (tmp_path / "wheels" / "cudnn" / "include" / "cudnn.h").write_text('#include "cudnn_version.h"\n')
    nccl = fake_wheel(tmp_path / "wheels" / "nccl", "nccl.h",
                      {"NCCL_MAJOR": 2, "NCCL_MINOR": 28, "NCCL_PATCH": 3}, ["libnccl.so.2"])
    wheels = {"nvidia-cudnn-cu13": cudnn, "nvidia-nccl-cu13": nccl}
    monkeypatch.setattr(cuda, "wheel_dir", lambda dist, package: wheels.get(dist))
    root, version = jittor_copy
    monkeypatch.setattr(patches, "jittor_package", lambda: (str(root), version))
    return {"nvcc_path": str(nvcc)}, tmp_path / "cache", root


def test_wheel_cudnn_reaches_jittor_through_a_toolkit_mirror(cuda13_with_wheels):
    environ, cache, root = cuda13_with_wheels
    summary = cuda.configure(environ, str(cache))
    assert summary.startswith("CUDA 13.0") and "cuDNN 9.14.0" in summary and "NCCL 2.28.3" in summary
    mirror = os.path.dirname(os.path.dirname(environ["nvcc_path"]))
    # What Jittor reads: <toolkit>/include/cudnn.h, <toolkit>/lib64/libcudnn.so, libcudart.so.
    for name in ("include/cudnn.h", "include/cuda_runtime.h", "lib64/libcudart.so", "lib64/libcudnn_ops.so.9"):
        assert os.path.exists(os.path.join(mirror, name)), name
    assert os.readlink(os.path.join(mirror, "lib64", "libcudnn.so")) == "libcudnn.so.9"
    version = subprocess.run([environ["nvcc_path"], "--version"], capture_output=True, text=True).stdout
    assert "release 13.0" in version  # the mirror's nvcc runs the real one
    assert os.path.islink(os.path.join(environ["nccl_lib_path"], "libnccl.so"))
    assert environ["use_cutt"] == environ["use_cutlass"] == "0"  # both would be downloaded
    assert patches.MARK in (root / "compile_extern.py").read_text()
    again = dict(environ)
    cuda.configure(again, str(cache))  # a second start reuses the mirror
    assert again["nvcc_path"] == environ["nvcc_path"]


def test_the_users_settings_win(cuda13_with_wheels):
    environ, cache, _ = cuda13_with_wheels
    environ.update(use_cutt="1", nccl_lib_path="/opt/nccl/lib", nccl_include_path="/opt/nccl/include")
    cuda.configure(environ, str(cache))
    assert environ["use_cutt"] == "1"
    assert environ["nccl_lib_path"] == "/opt/nccl/lib"


def test_no_cudnn_is_one_line_saying_what_to_install(cuda13_with_wheels, monkeypatch):
    environ, cache, _ = cuda13_with_wheels
    monkeypatch.setattr(cuda, "wheel_dir", lambda dist, package: None)
    with pytest.raises(GpuSetupError) as error:
        cuda.configure(environ, str(cache))
    message = str(error.value)
    assert "\n" not in message
    assert "has no cuDNN: pip install nvidia-cudnn-cu13" in message and 'CUDA_VISIBLE_DEVICES=""' in message


def test_no_toolkit_is_one_line_and_no_download(monkeypatch, tmp_path):
    monkeypatch.setattr(cuda, "nvcc_version", lambda nvcc: None)
    with pytest.raises(GpuSetupError, match="an NVIDIA GPU is visible but no CUDA toolkit was found"):
        cuda.configure({}, str(tmp_path))


def test_gpu_error_ends_the_start_with_exit_code_1():
    error = GpuSetupError("no cuDNN")
    assert isinstance(error, SystemExit) and error.code == "ccnet-jittor: no cuDNN"


def test_fused_transpose_moves_the_last_axis(tmp_path):
    """The op that takes Jittor's transposes on the GPU, checked against numpy with its gradient."""
    data = np.random.default_rng(0).normal(size=(2, 3, 4, 5)).astype(np.float32)
    x = jt.array(data)
    y = jt.fuse_transpose(x, (0, 3, 1, 2))
    upstream = np.random.default_rng(1).normal(size=y.shape).astype(np.float32)
    grad = jt.grad((y * jt.array(upstream)).sum(), x)
    np.testing.assert_array_equal(y.numpy(), data.transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(grad.numpy(), upstream.transpose(0, 2, 3, 1))


def test_use_cuda_0_hides_the_gpu(monkeypatch):
    monkeypatch.setenv("use_cuda", "0")
    assert cuda.gpu_visible() is False


def test_gpu_check_runs_its_cpu_half_without_a_gpu(tmp_path):
    """On a CPU machine the check computes the CPU results and says that every GPU stage was skipped."""
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, str(root / "tools" / "gpu_check.py"), "--out", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["rows"] == [{"check": "CPU reference (attention, norm, loss, both CCNets)", "result": "finite",
                               "target": "finite", "ok": True}]
    assert report["skipped"] == ["every GPU stage: no NVIDIA GPU is visible"]
    reference = np.load(tmp_path / "reference.npz")
    assert set(reference) == {"cca_forward", "cca_grad_query", "cca_grad_key", "cca_grad_value",
                              "norm_forward", "norm_running_var", "norm_grad_x", "norm_grad_weight",
                              "norm_grad_bias", "norm_grad_residual", "loss", "loss_grad_logits",
                              "resnet101_logits", "van_base_logits"}
    assert report["host"]["cores"] == os.cpu_count() and report["host"]["python_probe_ms"] > 0
    markdown = (tmp_path / "gpu_check.md").read_text()
    assert "Skipped: every GPU stage" in markdown
    assert f"a fixed pure-Python loop took {report['host']['python_probe_ms']} ms" in markdown


def test_gpu_checks_train_py_row_reads_train_pys_own_log(tmp_path):
    """The check's train.py row, run small on the CPU: train.py on generated data, its seconds per
    iteration over the last log interval, the recipe's hours at that speed."""
    from tools import gpu_check
    report = gpu_check.Report(tmp_path, budget=600)
    result = gpu_check.check_trainpy(report, "van_b0", tmp_path / "run", batch=2, size=64, iters=4, start=2,
                                     img_scale=(128, 64))
    log = [json.loads(line) for line in (tmp_path / "run" / "work" / "log.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in log] == [2, 4] and result["seconds_per_iter"] == log[-1]["seconds_per_iter"] > 0
    check, shown, _, ok = report.rows[-1]
    assert check == "train.py van_b0 batch 2 crop 64: s/iter over 3-4" and ok
    assert shown == f"{result['seconds_per_iter']:.3f} ({80_000 * result['seconds_per_iter'] / 3600:.1f} h for 80,000)"
    assert json.loads((tmp_path / "gpu_check.json").read_text())["rows"][-1]["check"] == check


def test_a_half_made_mirror_is_replaced_and_a_whole_one_kept(cuda13_with_wheels):
    user, cache, _ = cuda13_with_wheels
    first = dict(user)
    cuda.configure(first, str(cache))
    nvcc = first["nvcc_path"]
    os.remove(nvcc)  # as a start killed while writing the mirror
    again = dict(user)
    cuda.configure(again, str(cache))
    mirror = os.path.dirname(os.path.dirname(nvcc))
    assert again["nvcc_path"] == nvcc and os.path.isfile(nvcc)
    assert os.path.islink(os.path.join(mirror, "include", "cudnn.h"))
    marker = os.path.join(mirror, "kept")
    open(marker, "w").close()
    cuda.configure(dict(user), str(cache))  # a whole mirror is used as it is
    assert os.path.isfile(marker)
    assert not [name for name in os.listdir(cache) if ".tmp" in name]
