"""The recurrent criss-cross attention head (CCNet Fig. 2), as the official RCCAModule.

    x -> conva (3x3, C -> C/4) -> CCA, R times with shared weights -> convb (3x3)
      -> bottleneck(concat[x, .]) (3x3 -> 512) -> Dropout2d(0.1) -> 1x1 classifier
"""
import jittor_env  # noqa: F401
import jittor as jt
from jittor import nn

from .cca import CrissCrossAttention
from .norm import ABN


def conv_abn(in_channels, out_channels, activation):
    """conv3x3 without bias followed by activated batch norm: indices 0 and 1 in the checkpoints."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
                         ABN(out_channels, activation))


class RCCAHead(nn.Module):
    def __init__(self, in_channels, num_classes, recurrence=2, out_channels=512,
                 activation="leaky_relu"):
        if recurrence < 0:
            raise ValueError(f"RCCAHead: recurrence must be >= 0, got {recurrence}")
        inter_channels = in_channels // 4
        self.recurrence = recurrence
        self.conva = conv_abn(in_channels, inter_channels, activation)
        self.cca = CrissCrossAttention(inter_channels)
        self.convb = conv_abn(inter_channels, inter_channels, activation)
        self.bottleneck = nn.Sequential(
            nn.Conv2d(in_channels + inter_channels, out_channels, 3, padding=1, bias=False),
            ABN(out_channels, activation),
            nn.Dropout2d(0.1),
            nn.Conv2d(out_channels, num_classes, 1),
        )

    def execute(self, x):
        out = self.conva(x)
        for _ in range(self.recurrence):  # the same module each time: weights are shared
            out = self.cca(out)
        out = self.convb(out)
        return self.bottleneck(jt.concat([x, out], dim=1))
