"""Cityscapes and Pascal VOC: layouts, label conversion, bad input, and train.py -> test.py on each."""
import json
import os

import numpy as np
import pytest
from PIL import Image

import test as test_script
import train
from datasets import DATASETS, Cityscapes, DatasetError, PascalVOC
from datasets import cityscapes, voc
from inference import tile_starts

from datasets import synthetic

# cityscapesScripts' labels.py, (id, trainId) for ids 0..33 (255: not evaluated)
CITYSCAPES_TRAIN_IDS = [255, 255, 255, 255, 255, 255, 255, 0, 1, 255, 255, 2, 3, 4, 255, 255, 255, 5, 255, 6, 7,
                        8, 9, 10, 11, 12, 13, 14, 15, 255, 255, 16, 17, 18]


def generate(tmp_path, layout, train_count=4, val=2, size=64, **options):
    root = tmp_path / f"{layout}{''.join(options)}"
    write = synthetic.write_cityscapes if layout == "cityscapes" else synthetic.write_voc
    write(str(root), train_count, val, size, **options)
    return root


def test_label_ids_map_to_train_ids_as_the_benchmark():
    assert cityscapes.ID_TO_TRAIN_ID[:34].tolist() == CITYSCAPES_TRAIN_IDS
    assert (cityscapes.ID_TO_TRAIN_ID[34:] == 255).all()


def test_voc_palette_is_the_devkit_colour_map():
    assert voc.PALETTE[0].tolist() == [0, 0, 0]
    assert voc.PALETTE[1].tolist() == [128, 0, 0]  # aeroplane
    assert voc.PALETTE[15].tolist() == [192, 128, 128]  # person
    assert voc.PALETTE[20].tolist() == [0, 64, 128]  # tvmonitor
    assert len({tuple(c) for c in voc.PALETTE}) == 21


def test_cityscapes_label_ids_and_train_ids_read_the_same(tmp_path):
    ids, train_ids = generate(tmp_path, "cityscapes"), generate(tmp_path, "cityscapes", train_ids=True)
    a, b = Cityscapes(str(ids), "val"), Cityscapes(str(train_ids), "val")
    assert [os.path.basename(p) for p, _ in a.files] == [os.path.basename(p) for p, _ in b.files]
    assert all(label.endswith("_gtFine_labelIds.png") for _, label in a.files)
    for index in range(len(a)):
        (_, label_a), (_, label_b) = a.read(index), b.read(index)
        np.testing.assert_array_equal(label_a, label_b)
        assert set(np.unique(label_a)) <= set(range(19)) | {255} and (label_a == 255).any()


def test_cityscapes_bad_trees_name_what_is_wrong(tmp_path):
    root = generate(tmp_path, "cityscapes")
    label_city = root / "gtFine" / "val" / "bremen"
    for path in label_city.iterdir():
        path.unlink()
    label_city.rmdir()
    with pytest.raises(DatasetError, match=r"gtFine/val: missing city folder\(s\) bremen \(present in .*leftImg8bit/val\)"):
        Cityscapes.list_split(str(root), "val")
    (root / "gtFine" / "train" / "aachen" / "aachen_000000_000000_gtFine_labelIds.png").unlink()
    with pytest.raises(DatasetError, match=r"1 images without annotations in .*aachen \(aachen_000000_000000_leftImg8bit\.png"):
        Cityscapes.list_split(str(root), "train")
    with pytest.raises(DatasetError, match="test labels are not public"):
        Cityscapes.list_split(str(root), "test")


def test_cityscapes_label_values_outside_the_classes_name_the_file(tmp_path):
    root = generate(tmp_path, "cityscapes")
    dataset = Cityscapes(str(root), "train")
    label_path = dataset.files[0][1]
    Image.fromarray(np.full((64, 64), 40, np.uint8)).save(label_path)
    with pytest.raises(DatasetError, match=f"{label_path}: annotation values must be label ids 0..33, found 40"):
        dataset.read(0)
    train_ids = generate(tmp_path, "cityscapes", train_ids=True)
    dataset = Cityscapes(str(train_ids), "train")
    label_path = dataset.files[0][1]
    Image.fromarray(np.full((64, 64), 19, np.uint8)).save(label_path)
    with pytest.raises(DatasetError, match=f"{label_path}: annotation values must be train ids 0..18 or 255, found 19"):
        dataset.read(0)


def test_voc_splits_read_palette_and_augmented_labels(tmp_path):
    root = generate(tmp_path, "voc", aug=True)
    assert len(PascalVOC(str(root), "val")) == 2 and len(PascalVOC(str(root), "train")) == 4
    aug = PascalVOC(str(root), "aug")
    assert len(aug) == 8 and aug.augment
    assert sum("SegmentationClassAug" in label for _, label in aug.files) == 4
    with Image.open(PascalVOC(str(root), "val").files[0][1]) as im:
        assert im.mode == "P"
    for index in range(len(aug)):
        _, label = aug.read(index)
        assert set(np.unique(label)) <= set(range(21)) | {255} and (label == 255).any() and (label > 0).any()


def test_voc_bad_input_names_the_file(tmp_path):
    root = generate(tmp_path, "voc")
    with pytest.raises(DatasetError, match=r"aug\.txt: cannot read the split file"):
        PascalVOC.list_split(str(root), "aug")
    names = (root / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    (root / "JPEGImages" / f"{names[1]}.jpg").unlink()
    with pytest.raises(DatasetError, match=rf"val\.txt, line 2: {names[1]} has no file .*JPEGImages/{names[1]}\.jpg"):
        PascalVOC.list_split(str(root), "val")
    dataset = PascalVOC(str(root), "train")
    label_path = dataset.files[0][1]
    Image.fromarray(np.full((64, 64), 30, np.uint8)).save(label_path)
    with pytest.raises(DatasetError, match=f"{label_path}: annotation values must be classes 0..20 or 255, found 30"):
        dataset.read(0)


@pytest.mark.parametrize("size", [1024, 2048, 769, 1000, 1282, 5000])
def test_sliding_windows_sit_where_the_official_evaluate_puts_them(size):
    """Its predict_sliding: ceil((size - 769) / 513) + 1 tiles at k * 513, the last moved back flush."""
    crop, stride = 769, 513
    count = int(np.ceil((size - crop) / stride)) + 1
    official = sorted({max(min(k * stride + crop, size) - crop, 0) for k in range(count)})
    assert tile_starts(size, crop, stride) == official


def test_presets_are_the_published_recipes():
    config = train.resolve_config(train.parse_args(["--backbone", "resnet101", "--preset", "cityscapes"]))
    assert {k: config[k] for k in ("dataset", "num_classes", "crop_size", "batch_size", "iters", "lr",
                                   "weight_decay", "power", "min_lr", "optimizer", "img_scale", "augmentation")} == {
        "dataset": "cityscapes", "num_classes": 19, "crop_size": 769, "batch_size": 8, "iters": 60000, "lr": 0.01,
        "weight_decay": 1e-4, "power": 0.9, "min_lr": 0.0, "optimizer": "sgd", "img_scale": [2048, 1024],
        "augmentation": "official"}
    config = train.resolve_config(train.parse_args(["--backbone", "resnet101", "--preset", "voc12aug", "--iters", "20000"]))
    assert (config["dataset"], config["num_classes"], config["iters"], config["crop_size"]) == ("voc12aug", 21, 20000, 512)


def test_official_augmentation_draws_the_official_ratios():
    from datasets.transforms import OFFICIAL
    rng = np.random.default_rng(0)
    ratios = {round(OFFICIAL.ratio(rng), 10) for _ in range(2000)}
    assert ratios == {round(0.7 + k / 10, 10) for k in range(14)}


@pytest.mark.parametrize("name,flags", [("cityscapes", ["--dataset", "cityscapes"]),
                                        ("voc", ["--preset", "voc12aug"])])
def test_train_then_test_on_each_dataset(tmp_path, name, flags, capsys):
    """A few iterations on the generated tree, then test.py with the checkpoint's own protocol."""
    root = generate(tmp_path, name, size=96, **({"aug": True} if name == "voc" else {}))
    work = tmp_path / "work"
    assert train.main(["--backbone", "van_b0", *flags, "--data-root", str(root), "--work-dir", str(work),
                       "--crop-size", "64", "--img-scale", "128", "96", "--batch-size", "2", "--workers", "0",
                       "--iters", "2", "--eval-interval", "2", "--optimizer", "adamw", "--lr", "1e-3"]) == 0
    dataset_name = DATASETS["cityscapes" if name == "cityscapes" else "voc12aug"].NAME
    log = [json.loads(line) for line in (work / "log.jsonl").read_text().splitlines()]
    assert any("eval" in record for record in log)
    out = tmp_path / "test"
    assert test_script.main(["--ckpt", str(work / "latest.safetensors"), "--out", str(out), "--save-pred"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["protocol"]["dataset"] == dataset_name and len(metrics["IoU"]) == len(DATASETS[dataset_name].NAMES)
    assert metrics["protocol"]["mode"] == ("slide" if name == "cityscapes" else "whole")
    assert len(list((out / "vis").iterdir())) == 2
