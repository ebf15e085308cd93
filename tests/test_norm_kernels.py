"""The training-mode norms of one process, the CPU kernels (kernels/norm_cpu.py) and the GPU's
formulation with matrix-product sums (kernels/norm_gpu.py, run here on the CPU: the same operators):
outputs, running statistics and gradients of input, weight, bias (and a residual joining before the
activation) against a NumPy float64 formulation and its finite differences, and against the plain
Jittor formulation of models/norm.py."""
import numpy as np
import pytest

import jittor as jt

from jittor_helpers import profiled
from kernels import norm_cpu, norm_gpu
from models.norm import ABN, BatchNorm2d

EPS = 1e-5
# (name, norm class, activation, slope, |weight| + eps as the scale, a residual joins)
NORMS = [
    ("inplace_abn leaky_relu", ABN, "leaky_relu", 0.01, True, False),
    ("inplace_abn identity", ABN, "identity", 0.01, True, False),
    ("batchnorm relu", BatchNorm2d, "relu", 0.01, False, False),
    ("inplace_abn relu + residual", ABN, "relu", 0.01, True, True),
    ("batchnorm relu + residual", BatchNorm2d, "relu", 0.01, False, True),
]
IDS = [n[0] for n in NORMS]
KERNELS = {"cpu": norm_cpu, "gpu": norm_gpu}


def reference(x, weight, bias, running_mean, running_var, activation, slope, positive_scale, residual=None):
    """y and the updated running statistics of a training step, in NumPy float64."""
    mean, var = x.mean((0, 2, 3)), x.var((0, 2, 3))
    count = x.size // x.shape[1]
    running_mean = running_mean + (mean - running_mean) * 0.1
    running_var = running_var + (var * count / (count - 1) - running_var) * 0.1
    scale = np.abs(weight) + EPS if positive_scale else weight
    z = (x - mean[:, None, None]) / np.sqrt(var[:, None, None] + EPS) * scale[:, None, None] + bias[:, None, None]
    if residual is not None:
        z = z + residual
    y = {"identity": z, "relu": np.maximum(z, 0), "leaky_relu": np.where(z > 0, z, z * slope)}[activation]
    return y, running_mean, running_var


def case(dtype, shape, seed=0):
    rng = np.random.default_rng(seed)
    c = shape[1]
    return dict(x=rng.normal(3.0, 2.0, shape).astype(dtype), upstream=rng.normal(size=shape).astype(dtype),
                weight=rng.uniform(-1.5, 1.5, c).astype(dtype), bias=rng.normal(size=c).astype(dtype),
                running_mean=rng.normal(size=c).astype(dtype), running_var=rng.uniform(0.5, 2, c).astype(dtype),
                residual=rng.normal(0.0, 2.0, shape).astype(dtype))


def recorded(function, name, calls):
    def wrapper(*args, **kwargs):
        calls.append(name)
        return function(*args, **kwargs)
    return wrapper


def jittor_run(cls, activation, slope, data, kernels, monkeypatch, residual):
    """Output, gradients (x, weight, bias[, residual]) and running statistics of one training
    forward + backward, with the norm of `kernels` ("cpu", "gpu", or None: the plain formulation)."""
    calls = []  # the kernels models.norm used
    with monkeypatch.context() as patch:
        for name, module in KERNELS.items():
            patch.setattr(module, "available", lambda x, used=name == kernels: used)
            patch.setattr(module, "norm_activation", recorded(module.norm_activation, name, calls))
        norm = cls(data["x"].shape[1], activation=activation)
        norm.slope = slope
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(norm, name).assign(jt.array(data[name].copy()))  # Jittor may share the memory
        x = jt.array(data["x"].copy())
        inputs = [x, norm.weight, norm.bias]
        if residual:
            inputs.append(jt.array(data["residual"].copy()))
            y = norm(x, residual=inputs[-1])
        else:
            y = norm(x)
        grads = jt.grad((y * jt.array(data["upstream"].copy())).sum(), inputs)
        assert calls == ([kernels] if kernels else [])
        return [v.numpy() for v in (y, *grads, norm.running_mean, norm.running_var)]


def finite_differences(data, activation, slope, positive_scale, names, step=1e-6):
    """d sum(y * upstream) / d each of `names` (x, weight, bias, residual) by central differences of
    the NumPy formulation; no residual unless "residual" is one of them."""
    def loss(values):
        y = reference(values["x"], values["weight"], values["bias"], data["running_mean"],
                      data["running_var"], activation, slope, positive_scale, values.get("residual"))[0]
        return (y * data["upstream"]).sum()

    grads = []
    for name in names:
        grad = np.zeros_like(data[name])
        for i in np.ndindex(grad.shape):
            values = {k: data[k].copy() for k in names}
            values[name][i] += step
            up = loss(values)
            values[name][i] -= 2 * step
            grad[i] = (up - loss(values)) / (2 * step)
        grads.append(grad)
    return grads


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("name,cls,activation,slope,positive_scale,residual", NORMS, ids=IDS)
def test_kernels_in_float64_against_numpy_and_finite_differences(name, cls, activation, slope, positive_scale,
                                                                 residual, kernels, monkeypatch, float64):
    data = case(np.float64, (2, 5, 3, 4))
    names = ("x", "weight", "bias", "residual") if residual else ("x", "weight", "bias")
    y, *grads, running_mean, running_var = jittor_run(cls, activation, slope, data, kernels, monkeypatch, residual)
    assert y.dtype == grads[0].dtype == np.float64
    expected = reference(data["x"], data["weight"], data["bias"], data["running_mean"], data["running_var"],
                         activation, slope, positive_scale, data["residual"] if residual else None)
    np.testing.assert_allclose(y, expected[0], rtol=1e-12, atol=1e-12)
    # models.norm multiplies by the momentum as a float32 constant (Jittor's Python scalars)
    for what, got, want in zip(("running_mean", "running_var"), (running_mean, running_var), expected[1:]):
        np.testing.assert_allclose(got, want, rtol=1e-7, err_msg=what)
    numeric = finite_differences(data, activation, slope, positive_scale, names)
    for what, got, want in zip(names, grads, numeric):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7 * np.abs(want).max(), err_msg="d" + what)


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("name,cls,activation,slope,positive_scale,residual", NORMS, ids=IDS)
def test_kernels_compute_what_the_plain_formulation_computes(name, cls, activation, slope, positive_scale,
                                                             residual, kernels, monkeypatch):
    """float32, a map of 64 channels. The plain formulation sums sequentially in float32, the CPU
    kernels in double, the GPU's formulation as matrix products: within float32 rounding of each other."""
    data = case(np.float32, (2, 64, 17, 23), seed=2)
    fast = jittor_run(cls, activation, slope, data, kernels, monkeypatch, residual)
    plain = jittor_run(cls, activation, slope, data, None, monkeypatch, residual)
    names = ("y", "dx", "dweight", "dbias") + (("dresidual",) if residual else ()) + ("running_mean", "running_var")
    assert len(fast) == len(plain) == len(names)
    for what, a, b in zip(names, fast, plain):
        assert a.dtype == np.float32, what
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * np.abs(b).max(), err_msg=what)


def test_gpu_formulation_products_are_one_blas_operator_each(float64):
    """norm_gpu's float32 products run the BLAS operator itself (oneDNN here, cuBLAS on GPUs), not
    jt.matmul's broadcast product that Jittor builds and then replaces with it at run time; other
    dtypes go through jt.matmul. Both compute a @ b."""
    rng = np.random.default_rng(5)
    for dtype, operator in ((np.float32, "mkl_matmul"), (np.float64, None)):
        a, b = rng.normal(size=(6, 40)).astype(dtype), rng.normal(size=(40, 1)).astype(dtype)
        ja, jb = jt.array(a), jt.array(b)
        jt.sync([ja, jb])
        product, operators = profiled(lambda: norm_gpu.matrix_product(ja, jb).numpy())
        names = [name for name, _ in operators]
        if operator:
            assert names and all(name.startswith(operator) for name in names), names
        else:
            assert not any("matmul" in name for name in names), names
        np.testing.assert_allclose(product, a @ b, rtol=1e-5 if dtype == np.float32 else 1e-12)
