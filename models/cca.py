"""Criss-cross attention (CCNet, Huang et al., ICCV 2019, Sec. 3.2, Fig. 3).

For a feature map H (C x H x W), query Q and key K are 1x1 projections to C' = C/8 channels and
value V a 1x1 projection to C channels. Pixel u attends over its criss-cross path Omega_u: its row
(W positions, u itself included) and its column without u (H - 1 positions), so u is counted once:

    d_{i,u} = Q_u . Omega_{i,u}                 (Eq. 1, "affinity")
    A_{:,u} = softmax over the H + W - 1 values d_{:,u}
    H'_u    = gamma * sum_i A_{i,u} Phi_{i,u} + H_u   (Eq. 2, Phi = V on the same path)

gamma is a learned scalar initialised to 0, so a fresh module is the identity.
"""
from functools import lru_cache

import numpy as np

import jittor_env  # noqa: F401  (configures Jittor before its first import)
import jittor as jt
from jittor import nn

import kernels


@lru_cache(maxsize=64)
def _column_centre_mask(height):
    """[H, H] additive mask: -inf on the diagonal removes u from its own column term. Made once per
    height: built from NumPy in every forward it would be a host operator, a wait for the device
    on GPUs."""
    mask = jt.array(np.diag(np.full(height, -np.inf, dtype=np.float32))).stop_grad()
    mask.sync()
    return mask


def criss_cross_attention(query, key, value):
    """sum_i A_{i,u} Phi_{i,u} for every pixel u: the aggregation of Eq. 2 without gamma and residual.

    query, key: [B, C', H, W]; value: [B, C, H, W]. Returns [B, C, H, W]. On the CPU with oneDNN
    and float32 inputs the fused kernel of kernels/cca_cpu.py computes it; otherwise (GPU, where
    Jittor's matmuls use cuBLAS, or float64) the batched-matmul formulation below.
    """
    kernel = kernels.choose("criss_cross_attention", query, key, value)
    if kernel:
        return kernel.criss_cross_attention(query, key, value)
    return criss_cross_attention_bmm(query, key, value)


def criss_cross_attention_bmm(query, key, value):
    """The reference formulation: column and row affinities by batched matmuls, -inf on the
    column's centre, one softmax over H + W logits, aggregation by batched matmuls."""
    b, _, h, w = query.shape
    # Column affinities energy_h[b, w, u_h, i_h] and row affinities energy_w[b, h, u_w, i_w].
    q_col = query.permute(0, 3, 2, 1).reshape(b * w, h, -1)
    k_col = key.permute(0, 3, 1, 2).reshape(b * w, -1, h)
    energy_h = nn.bmm(q_col, k_col).reshape(b, w, h, h) + _column_centre_mask(h)
    q_row = query.permute(0, 2, 3, 1).reshape(b * h, w, -1)
    k_row = key.permute(0, 2, 1, 3).reshape(b * h, -1, w)
    energy_w = nn.bmm(q_row, k_row).reshape(b, h, w, w)

    # One softmax over the H + W - 1 positions of each pixel's path (the masked centre gives 0).
    energy = jt.concat([energy_h.permute(0, 2, 1, 3), energy_w], dim=3)  # [B, H, W, H + W]
    attention = nn.softmax(energy, dim=3)
    att_h = attention[:, :, :, :h].permute(0, 2, 1, 3).reshape(b * w, h, h)
    att_w = attention[:, :, :, h:].reshape(b * h, w, w)

    v_col = value.permute(0, 3, 1, 2).reshape(b * w, -1, h)
    v_row = value.permute(0, 2, 1, 3).reshape(b * h, -1, w)
    out_h = nn.bmm_transpose(v_col, att_h).reshape(b, w, -1, h).permute(0, 2, 3, 1)
    out_w = nn.bmm_transpose(v_row, att_w).reshape(b, h, -1, w).permute(0, 2, 1, 3)
    return out_h + out_w


def scaled_residual(gamma, out, x):
    """gamma * out + x, the last step of Eq. 2 (a fused kernel on the CPU, as the aggregation)."""
    kernel = kernels.choose("scaled_residual", gamma, out, x)
    return kernel.scaled_residual(gamma, out, x) if kernel else gamma * out + x


class CrissCrossAttention(nn.Module):
    """The CCA module of Fig. 3: query/key/value 1x1 convs, aggregation, gamma * out + x."""

    def __init__(self, in_channels):
        if in_channels < 8:
            raise ValueError(f"CrissCrossAttention: in_channels must be >= 8 (query and key use "
                             f"in_channels // 8 channels), got {in_channels}")
        self.in_channels = in_channels
        self.query_conv = nn.Conv2d(in_channels, in_channels // 8, 1)
        self.key_conv = nn.Conv2d(in_channels, in_channels // 8, 1)
        self.value_conv = nn.Conv2d(in_channels, in_channels, 1)
        self.gamma = jt.zeros(1)

    def execute(self, x):
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"CrissCrossAttention({self.in_channels}): expected a [B, "
                             f"{self.in_channels}, H, W] tensor, got shape {list(x.shape)}")
        out = criss_cross_attention(self.query_conv(x), self.key_conv(x), self.value_conv(x))
        return scaled_residual(self.gamma, out, x)
