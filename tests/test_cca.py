"""Criss-cross attention against the paper's definition, computed independently in NumPy."""
import numpy as np
import pytest

import jittor_env  # noqa: F401
import jittor as jt

import numpy_reference as ref
from jittor_helpers import load_random_float64
from models.cca import CrissCrossAttention, criss_cross_attention


def float64_module(channels, seed, gamma):
    module = CrissCrossAttention(channels)
    return module, load_random_float64(module, seed, gamma=np.array([gamma]))


pytestmark = pytest.mark.usefixtures("float64")


def random_qkv(seed, batch=2, height=5, width=7, reduced=3, channels=4):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((batch, reduced, height, width)),
            rng.standard_normal((batch, reduced, height, width)),
            rng.standard_normal((batch, channels, height, width)))


def test_operator_matches_pixel_loop_non_square_batched():
    q, k, v = random_qkv(0)
    out = criss_cross_attention(jt.array(q), jt.array(k), jt.array(v)).numpy()
    np.testing.assert_allclose(out, ref.criss_cross_attention(q, k, v), rtol=0, atol=1e-12)


def test_operator_float32_close_to_float64_reference():
    q, k, v = random_qkv(1, height=6, width=4)
    with jt.flag_scope(auto_convert_64_to_32=1):
        out = criss_cross_attention(jt.array(q), jt.array(k), jt.array(v))
    assert out.dtype == jt.float32
    np.testing.assert_allclose(out.numpy(), ref.criss_cross_attention(q, k, v), rtol=0, atol=1e-5)


def test_centre_pixel_counted_once():
    # Zero queries give equal logits, so each pixel averages its H + W - 1 path positions.
    height, width = 4, 6
    value = np.random.default_rng(2).standard_normal((1, 2, height, width))
    zeros = np.zeros((1, 1, height, width))
    out = criss_cross_attention(jt.array(zeros), jt.array(zeros), jt.array(value)).numpy()
    row_sum = value.sum(axis=3, keepdims=True)
    col_sum = value.sum(axis=2, keepdims=True)
    expected = (row_sum + col_sum - value) / (height + width - 1)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-12)


def test_operator_gradients_match_finite_differences():
    q, k, v = random_qkv(3, batch=2, height=3, width=4, reduced=2, channels=3)
    weights = np.random.default_rng(4).standard_normal(v.shape)  # a generic scalar loss
    inputs = [jt.array(q), jt.array(k), jt.array(v)]
    loss = (criss_cross_attention(*inputs) * jt.array(weights)).sum()
    grads = [g.numpy() for g in jt.grad(loss, inputs)]
    arrays = [q, k, v]
    for i, name in enumerate(["query", "key", "value"]):
        def f(x, i=i):
            args = list(arrays)
            args[i] = x
            return (ref.criss_cross_attention(*args) * weights).sum()
        expected = ref.numeric_gradient(f, arrays[i].copy())
        np.testing.assert_allclose(grads[i], expected, rtol=1e-6, atol=1e-8, err_msg=name)


def test_module_matches_reference_with_nonzero_gamma():
    module, params = float64_module(16, seed=5, gamma=0.7)
    x = np.random.default_rng(6).standard_normal((2, 16, 5, 3))
    out = module(jt.array(x)).numpy()
    np.testing.assert_allclose(out, ref.cca_module(x, params), rtol=0, atol=1e-10)


def test_module_gradients_wrt_input_and_gamma_match_finite_differences():
    module, params = float64_module(8, seed=7, gamma=0.9)
    x = np.random.default_rng(8).standard_normal((2, 8, 3, 4))
    weights = np.random.default_rng(9).standard_normal(x.shape)
    x_var = jt.array(x)
    loss = (module(x_var) * jt.array(weights)).sum()
    grad_x, grad_gamma = [g.numpy() for g in jt.grad(loss, [x_var, module.gamma])]

    expected_x = ref.numeric_gradient(lambda t: (ref.cca_module(t, params) * weights).sum(), x.copy())
    np.testing.assert_allclose(grad_x, expected_x, rtol=1e-6, atol=1e-8)

    def loss_of_gamma(g):
        return (ref.cca_module(x, {**params, "gamma": g}) * weights).sum()
    expected_gamma = ref.numeric_gradient(loss_of_gamma, params["gamma"].copy())
    np.testing.assert_allclose(grad_gamma, expected_gamma, rtol=1e-6)


def test_fresh_module_is_identity():
    module = CrissCrossAttention(16)
    assert module.gamma.shape == [1] and module.gamma.item() == 0
    x = np.random.default_rng(10).standard_normal((2, 16, 6, 5)).astype(np.float32)
    with jt.flag_scope(auto_convert_64_to_32=1):
        out = module(jt.array(x)).numpy()
    np.testing.assert_array_equal(out, x)


def changed_pixels(module, x, recurrence, pixel):
    """Which output pixels move when input pixel `pixel` is perturbed, after `recurrence` CCAs."""
    def run(t):
        out = jt.array(t)
        for _ in range(recurrence):
            out = module(out)
        return out.numpy()
    perturbed = x.copy()
    perturbed[:, :, pixel[0], pixel[1]] += 1.0
    return np.abs(run(perturbed) - run(x)).max(axis=(0, 1)) > 1e-9


def test_one_recurrence_sees_row_and_column_two_see_everything():
    height, width, pixel = 5, 6, (1, 4)
    module, _ = float64_module(8, seed=11, gamma=1.0)
    x = np.random.default_rng(12).standard_normal((1, 8, height, width))
    cross = np.zeros((height, width), dtype=bool)
    cross[pixel[0], :] = True
    cross[:, pixel[1]] = True
    np.testing.assert_array_equal(changed_pixels(module, x, 1, pixel), cross)
    assert changed_pixels(module, x, 2, pixel).all()


def test_parameter_names_and_shapes_match_official_checkpoints():
    shapes = {k: list(v.shape) for k, v in CrissCrossAttention(64).state_dict().items()}
    assert shapes == {
        "query_conv.weight": [8, 64, 1, 1], "query_conv.bias": [8],
        "key_conv.weight": [8, 64, 1, 1], "key_conv.bias": [8],
        "value_conv.weight": [64, 64, 1, 1], "value_conv.bias": [64],
        "gamma": [1],
    }


def test_too_few_channels_rejected():
    with pytest.raises(ValueError, match="in_channels must be >= 8.*got 4"):
        CrissCrossAttention(4)


@pytest.mark.parametrize("shape", [(16, 5, 5), (1, 8, 5, 5)])
def test_wrong_input_shape_rejected(shape):
    with pytest.raises(ValueError, match=r"expected a \[B, 16, H, W\] tensor"):
        CrissCrossAttention(16)(jt.zeros(shape))
