"""CCNet in Jittor: criss-cross attention, the RCCA head, ResNet-101 and VAN backbones."""
import jittor_env  # noqa: F401  (configures Jittor before its first import)

from .ccnet import BACKBONES, build_ccnet

__all__ = ["BACKBONES", "build_ccnet"]
