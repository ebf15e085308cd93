"""Checkpoints: what one holds, its file, reading any weight file safely, loading it strictly, and
building the model it describes.

Every checkpoint of this project records, next to its weights, the model it holds ("arch": the
arguments of `models.build_ccnet`) and how that model is evaluated ("protocol": dataset, input
normalisation, test scale, whole or sliding crops, align_corners). Two kinds exist:

    train.py     model, optimizer, iteration, config, arch, protocol   (--resume continues it)
    evaluation   model, arch, protocol, source                         (tools/convert_weights.py)

`test.py` and the tools accept both; `train.py --resume` only the first. Checkpoints of train.py
written before the record existed load too: their arch and protocol follow from their config.

The file is safetensors: arrays and a header of text, so reading one can never run code, and other
tools read it too. Weights keep the model's names; a train.py checkpoint adds its optimizer buffers
as "optimizer.<group>.<buffer>.<index>" and its record as JSON in the header's metadata. Pickled
files (this project's older .pkl checkpoints, PyTorch's .pth) are read by weight_pickles, which
refuses any file that names code.

Jittor's own `load_state_dict` only logs a warning on missing or mis-shaped keys; here every
missing, unexpected or mis-shaped key is an error that names the file and the first keys, so a
model is never silently half-loaded.
"""
import json
import os
from dataclasses import asdict

import numpy as np
import safetensors.numpy
from safetensors import safe_open

import jittor_env  # noqa: F401
import jittor as jt

from datasets.transforms import IMAGENET, MIT_CAFFE, SCALE, Normalization, normalization_for
from files import write_bytes
from inference import Protocol
from models import build_ccnet
from weight_pickles import ForbiddenGlobal, Inert, read_pickled

SUFFIX = ".safetensors"
FORMAT = "ccnet-jittor checkpoint"  # the metadata "format" of a file with a record
OPTIMIZER = "optimizer."
SHOWN_KEYS = 5


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or whose keys or shapes do not fit the model."""


def _to_numpy(value):
    if isinstance(value, jt.Var):
        return value.numpy()
    if isinstance(value, np.ndarray) and value.dtype != object:
        return value
    raise TypeError(type(value).__name__)


def _flatten(tree, prefix=""):
    """{"a": {"b": x}} -> {"a.b": x}: what dfs-style checkpoint readers hand back, flattened."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def is_safetensors(path):
    """A safetensors file starts with its header's length (8 bytes) and the header's '{'."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:] == b"{" and int.from_bytes(head[:8], "little") < os.path.getsize(path)


def _read_safetensors(path):
    """This project's file as {"model": weights, "optimizer": ..., record...}; another tool's
    safetensors file (no record) as its flat {name: array}."""
    with safe_open(path, framework="numpy") as f:
        metadata = f.metadata() or {}
        tensors = {key: f.get_tensor(key) for key in f.keys()}
    if metadata.get("format") != FORMAT:
        return tensors
    checkpoint = {key: json.loads(value) for key, value in metadata.items() if key != "format"}
    layout = checkpoint.pop("optimizer", None)
    if layout is not None:
        groups = [{key: [tensors.pop(f"{OPTIMIZER}{g}.{key}.{i}") for i in range(count)]
                   for key, count in group.items()} for g, group in enumerate(layout["groups"])]
        checkpoint["optimizer"] = {"n_step": layout["n_step"], "groups": groups}
    checkpoint["model"] = tensors
    return checkpoint


def checkpoint_iteration(path):
    """The iteration in the header of this project's checkpoint, without reading its arrays; None
    for any other file."""
    try:
        with safe_open(path, framework="numpy") as f:
            metadata = f.metadata() or {}
        return json.loads(metadata["iteration"]) if metadata.get("format") == FORMAT else None
    except Exception:  # not this project's safetensors file
        return None


def forbidden_message(path, name):
    return (f"{path}: refused: it names {name}, which a weight file never needs (reading it could run code). "
            f"A file you trust that keeps other objects beside its weights loads with --allow-global {name} "
            f"(they are kept as inert data, never called)")


def read_checkpoint(path, allow=()):
    """The top-level object of a checkpoint: this project's (safetensors, or the older .pkl) or
    PyTorch's (zip or legacy), arrays as NumPy. `allow`: globals a pickle may name, kept inert."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such file")
    try:
        if is_safetensors(path):
            return _read_safetensors(path)
        return read_pickled(path, allow)
    except ForbiddenGlobal as error:
        raise CheckpointError(forbidden_message(path, error.name)) from None
    except Exception as error:  # a damaged file in any format means the same thing to the user
        reason = " ".join(str(error).split())
        raise CheckpointError(f"{path}: not a readable checkpoint "
                              f"({type(error).__name__}: {reason})") from None


def write_checkpoint(checkpoint, path):
    """Write {"model": weights, "optimizer": optional state, other keys: JSON values} as this
    project's safetensors file, atomically; {"model": weights} alone writes plain weights."""
    tensors = {name: np.ascontiguousarray(_to_numpy(value)) for name, value in checkpoint["model"].items()}
    if any(name.startswith(OPTIMIZER) for name in tensors):
        raise ValueError(f"a weight named {OPTIMIZER}* would be read back as optimizer state")
    record = {key: value for key, value in checkpoint.items() if key not in ("model", "optimizer")}
    if "optimizer" in checkpoint:
        state = checkpoint["optimizer"]
        for g, group in enumerate(state["groups"]):
            for key, arrays in group.items():
                tensors.update({f"{OPTIMIZER}{g}.{key}.{i}": np.ascontiguousarray(a) for i, a in enumerate(arrays)})
        record["optimizer"] = {"n_step": state["n_step"],
                               "groups": [{key: len(arrays) for key, arrays in group.items()}
                                          for group in state["groups"]]}
    metadata = {"format": FORMAT, **{key: json.dumps(value) for key, value in record.items()}} if record else None
    write_bytes(path, safetensors.numpy.save(tensors, metadata))


def read_state_dict(path, nested_under=None, allow=()):
    """A flat {name: numpy array} from `path`, taken from `obj[nested_under]` when given."""
    obj = read_checkpoint(path, allow)
    if nested_under is not None:
        if not isinstance(obj, dict) or nested_under not in obj:
            found = sorted(map(str, obj))[:SHOWN_KEYS] if isinstance(obj, dict) else type(obj).__name__
            raise CheckpointError(f"{path}: expected the weights under '{nested_under}', found {found}")
        obj = obj[nested_under]
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dictionary of weights, found {type(obj).__name__}")
    state = {}
    for key, value in _flatten(obj).items():
        try:
            state[key] = _to_numpy(value)
        except TypeError:
            found = repr(value) if isinstance(value, Inert) else type(value).__name__
            raise CheckpointError(f"{path}: entry '{key}' is not an array of numbers ({found})") from None
    return state


def list_keys(keys):
    """'a, b, c, d, e and 3 more'."""
    keys = sorted(keys)
    more = f" and {len(keys) - SHOWN_KEYS} more" if len(keys) > SHOWN_KEYS else ""
    return ", ".join(keys[:SHOWN_KEYS]) + more


def check_state_dict(state, expected, source, may_miss=()):
    """Raise CheckpointError unless `state` has exactly the keys and shapes of `expected`.

    expected: {name: shape}. Keys starting with a prefix in `may_miss` may be absent.
    """
    missing = [k for k in expected if k not in state and not k.startswith(tuple(may_miss))]
    unexpected = [k for k in state if k not in expected]
    misshaped = [f"{k} {list(state[k].shape)} (expected {list(expected[k])})"
                 for k in state if k in expected and list(state[k].shape) != list(expected[k])]
    problems = [f"{len(keys)} {what}: {list_keys(keys)}" for what, keys in
                (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)) if keys]
    if problems:
        raise CheckpointError(f"{source}: does not fit the model; " + "; ".join(problems))


def model_shapes(module):
    return {k: list(v.shape) for k, v in module.state_dict().items()}


def load_checked(module, state, source, may_miss=()):
    """Check `state` against `module` (see check_state_dict), then copy it in."""
    check_state_dict(state, model_shapes(module), source, may_miss)
    module.load_parameters(state)


# ---- the record: arch, protocol, and the model it builds ------------------------------------

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


def trained_arch(config):
    """The "arch" record of a model train.py trains with `config` (the official layout)."""
    return {"backbone": config["backbone"], "layout": "official", "num_classes": config["num_classes"],
            "recurrence": config["recurrence"], "ccl": config.get("ccl", False)}


def trained_protocol(config):
    """The "protocol" record of a model train.py trains with `config`: the official code's
    evaluation of its dataset (ADE20K and VOC whole images, Cityscapes 769 x 769 sliding crops) at
    the training scale."""
    protocol = make_protocol("official", TRAINED_PROTOCOLS[config.get("dataset", "ade20k")],
                             normalization_for(config["backbone"]))
    protocol["scale"] = list(config.get("img_scale", SCALE))
    return protocol


def evaluation_protocol(record, mode=None, scales=(1.0,), flip=False, crop_size=None, stride=None):
    """The inference.Protocol of a checkpoint's protocol record, with the overrides given."""
    return Protocol(mode or record["mode"], tuple(scales), flip, crop_size or record["crop_size"],
                    stride or record["stride"], tuple(record["scale"]), record["align_corners"])


def protocol_normalization(protocol):
    """The input normalisation a protocol record names."""
    n = protocol["normalization"]
    return Normalization(tuple(n["mean"]), tuple(n["std"]), bool(n["bgr"]))


def read_record(path, allow=()):
    """The checkpoint at `path` with its "arch" and "protocol" (derived for older train.py files).
    `allow`: globals a pickled file may name, kept as inert data (read_checkpoint)."""
    checkpoint = read_checkpoint(path, allow)
    if not isinstance(checkpoint, dict) or not (TRAIN_KEYS <= set(checkpoint) or EVAL_KEYS <= set(checkpoint)):
        found = ", ".join(sorted(map(str, checkpoint))[:5]) if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise CheckpointError(f"{path}: not a checkpoint of this project (expected model, arch and protocol, "
                              f"or train.py's model, optimizer, iteration and config; found {found}); "
                              f"convert published weights with tools/convert_weights.py")
    if "arch" not in checkpoint:
        checkpoint["arch"], checkpoint["protocol"] = trained_arch(checkpoint["config"]), trained_protocol(checkpoint["config"])
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
