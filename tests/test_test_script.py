"""test.py: a train.py checkpoint evaluated, its saved predictions re-scored to the same numbers."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import test as test_script
import train

from datasets import synthetic
from tools import show_attention

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "ade20k_sample"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(dataset root, checkpoint) of one iteration of van_b0 on a tiny generated set."""
    tmp = tmp_path_factory.mktemp("trained")
    root, work = tmp / "data", tmp / "work"
    synthetic.write_ade20k(str(root), train=4, val=2, size=64)
    assert train.main(["--backbone", "van_b0", "--data-root", str(root), "--work-dir", str(work),
                       "--crop-size", "64", "--batch-size", "2", "--workers", "0", "--iters", "1",
                       "--eval-interval", "0"]) == 0
    return root, work / "latest.safetensors"


def test_saved_predictions_score_like_the_run_that_made_them(trained, tmp_path):
    root, ckpt = trained
    out = tmp_path / "out"
    assert test_script.main(["--ckpt", str(ckpt), "--save-pred", "--out", str(out)]) == 0
    model_run = json.loads((out / "metrics.json").read_text())
    protocol = model_run["protocol"]
    assert protocol["mode"] == "whole" and protocol["model"]["backbone"] == "van_b0" and protocol["iteration"] == 1
    assert protocol["align_corners"] is True  # train.py's loss resizes with align_corners=True: so does test.py
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


def test_one_image_gets_its_overlay_and_a_broken_one_a_clear_error(trained, tmp_path, capsys):
    root, ckpt = trained
    image = next((root / "images" / "validation").glob("*.jpg"))
    assert test_script.main(["--ckpt", str(ckpt), "--image", str(image), "--out", str(tmp_path)]) == 0
    with Image.open(tmp_path / f"{image.stem}_overlay.jpg") as picture:
        assert picture.size == (2 * 64, 64)  # image | overlay, at the image's own size
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(image.read_bytes()[:200])
    capsys.readouterr()
    assert test_script.main(["--ckpt", str(ckpt), "--image", str(broken), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "broken.jpg: unreadable image" in err and err.count("\n") == 1


def test_mismatched_prediction_dir_names_the_file(trained, tmp_path, capsys):
    root, _ = trained
    first, last = sorted((root / "annotations" / "validation").glob("*.png"))
    assert test_script.main(["--pred-dir", str(tmp_path), "--data-root", str(root)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert errors == [f"error: {tmp_path / first.name}: missing prediction for annotation {first}"]
    Image.fromarray(np.ones((64, 64), np.uint8)).save(tmp_path / first.name)
    Image.fromarray(np.ones((10, 12), np.uint8)).save(tmp_path / last.name)
    assert test_script.main(["--pred-dir", str(tmp_path), "--data-root", str(root)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert errors == [f"error: {tmp_path / last.name}: prediction is 12x10, its annotation 64x64"]


def test_attention_picture_of_a_trained_model(trained, tmp_path):
    root, ckpt = trained
    image = next((root / "images" / "validation").glob("*.jpg"))
    out = tmp_path / "attention.png"
    assert show_attention.main(["--ckpt", str(ckpt), "--image", str(image), "--pixel", "10", "50",
                                "--out", str(out)]) == 0
    with Image.open(out) as picture:
        assert picture.size[0] > 2 * picture.size[1]  # image, R = 1, R = 2 side by side


def direct_scores(pred_dir, root):
    """aAcc and mIoU from benchmark PNGs and annotations, class by class, the obvious way."""
    inter, union, correct, labelled = np.zeros(150), np.zeros(150), 0, 0
    for annotation in sorted((Path(root) / "annotations" / "validation").glob("*.png")):
        gt = np.asarray(Image.open(annotation)).astype(int)
        pred = np.asarray(Image.open(Path(pred_dir) / annotation.name)).astype(int)
        assert pred.shape == gt.shape  # predictions come back at the annotation's size
        valid = gt > 0
        correct += (valid & (pred == gt)).sum()
        labelled += valid.sum()
        for c in range(1, 151):
            inter[c - 1] += (valid & (pred == c) & (gt == c)).sum()
            union[c - 1] += (valid & ((pred == c) | (gt == c))).sum()
    present = union > 0
    return correct / labelled, (inter[present] / union[present]).mean()


@pytest.mark.parametrize("dataset", ["ade20k_sample", "generated"])
def test_every_protocol_scores_what_a_direct_computation_finds(trained, tmp_path, dataset):
    generated, ckpt = trained
    if dataset == "ade20k_sample" and not SAMPLE.is_dir():
        pytest.skip(f"the real ADE20K sample is not at {SAMPLE}")
    root = SAMPLE if dataset == "ade20k_sample" else generated
    protocols = {"whole": [], "slide": ["--mode", "slide", "--crop-size", "384", "--stride", "256"],
                 "ms_flip": ["--scales", "0.75", "1.0", "--flip"]}
    for name, flags in protocols.items():
        out = tmp_path / name
        assert test_script.main(["--ckpt", str(ckpt), "--data-root", str(root), "--save-pred", "--out", str(out),
                                 *flags]) == 0
        reported = json.loads((out / "metrics.json").read_text())
        a_acc, m_iou = direct_scores(out / "pred", root)
        assert reported["aAcc"] == pytest.approx(a_acc, abs=1e-12), name
        assert reported["mIoU"] == pytest.approx(m_iou, abs=1e-12), name
