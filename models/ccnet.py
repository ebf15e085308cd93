"""CCNet: a backbone giving a stride-8 map, the RCCA head on it, and an auxiliary (DSN) head.

ResNet-101 is the official model: the RCCA head on layer4, the DSN head on layer3, parameter
names as the official checkpoints (conv1, ..., layer4, head.*, dsn.*). The same class also builds
mmsegmentation's CCNet (ResNet-50/101-D8, layout "mmseg"): its ResNetV1c backbone (models/resnet.py),
BatchNorm + ReLU in the heads, and an auxiliary FCN head 256 wide whose conv has no bias.

VAN's deepest stage is at stride 32. Its stages 2, 3 and 4 (strides 8, 16, 32) are resized to
stride 8 (bilinear) and concatenated, and the RCCA head runs on that map, so criss-cross attention
works at the resolution the paper uses; the DSN head sits on stage 3.

In eval mode `model(x)` returns the main logits (stride 8); in train mode (main, auxiliary), and
with `ccl` (main, auxiliary, embedding) for the category consistent loss.
"""
import jittor_env  # noqa: F401
import jittor as jt
from jittor import nn

from . import van
from .norm import make_norm
from .rcca import RCCAHead
from .resize import resize_bilinear
from .resnet import DEPTHS, LAYOUTS, ResNet
from .stochastic import Dropout2d

BACKBONES = ("resnet101", "van_b0", "van_b1", "van_b2", "van_b3", "van_base")  # trainable here
VAN_DROP_PATH = 0.1  # stochastic depth of the VAN backbone when training the segmenter
# what the heads look like in each layout (the backbone's part is in models/resnet.py)
HEADS = {
    "official": dict(activation="leaky_relu", aux_channels=None, aux_bias=True),  # None: head_channels
    "mmseg": dict(activation="relu", aux_channels=256, aux_bias=False),
}


def dsn_head(in_channels, num_classes, activation="leaky_relu", channels=512, bias=True,
             norm="inplace_abn"):
    """The auxiliary classifier: conv3x3 -> norm + activation -> Dropout2d(0.1) -> conv1x1."""
    return nn.Sequential(
        nn.Conv2d(in_channels, channels, 3, padding=1, bias=bias),
        make_norm(norm, channels, activation),
        Dropout2d(0.1),
        nn.Conv2d(channels, num_classes, 1),
    )


def training_outputs(head_out, aux):
    """(main, aux) or, when the head also gives the CCL embedding, (main, aux, embedding)."""
    if isinstance(head_out, tuple):
        return head_out[0], aux, head_out[1]
    return head_out, aux


class CCNetResNet(ResNet):
    """`layout` "official" or "mmseg"; `activation` and `aux_channels` default to the layout's.

    `layers`, `width`, `head_channels` (512) and `aux_channels` shrink the model for tests.
    """

    def __init__(self, num_classes, recurrence=2, activation=None, layers=DEPTHS["resnet101"],
                 width=64, head_channels=512, ccl=False, layout="official", aux_channels=None):
        super().__init__(layers, width, layout)
        heads = HEADS[layout]
        activation = activation or heads["activation"]
        c3, c4 = self.out_channels
        self.head = RCCAHead(c4, num_classes, recurrence, head_channels, activation, ccl, self.norm,
                             inter_channels=head_channels if layout == "mmseg" else None)
        aux_channels = aux_channels or heads["aux_channels"] or head_channels
        self.dsn = dsn_head(c3, num_classes, activation, aux_channels, heads["aux_bias"], self.norm)
        self.train()  # PyTorch's default; note that Jittor's eval() also stops gradients

    def features(self, x):
        """(input of the RCCA head, input of the DSN head): layer4 and layer3."""
        c3, c4 = super().execute(x)
        return c4, c3

    def execute(self, x):
        top, aux = self.features(x)
        return training_outputs(self.head(top), self.dsn(aux)) if self.is_train else self.head(top)


class CCNetVAN(nn.Module):
    """`embed_dims` and `depths` override the variant's, to shrink the model for tests."""

    def __init__(self, variant, num_classes, recurrence=2, activation="leaky_relu",
                 drop_path_rate=VAN_DROP_PATH, embed_dims=None, depths=None, ccl=False):
        if embed_dims is None:
            embed_dims, depths = van.VARIANTS[variant]
        self.backbone = van.VAN(embed_dims, depths, drop_path_rate=drop_path_rate)
        self.head = RCCAHead(sum(embed_dims[1:]), num_classes, recurrence, activation=activation, ccl=ccl)
        self.dsn = dsn_head(embed_dims[2], num_classes, activation)
        self.train()

    def features(self, x):
        """(input of the RCCA head, input of the DSN head): stages 2-4 at stride 8, and stage 3."""
        _, c2, c3, c4 = self.backbone(x)
        size = c2.shape[2:]
        return jt.concat([c2] + [resize_bilinear(c, size) for c in (c3, c4)], dim=1), c3

    def execute(self, x):
        top, aux = self.features(x)
        return training_outputs(self.head(top), self.dsn(aux)) if self.is_train else self.head(top)


def build_ccnet(backbone, num_classes=150, recurrence=2, activation=None, ccl=False, layout="official",
                **widths):
    """CCNet with `backbone` in BACKBONES or "resnet50" ("van_base" is VAN-B2).

    `layout` "official" (the default, the one trained here) or "mmseg" (ResNets only);
    `widths` (width, head_channels, aux_channels: ResNets only) override the published sizes.
    """
    names = sorted(set(BACKBONES) | set(DEPTHS))
    if backbone not in names:
        raise ValueError(f"build_ccnet: backbone must be one of {', '.join(names)}, got {backbone!r}")
    if layout not in LAYOUTS:
        raise ValueError(f"build_ccnet: layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if backbone in DEPTHS:
        return CCNetResNet(num_classes, recurrence, activation, DEPTHS[backbone], ccl=ccl, layout=layout,
                           **widths)
    if layout != "official" or widths:
        raise ValueError(f"build_ccnet: {backbone} has only the official layout and widths")
    variant = "van_b2" if backbone == "van_base" else backbone
    return CCNetVAN(variant, num_classes, recurrence, activation=activation or "leaky_relu", ccl=ccl)
