"""The per-pixel cross-entropy, both as the CPU kernel (kernels/cross_entropy_cpu.py) and as the Jittor
operators used elsewhere (losses.pixel_cross_entropy, run here on the CPU): per-pixel losses and the
logits' gradient against NumPy float64 and its finite differences, and against Jittor's own
cross_entropy_loss; the training loss is the same through either."""
import numpy as np
import pytest

import jittor as jt
from jittor import nn

from kernels import cross_entropy_cpu
import losses

IGNORE = 255
FORMULATIONS = {"cpu kernel": cross_entropy_cpu.pixel_cross_entropy, "operators": losses.pixel_cross_entropy}


def case(dtype, shape, seed=0):
    """Logits, integer labels with ignored pixels (and one label beyond the classes), upstream."""
    rng = np.random.default_rng(seed)
    n, c, h, w = shape
    logits = (rng.normal(size=shape) * 4).astype(dtype)
    labels = rng.integers(0, c, (n, h, w)).astype(np.int32)
    labels[rng.random((n, h, w)) < 0.2] = IGNORE
    labels[0, 0, 0] = c  # not a class either
    return logits, labels, rng.normal(size=(n, h, w)).astype(dtype)


def numpy_nll(logits, labels):
    """Per-pixel -log softmax(logits)[label] in float64; 0 where the label is not a class."""
    shifted = logits - logits.max(1, keepdims=True)
    log_prob = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    valid = (labels >= 0) & (labels < logits.shape[1])
    picked = np.take_along_axis(log_prob, np.where(valid, labels, 0)[:, None], 1)[:, 0]
    return np.where(valid, -picked, 0.0)


def run(formulation, logits, labels, upstream):
    x = jt.array(logits)
    nll = FORMULATIONS[formulation](x, jt.array(labels))
    return nll.numpy(), jt.grad((nll * jt.array(upstream)).sum(), x).numpy()


@pytest.mark.parametrize("formulation", FORMULATIONS)
def test_float64_against_numpy_and_finite_differences(float64, formulation):
    logits, labels, upstream = case(np.float64, (2, 5, 3, 4))
    nll, grad = run(formulation, logits, labels, upstream)
    assert nll.dtype == grad.dtype == np.float64
    np.testing.assert_allclose(nll, numpy_nll(logits, labels), rtol=1e-12, atol=1e-12)
    step, numeric = 1e-6, np.zeros_like(logits)
    for i in np.ndindex(logits.shape):
        moved = logits.copy()
        moved[i] += step
        up = (numpy_nll(moved, labels) * upstream).sum()
        moved[i] -= 2 * step
        numeric[i] = (up - (numpy_nll(moved, labels) * upstream).sum()) / (2 * step)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)
    ignored = labels[:, None].repeat(5, 1) >= 5
    assert ignored.any() and (grad[ignored] == 0).all()


@pytest.mark.parametrize("formulation", FORMULATIONS)
def test_float32_as_jittors_cross_entropy_over_several_pixel_blocks(formulation):
    """150 classes, 391 pixels a map: more than one block of pixels (the kernel's), the last partial."""
    logits, labels, upstream = case(np.float32, (2, 150, 17, 23), seed=1)
    nll, grad = run(formulation, logits, labels, upstream)
    x = jt.array(logits)
    plain = nn.cross_entropy_loss(x, jt.array(labels), ignore_index=IGNORE, reduction="none").reshape(labels.shape)
    plain_grad = jt.grad((plain * jt.array(upstream)).sum(), x).numpy()
    assert nll.dtype == grad.dtype == np.float32
    np.testing.assert_allclose(nll, plain.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(grad, plain_grad, rtol=1e-5, atol=1e-6)


def test_training_loss_is_the_same_through_either(monkeypatch):
    """segmentation_loss takes the operators where the kernel is not available (on GPUs)."""
    rng = np.random.default_rng(2)
    logits = jt.array(rng.normal(size=(2, 150, 9, 11)).astype(np.float32) * 3)
    labels = rng.integers(0, 150, (2, 33, 41)).astype(np.int32)
    labels[rng.random(labels.shape) < 0.3] = IGNORE
    labels = jt.array(labels)
    results = {}
    for kernel in (True, False):
        monkeypatch.setattr(cross_entropy_cpu, "available", lambda x, kernel=kernel: kernel)
        calls = []
        monkeypatch.setattr(losses, "pixel_cross_entropy",
                            lambda *a, f=losses.pixel_cross_entropy: calls.append(1) or f(*a))
        loss = losses.segmentation_loss(logits, labels)
        results[kernel] = (loss.item(), jt.grad(loss, logits).numpy())
        assert bool(calls) != kernel  # the operators ran exactly where the kernel was unavailable
        monkeypatch.undo()
    assert results[True][0] == pytest.approx(results[False][0], rel=1e-6)
    np.testing.assert_allclose(results[False][1], results[True][1], rtol=1e-5, atol=1e-9)
