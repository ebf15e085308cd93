"""Dilated ResNet-101 as in the official CCNet code and the MIT ImageNet checkpoint it starts from.

Deep stem (three 3x3 convs, 64-64-128) and a 3x3 max pool with ceil_mode=True; bottlenecks with
the stride on the 3x3 conv; layer3 and layer4 keep stride 1 and use dilation 2 and 4 in every
block, so the output stride is 8. Every norm is the official InPlaceABNSync without activation
(see models/norm.py); a ReLU follows where the official code has one. Parameter names are the
checkpoint's: conv1, bn1, ..., layer1.0.conv1, layer1.0.downsample.0, ...
"""
import jittor_env  # noqa: F401
from jittor import nn

from .norm import ABN

EXPANSION = 4


def backbone_norm(channels):
    return ABN(channels, activation="identity")


class Bottleneck(nn.Module):
    def __init__(self, in_channels, planes, stride=1, dilation=1, downsample=None):
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = backbone_norm(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=dilation,
                               dilation=dilation, bias=False)
        self.bn2 = backbone_norm(planes)
        self.conv3 = nn.Conv2d(planes, planes * EXPANSION, 1, bias=False)
        self.bn3 = backbone_norm(planes * EXPANSION)
        self.downsample = downsample

    def execute(self, x):
        out = nn.relu(self.bn1(self.conv1(x)))
        out = nn.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return nn.relu(out + shortcut)


class ResNet(nn.Module):
    """Returns the layer3 (4 * 4w channels) and layer4 (8 * 4w channels) maps, both at stride 8.

    `width` w scales every layer (64 for ResNet-101); `layers` counts the bottlenecks per layer.
    """

    def __init__(self, layers=(3, 4, 23, 3), width=64):
        self.conv1 = nn.Conv2d(3, width, 3, stride=2, padding=1, bias=False)
        self.bn1 = backbone_norm(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = backbone_norm(width)
        self.conv3 = nn.Conv2d(width, width * 2, 3, padding=1, bias=False)
        self.bn3 = backbone_norm(width * 2)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
        self.in_channels = width * 2
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
                backbone_norm(planes * EXPANSION))
        layers = [Bottleneck(self.in_channels, planes, stride, dilation, downsample)]
        self.in_channels = planes * EXPANSION
        layers += [Bottleneck(self.in_channels, planes, 1, dilation) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def stem(self, x):
        x = nn.relu(self.bn1(self.conv1(x)))
        x = nn.relu(self.bn2(self.conv2(x)))
        x = nn.relu(self.bn3(self.conv3(x)))
        return self.maxpool(x)

    def execute(self, x):
        x = self.layer2(self.layer1(self.stem(x)))
        c3 = self.layer3(x)
        return c3, self.layer4(c3)


def resnet101():
    return ResNet((3, 4, 23, 3), width=64)
