"""The datasets CCNet is trained and evaluated on, the loader, the standard transforms.

DATASETS maps the name a checkpoint records to its class: ADE20K (the default), Cityscapes and
Pascal VOC 2012 with SBD ("voc12aug"). CLASSES, NAMES and PALETTE are ADE20K's; IGNORE is the
training label of pixels no loss or metric counts (255).
"""
from .ade20k import ADE20K, NUM_CLASSES
from .ade20k_classes import CLASSES, NAMES, PALETTE
from .cityscapes import Cityscapes
from .loader import Loader, LoaderError
from .segmentation import DatasetError
from .transforms import IGNORE
from .voc import PascalVOC

DATASETS = {cls.NAME: cls for cls in (ADE20K, Cityscapes, PascalVOC)}

__all__ = ["ADE20K", "Cityscapes", "PascalVOC", "DATASETS", "DatasetError", "NUM_CLASSES", "CLASSES", "NAMES",
           "PALETTE", "IGNORE", "Loader", "LoaderError"]
