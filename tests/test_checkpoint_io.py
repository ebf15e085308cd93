"""Atomic checkpoint files: a failed or killed write never leaves a part, and what is written is durable."""
import os

import numpy as np
import pytest

import jittor as jt

from models import checkpoint
from models.checkpoint import link_atomic, read_checkpoint, remove_partial_saves, save_atomic, write_atomic


def test_a_failed_save_keeps_the_old_file_and_leaves_no_part(tmp_path, monkeypatch):
    path = tmp_path / "latest.pkl"
    save_atomic({"iteration": 1}, str(path))

    def dies_half_way(obj, target):
        with open(target, "wb") as f:
            f.write(b"half a checkpoint")
        raise OSError("disk full")
    monkeypatch.setattr(jt, "save", dies_half_way)
    with pytest.raises(OSError, match="disk full"):
        save_atomic({"iteration": 2}, str(path))
    assert read_checkpoint(str(path))["iteration"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.pkl"]


def test_the_data_reaches_the_disk_before_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(checkpoint.os, "fsync", lambda fd: events.append("fsync") or real_fsync(fd))
    monkeypatch.setattr(checkpoint.os, "replace", lambda a, b: events.append("rename") or real_replace(a, b))
    save_atomic({"x": np.zeros(3)}, str(tmp_path / "a.pkl"))
    assert events == ["fsync", "rename", "fsync"]  # the file, the rename, the folder's entry


def test_files_are_shared_as_the_umask_says(tmp_path):
    old = os.umask(0o022)
    try:
        write_atomic(str(tmp_path / "config.json"), "{}")
    finally:
        os.umask(old)
    assert (tmp_path / "config.json").stat().st_mode & 0o777 == 0o644


def test_a_second_name_is_the_same_file_and_replaces_the_old_one(tmp_path):
    save_atomic({"iteration": 2}, str(tmp_path / "iter_2.pkl"))
    save_atomic({"iteration": 1}, str(tmp_path / "latest.pkl"))
    link_atomic(str(tmp_path / "iter_2.pkl"), str(tmp_path / "latest.pkl"))
    assert os.path.samefile(tmp_path / "iter_2.pkl", tmp_path / "latest.pkl")
    assert read_checkpoint(str(tmp_path / "latest.pkl"))["iteration"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["iter_2.pkl", "latest.pkl"]


def test_partial_saves_are_removed_and_nothing_else(tmp_path):
    (tmp_path / ".tmp-abc123.pkl").write_bytes(b"part")
    (tmp_path / "latest.pkl").write_bytes(b"whole")
    remove_partial_saves(str(tmp_path))
    assert [p.name for p in tmp_path.iterdir()] == ["latest.pkl"]
