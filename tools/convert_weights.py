"""Convert published PyTorch weights into this project's checkpoints, checked key by key.

    python tools/convert_weights.py mmseg         ccnet_r101-d8_512x512_80k_ade20k_20200615_014848-1f4929a3.pth ccnet_r101_mmseg.safetensors
    python tools/convert_weights.py official      CCNet_R101.pth            ccnet_r101.safetensors
    python tools/convert_weights.py mit-resnet101 resnet101-imagenet.pth    resnet101_mit.safetensors
    python tools/convert_weights.py van           van_base_828.pth.tar      van_base.safetensors

mmseg          a trained CCNet of mmsegmentation's model zoo (R-50/R-101-D8; mmcv's {'meta',
               'state_dict'} file); writes an evaluation checkpoint for test.py. Depth, class
               count and widths come from the tensors; the evaluation protocol from the file's
               published name (ccnet_r101-d8_512x512_80k_ade20k_...), or --protocol if renamed
official       a state dict of the official CCNet code (ResNet-101); writes an evaluation
               checkpoint for test.py (protocol by class count: 150 ADE20K, 19 Cityscapes 769
               as its evaluate.py, 21 VOC; --protocol to choose; --recurrence 1 for its R = 1
               model)
mit-resnet101  the MIT ImageNet ResNet-101 (deep stem); for train.py --pretrained
van            the official VAN-B2 ImageNet checkpoint (weights under "state_dict"); for
               train.py --pretrained

The official, MIT and VAN names already match the models', so conversion drops what the source
has and the model never does (BatchNorm's num_batches_tracked, the ImageNet classifier, a
DataParallel "module." prefix) and requires every other key and shape to match. mmsegmentation's
names are renamed one to one (MMSEG_NAMES); every source key but num_batches_tracked must be used
exactly once. Anything else is an error listing the keys; nothing is written then.

The source is read without running any code it holds (weight_pickles.py): a file that names
other code is refused. The output is a safetensors file, which holds arrays and text only.
"""
import argparse
import os
import re
import sys


import numpy as np

from checkpoints import (SUFFIX, DATASET_PROTOCOLS, CheckpointError, build_model, check_state_dict,
                         list_keys, make_protocol, model_shapes, read_state_dict, write_checkpoint)
from files import WriteError, make_folder
from models.resnet import DEPTHS, resnet101
from models.van import van_base

# this project's name prefix -> mmsegmentation's (ResNetV1c backbone, CCHead, FCNHead auxiliary)
MMSEG_NAMES = (
    ("conv1.", "backbone.stem.0."), ("bn1.", "backbone.stem.1."),
    ("conv2.", "backbone.stem.3."), ("bn2.", "backbone.stem.4."),
    ("conv3.", "backbone.stem.6."), ("bn3.", "backbone.stem.7."),
    ("layer", "backbone.layer"),
    ("head.conva.0.", "decode_head.convs.0.conv."), ("head.conva.1.", "decode_head.convs.0.bn."),
    ("head.cca.gamma", "decode_head.cca.gamma.scale"), ("head.cca.", "decode_head.cca."),
    ("head.convb.0.", "decode_head.convs.1.conv."), ("head.convb.1.", "decode_head.convs.1.bn."),
    ("head.bottleneck.0.", "decode_head.conv_cat.conv."), ("head.bottleneck.1.", "decode_head.conv_cat.bn."),
    ("head.bottleneck.3.", "decode_head.conv_seg."),
    ("dsn.0.", "auxiliary_head.convs.0.conv."), ("dsn.1.", "auxiliary_head.convs.0.bn."),
    ("dsn.3.", "auxiliary_head.conv_seg."),
)
# Where each layout's sizes can be read (in its own names), and its published sizes. The official
# auxiliary head is as wide as the RCCA head; mmsegmentation's is 256 wide.
SIZE_KEYS = {
    "official": dict(prefix="", classifier="head.bottleneck.3.weight", width="layer1.0.conv1.weight",
                     head_channels="head.bottleneck.0.weight", aux_channels="dsn.0.weight",
                     defaults=dict(width=64, head_channels=512)),
    "mmseg": dict(prefix="backbone.", classifier="decode_head.conv_seg.weight",
                  width="backbone.layer1.0.conv1.weight", head_channels="decode_head.convs.0.conv.weight",
                  aux_channels="auxiliary_head.convs.0.conv.weight",
                  defaults=dict(width=64, head_channels=512, aux_channels=256)),
}
RECURRENCE = 2  # not stored in the weights: the official README's and every mmsegmentation config's
# ccnet_r101-d8_512x512_80k_ade20k_20200615_014848-1f4929a3.pth (model zoo v0.5) and
# ccnet_r101-d8_4xb4-80k_ade20k-512x512 (the 1.x config names)
MMSEG_FILE_NAMES = (
    re.compile(r"ccnet_r(?P<depth>50|101)-d8_(?P<crop>\d+x\d+)_\d+k_(?P<dataset>ade20k|cityscapes|voc12aug)"),
    re.compile(r"ccnet_r(?P<depth>50|101)-d8_\d+xb\d+-\d+k_(?P<dataset>ade20k|cityscapes|voc12aug)-(?P<crop>\d+x\d+)"),
)
OFFICIAL_PROTOCOLS = {150: "ade20k-512x512", 19: "cityscapes-769x769", 21: "voc12aug-512x512"}
BACKBONE_SOURCES = ("mit-resnet101", "van")


def strip_data_parallel(state):
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return state


def require(state, keys, path, what):
    for key in keys:
        if key not in state:
            raise CheckpointError(f"{path}: not {what} (no {key}); its first keys: {list_keys(state)}")


def split_skipped(state, never=()):
    """(kept, sorted skipped keys): drop num_batches_tracked and keys under a prefix in `never`."""
    skipped = sorted(k for k in state if k.endswith("num_batches_tracked") or k.startswith(tuple(never)))
    return {k: v for k, v in state.items() if k not in skipped}, skipped


def resnet_arch(state, path, layout):
    """The "arch" record of a CCNet-ResNet state dict in `layout`'s names, read from its tensors."""
    keys = SIZE_KEYS[layout]
    blocks = tuple(len({k[len(keys["prefix"]):].split(".")[1] for k in state
                        if k.startswith(f"{keys['prefix']}layer{i}.")}) for i in range(1, 5))
    depth = {v: k for k, v in DEPTHS.items()}.get(blocks)
    if depth is None:
        raise CheckpointError(f"{path}: the backbone has {blocks} blocks per layer; expected ResNet-50 "
                              f"{DEPTHS['resnet50']} or ResNet-101 {DEPTHS['resnet101']}")
    arch = {"backbone": depth, "layout": layout, "num_classes": int(state[keys["classifier"]].shape[0]),
            "recurrence": RECURRENCE, "ccl": False}
    sizes = {name: int(state[keys[name]].shape[0]) for name in ("width", "head_channels", "aux_channels")}
    defaults = {**keys["defaults"], "aux_channels": keys["defaults"].get("aux_channels", sizes["head_channels"])}
    arch.update({name: size for name, size in sizes.items() if size != defaults[name]})
    return arch


def check_classes(arch, protocol_name, path):
    classes = DATASET_PROTOCOLS[protocol_name]["num_classes"]
    if arch["num_classes"] != classes:
        raise CheckpointError(f"{path}: the model has {arch['num_classes']} classes but {protocol_name} "
                              f"has {classes}")


# ---- mmsegmentation ---------------------------------------------------------------------------

def mmseg_name(key):
    """mmsegmentation's name of this project's parameter `key`."""
    for ours, theirs in MMSEG_NAMES:
        if key.startswith(ours):
            return theirs + key[len(ours):]
    raise KeyError(key)


def mmseg_protocol_name(path, arch):
    """The DATASET_PROTOCOLS name in a published file name, checked against the tensors."""
    name = os.path.basename(str(path))
    for pattern in MMSEG_FILE_NAMES:
        match = pattern.search(name)
        if match:
            break
    else:
        raise CheckpointError(f"{path}: the file name does not say which dataset and crop the model was "
                              f"trained for (expected a published name such as "
                              f"ccnet_r101-d8_512x512_80k_ade20k_...pth); pass --protocol, one of "
                              f"{', '.join(DATASET_PROTOCOLS)}")
    if f"resnet{match['depth']}" != arch["backbone"]:
        raise CheckpointError(f"{path}: the name says ResNet-{match['depth']} but the weights are a {arch['backbone']}")
    return f"{match['dataset']}-{match['crop']}"


def rename_mmseg(state, model, path):
    """The state renamed to the model's names; every source key used once, shapes checked."""
    expected = model_shapes(model)
    names = {mmseg_name(k): k for k in expected}
    kept, skipped = split_skipped(state)
    missing = [theirs for theirs in names if theirs not in kept]
    unexpected = [k for k in kept if k not in names]
    renamed = {names[k]: np.asarray(v) for k, v in kept.items() if k in names}
    renamed = {k: v.reshape(expected[k]) if k == "head.cca.gamma" and v.size == 1 else v for k, v in renamed.items()}
    misshaped = [f"{mmseg_name(k)} {list(v.shape)} (expected {expected[k]})"
                 for k, v in renamed.items() if list(v.shape) != list(expected[k])]
    problems = [f"{len(keys)} {what}: {list_keys(keys)}" for what, keys in
                (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)) if keys]
    if problems:
        raise CheckpointError(f"{path}: does not fit mmsegmentation's CCNet; " + "; ".join(problems))
    return renamed, skipped


def convert_mmseg(state, path, protocol_name=None, model=None):
    """(state, skipped, arch, protocol) of an mmsegmentation CCNet state dict."""
    require(state, ("decode_head.cca.query_conv.weight", "decode_head.conv_seg.weight",
                    "decode_head.convs.0.conv.weight", "auxiliary_head.convs.0.conv.weight",
                    "backbone.stem.0.weight", "backbone.layer1.0.conv1.weight"), path,
            "an mmsegmentation CCNet checkpoint (ResNetV1c backbone, CCHead, FCNHead auxiliary head)")
    arch = resnet_arch(state, path, "mmseg")
    protocol_name = protocol_name or mmseg_protocol_name(path, arch)
    check_classes(arch, protocol_name, path)
    renamed, skipped = rename_mmseg(state, model or build_model(arch), path)
    return renamed, skipped, arch, make_protocol("mmseg", protocol_name)


# ---- the official CCNet code and the ImageNet backbones -----------------------------------------

def convert_official(state, path, protocol_name=None, model=None):
    """(state, skipped, arch, protocol) of an official CCNet state dict."""
    kept, skipped = split_skipped(strip_data_parallel(state))
    require(kept, tuple(SIZE_KEYS["official"][k] for k in ("classifier", "width", "head_channels", "aux_channels")),
            path, "an official CCNet checkpoint")
    arch = resnet_arch(kept, path, "official")
    protocol_name = protocol_name or OFFICIAL_PROTOCOLS.get(arch["num_classes"])
    if protocol_name is None:
        raise CheckpointError(f"{path}: {arch['num_classes']} classes name no known dataset; pass --protocol, "
                              f"one of {', '.join(DATASET_PROTOCOLS)}")
    check_classes(arch, protocol_name, path)
    check_state_dict(kept, model_shapes(model or build_model(arch)), str(path))
    return kept, skipped, arch, make_protocol("official", protocol_name)


def backbone_converter(never, published_model):
    def convert_backbone(state, path, protocol_name=None, model=None):
        kept, skipped = split_skipped(strip_data_parallel(state), never)
        check_state_dict(kept, model_shapes(model or published_model()), str(path))
        return kept, skipped, None, None
    return convert_backbone


# source -> where the weights sit in the file, and its converter
SOURCES = {
    "mmseg": ("state_dict", convert_mmseg),
    "official": (None, convert_official),
    "mit-resnet101": (None, backbone_converter(("fc.",), resnet101)),
    "van": ("state_dict", backbone_converter(("head.",), van_base)),
}


def convert(source, path, protocol_name=None, model=None, allow=()):
    """(state dict, sorted skipped source keys, arch, protocol); arch and protocol are None for the
    ImageNet backbones, which are weights for train.py --pretrained, not models to evaluate.
    `model` replaces the model the weights must fit (tests use smaller ones); `allow`: globals the
    source may name, kept as inert data."""
    nested_under, converter = SOURCES[source]
    return converter(read_state_dict(str(path), nested_under, allow), path, protocol_name, model)


def write(dst, state, arch, protocol, src):
    """An evaluation checkpoint (model, arch, protocol, source) or, without arch, plain weights."""
    make_folder(os.path.dirname(os.path.abspath(dst)))
    if arch is None:
        write_checkpoint({"model": state}, dst)
    else:
        write_checkpoint({"model": state, "arch": arch, "protocol": protocol, "source": os.path.basename(str(src))},
                         dst)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("source", choices=sorted(SOURCES), help="which published file SRC is")
    parser.add_argument("src", help="the PyTorch checkpoint (.pth, .pth.tar, ...)")
    parser.add_argument("dst", help=f"the checkpoint to write ({SUFFIX})")
    parser.add_argument("--recurrence", type=int,
                        help=f"mmseg, official: the recurrence R the model was trained with; the weights do not "
                             f"store it (default {RECURRENCE}; the official R = 1 Cityscapes model needs 1)")
    parser.add_argument("--protocol", choices=sorted(DATASET_PROTOCOLS),
                        help="mmseg, official: the dataset and crop the model was trained for "
                             "(default: from the file name or the class count)")
    parser.add_argument("--allow-global", action="append", default=[], metavar="MODULE.NAME",
                        help="read a source that names this global; it is kept as inert data, never imported "
                             "or called (docs/checkpoints.md)")
    args = parser.parse_args(argv)
    if not args.dst.endswith(SUFFIX):
        parser.error(f"dst must end with {SUFFIX} (the format this project writes: arrays and text, no code), "
                     f"got {args.dst}")
    for flag in ("protocol", "recurrence"):
        if getattr(args, flag) is not None and args.source in BACKBONE_SOURCES:
            parser.error(f"--{flag} applies to trained segmenters (mmseg, official), not to {args.source}")
    if args.recurrence is not None and args.recurrence < 0:
        parser.error(f"--recurrence must be 0 or more, got {args.recurrence}")
    try:
        state, skipped, arch, protocol = convert(args.source, args.src, args.protocol, allow=args.allow_global)
    except CheckpointError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.recurrence is not None:
        arch["recurrence"] = args.recurrence
    try:
        write(args.dst, state, arch, protocol, args.src)
    except WriteError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    count = sum(int(np.prod(v.shape)) for v in state.values())
    print(f"{args.dst}: {len(state)} tensors ({count / 1e6:.2f}M values) from {args.src}")
    if skipped:
        print(f"skipped {len(skipped)} keys the model does not have: {list_keys(skipped)}")
    if arch is not None:
        print(f"model: {arch}\nprotocol: {protocol}\nevaluate: python test.py --ckpt {args.dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
