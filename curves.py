"""Training curves: the loss and the validation mIoU of a work dir's log.jsonl, as one PNG."""
import json

import matplotlib

matplotlib.use("Agg")  # files only: no display is needed, or used if there is one
import matplotlib.pyplot as plt  # noqa: E402

from files import replace_atomic  # noqa: E402


def read_log(path):
    """(iterations, losses) and (iterations, mIoUs) from a log.jsonl of train.py."""
    losses, evals = ([], []), ([], [])
    with open(path) as f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:  # the last line of a write cut short (a full disk, a kill)
                continue
            if "loss" in record:
                losses[0].append(record["iter"])
                losses[1].append(record["loss"])
            if "eval" in record:
                evals[0].append(record["iter"])
                evals[1].append(100 * record["eval"]["mIoU"])
    return losses, evals


def plot_curves(log_path, png_path, title=""):
    losses, evals = read_log(log_path)
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    left.plot(*losses, lw=1)
    left.set(xlabel="iteration", ylabel="training loss", title="loss")
    right.plot(*evals, "o-")
    right.set(xlabel="iteration", ylabel="mIoU (%)", title="validation mIoU")
    for axes in (left, right):
        axes.grid(alpha=0.3)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    try:
        replace_atomic(png_path, lambda tmp: figure.savefig(tmp, dpi=100))
    finally:
        plt.close(figure)
