"""Training losses against a direct NumPy computation on tiny cases."""
import numpy as np
import pytest

import jittor as jt

import numpy_reference as ref
import losses
from losses import CategoryConsistency, Ohem, category_consistent_loss, segmentation_loss


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
    """With factor 1 (no zoom) the threshold is the larger of 0.7 and the min_kept-th lowest probability."""
    logits, labels = case(2)
    nll, valid = numpy_nll(logits, labels)
    prob = np.exp(-nll)
    for min_kept in (5, 40, 10_000):
        loss = segmentation_loss(jt.array(logits), jt.array(labels), Ohem(0.7, min_kept, factor=1)).item()
        if valid.sum() <= min_kept:
            expected = nll[valid].mean()
        else:
            threshold = max(0.7, np.sort(prob[valid])[min_kept - 1])
            kept = valid & (prob <= threshold)
            assert kept.sum() >= min_kept
            expected = nll[kept].mean()
        assert loss == pytest.approx(expected, rel=1e-5), min_kept


def official_ohem(logits, labels, threshold, min_kept):
    """OhemCrossEntropy2d of the official code with NumPy and scipy: softmax of the upsampled logits,
    its threshold, the mean loss of the kept pixels. Returns the loss and the threshold."""
    pytest.importorskip("scipy.ndimage")
    nll, valid = numpy_nll(logits, labels)
    up = ref.bilinear_resize(logits.astype(np.float64), *labels.shape[1:], align_corners=True)
    prob = np.exp(up - up.max(axis=1, keepdims=True))
    prob = (prob / prob.sum(axis=1, keepdims=True)).astype(np.float32)
    chosen = ref.official_ohem_threshold(prob, labels, threshold, min_kept)
    true_prob = np.take_along_axis(prob, np.where(valid, labels, 0)[:, None], axis=1)[:, 0]
    kept = valid & (true_prob <= chosen)
    return nll[kept].mean(), chosen


@pytest.mark.parametrize("sharpness", [2, 8])
def test_ohem_is_the_official_ohem(sharpness):
    """Labels 45 x 61 zoom to 6 x 8 (round(7.625)); min_kept picks each of the official branches."""
    rng = np.random.default_rng(sharpness)
    logits = rng.standard_normal((2, 5, 6, 8)).astype(np.float32) * sharpness
    labels = rng.integers(0, 5, (2, 45, 61))
    labels[rng.random(labels.shape) < 0.2] = 255
    thresholds = []
    for min_kept in (30, 64 * 10, 64 * 60, 100_000):
        expected, chosen = official_ohem(logits, labels, 0.7, min_kept)
        thresholds.append(chosen)
        loss = segmentation_loss(jt.array(logits), jt.array(labels), Ohem(0.7, min_kept)).item()
        assert loss == pytest.approx(expected, rel=1e-5), (min_kept, chosen)
    assert thresholds[0] == 0.7 and thresholds[-1] == 1.0
    if sharpness == 8:  # confident logits: the 60th lowest zoomed probability is above 0.7
        assert 0.7 < thresholds[2] < 1.0


def test_zoomed_probability_is_scipy_zoom_then_the_true_class():
    zoom = pytest.importorskip("scipy.ndimage").zoom
    rng = np.random.default_rng(3)
    for height, width in ((36, 44), (45, 61), (8, 17), (513, 7)):  # 36 / 8 = 4.5 rounds to 4
        prob = rng.random((2, 4, height, width)).astype(np.float32)
        labels = rng.integers(0, 4, (2, height, width))
        labels[rng.random(labels.shape) < 0.3] = 255
        small, value = losses.zoomed_true_class_probability(jt.array(prob), labels, 8)
        expected_labels = zoom(labels, (1.0, 0.125, 0.125), order=0)
        np.testing.assert_array_equal(small, expected_labels)
        n, i, j = np.nonzero(small != 255)
        expected = zoom(prob, (1.0, 1.0, 0.125, 0.125), order=1)[n, small[n, i, j], i, j]
        np.testing.assert_allclose(value, expected, rtol=1e-6, atol=1e-7)


def numpy_ccl(embedding, labels, w):
    """The category consistent loss with loops over images, classes, pixels and class pairs."""
    n, _, h, width = embedding.shape
    totals = []
    for image in range(n):
        small = np.array([[labels[image, r * labels.shape[1] // h, c * labels.shape[2] // width]
                           for c in range(width)] for r in range(h)])
        classes = [c for c in np.unique(small) if c != 255]
        if not classes:
            continue
        centres, l_var = [], 0.0
        for c in classes:
            pixels = [embedding[image, :, r, q] for r in range(h) for q in range(width) if small[r, q] == c]
            mu = np.mean(pixels, axis=0)
            centres.append(mu)
            phis = []
            for x in pixels:
                d = np.linalg.norm(mu - x)
                phis.append(d - w.delta_d + (w.delta_d - w.delta_v) ** 2 if d > w.delta_d
                            else (d - w.delta_v) ** 2 if d > w.delta_v else 0.0)
            l_var += np.mean(phis) / len(classes)
        pairs = [(a, b) for a in range(len(classes)) for b in range(len(classes)) if a != b]
        l_dis = 0.0
        for a, b in pairs:
            d = np.linalg.norm(centres[a] - centres[b])
            l_dis += (2 * w.delta_d - d) ** 2 / len(pairs) if d <= 2 * w.delta_d else 0.0
        l_reg = np.mean([np.linalg.norm(mu) for mu in centres])
        totals.append(w.alpha * l_var + w.beta * l_dis + w.gamma * l_reg)
    return np.mean(totals)


@pytest.mark.parametrize("scale", [0.3, 1.0, 3.0])  # distances below dv, between, above dd
def test_category_consistent_loss_matches_loops(scale):
    rng = np.random.default_rng(3)
    embedding = (rng.standard_normal((2, 4, 3, 5)) * scale).astype(np.float32)
    labels = rng.integers(0, 4, (2, 12, 20))
    labels[rng.random(labels.shape) < 0.2] = 255
    labels[1, :6] = 2  # one image dominated by a class, with a different class count
    w = CategoryConsistency()
    loss = category_consistent_loss(jt.array(embedding), jt.array(labels), w).item()
    assert loss == pytest.approx(numpy_ccl(embedding.astype(np.float64), labels, w), rel=1e-5)


def test_category_consistent_loss_single_class_and_unlabelled_images():
    rng = np.random.default_rng(4)
    embedding = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    labels = np.full((2, 8, 8), 255)
    labels[0] = 7  # one class: no pairs, so no l_dis term
    x = jt.array(embedding)
    loss = category_consistent_loss(x, jt.array(labels))
    assert loss.item() == pytest.approx(numpy_ccl(embedding.astype(np.float64), labels, CategoryConsistency()),
                                        rel=1e-5)
    assert np.isfinite(jt.grad(loss, x).numpy()).all()
    labels[0] = 255
    assert category_consistent_loss(x, jt.array(labels)).item() == 0.0


def test_category_consistent_loss_gradient_matches_finite_differences():
    rng = np.random.default_rng(5)
    embedding = rng.standard_normal((1, 3, 3, 3)).astype(np.float32)
    labels = rng.integers(0, 3, (1, 3, 3))
    w = CategoryConsistency()
    x = jt.array(embedding)
    grad = jt.grad(category_consistent_loss(x, jt.array(labels), w), x).numpy()
    base = embedding.astype(np.float64)
    eps = 1e-6
    for index in [(0, 0, 0, 0), (0, 1, 1, 2), (0, 2, 2, 1)]:
        plus, minus = base.copy(), base.copy()
        plus[index] += eps
        minus[index] -= eps
        numeric = (numpy_ccl(plus, labels, w) - numpy_ccl(minus, labels, w)) / (2 * eps)
        assert grad[index] == pytest.approx(numeric, rel=1e-3, abs=1e-4), index
