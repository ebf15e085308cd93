"""The fused CPU criss-cross attention against the batched-matmul reference and the pixel loop."""
import numpy as np
import pytest

import jittor as jt

import numpy_reference as ref
from jittor_helpers import load_random_float64
from kernels import cca_cpu
from models.cca import CrissCrossAttention, criss_cross_attention_bmm
from kernels.cca_cpu import CrissCrossAttentionCPU

pytestmark = pytest.mark.skipif(jt.flags.use_cuda == 1 or jt.mkl_ops is None,
                                reason="the fused kernel runs on the CPU with oneDNN only")

SHAPES = [(2, 3, 5, 7, 16), (3, 4, 7, 4, 24), (1, 2, 1, 6, 8), (1, 2, 5, 1, 8), (2, 8, 9, 9, 64)]


def random_inputs(seed, batch, reduced, height, width, channels):
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal((batch, reduced, height, width)),
              rng.standard_normal((batch, reduced, height, width)),
              rng.standard_normal((batch, channels, height, width)),
              rng.standard_normal((batch, channels, height, width))]
    return [a.astype(np.float32) for a in arrays]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_fused_forward_matches_reference_and_pixel_loop(shape):
    q, k, v, _ = random_inputs(0, *shape)
    fused = cca_cpu.criss_cross_attention(jt.array(q), jt.array(k), jt.array(v)).numpy()
    reference = criss_cross_attention_bmm(jt.array(q), jt.array(k), jt.array(v)).numpy()
    np.testing.assert_allclose(fused, reference, rtol=1e-5, atol=1e-5)
    exact = ref.criss_cross_attention(q.astype(np.float64), k.astype(np.float64), v.astype(np.float64))
    np.testing.assert_allclose(fused, exact, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_fused_gradients_match_reference(shape):
    q, k, v, upstream = random_inputs(1, *shape)
    grads = []
    for op in (cca_cpu.criss_cross_attention, criss_cross_attention_bmm):
        inputs = [jt.array(q), jt.array(k), jt.array(v)]
        grads.append([g.numpy() for g in jt.grad((op(*inputs) * jt.array(upstream)).sum(), inputs)])
    for name, fused, reference in zip(["query", "key", "value"], *grads):
        scale = np.abs(reference).max()
        np.testing.assert_allclose(fused / scale, reference / scale, rtol=0, atol=1e-5, err_msg=name)


def test_centre_pixel_counted_once_by_the_fused_kernel():
    height, width = 4, 6
    value = np.random.default_rng(2).standard_normal((1, 2, height, width)).astype(np.float32)
    zeros = np.zeros((1, 1, height, width), np.float32)
    out = cca_cpu.criss_cross_attention(jt.array(zeros), jt.array(zeros), jt.array(value)).numpy()
    expected = (value.sum(3, keepdims=True) + value.sum(2, keepdims=True) - value) / (height + width - 1)
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)


def test_backward_keeps_only_the_attention_and_the_inputs():
    q, k, v, _ = random_inputs(3, 2, 4, 6, 5, 32)
    function = CrissCrossAttentionCPU()
    function(jt.array(q), jt.array(k), jt.array(v))
    assert [list(t.shape) for t in function.saved] == [
        [2, 4, 6, 5], [2, 4, 6, 5], [2, 32, 6, 5], [2, 6, 5, 5], [2, 5, 6, 6]]


def test_module_uses_the_fused_kernel_for_float32_on_cpu(monkeypatch):
    calls = []
    real = cca_cpu.criss_cross_attention
    monkeypatch.setattr(cca_cpu, "criss_cross_attention", lambda *a: calls.append(1) or real(*a))
    module = CrissCrossAttention(16)
    params = {n: np.random.default_rng(4).standard_normal(p.shape).astype(np.float32) * 0.5
              for n, p in module.state_dict().items()}
    params["gamma"] = np.array([0.6], np.float32)
    module.load_parameters(params)
    x = np.random.default_rng(5).standard_normal((2, 16, 5, 6)).astype(np.float32)
    out = module(jt.array(x)).numpy()
    assert calls == [1]
    expected = ref.cca_module(x.astype(np.float64), {n: p.astype(np.float64) for n, p in params.items()})
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    assert cca_cpu.available(jt.array(x)) and not cca_cpu.available(jt.array(x).float64())


# one block of the d gamma sum, several with a partial last one (2 x 3 x 150 x 151 = 135900 values)
@pytest.mark.parametrize("shape", [(1, 2, 3, 4), (2, 3, 150, 151)], ids=str)
def test_scaled_residual_and_its_gradients_match_float64(shape):
    rng = np.random.default_rng(6)
    gamma, out, x, upstream = (np.array([0.37]), rng.standard_normal(shape), rng.standard_normal(shape),
                               rng.standard_normal(shape))
    inputs = [jt.array(a.astype(np.float32)) for a in (gamma, out, x)]
    y = cca_cpu.scaled_residual(*inputs)
    loss = (y * jt.array(upstream.astype(np.float32))).sum()
    d_gamma, d_out, d_x = [g.numpy() for g in jt.grad(loss, inputs)]
    np.testing.assert_allclose(y.numpy(), gamma * out + x, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(d_gamma, [(out * upstream).sum()], rtol=1e-5)
    np.testing.assert_allclose(d_out, gamma * upstream, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(d_x, upstream, rtol=1e-6, atol=1e-7)


def test_module_gradients_match_the_float64_module(float64):
    """The fused path (float32: both kernels) against the plain one (float64) through the module."""
    rng = np.random.default_rng(7)
    x, upstream = rng.standard_normal((2, 16, 6, 5)), rng.standard_normal((2, 16, 6, 5))
    plain = CrissCrossAttention(16)
    params = load_random_float64(plain, seed=8, gamma=np.array([0.6]))
    fused = CrissCrossAttention(16)
    fused.load_parameters({name: value.astype(np.float32) for name, value in params.items()})
    grads = []
    for module, dtype in ((fused, np.float32), (plain, np.float64)):
        inputs = [jt.array(x.astype(dtype)), module.gamma, module.value_conv.weight]
        assert {str(v.dtype) for v in inputs} == {np.dtype(dtype).name}
        assert cca_cpu.available(*inputs) == (dtype == np.float32)
        loss = (module(inputs[0]) * jt.array(upstream.astype(dtype))).sum()
        grads.append([g.numpy() for g in jt.grad(loss, inputs)])
    for name, fused_grad, plain_grad in zip(["x", "gamma", "value weight"], *grads):
        scale = np.abs(plain_grad).max()
        np.testing.assert_allclose(fused_grad / scale, plain_grad / scale, rtol=0, atol=1e-5, err_msg=name)
