"""PyTorch mirrors of the published models, written from their definitions, for the benchmarks,
the optional parity tests and the checkpoint fixtures (tools/make_checkpoint_fixtures.py).

`CCNet` has the official CCNet's module names (conv1, ..., layer4, head.conva, head.cca, dsn);
`ImageNetResNet` the MIT ImageNet checkpoint's (the same backbone plus `fc`); `VAN` the official
VAN checkpoint's (patch_embed1, block1.0.attn.spatial_gating_unit, norm1, ..., head).
"""
import torch
import torch.nn.functional as F
from torch import nn

from reference.torch_cca import CrissCrossAttention


class ABN(nn.BatchNorm2d):
    """InPlaceABN's arithmetic: scale |weight| + eps, then the activation."""

    def __init__(self, channels, activation="leaky_relu"):
        super().__init__(channels)
        self.activation = activation

    def forward(self, x):
        y = F.batch_norm(x, self.running_mean, self.running_var, self.weight.abs() + self.eps,
                         self.bias, self.training, self.momentum, self.eps)
        if self.activation == "leaky_relu":
            return F.leaky_relu(y, 0.01)
        return y


def identity_abn(channels):
    return ABN(channels, "identity")


class Bottleneck(nn.Module):
    def __init__(self, inplanes, planes, stride=1, dilation=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = identity_abn(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, dilation, dilation, bias=False)
        self.bn2 = identity_abn(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = identity_abn(planes * 4)
        self.downsample = downsample

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet(nn.Module):
    def __init__(self, layers=(3, 4, 23, 3), width=64):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, 2, 1, bias=False)
        self.bn1 = identity_abn(width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = identity_abn(width)
        self.conv3 = nn.Conv2d(width, 2 * width, 3, 1, 1, bias=False)
        self.bn3 = identity_abn(2 * width)
        self.maxpool = nn.MaxPool2d(3, 2, 1, ceil_mode=True)
        self.inplanes = 2 * width
        self.layer1 = self._layer(width, layers[0], 1, 1)
        self.layer2 = self._layer(2 * width, layers[1], 2, 1)
        self.layer3 = self._layer(4 * width, layers[2], 1, 2)
        self.layer4 = self._layer(8 * width, layers[3], 1, 4)

    def _layer(self, planes, blocks, stride, dilation):
        downsample = None
        if stride != 1 or self.inplanes != planes * 4:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * 4, 1, stride, bias=False),
                                       identity_abn(planes * 4))
        blocks_ = [Bottleneck(self.inplanes, planes, stride, dilation, downsample)]
        self.inplanes = planes * 4
        blocks_ += [Bottleneck(self.inplanes, planes, 1, dilation) for _ in range(1, blocks)]
        return nn.Sequential(*blocks_)

    def features(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = self.maxpool(F.relu(self.bn3(self.conv3(x))))
        c3 = self.layer3(self.layer2(self.layer1(x)))
        return c3, self.layer4(c3)


class ImageNetResNet(ResNet):
    """The MIT ImageNet classifier: the backbone above plus average pooling and `fc`."""

    def __init__(self, layers=(3, 4, 23, 3), width=64, classes=1000):
        super().__init__(layers, width)
        self.fc = nn.Linear(32 * width, classes)


class RCCAModule(nn.Module):
    def __init__(self, in_channels, num_classes, recurrence=2, out_channels=512):
        super().__init__()
        inter = in_channels // 4
        self.recurrence = recurrence
        self.conva = nn.Sequential(nn.Conv2d(in_channels, inter, 3, padding=1, bias=False), ABN(inter))
        self.cca = CrissCrossAttention(inter)
        self.convb = nn.Sequential(nn.Conv2d(inter, inter, 3, padding=1, bias=False), ABN(inter))
        self.bottleneck = nn.Sequential(
            nn.Conv2d(in_channels + inter, out_channels, 3, padding=1, bias=False), ABN(out_channels),
            nn.Dropout2d(0.1), nn.Conv2d(out_channels, num_classes, 1))

    def forward(self, x):
        out = self.conva(x)
        for _ in range(self.recurrence):
            out = self.cca(out)
        return self.bottleneck(torch.cat([x, self.convb(out)], 1))


class CCNet(ResNet):
    def __init__(self, num_classes=150, recurrence=2, layers=(3, 4, 23, 3), width=64, head_channels=512):
        super().__init__(layers, width)
        self.head = RCCAModule(32 * width, num_classes, recurrence, head_channels)
        self.dsn = nn.Sequential(
            nn.Conv2d(16 * width, head_channels, 3, padding=1), ABN(head_channels),
            nn.Dropout2d(0.1), nn.Conv2d(head_channels, num_classes, 1))

    def forward(self, x):
        c3, c4 = self.features(x)
        out = self.head(c4)
        return (out, self.dsn(c3)) if self.training else out


class LKA(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.conv0 = nn.Conv2d(dim, dim, 5, padding=2, groups=dim)
        self.conv_spatial = nn.Conv2d(dim, dim, 7, padding=9, groups=dim, dilation=3)
        self.conv1 = nn.Conv2d(dim, dim, 1)

    def forward(self, x):
        return x * self.conv1(self.conv_spatial(self.conv0(x)))


class SpatialAttention(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.proj_1 = nn.Conv2d(dim, dim, 1)
        self.activation = nn.GELU()
        self.spatial_gating_unit = LKA(dim)
        self.proj_2 = nn.Conv2d(dim, dim, 1)

    def forward(self, x):
        return self.proj_2(self.spatial_gating_unit(self.activation(self.proj_1(x)))) + x


class DWConv(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x):
        return self.dwconv(x)


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.dwconv = DWConv(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x):
        return self.fc2(self.act(self.dwconv(self.fc1(x))))


class Block(nn.Module):
    def __init__(self, dim, mlp_ratio):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(dim)
        self.attn = SpatialAttention(dim)
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = Mlp(dim, dim * mlp_ratio)
        self.layer_scale_1 = nn.Parameter(1e-2 * torch.ones(dim))
        self.layer_scale_2 = nn.Parameter(1e-2 * torch.ones(dim))

    def forward(self, x):
        x = x + self.layer_scale_1[:, None, None] * self.attn(self.norm1(x))
        return x + self.layer_scale_2[:, None, None] * self.mlp(self.norm2(x))


class OverlapPatchEmbed(nn.Module):
    def __init__(self, patch_size, stride, in_chans, dim):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, patch_size, stride, patch_size // 2)
        self.norm = nn.BatchNorm2d(dim)

    def forward(self, x):
        return self.norm(self.proj(x))


class VAN(nn.Module):
    """The ImageNet VAN; `features` gives the four normalised stage maps (classes=0: no classifier)."""

    def __init__(self, dims=(64, 128, 320, 512), depths=(3, 3, 12, 3), mlp_ratios=(8, 8, 4, 4),
                 classes=1000):
        super().__init__()
        self.stages = len(dims)
        for i in range(self.stages):
            setattr(self, f"patch_embed{i + 1}", OverlapPatchEmbed(
                7 if i == 0 else 3, 4 if i == 0 else 2, 3 if i == 0 else dims[i - 1], dims[i]))
            setattr(self, f"block{i + 1}", nn.ModuleList(
                [Block(dims[i], mlp_ratios[i]) for _ in range(depths[i])]))
            setattr(self, f"norm{i + 1}", nn.LayerNorm(dims[i], eps=1e-6))
        if classes:
            self.head = nn.Linear(dims[-1], classes)

    def features(self, x):
        out = []
        for i in range(self.stages):
            x = getattr(self, f"patch_embed{i + 1}")(x)
            for block in getattr(self, f"block{i + 1}"):
                x = block(x)
            x = getattr(self, f"norm{i + 1}")(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
            out.append(x)
        return out


class CCNetVAN(nn.Module):
    """The project's VAN path: stages 2-4 resized to stride 8 and concatenated, RCCA, DSN on stage 3."""

    def __init__(self, num_classes=150, recurrence=2, dims=(64, 128, 320, 512), depths=(3, 3, 12, 3)):
        super().__init__()
        self.backbone = VAN(dims, depths, classes=0)
        self.head = RCCAModule(sum(dims[1:]), num_classes, recurrence)
        self.dsn = nn.Sequential(nn.Conv2d(dims[2], 512, 3, padding=1), ABN(512), nn.Dropout2d(0.1),
                                 nn.Conv2d(512, num_classes, 1))

    def forward(self, x):
        _, c2, c3, c4 = self.backbone.features(x)
        size = c2.shape[2:]
        fused = torch.cat([c2] + [F.interpolate(c, size=size, mode="bilinear", align_corners=False)
                                  for c in (c3, c4)], 1)
        out = self.head(fused)
        return (out, self.dsn(c3)) if self.training else out


def sgd_step(model, optimizer, x, labels):
    """One SGD step on the main + 0.4 x DSN cross entropy at label resolution; returns the loss."""
    def loss_of(logits):
        logits = F.interpolate(logits, size=labels.shape[1:], mode="bilinear", align_corners=True)
        return F.cross_entropy(logits, labels, ignore_index=255)
    main, aux = model(x)
    loss = loss_of(main) + 0.4 * loss_of(aux)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss
