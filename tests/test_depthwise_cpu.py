"""The CPU depthwise convolution kernels (kernels/depthwise_cpu.py): output and the gradients of
input, weight and bias against a direct NumPy float64 convolution and its finite differences, and
against the plain formulation (nn.Conv2d with groups = channels, oneDNN) in float32."""
import numpy as np
import pytest

import jittor as jt
from jittor import nn

import numpy_reference as ref
from kernels import depthwise_cpu
from models.van import DepthwiseConv2d

# (kernel, padding, dilation): VAN's three, then padding other than "same" and a non-square map
CASES = [(3, 1, 1), (5, 2, 1), (7, 9, 3), (3, 0, 2), (5, 3, 1)]
IDS = [f"k{k}p{p}d{d}" for k, p, d in CASES]


def case(dtype, channels, kernel, height, width, batch=2, seed=0):
    rng = np.random.default_rng(seed)
    return dict(x=rng.normal(size=(batch, channels, height, width)).astype(dtype),
                weight=rng.normal(size=(channels, 1, kernel, kernel)).astype(dtype),
                bias=rng.normal(size=channels).astype(dtype))


def run(conv, data, kernels, monkeypatch):
    """y and the gradients of sum(y * upstream) for x, weight and bias, as NumPy arrays."""
    with monkeypatch.context() as patch:
        if not kernels:
            patch.setattr(depthwise_cpu, "available", lambda x, conv: False)
        conv.weight.assign(jt.array(data["weight"].copy()))
        conv.bias.assign(jt.array(data["bias"].copy()))
        x = jt.array(data["x"].copy())
        y = conv(x)
        upstream = np.random.default_rng(1).normal(size=y.shape).astype(data["x"].dtype)
        grads = jt.grad((y * jt.array(upstream)).sum(), [x, conv.weight, conv.bias])
        return [v.numpy() for v in (y, *grads)], upstream


@pytest.mark.parametrize("kernel,padding,dilation", CASES, ids=IDS)
def test_kernels_in_float64_against_numpy_and_finite_differences(kernel, padding, dilation, monkeypatch,
                                                                 float64):
    data = case(np.float64, 3, kernel, 9, 7)
    conv = DepthwiseConv2d(3, kernel, padding, dilation)
    (y, dx, dweight, dbias), upstream = run(conv, data, True, monkeypatch)
    assert y.dtype == dx.dtype == np.float64

    def forward(x, weight, bias):
        return ref.conv2d(x, weight, bias, padding=padding, dilation=dilation, groups=3)

    np.testing.assert_allclose(y, forward(data["x"], data["weight"], data["bias"]), rtol=1e-12, atol=1e-12)
    numeric = [
        ref.numeric_gradient(lambda x: (forward(x, data["weight"], data["bias"]) * upstream).sum(), data["x"]),
        ref.numeric_gradient(lambda w: (forward(data["x"], w, data["bias"]) * upstream).sum(), data["weight"]),
        ref.numeric_gradient(lambda b: (forward(data["x"], data["weight"], b) * upstream).sum(), data["bias"]),
    ]
    for what, got, want in zip(("dx", "dweight", "dbias"), (dx, dweight, dbias), numeric):
        np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-8 * np.abs(want).max(), err_msg=what)


@pytest.mark.parametrize("kernel,padding,dilation", CASES[:3], ids=IDS[:3])
def test_kernels_compute_what_nn_conv2d_computes(kernel, padding, dilation, monkeypatch):
    """float32, 64 channels of 23 x 30 (sums of up to 2 x 690 products in the weight gradient)."""
    data = case(np.float32, 64, kernel, 23, 30, seed=2)
    conv = DepthwiseConv2d(64, kernel, padding, dilation)
    fast, _ = run(conv, data, True, monkeypatch)
    plain, _ = run(conv, data, False, monkeypatch)
    for what, a, b in zip(("y", "dx", "dweight", "dbias"), fast, plain):
        assert a.dtype == np.float32, what
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * np.abs(b).max(), err_msg=what)


def test_a_convolution_without_bias():
    conv = nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False)
    x = jt.randn(1, 4, 6, 5)
    np.testing.assert_allclose(depthwise_cpu.depthwise_conv2d(x, conv.weight, None, 1, 1).numpy(),
                               conv(x).numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("conv", [
    nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=4),    # strided
    nn.Conv2d(4, 4, 3, padding=3, groups=4),              # padding beyond the kernel's extent
    nn.Conv2d(4, 8, 3, padding=1, groups=4),              # two filters per channel
    nn.Conv2d(4, 4, (3, 5), padding=(1, 2), groups=4),    # not square
], ids=["stride", "padding", "multiplier", "rectangular"])
def test_other_convolutions_are_left_to_nn_conv2d(conv):
    assert not depthwise_cpu.available(jt.randn(1, 4, 8, 8), conv)


def test_padding_beyond_the_kernel_is_an_error():
    with pytest.raises(ValueError, match=r"padding must be in \[0, dilation \* \(kernel - 1\)\] = \[0, 2\], got 3"):
        depthwise_cpu.depthwise_conv2d(jt.randn(1, 2, 5, 5), jt.randn(2, 1, 3, 3), None, 3, 1)
