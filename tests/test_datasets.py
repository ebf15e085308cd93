"""The ADE20K loader and transforms: real devkit files, alignment, validation, the generator."""
import csv
import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datasets import ADE20K, CLASSES, NAMES, PALETTE, DatasetError, Loader
from datasets import transforms as T
from datasets.ade20k import to_train_ids

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT.parent / "shared" / "data" / "ade20k_sample"
needs_sample = pytest.mark.skipif(not SAMPLE.is_dir(), reason=f"{SAMPLE} is absent: the three real "
                                  "ADE20K validation images are read from there, not committed")
from datasets import synthetic


def test_label_mapping_ignores_other_and_shifts_classes():
    annotation = np.array([[0, 1, 2], [75, 149, 150]], np.uint8)
    np.testing.assert_array_equal(to_train_ids(annotation), [[255, 0, 1], [74, 148, 149]])


@needs_sample
def test_class_names_follow_the_official_list():
    with open(SAMPLE / "objectInfo150.csv") as f:
        official = [row["Name"] for row in csv.DictReader(f)]
    assert list(CLASSES) == official
    assert NAMES[0] == "wall" and NAMES[149] == "flag"
    assert PALETTE.shape == (150, 3) and tuple(PALETTE[0]) == (120, 120, 120)
    # the standard palette gives road and skyscraper the same grey; every other colour is unique
    assert len({tuple(c) for c in PALETTE}) == 149 and (PALETTE[6] == PALETTE[48]).all()


@needs_sample
def test_real_validation_images_load_with_mapped_labels():
    dataset = ADE20K(str(SAMPLE), "validation", backbone="resnet101")
    assert len(dataset.files) == 3
    for i, (_, annotation_path) in enumerate(dataset.files):
        raw = np.asarray(Image.open(annotation_path))
        image, label = dataset[i]
        np.testing.assert_array_equal(label, np.where(raw == 0, 255, raw.astype(np.int32) - 1))
        h, w = T.keep_ratio_size(*raw.shape, T.SCALE)
        assert image.shape == (3, h, w) and image.dtype == np.float32 and min(h, w) == 512


@needs_sample
@pytest.mark.parametrize("backbone", ["resnet101", "van_base"])
def test_augmented_real_samples_have_crop_shape_and_valid_labels(backbone):
    dataset = ADE20K(str(SAMPLE), "validation", backbone=backbone, crop_size=512, augment=True)
    for draw in range(12):
        image, label = dataset[draw]
        assert image.shape == (3, 512, 512) and label.shape == (512, 512)
        assert set(np.unique(label)) <= set(range(150)) | {255}


def test_normalisation_is_a_property_of_the_backbone():
    pixel = np.array([[[10, 20, 30]]], np.uint8)  # RGB
    caffe = T.normalization_for("resnet101")(pixel)[:, 0, 0]
    np.testing.assert_allclose(caffe, [30 - 104.00699, 20 - 116.66877, 10 - 122.67891], rtol=1e-6)
    imagenet = T.normalization_for("van_base")(pixel)[:, 0, 0]
    np.testing.assert_allclose(imagenet, [(10 - 123.675) / 58.395, (20 - 116.28) / 57.12,
                                          (30 - 103.53) / 57.375], rtol=1e-6)
    with pytest.raises(ValueError, match="no input normalisation known for backbone 'resnet50'"):
        T.normalization_for("resnet50")


def encoded_scene(seed, height=300, width=420):
    """Labels in blocks, and an image whose every pixel spells its own label (R = label)."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 150, (height // 30 + 1, width // 30 + 1)).astype(np.uint8)
    label = np.kron(blocks, np.ones((30, 30), np.uint8))[:height, :width]
    label[:20, :20] = 255
    image = np.stack([label, np.full_like(label, 7), np.full_like(label, 9)], axis=2)
    return image, label


@pytest.mark.parametrize("seed", range(8))
def test_image_and_label_stay_aligned_through_random_geometry(seed):
    image, label = encoded_scene(seed)
    rng = np.random.default_rng(seed)
    out_image, out_label = T.random_geometry(image, label, rng, crop=256)
    out_image, out_label = T.pad(np.ascontiguousarray(out_image.transpose(2, 0, 1)), out_label, 256)
    decoded = out_image[0].astype(np.int64)
    # away from block edges (where bilinear resizing blends neighbours) the image spells the label
    interior = np.ones_like(out_label, bool)
    for dy in (-2, -1, 0, 1, 2):
        for dx in (-2, -1, 0, 1, 2):
            interior &= np.roll(out_label, (dy, dx), axis=(0, 1)) == out_label
    checked = interior & (out_label != 255)
    assert checked.sum() > 1000
    np.testing.assert_array_equal(decoded[checked], out_label[checked])


def test_photometric_distortion_changes_colours_not_geometry():
    image, label = encoded_scene(0)
    for seed in range(6):
        geometry = T.random_geometry(image, label, np.random.default_rng(seed), crop=256)
        full_image, full_label = T.train_transform(image, label, np.random.default_rng(seed),
                                                   T.IMAGENET, crop=256)
        np.testing.assert_array_equal(full_label[:geometry[1].shape[0], :geometry[1].shape[1]], geometry[1])
        assert full_image.shape == (3, 256, 256)


def test_crop_prefers_windows_where_no_class_dominates():
    label = np.zeros((512, 1024), np.uint8)
    label[:, 640:] = 1  # about half of all 512-wide windows have one class above 75%
    image = np.zeros(label.shape + (3,), np.uint8)

    def dominated(window):
        counts = np.bincount(window.ravel())
        return counts.max() / counts.sum() >= 0.75
    single_draws = sum(dominated(label[:, left:left + 512]) for left in range(513))
    assert 200 < single_draws < 320
    retried = sum(dominated(T.random_crop(image, label, 512, np.random.default_rng(seed))[1])
                  for seed in range(40))
    assert retried <= 2  # ten tries leave a dominated crop about once in a thousand


def test_labels_are_resized_with_nearest_neighbour_only():
    label = np.random.default_rng(1).integers(0, 150, (37, 53)).astype(np.uint8)
    image = np.zeros(label.shape + (3,), np.uint8)
    for seed in range(5):
        _, out = T.random_geometry(image, label, np.random.default_rng(seed), crop=64)
        assert set(np.unique(out)) <= set(np.unique(label))


def make_split(root, names, size=(40, 30), value=5):
    (root / "images" / "training").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / "training").mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.new("RGB", size, (90, 90, 90)).save(root / "images" / "training" / f"{name}.jpg")
        Image.new("L", size, value).save(root / "annotations" / "training" / f"{name}.png")
    return root


def test_images_without_annotations_are_reported_by_name(tmp_path):
    root = make_split(tmp_path, [f"ADE_train_{i:08d}" for i in range(1, 9)])
    for i in (2, 5):
        (root / "annotations" / "training" / f"ADE_train_{i:08d}.png").unlink()
    with pytest.raises(DatasetError, match=r"2 images without annotations .*ADE_train_00000002\.jpg, "
                                           r"ADE_train_00000005\.jpg"):
        ADE20K(str(root), "training")


def test_annotations_without_images_are_reported_by_name(tmp_path):
    root = make_split(tmp_path, ["a", "b"])
    (root / "images" / "training" / "b.jpg").unlink()
    with pytest.raises(DatasetError, match=r"1 annotations without images .*\(b\.png\)"):
        ADE20K(str(root), "training")


def test_empty_split_and_missing_folders_are_refused(tmp_path):
    with pytest.raises(DatasetError, match="the split is empty"):
        ADE20K(str(make_split(tmp_path / "empty", [])), "training")
    with pytest.raises(DatasetError, match=r"images/validation: no such folder"):
        ADE20K(str(make_split(tmp_path / "train_only", ["a"])), "validation")
    with pytest.raises(DatasetError, match="split must be one of"):
        ADE20K(str(tmp_path), "test")


def test_truncated_image_raises_naming_the_file(tmp_path):
    root = make_split(tmp_path, ["a"], size=(200, 160))
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (160, 200, 3), np.uint8)).save(
        root / "images" / "training" / "a.jpg")
    path = root / "images" / "training" / "a.jpg"
    path.write_bytes(path.read_bytes()[:2000])
    dataset = ADE20K(str(root), "training", crop_size=64)
    with pytest.raises(DatasetError, match=r"a\.jpg: unreadable image"):
        dataset[0]


def test_annotation_of_another_size_raises_naming_the_file(tmp_path):
    root = make_split(tmp_path, ["a"])
    Image.new("L", (41, 30), 5).save(root / "annotations" / "training" / "a.png")
    with pytest.raises(DatasetError, match=r"a\.png: annotation is 41x30 but its image is 40x30"):
        ADE20K(str(root), "training")[0]


def test_annotation_values_above_150_raise_naming_the_file(tmp_path):
    root = make_split(tmp_path, ["a"], value=151)
    with pytest.raises(DatasetError, match=r"a\.png: annotation values must be 0\.\.150, found 151"):
        ADE20K(str(root), "training")[0]


def test_draws_fix_order_and_augmentation_by_seed_alone(tmp_path):
    synthetic.write_ade20k(str(tmp_path), train=4, val=1, size=96)
    first = ADE20K(str(tmp_path), "training", crop_size=64, seed=3)
    again = ADE20K(str(tmp_path), "training", crop_size=64, seed=3)
    epoch0 = [first.file_index(d) for d in range(4)]
    epoch1 = [first.file_index(d) for d in range(4, 8)]
    assert sorted(epoch0) == sorted(epoch1) == [0, 1, 2, 3] and epoch0 != epoch1
    assert [again.file_index(d) for d in range(8)] == epoch0 + epoch1
    np.testing.assert_array_equal(first[5][0], again[5][0])
    same_file_next_epoch = 4 + epoch1.index(epoch0[0])
    assert not np.array_equal(first[0][0], first[same_file_next_epoch][0])
    resumed = Loader(first, batch_size=4, start=8, stop=32)  # a schedule of 8 batches, resumed after 2
    assert [list(draws) for draws in resumed.batches] == [list(range(b, b + 4)) for b in range(8, 32, 4)]


def tree_digest(folder):
    digest = hashlib.sha256()
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return digest.hexdigest()


def test_generator_is_deterministic_by_seed(tmp_path):
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        synthetic.write_ade20k(str(tmp_path / name), train=3, val=2, size=64, seed=seed)
    assert tree_digest(tmp_path / "a") == tree_digest(tmp_path / "b") != tree_digest(tmp_path / "c")
    dataset = ADE20K(str(tmp_path / "a"), "validation")
    assert len(dataset.files) == 2


def test_generated_long_range_class_is_told_only_by_the_far_cue(tmp_path):
    for index in range(20):
        image, label = synthetic.draw_scene(np.random.default_rng([5, 0, index]), 128)
        target = synthetic.SOFA if (label == synthetic.SOFA).any() \
            else synthetic.ARMCHAIR
        ellipse = label == target
        cue = label == synthetic.PAINTING
        assert ellipse.any() and cue.any() and (label == 0).any()
        rows, cols = np.nonzero(ellipse)
        cue_rows, cue_cols = np.nonzero(cue)
        assert not set(rows) & set(cue_rows) and not set(cols) & set(cue_cols)
        cue_colour = image[cue].mean(axis=0)
        assert (cue_colour[0] > cue_colour[2]) == (target == synthetic.SOFA)
        assert np.abs(image[ellipse].mean(axis=0) - 128).max() < 10  # the same grey either way


def test_worker_processes_give_the_batches_of_the_reading_process(tmp_path):
    synthetic.write_ade20k(str(tmp_path), train=12, val=1, size=96)
    dataset = ADE20K(str(tmp_path), "training", crop_size=64)
    here = list(Loader(dataset, batch_size=4, stop=20))
    with Loader(dataset, batch_size=4, stop=20, workers=2) as loader:
        there = list(loader)
    assert [(i.shape, l.shape) for i, l in there] == [((4, 3, 64, 64), (4, 64, 64))] * 5
    for (image, label), (image_w, label_w) in zip(here, there):
        np.testing.assert_array_equal(image, image_w)
        np.testing.assert_array_equal(label, label_w)
