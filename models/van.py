"""Visual Attention Network (Guo et al., 2022), as the official VAN code, returning stage features.

Each stage: an overlapping patch embedding (conv + BatchNorm), blocks of
    x + drop_path(layer_scale_1 * attn(BN(x))),   attn = proj_1 -> GELU -> LKA -> proj_2, + x
    x + drop_path(layer_scale_2 * mlp(BN(x))),    mlp  = 1x1 -> depthwise 3x3 -> GELU -> 1x1
and a LayerNorm over channels (eps 1e-6). LKA, the large-kernel attention, is depthwise 5x5 ->
depthwise 7x7 with dilation 3 -> 1x1, multiplied into its input. Parameter names follow the
official checkpoints (patch_embed1.proj, block1.0.attn.spatial_gating_unit.conv0, norm1, ...).
"""
import numpy as np

import jittor_env  # noqa: F401
import jittor as jt
from jittor import nn

import kernels
from .norm import BatchNorm2d
from .stochastic import DropPath

VARIANTS = {  # embed dims, depths; mlp ratios are [8, 8, 4, 4] for all
    "van_b0": ([32, 64, 160, 256], [3, 3, 5, 2]),
    "van_b1": ([64, 128, 320, 512], [2, 2, 4, 2]),
    "van_b2": ([64, 128, 320, 512], [3, 3, 12, 3]),
    "van_b3": ([64, 128, 320, 512], [3, 5, 27, 3]),
}
MLP_RATIOS = [8, 8, 4, 4]


class DepthwiseConv2d(nn.Conv2d):
    """One k x k filter per channel (groups = channels), stride 1; on the CPU the kernels of
    kernels/depthwise_cpu.py compute it, elsewhere nn.Conv2d."""

    def __init__(self, dim, kernel_size, padding, dilation=1):
        super().__init__(dim, dim, kernel_size, padding=padding, dilation=dilation, groups=dim)

    def execute(self, x):
        kernel = kernels.choose("depthwise_conv2d", x, self)
        if kernel:
            return kernel.depthwise_conv2d(x, self.weight, self.bias, self.padding[0], self.dilation[0])
        return super().execute(x)


class DWConv(nn.Module):
    def __init__(self, dim):
        self.dwconv = DepthwiseConv2d(dim, 3, padding=1)

    def execute(self, x):
        return self.dwconv(x)


class Mlp(nn.Module):
    def __init__(self, dim, hidden, drop=0.0):
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.dwconv = DWConv(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)
        self.drop = nn.Dropout(drop)

    def execute(self, x):
        x = self.drop(self.act(self.dwconv(self.fc1(x))))
        return self.drop(self.fc2(x))


class LKA(nn.Module):
    """Large-kernel attention: a 21x21 receptive field from 5x5 + dilated 7x7 depthwise convs."""

    def __init__(self, dim):
        self.conv0 = DepthwiseConv2d(dim, 5, padding=2)
        self.conv_spatial = DepthwiseConv2d(dim, 7, padding=9, dilation=3)
        self.conv1 = nn.Conv2d(dim, dim, 1)

    def execute(self, x):
        return x * self.conv1(self.conv_spatial(self.conv0(x)))


class Attention(nn.Module):
    def __init__(self, dim):
        self.proj_1 = nn.Conv2d(dim, dim, 1)
        self.activation = nn.GELU()
        self.spatial_gating_unit = LKA(dim)
        self.proj_2 = nn.Conv2d(dim, dim, 1)

    def execute(self, x):
        out = self.proj_2(self.spatial_gating_unit(self.activation(self.proj_1(x))))
        return out + x


class Block(nn.Module):
    def __init__(self, dim, mlp_ratio, drop_path=0.0, drop=0.0):
        self.norm1 = BatchNorm2d(dim)
        self.attn = Attention(dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = BatchNorm2d(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)
        self.layer_scale_1 = jt.full((dim,), 1e-2)
        self.layer_scale_2 = jt.full((dim,), 1e-2)

    def execute(self, x):
        x = x + self.drop_path(self.layer_scale_1.reshape(1, -1, 1, 1) * self.attn(self.norm1(x)))
        return x + self.drop_path(self.layer_scale_2.reshape(1, -1, 1, 1) * self.mlp(self.norm2(x)))


class OverlapPatchEmbed(nn.Module):
    def __init__(self, patch_size, stride, in_channels, dim):
        self.proj = nn.Conv2d(in_channels, dim, patch_size, stride=stride, padding=patch_size // 2)
        self.norm = BatchNorm2d(dim)

    def execute(self, x):
        return self.norm(self.proj(x))


class VAN(nn.Module):
    """Returns the four stage maps (strides 4, 8, 16, 32), each after its stage LayerNorm."""

    def __init__(self, embed_dims, depths, mlp_ratios=MLP_RATIOS, drop_path_rate=0.0, drop_rate=0.0):
        self.embed_dims = list(embed_dims)
        rates = np.linspace(0, drop_path_rate, sum(depths)).tolist()  # stochastic depth grows linearly
        for i, (dim, depth) in enumerate(zip(embed_dims, depths)):
            first = i == 0
            setattr(self, f"patch_embed{i + 1}", OverlapPatchEmbed(
                7 if first else 3, 4 if first else 2, 3 if first else embed_dims[i - 1], dim))
            start = sum(depths[:i])
            setattr(self, f"block{i + 1}", nn.ModuleList(
                [Block(dim, mlp_ratios[i], rates[start + j], drop_rate) for j in range(depth)]))
            setattr(self, f"norm{i + 1}", nn.LayerNorm(dim, eps=1e-6))

    def execute(self, x):
        features = []
        for i in range(len(self.embed_dims)):
            x = getattr(self, f"patch_embed{i + 1}")(x)
            for block in getattr(self, f"block{i + 1}"):
                x = block(x)
            x = getattr(self, f"norm{i + 1}")(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
            features.append(x)
        return features


def _variant(name, **kwargs):
    dims, depths = VARIANTS[name]
    return VAN(dims, depths, **kwargs)


def van_b0(**kwargs):
    return _variant("van_b0", **kwargs)


def van_b1(**kwargs):
    return _variant("van_b1", **kwargs)


def van_b2(**kwargs):
    return _variant("van_b2", **kwargs)


def van_b3(**kwargs):
    return _variant("van_b3", **kwargs)


van_base = van_b2
