"""Slow, obvious NumPy versions of the project's layers, written from the papers' equations.

They loop over pixels and work in float64, so they share no code and no tricks with the Jittor
implementations they check.
"""
import numpy as np


def criss_cross_path(h, w, height, width):
    """Pixel (h, w)'s criss-cross positions: its whole row, then its column without itself."""
    return [(h, x) for x in range(width)] + [(y, w) for y in range(height) if y != h]


def criss_cross_attention(query, key, value):
    """sum_i A_{i,u} V_i over each pixel's H + W - 1 positions (CCNet Eq. 1-2)."""
    batch, _, height, width = value.shape
    out = np.zeros(value.shape, dtype=np.float64)
    for b in range(batch):
        for h in range(height):
            for w in range(width):
                path = criss_cross_path(h, w, height, width)
                logits = np.array([query[b, :, h, w] @ key[b, :, y, x] for y, x in path])
                weights = np.exp(logits - logits.max())
                weights /= weights.sum()
                out[b, :, h, w] = sum(a * value[b, :, y, x] for a, (y, x) in zip(weights, path))
    return out


def conv1x1(x, weight, bias):
    """A 1x1 convolution: weight [O, I, 1, 1], bias [O]."""
    return np.einsum("oi,bihw->bohw", weight[:, :, 0, 0], x) + bias[None, :, None, None]


def cca_module(x, params):
    """The CCA module: gamma * aggregate(Q, K, V) + x, params as in its state dict."""
    query = conv1x1(x, params["query_conv.weight"], params["query_conv.bias"])
    key = conv1x1(x, params["key_conv.weight"], params["key_conv.bias"])
    value = conv1x1(x, params["value_conv.weight"], params["value_conv.bias"])
    return params["gamma"][0] * criss_cross_attention(query, key, value) + x


def numeric_gradient(f, x, eps=1e-6):
    """Central differences of the scalar function f at array x (float64), one entry at a time."""
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        saved = x[i]
        x[i] = saved + eps
        plus = f(x)
        x[i] = saved - eps
        minus = f(x)
        x[i] = saved
        grad[i] = (plus - minus) / (2 * eps)
    return grad
