"""Segmentation metrics as the ADE20K benchmark computes them, accumulated over a whole dataset.

For every class: intersection, union, predicted area and labelled area are summed over all images
first, and divided only at the end (averaging per-image IoUs would be a different, wrong number).
Pixels labelled `ignore_index` (ADE20K's "other") count in neither prediction nor label; a pixel
predicted `ignore_index` (no class, as a benchmark PNG's 0) counts as labelled but predicts nothing.

    aAcc  correctly labelled pixels / labelled pixels
    IoU_c intersection_c / union_c, NaN where class c occurs in neither prediction nor label
    Acc_c intersection_c / labelled_c, NaN where class c is never labelled
    mIoU  mean of IoU over the classes where it is defined (mmsegmentation's number)
    mAcc  the same for Acc
    mIoU (devkit)  mean over all classes with undefined IoU counted as 0 (the devkit's script)
"""
import numpy as np

from datasets.transforms import IGNORE


class SegmentationMetrics:
    def __init__(self, num_classes, ignore_index=IGNORE):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.intersection = np.zeros(num_classes, np.int64)
        self.predicted = np.zeros(num_classes, np.int64)
        self.labelled = np.zeros(num_classes, np.int64)

    def update(self, prediction, label):
        """Add one image: prediction and label are integer arrays of the same shape."""
        if prediction.shape != label.shape:
            raise ValueError(f"prediction {prediction.shape} and label {label.shape} differ in shape")
        valid = label != self.ignore_index
        pred, true = prediction[valid].astype(np.int64), label[valid].astype(np.int64)
        bad = (pred != self.ignore_index) & ((pred < 0) | (pred >= self.num_classes))
        if bad.any():
            raise ValueError(f"predictions must be 0..{self.num_classes - 1} or {self.ignore_index}, "
                             f"found {pred[bad][0]}")
        if true.size and (true.min() < 0 or true.max() >= self.num_classes):
            raise ValueError(f"labels must be 0..{self.num_classes - 1} or {self.ignore_index}, "
                             f"found {true.min()}..{true.max()}")
        k = self.num_classes
        self.intersection += np.bincount(true[pred == true], minlength=k)
        self.predicted += np.bincount(pred[pred != self.ignore_index], minlength=k)
        self.labelled += np.bincount(true, minlength=k)

    def results(self):
        union = self.predicted + self.labelled - self.intersection
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = np.where(union > 0, self.intersection / union, np.nan)
            acc = np.where(self.labelled > 0, self.intersection / self.labelled, np.nan)
        total = self.labelled.sum()
        return {
            "aAcc": float(self.intersection.sum() / total) if total else float("nan"),
            "mIoU": float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
            "mAcc": float(np.nanmean(acc)) if np.isfinite(acc).any() else float("nan"),
            "mIoU_devkit": float(np.nan_to_num(iou).mean()),
            "IoU": iou.tolist(),
            "Acc": acc.tolist(),
        }
