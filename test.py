"""Evaluate CCNet on ADE20K, Cityscapes or Pascal VOC, or score saved ADE20K predictions.

    python test.py --ckpt work_dirs/ccnet_van_base/latest.safetensors
    python test.py --ckpt CKPT --mode slide --scales 0.5 0.75 1.0 1.25 1.5 1.75 --flip
    python test.py --ckpt CKPT --save-pred --out results/
    python test.py --pred-dir results/pred --data-root data/ADEChallengeData2016
    python test.py --ckpt CKPT --image photo.jpg

CKPT is a checkpoint of train.py or an evaluation-only one from tools/convert_weights.py (published
mmsegmentation or official CCNet weights). The model and its evaluation protocol come from the
checkpoint: the dataset, input normalisation, test scale, align_corners, and whole or sliding
crops (--mode, --crop-size and --stride override the last). Metrics are computed as the ADE20K devkit
and mmsegmentation do (metrics.py); the protocol is printed and saved with the numbers in
OUT/metrics.json and metrics.md. --pred-dir scores ADE20K PNG predictions in the benchmark's
convention (1..150, 0 = no class), one per annotation, named like it. --image runs one picture and
writes its prediction and overlay.
"""
import argparse
import json
import os
import sys

import numpy as np
from PIL import Image
from tqdm import tqdm

import jittor_env  # noqa: F401

from datasets import ADE20K, DATASETS, IGNORE, DatasetError
from datasets.ade20k import read_annotation, to_train_ids
from datasets.segmentation import read_image
from checkpoints import CheckpointError, evaluation_protocol, load_model, protocol_normalization
from files import WriteError, make_folder, replace_atomic, write_text
from inference import evaluate, predict
from metrics import SegmentationMetrics


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--ckpt", help="a checkpoint of train.py or tools/convert_weights.py")
    source.add_argument("--pred-dir", help="score PNG predictions (1..150) instead of running a model")
    p.add_argument("--image", help="with --ckpt: predict this one picture and write its overlay")
    p.add_argument("--data-root", help="dataset root (default: the checkpoint's training data, else "
                   + ", ".join(f"{name} {cls.DEFAULT_ROOT}" for name, cls in DATASETS.items()) + ")")
    p.add_argument("--split", help="split to evaluate (default: validation, val for Cityscapes and VOC)")
    p.add_argument("--mode", choices=["whole", "slide"],
                   help="whole image (keep-ratio resize to the checkpoint's test scale, 2048x512 for ADE20K) "
                        "or sliding crops (default: the checkpoint's)")
    p.add_argument("--scales", type=float, nargs="+", default=[1.0], help="scale ratios, e.g. 0.5 0.75 1.0 1.25 1.5 1.75")
    p.add_argument("--flip", action="store_true", help="also run the horizontally flipped image")
    p.add_argument("--crop-size", type=int, help="slide mode: window size (default: the checkpoint's, 512 for ADE20K)")
    p.add_argument("--stride", type=int, help="slide mode: window stride (default: the checkpoint's, 341 for ADE20K)")
    p.add_argument("--out", default=None, help="where metrics and pictures go (default: next to the checkpoint)")
    p.add_argument("--save-pred", action="store_true",
                   help="write benchmark PNGs (pred/), colourised predictions and overlays (vis/)")
    p.add_argument("--allow-global", action="append", default=[], metavar="MODULE.NAME",
                   help="read a pickled checkpoint that names this global; it is kept as inert data, never "
                        "imported or called (docs/checkpoints.md)")
    return p.parse_args(argv)


def colourise(label, palette):
    """Training labels (0..K-1, 255) -> RGB with the dataset's palette, black where ignored."""
    rgb = np.zeros(label.shape + (3,), np.uint8)
    known = label != IGNORE
    rgb[known] = palette[label[known]]
    return rgb


def overlay(image, label, palette):
    return (0.5 * image + 0.5 * colourise(label, palette)).astype(np.uint8)


def save_image(array, path):
    """A picture, written atomically (its format from the extension)."""
    replace_atomic(path, lambda tmp: Image.fromarray(array).save(tmp))


def prediction_writer(out, dataset):
    """Saves each prediction as a PNG of class index + 1 (ADE20K's benchmark convention; 0 = none)
    and an image | prediction | ground-truth picture."""
    make_folder(os.path.join(out, "pred"))
    make_folder(os.path.join(out, "vis"))

    def write(index, image, label, prediction):
        name = os.path.splitext(os.path.basename(dataset.files[index][1]))[0]
        save_image((prediction + 1).astype(np.uint8), os.path.join(out, "pred", name + ".png"))
        panels = [image, overlay(image, prediction, dataset.PALETTE), overlay(image, label, dataset.PALETTE)]
        save_image(np.concatenate(panels, axis=1), os.path.join(out, "vis", name + ".jpg"))
    return write


def score_predictions(pred_dir, dataset):
    """Metrics of PNG predictions in the benchmark convention against the split's annotations."""
    names = dataset.NAMES
    metrics = SegmentationMetrics(len(names))
    for image_path, label_path in tqdm(dataset.files, desc="score", unit="img"):
        name = os.path.basename(label_path)
        path = os.path.join(pred_dir, name)
        if not os.path.isfile(path):
            raise DatasetError(f"{path}: missing prediction for annotation {label_path}")
        with Image.open(label_path) as im:
            size = im.size
        label = read_annotation(label_path, (size[1], size[0]))
        with Image.open(path) as im:
            raw = np.asarray(im)
        if raw.shape != label.shape:
            raise DatasetError(f"{path}: prediction is {raw.shape[1]}x{raw.shape[0]}, its annotation "
                               f"{label.shape[1]}x{label.shape[0]}")
        if raw.max() > len(names):
            raise DatasetError(f"{path}: prediction values must be 0..{len(names)}, found {raw.max()}")
        metrics.update(to_train_ids(raw), label)
    return metrics.results()


def report(results, protocol, out, names):
    """Print the summary and per-class table; write metrics.json and metrics.md to `out`."""
    lines = [f"protocol: {json.dumps(protocol)}", "",
             f"| aAcc | mIoU | mAcc | mIoU (devkit, all {len(names)}) |", "|---|---|---|---|",
             f"| {100 * results['aAcc']:.2f} | {100 * results['mIoU']:.2f} | {100 * results['mAcc']:.2f} "
             f"| {100 * results['mIoU_devkit']:.2f} |", "",
             "| class | IoU | Acc |", "|---|---|---|"]
    for name, iou, acc in zip(names, results["IoU"], results["Acc"]):
        if not (np.isnan(iou) and np.isnan(acc)):
            lines.append(f"| {name} | {100 * iou:.2f} | {100 * acc:.2f} |")
    text = "\n".join(lines)
    print(text)
    make_folder(out)
    write_text(os.path.join(out, "metrics.md"), text + "\n")
    write_text(os.path.join(out, "metrics.json"), json.dumps({"protocol": protocol, **results}, indent=2))


def predict_image(model, normalization, protocol, path, out, dataset):
    """Prediction of one picture: OUT/NAME_pred.png (colours) and OUT/NAME_overlay.jpg (image | overlay)."""
    image = read_image(path)
    prediction = predict(model, image, normalization, protocol).argmax(axis=0)
    make_folder(out)
    name = os.path.splitext(os.path.basename(path))[0]
    save_image(colourise(prediction, dataset.PALETTE), os.path.join(out, name + "_pred.png"))
    overlay_path = os.path.join(out, name + "_overlay.jpg")
    save_image(np.concatenate([image, overlay(image, prediction, dataset.PALETTE)], axis=1), overlay_path)
    names = dataset.NAMES
    classes = np.bincount(prediction.ravel(), minlength=len(names)) / prediction.size
    print("largest classes: " + ", ".join(f"{names[c]} {100 * classes[c]:.1f}%" for c in np.argsort(-classes)[:5]
                                          if classes[c] > 0))
    print(f"wrote {overlay_path}")


def run_protocol(saved, args):
    """(inference.Protocol, Normalization): the checkpoint's protocol with the flags given."""
    protocol = evaluation_protocol(saved, args.mode, args.scales, args.flip, args.crop_size, args.stride)
    return protocol, protocol_normalization(saved)


def dataset_of(checkpoint, path):
    """The dataset class a checkpoint's protocol names, its class count checked."""
    name = checkpoint["protocol"]["dataset"]
    if name not in DATASETS:
        raise CheckpointError(f"{path}: dataset {name!r} is not one of {', '.join(DATASETS)}")
    dataset_class, classes = DATASETS[name], checkpoint["arch"]["num_classes"]
    if classes != len(dataset_class.NAMES):
        raise CheckpointError(f"{path}: the model has {classes} classes but {name} has {len(dataset_class.NAMES)}")
    return dataset_class


def main(argv=None):
    args = parse_args(argv)
    try:
        if args.image and not args.ckpt:
            raise ValueError("--image needs --ckpt (a model to run)")
        if args.pred_dir:
            split = args.split or ADE20K.VAL_SPLIT
            dataset = ADE20K(args.data_root or ADE20K.DEFAULT_ROOT, split)
            results = score_predictions(args.pred_dir, dataset)
            report(results, {"predictions": args.pred_dir, "split": split}, args.out or args.pred_dir, dataset.NAMES)
            return 0
        model, checkpoint = load_model(args.ckpt, args.allow_global)
        protocol, normalization = run_protocol(checkpoint["protocol"], args)
        dataset_class = dataset_of(checkpoint, args.ckpt)
        out = args.out or os.path.join(os.path.dirname(os.path.abspath(args.ckpt)), "test")
        if args.image:
            predict_image(model, normalization, protocol, args.image, out, dataset_class)
            return 0
        data_root = args.data_root or checkpoint.get("config", {}).get("data_root") or dataset_class.DEFAULT_ROOT
        split = args.split or dataset_class.VAL_SPLIT
        dataset = dataset_class(data_root, split, normalization=normalization)
        writer = prediction_writer(out, dataset) if args.save_pred else None
        results = evaluate(model, dataset, protocol, checkpoint["arch"]["num_classes"], on_prediction=writer)
        report(results, {**protocol.describe(), "normalization": checkpoint["protocol"]["normalization"],
                         "checkpoint": args.ckpt, "iteration": checkpoint.get("iteration"), "dataset": dataset.NAME,
                         "split": split, "model": checkpoint["arch"]}, out, dataset.NAMES)
    except (ValueError, CheckpointError, DatasetError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except WriteError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
