"""The RCCA head and its activated batch norm against the official module's definition."""
import numpy as np
import pytest

import jittor as jt

import numpy_reference as ref
from jittor_helpers import load_random_float64, profiled
from models.norm import ABN, BatchNorm2d
from models.rcca import RCCAHead

pytestmark = pytest.mark.usefixtures("float64")

# Jittor keeps Python scalars (slope 0.01, momentum 0.1) in float32 even in float64 graphs, which
# limits agreement with the float64 references to about 3e-8 relative (measured).
TOL = dict(rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("activation", ["leaky_relu", "relu", "identity"])
def test_abn_eval_uses_abs_weight_plus_eps(activation):
    norm = ABN(6, activation)
    params = load_random_float64(norm, seed=0)
    params["weight"][:3] *= -1  # negative weights must act as |w| + eps
    norm.load_parameters(params)
    norm.eval()
    x = np.random.default_rng(1).standard_normal((2, 6, 3, 4))
    np.testing.assert_allclose(norm(jt.array(x)).numpy(), ref.abn(x, params, "", activation), **TOL)


@pytest.mark.parametrize("cls,reference", [(ABN, lambda x, p: ref.abn(x, p, "", "identity")),
                                           (BatchNorm2d, lambda x, p: ref.batch_norm(x, p, ""))])
def test_eval_norm_with_residual_and_relu_is_one_operator(cls, reference):
    """In eval the per-channel scale and shift are computed inside x's one pass, not as an operator
    of their own (on a GPU each operator is a launch and host time): norm, residual and activation
    run as one operator."""
    norm = cls(6, "relu")
    params = load_random_float64(norm, seed=4)
    params["weight"][:2] *= -1
    norm.load_parameters(params)
    norm.eval()
    rng = np.random.default_rng(5)
    x, residual = rng.standard_normal((2, 6, 3, 4)), rng.standard_normal((2, 6, 3, 4))
    inputs = [jt.array(x), jt.array(residual)]
    jt.sync(inputs + list(norm.state_dict().values()))
    y, operators = profiled(lambda: norm(*inputs).numpy())
    assert sum(runs for _, runs in operators) == 1, operators
    np.testing.assert_allclose(y, np.maximum(reference(x, params) + residual, 0), **TOL)


def test_abn_train_normalises_with_batch_statistics_and_updates_running_ones():
    norm = ABN(3, "identity", momentum=0.1)
    params = load_random_float64(norm, seed=2)
    x = np.random.default_rng(3).standard_normal((2, 3, 4, 5)) * 3 + 1
    out = norm(jt.array(x)).numpy()

    mean = x.mean(axis=(0, 2, 3))
    var = x.var(axis=(0, 2, 3))
    scale = np.abs(params["weight"]) + 1e-5
    expected = ((x - mean[None, :, None, None]) / np.sqrt(var[None, :, None, None] + 1e-5)
                * scale[None, :, None, None] + params["bias"][None, :, None, None])
    np.testing.assert_allclose(out, expected, **TOL)
    n = x.size // 3
    np.testing.assert_allclose(norm.running_mean.numpy(),
                               0.9 * params["running_mean"] + 0.1 * mean, **TOL)
    np.testing.assert_allclose(norm.running_var.numpy(),
                               0.9 * params["running_var"] + 0.1 * var * n / (n - 1), **TOL)


def test_abn_rejects_unknown_activation():
    with pytest.raises(ValueError, match="activation must be one of"):
        ABN(4, "gelu")


def test_head_parameter_names_match_official_rcca_module():
    shapes = {k: list(v.shape) for k, v in RCCAHead(2048, 150).state_dict().items()}
    abn = lambda prefix, c: {f"{prefix}.{n}": [c] for n in  # noqa: E731
                             ("weight", "bias", "running_mean", "running_var")}
    expected = {
        "conva.0.weight": [512, 2048, 3, 3], **abn("conva.1", 512),
        "cca.query_conv.weight": [64, 512, 1, 1], "cca.query_conv.bias": [64],
        "cca.key_conv.weight": [64, 512, 1, 1], "cca.key_conv.bias": [64],
        "cca.value_conv.weight": [512, 512, 1, 1], "cca.value_conv.bias": [512],
        "cca.gamma": [1],
        "convb.0.weight": [512, 512, 3, 3], **abn("convb.1", 512),
        "bottleneck.0.weight": [512, 2560, 3, 3], **abn("bottleneck.1", 512),
        "bottleneck.3.weight": [150, 512, 1, 1], "bottleneck.3.bias": [150],
    }
    assert shapes == expected


@pytest.mark.parametrize("recurrence", [0, 1, 2])
def test_head_matches_reference_in_eval_mode(recurrence):
    head = RCCAHead(32, num_classes=3, recurrence=recurrence, out_channels=16)
    params = load_random_float64(head, seed=4, scale=0.3, **{"cca.gamma": np.array([0.8])})
    head.eval()
    x = np.random.default_rng(5).standard_normal((2, 32, 5, 6))
    np.testing.assert_allclose(head(jt.array(x)).numpy(), ref.rcca_head(x, params, recurrence), **TOL)


def test_head_relu_option_matches_reference():
    head = RCCAHead(32, num_classes=2, recurrence=2, out_channels=8, activation="relu")
    params = load_random_float64(head, seed=6, scale=0.3, **{"cca.gamma": np.array([0.5])})
    head.eval()
    x = np.random.default_rng(7).standard_normal((1, 32, 4, 3))
    np.testing.assert_allclose(head(jt.array(x)).numpy(), ref.rcca_head(x, params, 2, "relu"), **TOL)


def test_negative_recurrence_rejected():
    with pytest.raises(ValueError, match="recurrence must be >= 0"):
        RCCAHead(32, 3, recurrence=-1)
