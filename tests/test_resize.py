"""Bilinear resizing by matrix products against the per-pixel definition."""
import numpy as np
import pytest

import jittor as jt
from jittor import nn

import numpy_reference as ref
from models.resize import resize_bilinear

CASES = [((3, 5), (8, 11)), ((17, 17), (128, 128)), ((9, 6), (4, 5)), ((1, 4), (3, 4))]


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("size_in,size_out", CASES, ids=str)
def test_resize_matches_per_pixel_reference(size_in, size_out, align_corners):
    x = np.random.default_rng(0).standard_normal((2, 3) + size_in).astype(np.float32)
    out = resize_bilinear(jt.array(x), size_out, align_corners).numpy()
    expected = ref.bilinear_resize(x.astype(np.float64), *size_out, align_corners=align_corners)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("align_corners", [False, True])
def test_resize_agrees_with_jittor_interpolate(align_corners):
    x = jt.randn(1, 4, 13, 10)
    ours = resize_bilinear(x, (40, 31), align_corners).numpy()
    theirs = nn.interpolate(x, size=(40, 31), mode="bilinear", align_corners=align_corners).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5)


@pytest.mark.parametrize("align_corners", [False, True])
def test_resize_gradient_is_the_adjoint_of_the_reference(align_corners):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 2, 4, 5)).astype(np.float32)
    upstream = rng.standard_normal((1, 2, 7, 3))
    x_var = jt.array(x)
    grad = jt.grad((resize_bilinear(x_var, (7, 3), align_corners) * jt.array(upstream)).sum(), x_var).numpy()
    # the resize is linear: d/dx_ij of sum(up * resize(x)) = sum(up * resize(e_ij))
    expected = np.zeros(x.shape)
    for index in np.ndindex(x.shape):
        impulse = np.zeros(x.shape)
        impulse[index] = 1
        expected[index] = (upstream * ref.bilinear_resize(impulse, 7, 3, align_corners)).sum()
    np.testing.assert_allclose(grad, expected, rtol=0, atol=1e-5)


def test_same_size_is_returned_unchanged():
    x = jt.randn(1, 2, 5, 6)
    assert resize_bilinear(x, (5, 6)) is x


@pytest.mark.parametrize("align_corners", [False, True])
def test_resizing_via_sizes_is_resizing_to_each_in_turn(float64, align_corners):
    x = np.random.default_rng(2).standard_normal((1, 3, 6, 9))
    expected = x
    for size in ((48, 72), (37, 50)):
        expected = ref.bilinear_resize(expected, *size, align_corners=align_corners)
    ours = resize_bilinear(jt.array(x), (37, 50), align_corners, via=((48, 72),)).numpy()
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-12)
    same = resize_bilinear(jt.array(x), (6, 9), align_corners, via=((6, 9),))
    np.testing.assert_array_equal(same.numpy(), x)
