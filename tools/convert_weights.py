"""Convert published PyTorch weights into this project's Jittor checkpoints, checked key by key.

    python tools/convert_weights.py official      CCNet_R101.pth            ccnet_r101.pkl
    python tools/convert_weights.py mit-resnet101 resnet101-imagenet.pth    resnet101_mit.pkl
    python tools/convert_weights.py van           van_base_828.pth.tar      van_base.pkl

official       a state dict of the official CCNet code (ResNet-101); loads into
               build_ccnet("resnet101", num_classes=K), K read from the checkpoint
mit-resnet101  the MIT ImageNet ResNet-101 (deep stem); loads into models.resnet.resnet101()
van            the official VAN-B2 ImageNet checkpoint (weights under "state_dict");
               loads into models.van.van_base()

The names already match, so conversion is: read the file (torch is not needed), drop what the
source has and the model never does (BatchNorm's num_batches_tracked, the ImageNet classifier,
a DataParallel "module." prefix), then require every remaining key and shape to match the model.
Anything else is an error listing the keys; nothing is written then.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from models import build_ccnet  # noqa: E402
from models.checkpoint import (CheckpointError, check_state_dict, list_keys,  # noqa: E402
                               model_shapes, read_state_dict, save_state_dict)
from models.resnet import resnet101  # noqa: E402
from models.van import van_base  # noqa: E402

CLASSIFIER_KEY = "head.bottleneck.3.weight"


def official_model(state, path):
    if CLASSIFIER_KEY not in state:
        raise CheckpointError(f"{path}: not an official CCNet checkpoint (no {CLASSIFIER_KEY}); "
                              f"its first keys: {', '.join(sorted(state)[:5])}")
    return build_ccnet("resnet101", num_classes=state[CLASSIFIER_KEY].shape[0])


# source -> where the weights sit, what the model never has, and the model they must fit
SOURCES = {
    "official": dict(nested_under=None, never=(), model=official_model),
    "mit-resnet101": dict(nested_under=None, never=("fc.",), model=lambda state, path: resnet101()),
    "van": dict(nested_under="state_dict", never=("head.",), model=lambda state, path: van_base()),
}


def strip_data_parallel(state):
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return state


def convert(source, path, model=None):
    """(state dict for the model, sorted names of the skipped source keys).

    `model` defaults to the source's published model; tests pass smaller ones.
    """
    spec = SOURCES[source]
    state = strip_data_parallel(read_state_dict(str(path), spec["nested_under"]))
    skipped = sorted(k for k in state
                     if k.endswith("num_batches_tracked") or k.startswith(spec["never"]))
    kept = {k: v for k, v in state.items() if k not in skipped}
    if model is None:
        model = spec["model"](kept, path)
    check_state_dict(kept, model_shapes(model), str(path))
    return kept, skipped


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("source", choices=sorted(SOURCES), help="which published file SRC is")
    parser.add_argument("src", help="the PyTorch checkpoint (.pth, .pth.tar, ...)")
    parser.add_argument("dst", help="the Jittor checkpoint to write (.pkl)")
    args = parser.parse_args(argv)
    if not args.dst.endswith(".pkl"):
        parser.error(f"dst must end with .pkl (Jittor's checkpoint format), got {args.dst}")
    try:
        state, skipped = convert(args.source, args.src)
    except CheckpointError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    save_state_dict(state, args.dst)
    count = sum(int(np.prod(v.shape)) for v in state.values())
    print(f"{args.dst}: {len(state)} tensors ({count / 1e6:.2f}M values) from {args.src}")
    if skipped:
        print(f"skipped {len(skipped)} keys the model does not have: {list_keys(skipped)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
