"""Atomic files: a failed or killed write never leaves a part, and what is written is durable."""
import os

import numpy as np
import pytest

import files
from files import WriteError, link_atomic, remove_partial_saves, replace_atomic, write_text
from checkpoints import read_checkpoint, write_checkpoint


def weights(value):
    return {"model": {"w": np.full(3, value, np.float32)}, "iteration": int(value)}


def test_a_failed_write_keeps_the_old_file_names_the_file_and_leaves_no_part(tmp_path):
    path = tmp_path / "latest.safetensors"
    write_checkpoint(weights(1), path)

    def dies_half_way(tmp):
        with open(tmp, "wb") as f:
            f.write(b"half a checkpoint")
        raise OSError(28, "No space left on device")
    with pytest.raises(WriteError, match=f"^{path}: No space left on device$"):
        replace_atomic(str(path), dies_half_way)
    assert read_checkpoint(str(path))["iteration"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.safetensors"]


def test_a_removed_folder_is_an_error_not_made_again(tmp_path):
    with pytest.raises(WriteError, match="gone/config.json: No such file or directory"):
        write_text(str(tmp_path / "gone" / "config.json"), "{}")
    assert not (tmp_path / "gone").exists()


def test_the_data_reaches_the_disk_before_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(files.os, "fsync", lambda fd: events.append("fsync") or real_fsync(fd))
    monkeypatch.setattr(files.os, "replace", lambda a, b: events.append("rename") or real_replace(a, b))
    write_checkpoint(weights(0), str(tmp_path / "a.safetensors"))
    assert events == ["fsync", "rename", "fsync"]  # the file, the rename, the folder's entry


def test_files_are_shared_as_the_umask_says(tmp_path):
    old = os.umask(0o022)
    try:
        write_text(str(tmp_path / "config.json"), "{}")
    finally:
        os.umask(old)
    assert (tmp_path / "config.json").stat().st_mode & 0o777 == 0o644


def test_a_second_name_is_the_same_file_and_replaces_the_old_one(tmp_path):
    write_checkpoint(weights(2), str(tmp_path / "iter_2.safetensors"))
    write_checkpoint(weights(1), str(tmp_path / "latest.safetensors"))
    link_atomic(str(tmp_path / "iter_2.safetensors"), str(tmp_path / "latest.safetensors"))
    assert os.path.samefile(tmp_path / "iter_2.safetensors", tmp_path / "latest.safetensors")
    assert read_checkpoint(str(tmp_path / "latest.safetensors"))["iteration"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["iter_2.safetensors", "latest.safetensors"]


def test_partial_saves_are_removed_and_nothing_else(tmp_path):
    (tmp_path / ".tmp-abc123.safetensors").write_bytes(b"part")
    (tmp_path / "latest.safetensors").write_bytes(b"whole")
    remove_partial_saves(str(tmp_path))
    assert [p.name for p in tmp_path.iterdir()] == ["latest.safetensors"]
