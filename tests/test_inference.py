"""Whole, sliding-window, multi-scale and flip inference, and evaluation over a split."""

import numpy as np
import pytest

import jittor as jt
from jittor import nn

from datasets import ADE20K
from datasets import transforms as T
from inference import Protocol, evaluate, predict, tile_starts

from datasets import synthetic


class PixelModel(nn.Module):
    """Logits = the normalised pixel itself (3 classes): position-free, so every protocol agrees."""

    def execute(self, x):
        return x * 1.0


class ConstantModel(nn.Module):
    """Logits favouring one class everywhere, at stride 8 like CCNet."""

    def __init__(self, num_classes, favourite):
        self.bias = np.zeros(num_classes, np.float32)
        self.bias[favourite] = 1.0

    def execute(self, x):
        n, _, h, w = x.shape
        return jt.array(self.bias).reshape(1, -1, 1, 1).broadcast((n, len(self.bias), (h + 7) // 8, (w + 7) // 8))


@pytest.mark.parametrize("size,crop,stride", [(1000, 512, 341), (512, 512, 341), (300, 512, 341), (700, 256, 100)])
def test_tiles_cover_the_image_and_end_flush(size, crop, stride):
    starts = tile_starts(size, crop, stride)
    covered = np.zeros(size, bool)
    for s in starts:
        covered[s:s + crop] = True
    assert covered.all() and starts[0] == 0 and min(starts[-1] + crop, size) == size
    assert all(b - a <= stride for a, b in zip(starts, starts[1:]))


def image(seed, h=150, w=220):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3)).astype(np.uint8)


def test_sliding_windows_are_stitched_where_they_came_from():
    x = image(0)
    whole = predict(PixelModel(), x, T.IMAGENET, Protocol("whole"))
    slide = predict(PixelModel(), x, T.IMAGENET, Protocol("slide", crop_size=160, stride=70))
    np.testing.assert_allclose(slide, whole, rtol=0, atol=1e-5)


def test_flip_and_scales_keep_a_position_free_prediction():
    x = np.kron(image(1, 15, 22), np.ones((10, 10, 1), np.uint8))  # 10-pixel blocks survive resizing
    single = predict(PixelModel(), x, T.IMAGENET, Protocol("whole")).argmax(0)
    both = predict(PixelModel(), x, T.IMAGENET, Protocol("whole", scales=(1.0,), flip=True))
    np.testing.assert_array_equal(both.argmax(0), single)
    expected = T.IMAGENET(x).argmax(0)
    assert (single == expected).mean() > 0.97  # resizing to 512 and back blurs block edges


def test_probabilities_are_at_the_original_size_and_sum_to_one():
    probs = predict(PixelModel(), image(2, 97, 61), T.MIT_CAFFE, Protocol("slide", scales=(0.5, 1.0), flip=True,
                                                                        crop_size=256, stride=128))
    assert probs.shape == (3, 97, 61)
    np.testing.assert_allclose(probs.sum(0), 1, rtol=1e-5)


def test_bad_protocols_are_refused():
    with pytest.raises(ValueError, match="mode must be 'whole' or 'slide'"):
        Protocol("tiles")
    with pytest.raises(ValueError, match="stride must be in 1..crop_size"):
        Protocol("slide", crop_size=256, stride=300)
    with pytest.raises(ValueError, match="scales must be positive"):
        Protocol(scales=(0.0,))


def test_evaluate_scores_every_file_at_full_resolution(tmp_path):
    synthetic.write_ade20k(str(tmp_path), train=1, val=3, size=96)
    dataset = ADE20K(str(tmp_path), "validation")
    seen = []
    results = evaluate(ConstantModel(150, favourite=0), dataset, Protocol(), 150, progress=False,
                       on_prediction=lambda i, im, lab, pred: seen.append(pred.shape == lab.shape))
    labels = [dataset.read(i)[1] for i in range(3)]
    valid = sum((lab != 255).sum() for lab in labels)
    walls = sum((lab == 0).sum() for lab in labels)  # class 0 = wall
    assert seen == [True] * 3
    assert results["IoU"][0] == pytest.approx(walls / valid)
    assert results["aAcc"] == pytest.approx(walls / valid)
