"""Slow, obvious NumPy versions of the project's layers, written from the papers' equations.

They loop over pixels and work in float64, so they share no code and no tricks with the Jittor
implementations they check.
"""
import math

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


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """Direct convolution: each output sums weight * input over the kernel taps it covers."""
    batch, in_channels, height, width = x.shape
    out_channels, group_in, kh, kw = weight.shape
    out_h = (height + 2 * padding - dilation * (kh - 1) - 1) // stride + 1
    out_w = (width + 2 * padding - dilation * (kw - 1) - 1) // stride + 1
    padded = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    out = np.zeros((batch, out_channels, out_h, out_w))
    group_out = out_channels // groups
    for o in range(out_channels):
        g = o // group_out
        for i in range(kh):
            for j in range(kw):
                rows = slice(i * dilation, i * dilation + stride * (out_h - 1) + 1, stride)
                cols = slice(j * dilation, j * dilation + stride * (out_w - 1) + 1, stride)
                patch = padded[:, g * group_in:(g + 1) * group_in, rows, cols]
                out[:, o] += np.einsum("c,bchw->bhw", weight[o, :, i, j], patch)
        if bias is not None:
            out[:, o] += bias[o]
    return out


def conv2d_gradients(x, weight, upstream, stride=1, padding=0, dilation=1, groups=1):
    """Gradients of sum(upstream * conv2d(x, weight)) for x and weight: conv2d's loops run backwards,
    each tap sending upstream * weight to the inputs it read and upstream * input to its weight."""
    in_channels, (height, width) = x.shape[1], x.shape[2:]
    out_channels, group_in, kh, kw = weight.shape
    out_h, out_w = upstream.shape[2:]
    padded = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    grad_padded = np.zeros_like(padded, dtype=np.float64)
    grad_weight = np.zeros(weight.shape)
    group_out = out_channels // groups
    for o in range(out_channels):
        channels = slice(o // group_out * group_in, (o // group_out + 1) * group_in)
        for i in range(kh):
            for j in range(kw):
                rows = slice(i * dilation, i * dilation + stride * (out_h - 1) + 1, stride)
                cols = slice(j * dilation, j * dilation + stride * (out_w - 1) + 1, stride)
                grad_weight[o, :, i, j] = np.einsum("bhw,bchw->c", upstream[:, o], padded[:, channels, rows, cols])
                grad_padded[:, channels, rows, cols] += np.einsum("c,bhw->bchw", weight[o, :, i, j], upstream[:, o])
    return grad_padded[:, :, padding:padding + height, padding:padding + width], grad_weight


def activate(y, activation, slope=0.01):
    if activation == "leaky_relu":
        return np.where(y >= 0, y, slope * y)
    if activation == "relu":
        return np.maximum(y, 0)
    return y


def abn(x, params, prefix, activation, eps=1e-5):
    """InPlaceABN in eval mode: (x - mean) / sqrt(var + eps) * (|w| + eps) + b, then activation."""
    shape = (1, -1, 1, 1)
    mean = params[prefix + "running_mean"].reshape(shape)
    var = params[prefix + "running_var"].reshape(shape)
    scale = (np.abs(params[prefix + "weight"]) + eps).reshape(shape)
    y = (x - mean) / np.sqrt(var + eps) * scale + params[prefix + "bias"].reshape(shape)
    return activate(y, activation)


def rcca_head(x, params, recurrence, activation="leaky_relu"):
    """The RCCA head in eval mode (dropout off), from its state dict."""
    cca = {k[len("cca."):]: v for k, v in params.items() if k.startswith("cca.")}
    out = abn(conv2d(x, params["conva.0.weight"], padding=1), params, "conva.1.", activation)
    for _ in range(recurrence):
        out = cca_module(out, cca)
    out = abn(conv2d(out, params["convb.0.weight"], padding=1), params, "convb.1.", activation)
    both = np.concatenate([x, out], axis=1)
    out = abn(conv2d(both, params["bottleneck.0.weight"], padding=1), params, "bottleneck.1.", activation)
    return conv2d(out, params["bottleneck.3.weight"], params["bottleneck.3.bias"])


def bottleneck(x, params, prefix, stride=1, dilation=1):
    """ResNet bottleneck in eval mode, norms as InPlaceABN without activation."""
    def conv_norm(t, i, **kw):
        return abn(conv2d(t, params[f"{prefix}conv{i}.weight"], **kw), params, f"{prefix}bn{i}.", "identity")
    out = np.maximum(conv_norm(x, 1), 0)
    out = np.maximum(conv_norm(out, 2, stride=stride, padding=dilation, dilation=dilation), 0)
    out = conv_norm(out, 3)
    if f"{prefix}downsample.0.weight" in params:
        x = abn(conv2d(x, params[f"{prefix}downsample.0.weight"], stride=stride), params,
                f"{prefix}downsample.1.", "identity")
    return np.maximum(out + x, 0)


def gelu(x):
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def batch_norm(x, params, prefix, eps=1e-5):
    """PyTorch's BatchNorm2d in eval mode."""
    shape = (1, -1, 1, 1)
    return ((x - params[prefix + "running_mean"].reshape(shape))
            / np.sqrt(params[prefix + "running_var"].reshape(shape) + eps)
            * params[prefix + "weight"].reshape(shape) + params[prefix + "bias"].reshape(shape))


def van_block(x, params, prefix):
    """One VAN block in eval mode (no drop path)."""
    p = lambda name: params[prefix + name]  # noqa: E731
    dim = x.shape[1]
    t = batch_norm(x, params, prefix + "norm1.")
    a = gelu(conv2d(t, p("attn.proj_1.weight"), p("attn.proj_1.bias")))
    lka = prefix + "attn.spatial_gating_unit."
    g = conv2d(a, params[lka + "conv0.weight"], params[lka + "conv0.bias"], padding=2, groups=dim)
    g = conv2d(g, params[lka + "conv_spatial.weight"], params[lka + "conv_spatial.bias"],
               padding=9, dilation=3, groups=dim)
    g = conv2d(g, params[lka + "conv1.weight"], params[lka + "conv1.bias"])
    attn = conv2d(a * g, p("attn.proj_2.weight"), p("attn.proj_2.bias")) + t
    x = x + p("layer_scale_1").reshape(1, -1, 1, 1) * attn
    t = batch_norm(x, params, prefix + "norm2.")
    h = conv2d(t, p("mlp.fc1.weight"), p("mlp.fc1.bias"))
    h = gelu(conv2d(h, p("mlp.dwconv.dwconv.weight"), p("mlp.dwconv.dwconv.bias"), padding=1,
                    groups=h.shape[1]))
    mlp = conv2d(h, p("mlp.fc2.weight"), p("mlp.fc2.bias"))
    return x + p("layer_scale_2").reshape(1, -1, 1, 1) * mlp


def layer_norm_channels(x, weight, bias, eps=1e-6):
    mean = x.mean(axis=1, keepdims=True)
    var = x.var(axis=1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight.reshape(1, -1, 1, 1) + bias.reshape(1, -1, 1, 1)


def bilinear_resize(x, out_h, out_w, align_corners=False):
    """Bilinear resize: output pixel i samples input position (i + 0.5) * in / out - 0.5 (half-pixel
    centres, clamped at the edges), or i * (in - 1) / (out - 1) with align_corners."""
    def axis(n_in, n_out):
        if align_corners:
            src = np.arange(n_out) * ((n_in - 1) / (n_out - 1)) if n_out > 1 else np.zeros(n_out)
        else:
            src = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        lo = np.floor(src).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, src - lo
    out = np.zeros(x.shape[:2] + (out_h, out_w))
    rlo, rhi, rf = axis(x.shape[2], out_h)
    clo, chi, cf = axis(x.shape[3], out_w)
    for i in range(out_h):
        for j in range(out_w):
            top = x[:, :, rlo[i], clo[j]] * (1 - cf[j]) + x[:, :, rlo[i], chi[j]] * cf[j]
            bottom = x[:, :, rhi[i], clo[j]] * (1 - cf[j]) + x[:, :, rhi[i], chi[j]] * cf[j]
            out[:, :, i, j] = top * (1 - rf[i]) + bottom * rf[i]
    return out


def official_ohem_threshold(prob, labels, threshold, min_kept, factor=8):
    """OhemCrossEntropy2d.find_threshold of the official code: on the softmax probabilities
    [N, C, H, W] and labels [N, H, W] zoomed to 1/factor by scipy.ndimage.zoom (linear, nearest),
    the larger of `threshold` and the (min_kept // factor^2)-th lowest true-class probability; 1.0
    (keep all) when the zoomed labels have no more valid pixels than that."""
    from scipy.ndimage import zoom
    small_prob = zoom(prob, (1.0, 1.0, 1.0 / factor, 1.0 / factor), order=1)
    small_labels = zoom(labels, (1.0, 1.0 / factor, 1.0 / factor), order=0).ravel()
    valid = small_labels != 255
    k = min_kept // factor ** 2
    if k >= valid.sum():
        return 1.0
    if k == 0:
        return threshold
    pred = np.rollaxis(small_prob, 1).reshape(prob.shape[1], -1)[:, valid]
    pred = pred[small_labels[valid], np.arange(valid.sum())]
    return max(threshold, np.partition(pred, k - 1)[k - 1])
