"""Where one pixel looks: its criss-cross attention after one and after two recurrences.

    python tools/show_attention.py --ckpt work_dirs/demo/latest.safetensors --image IMAGE.jpg --pixel X Y

For the chosen pixel p (X, Y in image pixels) the picture shows, over the image and on a log
colour scale (1e-4 of the largest weight to the largest),
  R = 1: A1[p, v], the attention weights of the first recurrence: p's row and column only;
  R = 2: sum over u of A2[p, u] A1[u, v], the weights of the second recurrence composed with the
         first: through the pixels u of its cross, p now gathers from the whole image.
This is the idea of the paper's Fig. 4 on a trained model. The weights are the model's (query and
key of each recurrence, from the features that recurrence sees); values, gamma and the residual
path are left out, so the maps show where information can come from and how strongly, not what.
"""
import argparse
import sys

import numpy as np
from PIL import Image


import jittor_env  # noqa: F401
import jittor as jt
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from datasets import DatasetError
from datasets.segmentation import read_image
from datasets import transforms as T
from files import WriteError, replace_atomic
from checkpoints import CheckpointError, load_model, protocol_normalization


DECADES = 4  # the colour scale spans weights from 1e-4 of the peak to the peak


def pixel_attention(query, key, pixel):
    """A[u, :] of pixel u = (i, j) as an [H, W] map, 0 off u's criss-cross path.

    query, key: [C', H, W] NumPy. Row: all W pixels of u's row; column: the others of its column;
    one softmax over the H + W - 1 logits, as models/cca.py defines."""
    i, j = pixel
    _, h, w = query.shape
    row = query[:, i, j] @ key[:, i, :]
    column = query[:, i, j] @ key[:, :, j]
    column[i] = -np.inf
    logits = np.concatenate([row, column])
    weights = np.exp(logits - logits.max())
    weights /= weights.sum()
    attention = np.zeros((h, w))
    attention[i, :] = weights[:w]
    attention[:, j] += weights[w:]
    return attention


def recurrence_queries_keys(model, x):
    """(query, key) NumPy maps of each recurrence of the RCCA head for a normalised image batch x."""
    head = model.head
    with jt.no_grad():
        out = head.conva(model.features(x)[0])
        pairs = []
        for _ in range(head.recurrence):
            pairs.append(tuple(conv(out).numpy()[0].astype(np.float64)
                               for conv in (head.cca.query_conv, head.cca.key_conv)))
            out = head.cca(out)
    return pairs


def spread(pairs, pixel):
    """(R = 1 map, R = 2 map or None) of feature-map pixel `pixel` (row, column): A1[p] and
    sum over u of A2[p, u] A1[u], computed only for the pixels u of p's cross, where A2[p] is not 0."""
    first = pixel_attention(*pairs[0], pixel)
    if len(pairs) < 2:
        return first, None
    second = pixel_attention(*pairs[1], pixel)
    composed = sum(second[u] * pixel_attention(*pairs[0], u) for u in zip(*np.nonzero(second)))
    return first, composed


def draw(image, maps, point, path, title):
    panels = [("image", None)] + [(f"R = {r + 1}", m) for r, m in enumerate(maps) if m is not None]
    figure, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4.6))
    for ax, (name, weights) in zip(np.atleast_1d(axes), panels):
        ax.imshow(image)
        if weights is not None:
            # log scale, 1e-4 of the peak to the peak: trained attention is peaked, and the reach is the point
            relative = np.clip(np.log10(weights / weights.max() + 1e-30), -DECADES, 0) / DECADES + 1
            heat = np.asarray(Image.fromarray((relative * 255).astype(np.uint8)).resize(
                image.shape[1::-1], Image.NEAREST)) / 255.0
            ax.imshow(heat, cmap="inferno", alpha=0.65, vmin=0, vmax=1)
            share = 100 * (weights > 10 ** -DECADES * weights.max()).mean()
            ax.set_title(f"{name}\n{share:.0f}% of the map above 1e-{DECADES} of the peak", fontsize=10)
        else:
            ax.set_title(name)
        ax.plot(*point, "c+", markersize=14, markeredgewidth=2)
        ax.axis("off")
    figure.suptitle(title)
    figure.tight_layout(rect=(0, 0, 1, 0.94))
    try:
        replace_atomic(path, lambda tmp: figure.savefig(tmp, dpi=90))
    finally:
        plt.close(figure)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", required=True, help="a checkpoint written by train.py")
    p.add_argument("--image", required=True, help="the picture")
    p.add_argument("--pixel", type=int, nargs=2, metavar=("X", "Y"), help="image pixel (default: the centre)")
    p.add_argument("--out", default="attention.png", help="PNG to write")
    p.add_argument("--allow-global", action="append", default=[], metavar="MODULE.NAME",
                   help="read a pickled checkpoint that names this global, kept as inert data (never called)")
    args = p.parse_args(argv)
    try:
        model, checkpoint = load_model(args.ckpt, args.allow_global)
        image = read_image(args.image)
    except (CheckpointError, DatasetError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    arch, protocol = checkpoint["arch"], checkpoint["protocol"]
    if arch["recurrence"] == 0:
        print(f"error: {args.ckpt} has no criss-cross attention (trained with --recurrence 0)", file=sys.stderr)
        return 2
    height, width = image.shape[:2]
    x, y = args.pixel if args.pixel else (width // 2, height // 2)
    if not (0 <= x < width and 0 <= y < height):
        print(f"error: --pixel {x} {y} is outside the {width}x{height} image {args.image}", file=sys.stderr)
        return 2
    resized, _ = T.resize(image, None, T.keep_ratio_size(height, width, tuple(protocol["scale"])))
    batch = jt.array(protocol_normalization(protocol)(resized)[None])
    pairs = recurrence_queries_keys(model, batch)
    h, w = pairs[0][0].shape[1:]
    first, second = spread(pairs, (min(y * h // height, h - 1), min(x * w // width, w - 1)))
    try:
        draw(image, [first, second], (x, y), args.out,
             f"criss-cross attention of pixel ({x}, {y}), {arch['backbone']}, R={arch['recurrence']}")
    except WriteError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
