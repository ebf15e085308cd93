"""Criss-cross attention in PyTorch, the side the Jittor operator is measured against.

The plain batched-matmul formulation a PyTorch user would write (and the official repository's
pure-PyTorch version uses): column and row affinities by bmm, -inf on the column's centre, one
softmax over H + W positions, aggregation by bmm. Used by the benchmarks only.
"""
import torch
from torch import nn


def criss_cross_attention(query, key, value):
    b, _, h, w = query.shape
    q_col = query.permute(0, 3, 2, 1).reshape(b * w, h, -1)
    k_col = key.permute(0, 3, 1, 2).reshape(b * w, -1, h)
    centre = torch.diag(torch.full((h,), float("-inf"), device=query.device))
    energy_h = torch.bmm(q_col, k_col).view(b, w, h, h) + centre
    q_row = query.permute(0, 2, 3, 1).reshape(b * h, w, -1)
    k_row = key.permute(0, 2, 1, 3).reshape(b * h, -1, w)
    energy_w = torch.bmm(q_row, k_row).view(b, h, w, w)
    attention = torch.softmax(torch.cat([energy_h.permute(0, 2, 1, 3), energy_w], 3), dim=3)
    att_h = attention[..., :h].permute(0, 2, 1, 3).reshape(b * w, h, h)
    att_w = attention[..., h:].reshape(b * h, w, w)
    v_col = value.permute(0, 3, 1, 2).reshape(b * w, -1, h)
    v_row = value.permute(0, 2, 1, 3).reshape(b * h, -1, w)
    out_h = torch.bmm(v_col, att_h.transpose(1, 2)).view(b, w, -1, h).permute(0, 2, 3, 1)
    out_w = torch.bmm(v_row, att_w.transpose(1, 2)).view(b, h, -1, w).permute(0, 2, 1, 3)
    return out_h + out_w


class CrissCrossAttention(nn.Module):
    def __init__(self, in_channels):
        super().__init__()
        self.query_conv = nn.Conv2d(in_channels, in_channels // 8, 1)
        self.key_conv = nn.Conv2d(in_channels, in_channels // 8, 1)
        self.value_conv = nn.Conv2d(in_channels, in_channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        out = criss_cross_attention(self.query_conv(x), self.key_conv(x), self.value_conv(x))
        return self.gamma * out + x
