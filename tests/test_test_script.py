"""test.py: a train.py checkpoint evaluated, its saved predictions re-scored to the same numbers."""
import json
import sys
from pathlib import Path

import pytest

import test as test_script
import train

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import make_synthetic_ade20k  # noqa: E402


def test_saved_predictions_score_like_the_run_that_made_them(tmp_path):
    root = tmp_path / "data"
    make_synthetic_ade20k.main(["--out", str(root), "--train", "4", "--val", "2", "--size", "64"])
    work = tmp_path / "work"
    assert train.main(["--backbone", "van_b0", "--data-root", str(root), "--work-dir", str(work),
                       "--crop-size", "64", "--batch-size", "2", "--workers", "0", "--iters", "1",
                       "--eval-interval", "0"]) == 0
    out = tmp_path / "out"
    assert test_script.main(["--ckpt", str(work / "latest.pkl"), "--save-pred", "--out", str(out)]) == 0
    model_run = json.loads((out / "metrics.json").read_text())
    assert model_run["protocol"]["mode"] == "whole" and model_run["protocol"]["backbone"] == "van_b0"
    assert len(list((out / "pred").glob("*.png"))) == 2 and len(list((out / "vis").glob("*.jpg"))) == 2
    rescored = tmp_path / "rescored"
    assert test_script.main(["--pred-dir", str(out / "pred"), "--data-root", str(root), "--out", str(rescored)]) == 0
    scores = json.loads((rescored / "metrics.json").read_text())
    for key in ("aAcc", "mIoU", "mIoU_devkit"):
        assert scores[key] == pytest.approx(model_run[key]), key


def test_missing_checkpoint_is_one_line(tmp_path, capsys):
    assert test_script.main(["--ckpt", str(tmp_path / "none.pkl")]) == 2
    err = capsys.readouterr().err
    assert "none.pkl: no such file" in err and err.count("\n") == 1
