"""A file that cannot be written (a full disk, a read-only or removed folder) ends a command with one
line naming the file, loses nothing already saved, leaves no temporary file, and a training run
continues exactly once the cause is gone.

The failures are the kernel's own: the tests lower this process's file size limit (RLIMIT_FSIZE,
EFBIG "File too large") around one write, and where the tests may mount a file system (root), fill
a real one (ENOSPC).
"""
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

import test as test_script
import train
from checkpoints import read_checkpoint
from tiny_training import synthetic_root, tiny_run

ROOT = Path(__file__).resolve().parents[1]
from tools import convert_weights

OFFICIAL = Path(__file__).parent / "fixtures" / "ccnet_official_tiny.pth"


@contextmanager
def file_size_limit(nbytes):
    """Writes that would make a file larger than `nbytes` fail (EFBIG), as on a full disk."""
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel's signal ends the process
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


def failing_at(call, function, limit):
    """`function`, but its `call`-th call runs under a file size limit of limit(*args) bytes."""
    calls = []

    def wrapped(*args, **kwargs):
        calls.append(1)
        if len(calls) != call:
            return function(*args, **kwargs)
        with file_size_limit(limit(*args)):
            return function(*args, **kwargs)
    return wrapped


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return synthetic_root(tmp_path_factory)


@pytest.fixture(scope="module")
def straight(data_root, tmp_path_factory):
    """The weights of four iterations without interruption."""
    work = tmp_path_factory.mktemp("straight")
    assert train.main(tiny_run(data_root, work, "--ckpt-interval", "100")) == 0
    return read_checkpoint(str(work / "latest.safetensors"))["model"]


def assert_continues_exactly(work, straight):
    assert train.main(["--resume", str(work / "latest.safetensors")]) == 0
    resumed = read_checkpoint(str(work / "latest.safetensors"))["model"]
    for name in straight:
        np.testing.assert_array_equal(resumed[name], straight[name], err_msg=name)
    assert [json.loads(line)["iter"] for line in (work / "log.jsonl").read_text().splitlines()] == [1, 2, 3, 4]
    assert not list(work.glob(".tmp-*"))


def one_error_line(capsys):
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


def test_a_checkpoint_that_cannot_be_written_ends_the_run_and_it_continues_exactly(
        data_root, tmp_path, monkeypatch, capsys, straight):
    monkeypatch.setattr(train, "write_checkpoint",
                        failing_at(2, train.write_checkpoint, lambda checkpoint, path: 1 << 20))
    assert train.main(tiny_run(data_root, tmp_path, "--ckpt-interval", "1")) == 1
    latest = tmp_path / "latest.safetensors"
    assert one_error_line(capsys) == (
        f"error: {tmp_path}/iter_2.safetensors: File too large; the last checkpoint is {latest} (iteration 1); "
        f"once fixed, continue with --resume {latest}")
    assert read_checkpoint(str(latest))["iteration"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "iter_1.safetensors", "latest.safetensors",
                                                          "log.jsonl"]
    monkeypatch.undo()
    assert_continues_exactly(tmp_path, straight)


def test_a_log_line_cut_short_ends_the_run_and_it_continues_exactly(data_root, tmp_path, monkeypatch, capsys, straight):
    log = tmp_path / "log.jsonl"
    # the third line's write stops 10 bytes in: the log ends with a part of a line
    monkeypatch.setattr(train, "append_line", failing_at(3, train.append_line, lambda path, line: log.stat().st_size + 10))
    assert train.main(tiny_run(data_root, tmp_path, "--ckpt-interval", "2")) == 1
    latest = tmp_path / "latest.safetensors"
    assert one_error_line(capsys) == (
        f"error: {log}: File too large; the last checkpoint is {latest} (iteration 2); "
        f"once fixed, continue with --resume {latest}")
    assert not log.read_text().endswith("\n")
    monkeypatch.undo()
    assert_continues_exactly(tmp_path, straight)


def test_a_config_that_cannot_be_written_ends_the_run_before_it_starts(data_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(train, "write_text", failing_at(1, train.write_text, lambda path, text: 0))
    assert train.main(tiny_run(data_root, tmp_path)) == 1
    assert one_error_line(capsys) == f"error: {tmp_path}/config.json: File too large; no checkpoint was written"
    assert os.listdir(tmp_path) == []


def test_a_work_dir_that_cannot_be_made_is_one_line(data_root, tmp_path, capsys):
    (tmp_path / "a_file").write_text("")
    assert train.main(tiny_run(data_root, tmp_path / "a_file" / "run")) == 1
    assert one_error_line(capsys) == f"error: {tmp_path}/a_file/run: Not a directory; no checkpoint was written"


@pytest.fixture(scope="module")
def trained(data_root, tmp_path_factory):
    work = tmp_path_factory.mktemp("trained")
    assert train.main(tiny_run(data_root, work, "--iters", "1")) == 0
    return work / "latest.safetensors"


@pytest.mark.parametrize("failing", ["a prediction", "metrics"])
def test_test_py_outputs_that_cannot_be_written_are_one_line(trained, tmp_path, monkeypatch, capsys, failing):
    if failing == "a prediction":
        monkeypatch.setattr(test_script, "save_image", failing_at(3, test_script.save_image, lambda array, path: 100))
    else:
        monkeypatch.setattr(test_script, "write_text", failing_at(1, test_script.write_text, lambda path, text: 10))
    out = tmp_path / "out"
    assert test_script.main(["--ckpt", str(trained), "--save-pred", "--out", str(out)]) == 1
    line = one_error_line(capsys)
    failed = (out / "pred" / "ADE_val_00000002.png") if failing == "a prediction" else (out / "metrics.md")
    assert line == f"error: {failed}: File too large"
    assert not failed.exists() and not list(out.rglob(".tmp-*"))


def test_a_converted_file_that_cannot_be_written_is_one_line(tmp_path, monkeypatch, capsys):
    dst = tmp_path / "out.safetensors"
    monkeypatch.setattr(convert_weights, "write", failing_at(1, convert_weights.write, lambda *args: 1000))
    assert convert_weights.main(["official", str(OFFICIAL), str(dst)]) == 1
    assert one_error_line(capsys) == f"error: {dst}: File too large"
    assert os.listdir(tmp_path) == []


# ---- a real full disk ---------------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """A 150 MB file system (tmpfs): room for one checkpoint of the tiny run, not two."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("a real full disk needs root (to mount a small tmpfs); the file size limit tests above cover it")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=150m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def run_train(*args):
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], capture_output=True, text=True, cwd=ROOT)


def test_a_disk_that_fills_at_a_checkpoint_ends_the_run_and_it_continues_exactly(data_root, small_disk, straight):
    work = small_disk / "run"
    run = run_train(*tiny_run(data_root, work, "--ckpt-interval", "2"))
    latest = work / "latest.safetensors"
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines()[-1] == (
        f"error: {work}/iter_4.safetensors: No space left on device; the last checkpoint is {latest} (iteration 2); "
        f"once fixed, continue with --resume {latest}")
    assert sorted(p.name for p in work.iterdir()) == ["config.json", "iter_2.safetensors", "latest.safetensors",
                                                      "log.jsonl"]
    subprocess.run(["mount", "-o", "remount,size=300m", str(small_disk)], check=True)  # space freed
    resumed = run_train("--resume", str(latest))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    weights = read_checkpoint(str(latest))["model"]
    for name in straight:
        np.testing.assert_array_equal(weights[name], straight[name], err_msg=name)


def test_a_disk_full_before_the_start_is_one_line(data_root, small_disk):
    filler = small_disk / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * (1 << 20))
        except OSError:
            pass
    run = run_train(*tiny_run(data_root, small_disk / "run"))
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines()[-1] == (
        f"error: {small_disk}/run/config.json: No space left on device; no checkpoint was written")
