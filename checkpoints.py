"""What a checkpoint holds, and the one way to build a model from it.

Every checkpoint of this project records, next to its weights, the model it holds ("arch": the
arguments of `models.build_ccnet`) and how that model is evaluated ("protocol": dataset, input
normalisation, test scale, whole or sliding crops, align_corners). Two kinds exist:

    train.py     model, optimizer, iteration, config, arch, protocol   (--resume continues it)
    evaluation   model, arch, protocol, source                         (tools/convert_weights.py)

`test.py` and the tools accept both; `train.py --resume` only the first. Checkpoints of train.py
written before the record existed load too: their arch and protocol follow from their config.
"""
from dataclasses import asdict

import jittor_env  # noqa: F401

from inference import Protocol
from datasets.transforms import IMAGENET, MIT_CAFFE, SCALE, Normalization, normalization_for
from models import build_ccnet
from models.checkpoint import CheckpointError, load_checked, read_checkpoint

TRAIN_KEYS = {"model", "optimizer", "iteration", "config"}
EVAL_KEYS = {"model", "arch", "protocol"}
SLIDE_STRIDE_OF_512 = 341  # mmsegmentation's ADE20K sliding stride for 512 crops
TRAINED_PROTOCOLS = {"ade20k": "ade20k-512x512", "cityscapes": "cityscapes-769x769", "voc12aug": "voc12aug-512x512"}

# Evaluation settings of the published datasets and crops: test scale, whole or sliding crops.
DATASET_PROTOCOLS = {
    "ade20k-512x512": dict(dataset="ade20k", num_classes=150, scale=(2048, 512), mode="whole",
                           crop_size=512, stride=SLIDE_STRIDE_OF_512),
    "voc12aug-512x512": dict(dataset="voc12aug", num_classes=21, scale=(2048, 512), mode="whole",
                             crop_size=512, stride=SLIDE_STRIDE_OF_512),
    "cityscapes-512x1024": dict(dataset="cityscapes", num_classes=19, scale=(2048, 1024), mode="whole",
                                crop_size=512, stride=SLIDE_STRIDE_OF_512),
    "cityscapes-769x769": dict(dataset="cityscapes", num_classes=19, scale=(2049, 1025), mode="slide",
                               crop_size=769, stride=513),
}
# Input and logit resizing of each code base: mmsegmentation feeds RGB with ImageNet mean and std and
# resizes logits with align_corners=False, except its 769 x 769 models; the official CCNet code (and
# this project's training) feeds BGR minus the Caffe mean and uses align_corners=True throughout. The
# official evaluate.py slides over Cityscapes images at their own size (2048 x 1024), where
# mmsegmentation first resizes them to (2049, 1025).
FRAMEWORKS = {
    "mmseg": dict(normalization=IMAGENET, align_corners=lambda name: name.endswith("769x769"), scales={}),
    "official": dict(normalization=MIT_CAFFE, align_corners=lambda name: True,
                     scales={"cityscapes-769x769": (2048, 1024)}),
}


def make_protocol(framework, name, normalization=None):
    """The protocol record of dataset/crop `name` (a DATASET_PROTOCOLS key) in `framework`'s code."""
    if name not in DATASET_PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}; known: {', '.join(DATASET_PROTOCOLS)}")
    spec = FRAMEWORKS[framework]
    protocol = {k: v for k, v in DATASET_PROTOCOLS[name].items() if k != "num_classes"}
    protocol["scale"] = list(spec["scales"].get(name, protocol["scale"]))
    protocol["normalization"] = asdict(normalization or spec["normalization"])
    protocol["align_corners"] = spec["align_corners"](name)
    return protocol


def record_of_config(config):
    """(arch, protocol) of a model trained by train.py with `config`: the official code's evaluation
    of its dataset (ADE20K and VOC whole images, Cityscapes 769 x 769 sliding crops) at the
    training scale."""
    arch = {"backbone": config["backbone"], "layout": "official", "num_classes": config["num_classes"],
            "recurrence": config["recurrence"], "ccl": config.get("ccl", False)}
    protocol = make_protocol("official", TRAINED_PROTOCOLS[config.get("dataset", "ade20k")],
                             normalization_for(config["backbone"]))
    protocol["scale"] = list(config.get("img_scale", SCALE))
    return arch, protocol


def evaluation_protocol(record, mode=None, scales=(1.0,), flip=False, crop_size=None, stride=None):
    """The inference.Protocol of a checkpoint's protocol record, with the overrides given."""
    return Protocol(mode or record["mode"], tuple(scales), flip, crop_size or record["crop_size"],
                    stride or record["stride"], tuple(record["scale"]), record["align_corners"])


def normalization_of(protocol):
    n = protocol["normalization"]
    return Normalization(tuple(n["mean"]), tuple(n["std"]), bool(n["bgr"]))


def read_record(path, allow=()):
    """The checkpoint at `path` with its "arch" and "protocol" (derived for older train.py files).
    `allow`: globals a pickled file may name, kept as inert data (models/checkpoint.py)."""
    checkpoint = read_checkpoint(path, allow)
    if not isinstance(checkpoint, dict) or not (TRAIN_KEYS <= set(checkpoint) or EVAL_KEYS <= set(checkpoint)):
        found = ", ".join(sorted(map(str, checkpoint))[:5]) if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise CheckpointError(f"{path}: not a checkpoint of this project (expected model, arch and protocol, "
                              f"or train.py's model, optimizer, iteration and config; found {found}); "
                              f"convert published weights with tools/convert_weights.py")
    if "arch" not in checkpoint:
        checkpoint["arch"], checkpoint["protocol"] = record_of_config(checkpoint["config"])
    return checkpoint


def is_resumable(checkpoint):
    return TRAIN_KEYS <= set(checkpoint)


def build_model(arch):
    """The model an "arch" record describes (freshly initialised)."""
    try:
        return build_ccnet(**arch)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"cannot build the model {arch}: {error}") from None


def load_model(path, allow=()):
    """(model in eval mode, checkpoint with arch and protocol) of any checkpoint of this project."""
    checkpoint = read_record(path, allow)
    model = build_model(checkpoint["arch"])
    load_checked(model, checkpoint["model"], path)
    return model.eval(), checkpoint
