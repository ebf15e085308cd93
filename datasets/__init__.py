"""ADE20K for CCNet: the loader, the standard transforms, the class names and palette."""
from .ade20k import ADE20K, DatasetError, NUM_CLASSES
from .ade20k_classes import CLASSES, NAMES, PALETTE
from .loader import Loader, LoaderError

__all__ = ["ADE20K", "DatasetError", "NUM_CLASSES", "CLASSES", "NAMES", "PALETTE", "Loader", "LoaderError"]
