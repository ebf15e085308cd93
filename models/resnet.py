"""Dilated ResNet (output stride 8) in the two published CCNet layouts, one class with a few switches.

"official" is the official CCNet code and the MIT ImageNet checkpoint it starts from: deep stem of
three 3x3 convs 64-64-128, a 3x3 max pool with ceil_mode=True, dilation 2 in every layer3 block
and 4 in every layer4 block, every norm the official InPlaceABNSync without activation (see
models/norm.py). "mmseg" is mmsegmentation's ResNetV1c as its CCNet configs use it: stem 32-32-64,
max pool without ceil mode, contract dilation (the first block of a dilated layer at half the
dilation: 1 in layer3, 2 in layer4), plain BatchNorm. Both put the stride on the 3x3 conv of a
bottleneck and a ReLU after each norm where the reference code has one; a ReLU that directly
follows a norm is that norm's activation here, and so is the ReLU after a bottleneck's shortcut
add, the shortcut joining inside its last norm (the same function, fewer kernels in training).
Parameter names are the official checkpoint's (conv1, bn1, ..., layer1.0.conv1,
layer1.0.downsample.0, ...); the converter renames mmsegmentation's (stem.0, stem.1, ...) to them.
"""
import jittor_env  # noqa: F401
from jittor import nn

from .norm import make_norm

EXPANSION = 4
DEPTHS = {"resnet50": (3, 4, 6, 3), "resnet101": (3, 4, 23, 3)}
# stem conv widths as multiples of the base width, max-pool ceil mode, contract dilation, norm
LAYOUTS = {
    "official": dict(stem=(1, 1, 2), ceil_mode=True, contract_dilation=False, norm="inplace_abn"),
    "mmseg": dict(stem=(0.5, 0.5, 1), ceil_mode=False, contract_dilation=True, norm="batchnorm"),
}


class Bottleneck(nn.Module):
    def __init__(self, in_channels, planes, stride=1, dilation=1, downsample=None, norm="inplace_abn"):
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = make_norm(norm, planes, "relu")
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=dilation,
                               dilation=dilation, bias=False)
        self.bn2 = make_norm(norm, planes, "relu")
        self.conv3 = nn.Conv2d(planes, planes * EXPANSION, 1, bias=False)
        self.bn3 = make_norm(norm, planes * EXPANSION, "relu")  # after the shortcut joins
        self.downsample = downsample

    def execute(self, x):
        out = self.bn1(self.conv1(x))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.bn3(self.conv3(out), residual=shortcut)


class ResNet(nn.Module):
    """Returns the layer3 (4 * 4w channels) and layer4 (8 * 4w channels) maps, both at stride 8.

    `width` w scales every layer (64 for the published models); `layers` counts the bottlenecks
    per layer; `layout` is "official" or "mmseg" (see the module docstring).
    """

    def __init__(self, layers=DEPTHS["resnet101"], width=64, layout="official"):
        if layout not in LAYOUTS:
            raise ValueError(f"ResNet: layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
        spec = LAYOUTS[layout]
        self.norm = spec["norm"]
        self.contract_dilation = spec["contract_dilation"]
        s1, s2, s3 = (int(width * m) for m in spec["stem"])
        self.conv1 = nn.Conv2d(3, s1, 3, stride=2, padding=1, bias=False)
        self.bn1 = make_norm(self.norm, s1, "relu")
        self.conv2 = nn.Conv2d(s1, s2, 3, padding=1, bias=False)
        self.bn2 = make_norm(self.norm, s2, "relu")
        self.conv3 = nn.Conv2d(s2, s3, 3, padding=1, bias=False)
        self.bn3 = make_norm(self.norm, s3, "relu")
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=spec["ceil_mode"])
        self.in_channels = s3
        self.layer1 = self._make_layer(width, layers[0])
        self.layer2 = self._make_layer(width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(width * 4, layers[2], dilation=2)
        self.layer4 = self._make_layer(width * 8, layers[3], dilation=4)
        self.out_channels = (width * 4 * EXPANSION, width * 8 * EXPANSION)

    def _make_layer(self, planes, blocks, stride=1, dilation=1):
        downsample = None
        if stride != 1 or self.in_channels != planes * EXPANSION:
            downsample = nn.Sequential(
                nn.Conv2d(self.in_channels, planes * EXPANSION, 1, stride=stride, bias=False),
                make_norm(self.norm, planes * EXPANSION, "identity"))
        first_dilation = dilation // 2 if self.contract_dilation and dilation > 1 else dilation
        layers = [Bottleneck(self.in_channels, planes, stride, first_dilation, downsample, self.norm)]
        self.in_channels = planes * EXPANSION
        layers += [Bottleneck(self.in_channels, planes, 1, dilation, norm=self.norm) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def stem(self, x):
        x = self.bn1(self.conv1(x))
        x = self.bn2(self.conv2(x))
        x = self.bn3(self.conv3(x))
        return self.maxpool(x)

    def execute(self, x):
        x = self.layer2(self.layer1(self.stem(x)))
        c3 = self.layer3(x)
        return c3, self.layer4(c3)


def resnet101():
    return ResNet(DEPTHS["resnet101"], width=64)
