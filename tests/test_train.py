"""train.py on a small generated dataset: exact resume, interruption, bad input."""
import os
import signal
import sys
from pathlib import Path

import numpy as np
import pytest

import jittor as jt

import losses
import train
from models.checkpoint import read_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import make_synthetic_ade20k  # noqa: E402


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    make_synthetic_ade20k.main(["--out", str(root), "--train", "8", "--val", "2", "--size", "96"])
    return str(root)


def tiny_run(data_root, work_dir, *extra):
    """van_b0 at crop 64, batch 2, one process: a few seconds per run once compiled."""
    return ["--backbone", "van_b0", "--data-root", data_root, "--work-dir", str(work_dir),
            "--crop-size", "64", "--batch-size", "2", "--workers", "0", "--eval-interval", "0",
            "--log-interval", "1", "--iters", "4", *extra]


def weights(path):
    return read_checkpoint(str(path))["model"]


def test_resume_continues_exactly(data_root, tmp_path):
    assert train.main(tiny_run(data_root, tmp_path, "--ckpt-interval", "2")) == 0
    straight = weights(tmp_path / "latest.pkl")
    assert read_checkpoint(str(tmp_path / "iter_2.pkl"))["iteration"] == 2
    assert train.main(["--resume", str(tmp_path / "iter_2.pkl")]) == 0
    resumed = weights(tmp_path / "latest.pkl")
    assert set(resumed) == set(straight)
    for name in straight:  # bit for bit: same data draws, dropout seeds, optimizer state
        np.testing.assert_array_equal(resumed[name], straight[name], err_msg=name)
    lines = (tmp_path / "log.jsonl").read_text().splitlines()
    assert len(lines) == 6 and '"iter": 4' in lines[-1]


def test_sigint_saves_and_stops(data_root, tmp_path, monkeypatch):
    real = losses.segmentation_loss
    calls = []

    def interrupting_loss(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # the main loss of the second iteration
            os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kwargs)
    monkeypatch.setattr(train, "segmentation_loss", interrupting_loss)
    assert train.main(tiny_run(data_root, tmp_path, "--ckpt-interval", "100")) == 0
    assert read_checkpoint(str(tmp_path / "latest.pkl"))["iteration"] == 2


def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(data_root, tmp_path, monkeypatch):
    real = losses.segmentation_loss
    calls = []

    def exploding_loss(*args, **kwargs):
        calls.append(1)
        loss = real(*args, **kwargs)
        return loss * float("nan") if len(calls) > 4 else loss  # iteration 3 diverges
    monkeypatch.setattr(train, "segmentation_loss", exploding_loss)
    with pytest.raises(SystemExit, match="iteration 3: the loss is nan"):
        train.main(tiny_run(data_root, tmp_path, "--ckpt-interval", "1"))
    assert read_checkpoint(str(tmp_path / "latest.pkl"))["iteration"] == 2


@pytest.mark.parametrize("flags,message", [
    (["--iters", "0"], "--iters must be positive, got 0"),
    (["--batch-size", "-2"], "--batch-size must be positive"),
    (["--crop-size", "4096"], "--crop-size 4096 is larger than any training image becomes"),
    (["--pretrained", "missing.pkl"], "missing.pkl: no such file"),
])
def test_bad_input_is_one_line_before_any_work(data_root, tmp_path, capsys, flags, message):
    assert train.main(tiny_run(data_root, tmp_path / "run", *flags)) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_missing_dataset_points_to_ade20k_and_the_demo(tmp_path, capsys):
    assert train.main(["--backbone", "van_base", "--data-root", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "no ADE20K found" in err and "nowhere/images/training" in err and "make demo" in err


def test_existing_work_dir_is_not_overwritten(data_root, tmp_path, capsys):
    (tmp_path / "latest.pkl").write_bytes(b"previous run")
    assert train.main(tiny_run(data_root, tmp_path)) == 2
    assert "already has checkpoints" in capsys.readouterr().err
    assert (tmp_path / "latest.pkl").read_bytes() == b"previous run"


def test_resume_refuses_another_backbone_or_a_foreign_file(data_root, tmp_path, capsys):
    assert train.main(tiny_run(data_root, tmp_path, "--iters", "1")) == 0
    assert train.main(["--resume", str(tmp_path / "latest.pkl"), "--backbone", "van_b1"]) == 2
    assert "--backbone van_b1 differs from the checkpoint's van_b0" in capsys.readouterr().err
    (tmp_path / "foreign.pkl").write_bytes(b"not a checkpoint")
    assert train.main(["--resume", str(tmp_path / "foreign.pkl")]) == 2
    assert "foreign.pkl: not a readable checkpoint" in capsys.readouterr().err


def test_learning_rate_schedules():
    sgd = train.resolve_config(train.parse_args(["--backbone", "resnet101"]))
    assert (sgd["optimizer"], sgd["lr"], sgd["weight_decay"], sgd["batch_size"], sgd["iters"]) == \
        ("sgd", 0.01, 5e-4, 16, 80_000)
    assert train.learning_rate(0, sgd) == pytest.approx(0.01)
    assert train.learning_rate(40_000, sgd) == pytest.approx((0.01 - 1e-4) * 0.5 ** 0.9 + 1e-4)
    adamw = train.resolve_config(train.parse_args(["--backbone", "van_base"]))
    assert (adamw["optimizer"], adamw["lr"], adamw["weight_decay"]) == ("adamw", 6e-5, 0.01)
    assert train.learning_rate(750, adamw) == pytest.approx(6e-5 * (1 - 750 / 80_000) * (1e-6 + (1 - 1e-6) * 0.5))
    assert train.learning_rate(1500, adamw) == pytest.approx(6e-5 * (1 - 1500 / 80_000))


def test_ccl_trains_the_embedding_and_plots_the_curves(data_root, tmp_path):
    assert train.main(tiny_run(data_root, tmp_path, "--ccl", "--iters", "2", "--eval-interval", "2")) == 0
    trained = weights(tmp_path / "latest.pkl")
    # van_b0's fused map has 64+160+256 = 480 channels: RCCA works on 120, the embedding has 120 // 16
    assert trained["head.embed.weight"].shape == (7, 120, 1, 1)
    assert read_checkpoint(str(tmp_path / "latest.pkl"))["config"]["ccl"] is True
    assert (tmp_path / "curves.png").stat().st_size > 10_000


def test_the_same_seed_gives_the_same_initial_weights(data_root, tmp_path):
    for name in ("a", "b"):
        assert train.main(tiny_run(data_root, tmp_path / name, "--iters", "1")) == 0
    a, b = weights(tmp_path / "a" / "latest.pkl"), weights(tmp_path / "b" / "latest.pkl")
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
