"""The Jittor bootstrap: offline CPU start, oneDNN really in use, the user's settings win, a clean exit."""
import ctypes
import hashlib
import importlib.util
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

import jittor_env
import jittor as jt
from jittor import nn
from jittor_setup import cuda, fixes, onednn, patches

import numpy_reference as ref
from jittor_helpers import profiled
from process_helpers import live_processes_in_group, wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the checkout, for child processes
START_VARIABLES = ("nvcc_path", "use_mkl", "log_silent", "CCNET_VERBOSE", "JITTOR_HOME", "cache_name",
                   "FIX_TORCH_ERROR", "use_parallel_op_compiler")


@pytest.fixture
def clean_environment():
    saved = dict(os.environ)
    for name in START_VARIABLES:
        os.environ.pop(name, None)
    yield os.environ
    os.environ.clear()
    os.environ.update(saved)


@pytest.mark.skipif(jt.flags.use_cuda == 1, reason="on a GPU Jittor uses cuDNN, not oneDNN")
def test_convolutions_run_on_onednn():
    conv = nn.Conv2d(8, 16, 3, padding=1)
    x = jt.randn(2, 8, 12, 12)
    _, operators = profiled(lambda: jt.sync(jt.grad(conv(x).sqr().sum(), [x, conv.weight])))
    ops = {name.split("«")[0] for name, _ in operators}
    assert {"mkl_conv", "mkl_conv_backward_x", "mkl_conv_backward_w"} <= ops


def test_cpu_machine_hides_nvcc_and_quiets_log(clean_environment, monkeypatch, tmp_path):
    monkeypatch.setattr(cuda, "gpu_visible", lambda: False)
    clean_environment["JITTOR_HOME"] = str(tmp_path)
    assert jittor_env.configure_environment() is False
    assert clean_environment["nvcc_path"] == ""
    assert clean_environment["log_silent"] == "1"
    assert "use_mkl" not in clean_environment  # oneDNN was linked, so Jittor may use it
    assert clean_environment["cache_name"] == "default"
    assert clean_environment["FIX_TORCH_ERROR"] == "0"


def test_jittor_starts_without_importing_torch():
    """Jittor 1.3.11 imports an installed torch at start-up and ORs RTLD_DEEPBIND into
    os.RTLD_GLOBAL unless FIX_TORCH_ERROR=0."""
    if importlib.util.find_spec("torch") is None:
        pytest.skip("torch is not installed, so Jittor cannot import it")
    code = ("import os, sys; import jittor_env; "
            "print('torch' in sys.modules, bool(os.RTLD_GLOBAL & os.RTLD_DEEPBIND))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.stdout.split() == ["False", "False"], run.stderr


FREED_MEMORY = """
import sys
import jittor_env
import numpy as np
from pathlib import Path

def resident_mib():
    line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024

block = np.ones(1 << 24, dtype=np.float32)  # 64 MiB, above glibc's largest default mmap threshold
held = resident_mib()
del block
print(held - resident_mib())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
@pytest.mark.parametrize("user_setting", [None, "GLIBC_TUNABLES"])
def test_freed_memory_stays_for_the_next_allocation(user_setting):
    """A freed 64 MiB block stays in the process (its pages are not faulted in again by the next
    step); with the user's own malloc setting, the C library's defaults give it back at once."""
    env = dict(os.environ)
    if user_setting:
        env[user_setting] = "glibc.malloc.check=0"
    run = subprocess.run([sys.executable, "-c", FREED_MEMORY], cwd=ROOT, capture_output=True, text=True,
                         timeout=300, env=env)
    returned_mib = float(run.stdout.split()[-1])
    if user_setting:
        assert returned_mib > 60, run.stderr
    else:
        assert returned_mib < 1, run.stderr


def test_the_kernel_cache_does_not_follow_the_git_branch():
    """Jittor would name its cache after the branch of the checkout that holds .venv."""
    assert os.path.basename(jt.compiler.cache_path) == "default"


def test_gpu_machine_sets_up_cuda(clean_environment, monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(cuda, "gpu_visible", lambda: True)
    monkeypatch.setattr(cuda, "configure", lambda environ, cache: calls.append(cache) or "stack")
    monkeypatch.setattr(jittor_env, "GPU_STACK", None)
    clean_environment["JITTOR_HOME"] = str(tmp_path)
    assert jittor_env.configure_environment() is True
    assert calls == [str(tmp_path / ".cache" / "jittor" / "ccnet_cuda")]
    assert jittor_env.GPU_STACK == "stack"
    assert "nvcc_path" not in clean_environment  # left to the CUDA set-up


def test_user_settings_win(clean_environment, monkeypatch):
    monkeypatch.setattr(cuda, "gpu_visible", lambda: False)
    clean_environment.update(nvcc_path="/opt/cuda/bin/nvcc", use_mkl="0", log_silent="0", cache_name="mine")
    jittor_env.configure_environment()
    assert clean_environment["nvcc_path"] == "/opt/cuda/bin/nvcc"
    assert clean_environment["use_mkl"] == "0"
    assert clean_environment["cache_name"] == "mine"
    assert clean_environment["log_silent"] == "0"


def test_verbose_variable_keeps_jittor_log(clean_environment, monkeypatch, tmp_path):
    monkeypatch.setattr(cuda, "gpu_visible", lambda: False)
    clean_environment.update(CCNET_VERBOSE="1", JITTOR_HOME=str(tmp_path))
    jittor_env.configure_environment()
    assert "log_silent" not in clean_environment


def test_onednn_link_is_made_and_rebuilt_when_stale(clean_environment, tmp_path):
    clean_environment["JITTOR_HOME"] = str(tmp_path)
    folder = tmp_path / ".cache" / "jittor" / "mkl" / onednn.ONEDNN_DIR
    assert onednn.link_onednn()
    assert (folder / "lib" / "libmkldnn.so").is_file()
    assert (folder / "include" / "dnnl.h").is_file()

    library = folder / "lib" / "libmkldnn.so"
    library.unlink()
    library.symlink_to(tmp_path / "removed-venv" / "libmkldnn.so")  # dangling, as after rm -r .venv
    assert not onednn.onednn_usable(str(folder))
    assert onednn.link_onednn()
    assert library.is_file()


def test_missing_wheels_turn_onednn_off_with_a_warning(clean_environment, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(cuda, "gpu_visible", lambda: False)
    monkeypatch.setattr(onednn, "wheel_files", lambda: None)
    clean_environment["JITTOR_HOME"] = str(tmp_path)
    jittor_env.configure_environment()
    assert clean_environment["use_mkl"] == "0"
    assert "oneDNN not found" in capsys.readouterr().err


COMPILER_POOL_KILLED = """
import atexit, multiprocessing, os, signal, sys, time
import jittor_env
import jittor_utils
# the pool as jittor_utils.run_cmds makes it on the first kernel compile
jittor_utils.p = multiprocessing.Pool(2)
jittor_utils.p.__enter__()
atexit.register(jittor_utils.pool_cleanup)
jittor_utils.p.map(abs, [1, 2])
for process in list(jittor_utils.p._pool):  # what Ctrl-C or kill -TERM -PGID does to them
    os.kill(process.pid, signal.SIGTERM)
time.sleep(0.5)
"""


def test_exit_does_not_hang_on_a_killed_compiler_pool():
    run = subprocess.Popen([sys.executable, "-c", COMPILER_POOL_KILLED], cwd=ROOT, start_new_session=True)
    try:
        assert run.wait(timeout=60) == 0
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    wait_for(lambda: not live_processes_in_group(run.pid), 5, "end of the pool's processes")


@pytest.mark.parametrize("fix", ["pointwise_convolution", "onednn_buffers", "serial_relay_tuners",
                                 "compile_in_one_call"])
def test_jittor_fix_applies_once_to_jittors_files(tmp_path, fix):
    """The installed files are already fixed (importing jittor_env did it); undone on copies, the
    fix gives those files back, and a second application changes nothing."""
    fix = getattr(fixes, fix).PATCHES
    source, version = patches.jittor_package()
    paths = sorted({patch.path for patch in fix})
    installed = {path: open(os.path.join(source, path)).read() for path in paths}
    for path in paths:
        original = installed[path]
        for patch in (patch for patch in fix if patch.path == path):
            assert installed[path].count(patch.new) == 1
            original = original.replace(patch.new, patch.old)
        copy = tmp_path / path
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_text(original)
    assert patches.apply_patches(str(tmp_path), fix, version) == paths
    assert {path: (tmp_path / path).read_text() for path in paths} == installed
    assert patches.apply_patches(str(tmp_path), fix, version) == []


def test_a_file_fixed_by_an_earlier_version_of_a_fix_is_upgraded(tmp_path):
    """A checkout updated over an existing environment: the forward convolution's output copy as the
    previous version of the project wrote it becomes the current version, once."""
    source, version = patches.jittor_package()
    revised = [patch for patch in fixes.CPU if patch.replaces]
    assert revised
    for patch in revised:
        installed = open(os.path.join(source, patch.path)).read()
        copy = tmp_path / patch.path
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_text(installed.replace(patch.new, patch.replaces[0]))
        assert copy.read_text() != installed
        assert patches.state(patch, copy.read_text()) == "earlier version"
        assert patches.apply_patches(str(tmp_path), [patch], version) == [patch.path]
        assert copy.read_text() == installed
        assert patches.apply_patches(str(tmp_path), [patch], version) == []


@pytest.fixture
def fixed_copy(tmp_path):
    """Copies of the installed Jittor's files that any fix touches (CPU fixes applied), in their layout."""
    source, version = patches.jittor_package()
    root = tmp_path / "site" / "jittor"
    for path in {patch.path for patch in fixes.CPU + fixes.GPU}:
        copy = root / path
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_text(open(os.path.join(source, path)).read())
    return root, version


def test_restore_gives_back_jittors_own_files_checked_by_checksum(fixed_copy):
    root, version = fixed_copy
    patches.apply_patches(str(root), fixes.for_gpu((13, 0), (9, 14, 0)), version)  # every fix in place
    results = dict(patches.restore(str(root), fixes.CPU + fixes.GPU))
    assert set(results) == set(patches.ORIGINALS)
    assert all(what.startswith("restored") for what in results.values()), results
    for path, digest in patches.ORIGINALS.items():
        assert hashlib.sha256((root / path).read_bytes()).hexdigest() == digest, path
        assert patches.MARK not in (root / path).read_text()
    assert all(what == "already Jittor's original" for _, what in patches.restore(str(root), fixes.CPU + fixes.GPU))


def test_restore_leaves_a_file_it_does_not_know(fixed_copy):
    root, _ = fixed_copy
    target = root / "compiler.py"
    target.write_text(target.read_text() + "# changed by someone else\n")
    results = dict(patches.restore(str(root), fixes.CPU + fixes.GPU))
    assert results["compiler.py"].startswith("left as it is")
    assert target.read_text().endswith("# changed by someone else\n")


def test_status_lists_every_fix_without_starting_jittor():
    code = ("import runpy, sys\nsys.argv = ['jittor_setup', 'status']\ntry:\n"
            "    runpy.run_module('jittor_setup', run_name='__main__')\nexcept SystemExit as end:\n"
            "    assert end.code == 0\nprint('jittor started:', 'jittor' in sys.modules)")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith("Jittor 1.3.11.0 at ") and lines[-1] == "jittor started: False"
    rows = {tuple(line.split()[:2]) for line in lines if line.split()[:1] and line.split()[0] in
            {fix.__name__.rsplit(".", 1)[1] for fix in fixes.CPU_FIXES + fixes.GPU_FIXES}}
    for fix in fixes.CPU_FIXES:
        assert (fix.__name__.rsplit(".", 1)[1], "applied") in rows
    if not cuda.gpu_visible():
        for fix in fixes.GPU_FIXES:
            assert (fix.__name__.rsplit(".", 1)[1], "not") in rows  # "not needed here"


FAKE_COMPILER = """#!/bin/sh
echo "$@" >> "$(dirname "$0")/calls.txt"
while [ $# -gt 0 ]; do [ "$1" = "-o" ] && : > "$2"; shift; done
"""


@pytest.mark.parametrize("marked", [False, True])
def test_kernel_compiles_in_one_call_unless_its_source_has_tuning_marks(tmp_path, marked):
    """Jittor's kernel-compiling script, as Jittor calls it, with a compiler that logs its calls: an
    unmarked source is one call with Jittor's own arguments; a marked one still takes the script's
    assembly pass (a call with -S, then one on the assembly)."""
    compiler = tmp_path / "g++"
    compiler.write_text(FAKE_COMPILER)
    compiler.chmod(0o755)
    source = tmp_path / "kernel_op.cc"
    source.write_text('//@begin replace "a" "b"\nint x;\n//@end\n' if marked else "int x;\n")
    arguments = [str(source), "-O2", "-shared", "-o", str(tmp_path / "kernel_op.so")]
    script = os.path.join(patches.jittor_package()[0], "utils", "asm_tuner.py")
    subprocess.run([sys.executable, script, f"--cc_path={compiler}"] + arguments, check=True, timeout=120)
    calls = (tmp_path / "calls.txt").read_text().splitlines()
    if marked:
        assert len(calls) == 2 and " -S " in calls[0] and calls[1].startswith(str(tmp_path / "kernel_op.s"))
    else:
        assert calls == [" ".join(arguments)]


def test_unfixable_jittor_compiles_one_kernel_at_a_time(clean_environment, monkeypatch):
    """Where the fixes cannot be applied, Jittor's parallel op compiler is switched off instead
    (its threads race on the graph); an applied fix leaves it on. On Python 3.13, where Jittor
    needs its fix to start at all, the start stops in one line."""
    jittor_env.fix_jittor()
    assert "use_parallel_op_compiler" not in clean_environment
    source, _ = patches.jittor_package()
    monkeypatch.setattr(patches, "jittor_package", lambda: (source, "1.3.10.0"))
    if sys.version_info >= (3, 13):  # without exec_namespace Jittor cannot start there: one line instead
        with pytest.raises(SystemExit, match="Jittor's files could not be fixed for Python 3.13"):
            jittor_env.fix_jittor()
        return
    jittor_env.fix_jittor()
    assert clean_environment["use_parallel_op_compiler"] == "0"


@pytest.mark.parametrize("stride,bias", [(1, False), (2, True)])
def test_pointwise_convolution_and_its_gradients_match_numpy(stride, bias):
    rng = np.random.default_rng(stride)
    x = rng.standard_normal((2, 48, 9, 10)).astype(np.float32)
    upstream = rng.standard_normal((2, 32, (9 - 1) // stride + 1, (10 - 1) // stride + 1))
    conv = nn.Conv2d(48, 32, 1, stride=stride, bias=bias)
    x_var = jt.array(x)
    y = conv(x_var)
    grads = jt.grad((y * jt.array(upstream.astype(np.float32))).sum(), [x_var, conv.weight])
    w = conv.weight.numpy()[:, :, 0, 0].astype(np.float64)
    sampled = x[:, :, ::stride, ::stride].astype(np.float64)
    expected = np.einsum("oc,nchw->nohw", w, sampled) + (conv.bias.numpy()[None, :, None, None] if bias else 0)
    np.testing.assert_allclose(y.numpy(), expected, rtol=0, atol=1e-4)
    grad_x = np.zeros(x.shape)
    grad_x[:, :, ::stride, ::stride] = np.einsum("oc,nohw->nchw", w, upstream)
    np.testing.assert_allclose(grads[0].numpy(), grad_x, rtol=0, atol=1e-4)
    np.testing.assert_allclose(grads[1].numpy()[:, :, 0, 0], np.einsum("nohw,nchw->oc", upstream, sampled),
                               rtol=0, atol=1e-3)


def test_numpy_convolution_gradients_agree_with_finite_differences():
    rng = np.random.default_rng(0)
    x, weight = rng.standard_normal((2, 4, 7, 6)), rng.standard_normal((6, 2, 3, 3))
    options = dict(stride=2, padding=2, dilation=2, groups=2)
    upstream = rng.standard_normal(ref.conv2d(x, weight, **options).shape)
    grad_x, grad_weight = ref.conv2d_gradients(x, weight, upstream, **options)
    np.testing.assert_allclose(
        grad_x, ref.numeric_gradient(lambda v: (upstream * ref.conv2d(v, weight, **options)).sum(), x), atol=1e-6)
    np.testing.assert_allclose(
        grad_weight, ref.numeric_gradient(lambda v: (upstream * ref.conv2d(x, v, **options)).sum(), weight), atol=1e-6)


@pytest.mark.parametrize("in_channels,out_channels,kernel,stride,padding,dilation,groups", [
    (16, 24, 3, 1, 2, 2, 1),   # ResNet-101's dilated 3 x 3 (output stride 8)
    (16, 32, 3, 2, 1, 1, 1),   # strided
    (32, 32, 3, 1, 1, 1, 4),   # grouped
    (3, 16, 7, 2, 3, 1, 1),    # the stem
])
def test_onednn_convolutions_and_gradients_match_numpy(in_channels, out_channels, kernel, stride, padding,
                                                       dilation, groups):
    """The fixed oneDNN ops: blocked copies in Jittor's allocator, the weights reordered once for the
    backward-data pass."""
    rng = np.random.default_rng(kernel + stride + groups)
    x = rng.standard_normal((2, in_channels, 13, 11)).astype(np.float32)
    weight = (0.1 * rng.standard_normal((out_channels, in_channels // groups, kernel, kernel))).astype(np.float32)
    options = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    conv = nn.Conv2d(in_channels, out_channels, kernel, bias=False, **options)
    conv.weight.assign(jt.array(weight))
    x_var = jt.array(x)
    y = conv(x_var)
    upstream = rng.standard_normal(y.shape)
    grads = jt.grad((y * jt.array(upstream.astype(np.float32))).sum(), [x_var, conv.weight])
    x64, weight64 = x.astype(np.float64), weight.astype(np.float64)
    grad_x, grad_weight = ref.conv2d_gradients(x64, weight64, upstream, **options)
    np.testing.assert_allclose(y.numpy(), ref.conv2d(x64, weight64, **options), rtol=0, atol=1e-4)
    np.testing.assert_allclose(grads[0].numpy(), grad_x, rtol=0, atol=1e-4)
    np.testing.assert_allclose(grads[1].numpy(), grad_weight, rtol=0, atol=1e-3)


HEAP_DURING_CONVOLUTION = """
import ctypes, sys
import jittor_env
import jittor as jt
from jittor import nn

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
mallinfo2 = ctypes.CDLL(None).mallinfo2
mallinfo2.restype = MallInfo2

def c_heap_outside_jittor():  # what the C library holds, less the blocks of Jittor's allocator
    info = mallinfo2()
    return info.arena + info.hblkhd - jt.get_mem_info().total_cpu_used

def step(channels):
    conv = nn.Conv2d(channels, channels // 2, 3, padding=2, dilation=2, bias=False)
    x = jt.randn(1, channels, 8, 8)
    jt.sync([x, conv.weight])
    before = c_heap_outside_jittor()
    jt.sync(jt.grad(conv(x).sum(), [x, conv.weight]))
    return c_heap_outside_jittor() - before, conv.weight.numel() * 4

step(16)  # compiles the kernels
print(*step(1024))
"""


@pytest.mark.skipif(jt.flags.use_cuda == 1, reason="on a GPU Jittor uses cuDNN, not oneDNN")
@pytest.mark.skipif(not hasattr(ctypes.CDLL(None), "mallinfo2"), reason="needs glibc's mallinfo2 (glibc 2.33+)")
def test_onednn_copies_come_from_jittors_allocator():
    """A 3 x 3 convolution with 18 MiB of weights, forward and backward, in a new process: the C
    heap outside Jittor's allocator grew by two copies of the weights (36.6 MiB, measured) before
    the fix and by 0.6 MiB with it. The heap never shrinks (keep_freed_memory), so growth is its peak."""
    run = subprocess.run([sys.executable, "-c", HEAP_DURING_CONVOLUTION], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    growth, weights = map(int, run.stdout.split()[-2:])
    assert weights == 18 * 2**20 and growth < weights / 4


CRASH = """
import ctypes, sys
import jittor_env
ctypes.string_at(0)  # reads address 0: SIGSEGV
"""


@pytest.mark.parametrize("options", [[], ["-X", "faulthandler"]])
def test_a_crash_ends_the_process_with_a_python_traceback(options):
    """Not Jittor's handler, which attached gdb and called exit() inside the handler (a crashed
    test run hung there until the time limit)."""
    run = subprocess.run([sys.executable, *options, "-c", CRASH], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == -signal.SIGSEGV, run.stderr
    assert "Fatal Python error: Segmentation fault" in run.stderr
    assert 'File "<string>", line 4' in run.stderr
