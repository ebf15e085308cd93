"""Training losses against a direct NumPy computation on tiny cases."""
import numpy as np
import pytest

import jittor as jt

import numpy_reference as ref
from losses import Ohem, segmentation_loss


def numpy_nll(logits, labels):
    up = ref.bilinear_resize(logits.astype(np.float64), *labels.shape[1:], align_corners=True)
    shifted = up - up.max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    safe = np.where(labels == 255, 0, labels)
    nll = -np.take_along_axis(logp, safe[:, None], axis=1)[:, 0]
    return nll, labels != 255


def case(seed, classes=5):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((2, classes, 3, 4)).astype(np.float32) * 2
    labels = rng.integers(0, classes, (2, 10, 13))
    labels[rng.random(labels.shape) < 0.2] = 255
    return logits, labels


def test_cross_entropy_averages_over_valid_pixels_of_upsampled_logits():
    logits, labels = case(0)
    nll, valid = numpy_nll(logits, labels)
    loss = segmentation_loss(jt.array(logits), jt.array(labels)).item()
    assert loss == pytest.approx(nll[valid].mean(), rel=1e-5)


def test_all_ignored_batch_gives_zero_not_nan():
    logits, labels = case(1)
    labels[:] = 255
    x = jt.array(logits)
    loss = segmentation_loss(x, jt.array(labels))
    assert loss.item() == 0.0
    assert np.isfinite(jt.grad(loss, x).numpy()).all()


def test_ohem_keeps_hard_pixels_but_at_least_min_kept():
    logits, labels = case(2)
    nll, valid = numpy_nll(logits, labels)
    prob = np.exp(-nll)
    for min_kept in (5, 40, 10_000):
        loss = segmentation_loss(jt.array(logits), jt.array(labels), Ohem(0.7, min_kept)).item()
        if valid.sum() <= min_kept:
            expected = nll[valid].mean()
        else:
            threshold = max(0.7, np.sort(prob[valid])[min_kept - 1])
            kept = valid & (prob <= threshold)
            assert kept.sum() >= min_kept
            expected = nll[kept].mean()
        assert loss == pytest.approx(expected, rel=1e-5), min_kept
