"""The recurrent criss-cross attention head (CCNet Fig. 2), as the official RCCAModule.

    x -> conva (3x3, C -> C/4) -> CCA, R times with shared weights -> convb (3x3)
      -> bottleneck(concat[x, .]) (3x3 -> 512) -> Dropout2d(0.1) -> 1x1 classifier

Each 3x3 conv is followed by a norm and its activation: the official InPlaceABN with LeakyReLU(0.01),
or BatchNorm with ReLU for mmsegmentation's CCHead, whose convs.0, cca, convs.1, conv_cat and
conv_seg are conva, cca, convb, bottleneck.0-1 and bottleneck.3 here.

With `ccl` (TPAMI version) the head also has `embed`, a 1x1 conv reducing the RCCA output (after
convb) 16 times; in training it returns (logits, embedding) for the category consistent loss.
"""
import jittor_env  # noqa: F401
import jittor as jt
from jittor import nn

from .cca import CrissCrossAttention
from .norm import make_norm
from .stochastic import Dropout2d

CCL_REDUCTION = 16  # channel reduction before the category consistent loss


def conv_norm(in_channels, out_channels, activation, norm):
    """conv3x3 without bias followed by an activated norm: indices 0 and 1 in the checkpoints."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
                         make_norm(norm, out_channels, activation))


class RCCAHead(nn.Module):
    """`inter_channels` (the attention's width) defaults to in_channels / 4, as in the paper."""

    def __init__(self, in_channels, num_classes, recurrence=2, out_channels=512,
                 activation="leaky_relu", ccl=False, norm="inplace_abn", inter_channels=None):
        if recurrence < 0:
            raise ValueError(f"RCCAHead: recurrence must be >= 0, got {recurrence}")
        inter_channels = inter_channels or in_channels // 4
        self.recurrence = recurrence
        self.conva = conv_norm(in_channels, inter_channels, activation, norm)
        self.cca = CrissCrossAttention(inter_channels)
        self.convb = conv_norm(inter_channels, inter_channels, activation, norm)
        self.bottleneck = nn.Sequential(
            *conv_norm(in_channels + inter_channels, out_channels, activation, norm),
            Dropout2d(0.1),
            nn.Conv2d(out_channels, num_classes, 1),
        )
        self.embed = nn.Conv2d(inter_channels, inter_channels // CCL_REDUCTION, 1) if ccl else None

    def execute(self, x):
        out = self.conva(x)
        for _ in range(self.recurrence):  # the same module each time: weights are shared
            out = self.cca(out)
        out = self.convb(out)
        logits = self.bottleneck(jt.concat([x, out], dim=1))
        if self.embed is not None and self.is_train:
            return logits, self.embed(out)
        return logits
