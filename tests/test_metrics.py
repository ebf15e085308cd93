"""Metrics: known answers, dataset-level accumulation, and real ADE20K annotations."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datasets.ade20k import to_train_ids
from metrics import SegmentationMetrics

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "ade20k_sample"


def test_known_answer_table():
    label = np.array([[0, 0, 1], [1, 255, 2]])
    prediction = np.array([[0, 1, 1], [1, 0, 2]])
    metrics = SegmentationMetrics(4)
    metrics.update(prediction, label)
    r = metrics.results()
    assert r["aAcc"] == pytest.approx(4 / 5)
    np.testing.assert_allclose(r["IoU"], [1 / 2, 2 / 3, 1, np.nan])
    np.testing.assert_allclose(r["Acc"], [1 / 2, 1, 1, np.nan])
    assert r["mIoU"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert r["mAcc"] == pytest.approx((1 / 2 + 1 + 1) / 3)
    assert r["mIoU_devkit"] == pytest.approx((1 / 2 + 2 / 3 + 1 + 0) / 4)


def test_sums_over_the_dataset_before_dividing():
    metrics = SegmentationMetrics(2)
    metrics.update(np.array([0, 0, 0, 0]), np.array([0, 0, 0, 1]))  # class 0: I 3, U 4
    metrics.update(np.array([1]), np.array([0]))                      # class 0: I 0, U 1
    iou = metrics.results()["IoU"][0]
    assert iou == pytest.approx(3 / 5)  # not the mean of the per-image 3/4 and 0


def test_ignored_pixels_count_nowhere():
    metrics = SegmentationMetrics(3)
    metrics.update(np.array([2, 2, 1]), np.array([255, 255, 1]))
    r = metrics.results()
    assert r["aAcc"] == 1.0 and r["IoU"][1] == 1.0 and np.isnan(r["IoU"][2])


def test_pixels_predicted_as_no_class_count_as_misses():
    metrics = SegmentationMetrics(2)
    metrics.update(np.array([255, 0, 1]), np.array([0, 0, 1]))
    r = metrics.results()
    assert r["aAcc"] == pytest.approx(2 / 3) and r["IoU"][0] == pytest.approx(1 / 2) and r["IoU"][1] == 1.0


def test_out_of_range_values_are_rejected():
    metrics = SegmentationMetrics(3)
    with pytest.raises(ValueError, match="predictions must be 0..2 or 255, found 3"):
        metrics.update(np.array([3]), np.array([1]))
    with pytest.raises(ValueError, match="labels must be 0..2 or 255"):
        metrics.update(np.array([1]), np.array([7]))
    with pytest.raises(ValueError, match="differ in shape"):
        metrics.update(np.array([1, 2]), np.array([1]))


@pytest.mark.skipif(not SAMPLE.is_dir(), reason=f"{SAMPLE} is absent: the real ADE20K annotations are "
                    "read from there, not committed")
def test_real_annotations_against_a_direct_computation():
    labels = [to_train_ids(np.asarray(Image.open(p)))
              for p in sorted((SAMPLE / "annotations" / "validation").glob("*.png"))]
    rng = np.random.default_rng(0)
    predictions = []
    for label in labels:  # a shifted label with some noise: a plausible, imperfect prediction
        prediction = np.roll(np.where(label == 255, 0, label), (7, -5), axis=(0, 1)).astype(np.int64)
        noise = rng.random(label.shape) < 0.1
        prediction[noise] = rng.integers(0, 150, noise.sum())
        predictions.append(prediction)
    metrics = SegmentationMetrics(150)
    for prediction, label in zip(predictions, labels):
        metrics.update(prediction, label)
    r = metrics.results()

    inter, union, labelled = np.zeros(150), np.zeros(150), np.zeros(150)
    for prediction, label in zip(predictions, labels):
        for c in range(150):
            valid = label != 255
            p, t = (prediction == c) & valid, (label == c) & valid
            inter[c] += (p & t).sum()
            union[c] += (p | t).sum()
            labelled[c] += t.sum()
    present = union > 0
    np.testing.assert_allclose(np.array(r["IoU"])[present], (inter / np.where(present, union, 1))[present])
    assert np.isnan(np.array(r["IoU"])[~present]).all()
    assert r["mIoU"] == pytest.approx((inter[present] / union[present]).mean())
    assert r["mIoU_devkit"] == pytest.approx((inter[present] / union[present]).sum() / 150)
    assert r["aAcc"] == pytest.approx(inter.sum() / labelled.sum())
    assert 0.3 < r["aAcc"] < 0.95
