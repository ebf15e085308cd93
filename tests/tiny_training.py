"""The small training run that the train.py tests share."""

from datasets import synthetic


def synthetic_root(tmp_path_factory):
    """A generated ADE20K of 8 training and 2 validation images of 96 x 96."""
    root = tmp_path_factory.mktemp("synthetic")
    synthetic.write_ade20k(str(root), train=8, val=2, size=96)
    return str(root)


def tiny_run(data_root, work_dir, *extra):
    """van_b0 at crop 64, batch 2, one process, 4 iterations: a few seconds per run once compiled."""
    return ["--backbone", "van_b0", "--data-root", data_root, "--work-dir", str(work_dir),
            "--crop-size", "64", "--batch-size", "2", "--workers", "0", "--eval-interval", "0",
            "--log-interval", "1", "--iters", "4", *extra]
