"""How often a new process fails its first training step: train.py, 2 iterations, N times over.

    python bench/first_steps.py                  # 100 runs of van_b0, crop 64, batch 2
    python bench/first_steps.py --runs 300 --backbone resnet101

Each run is a new train.py process on a generated dataset, so each one goes through Jittor's
kernel loading and compiling at its first step, where Jittor 1.3.11's parallel op compiler raced
(see jittor_env). Prints one line per failed run (its exit status and last line of output) and
a table: runs, successes, deaths by signal, other failures, median wall time per run.
"""
import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
from datasets import synthetic


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=100, help="train.py processes to start, one after another")
    parser.add_argument("--backbone", default="van_b0", help="any train.py --backbone (default van_b0)")
    parser.add_argument("--crop-size", type=int, default=64)
    return parser.parse_args(argv)


def one_run(args, data_root, work_dir):
    """(exit status, wall seconds, last line of output) of one short train.py process."""
    command = [sys.executable, str(ROOT / "train.py"), "--backbone", args.backbone, "--data-root", data_root,
               "--work-dir", work_dir, "--crop-size", str(args.crop_size), "--batch-size", "2",
               "--workers", "0", "--eval-interval", "0", "--iters", "2", "--ckpt-interval", "2"]
    tic = time.time()
    run = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = run.stdout.strip().splitlines()
    return run.returncode, time.time() - tic, lines[-1] if lines else ""


def describe(code):
    return f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"


def main(argv=None):
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="first_steps_") as tmp:
        data_root = os.path.join(tmp, "data")
        synthetic.write_ade20k(data_root, train=8, val=2, size=96)
        codes, seconds = [], []
        for i in range(args.runs):
            code, wall, last = one_run(args, data_root, os.path.join(tmp, f"run{i}"))
            codes.append(code)
            seconds.append(wall)
            if code != 0:
                print(f"run {i + 1}: {describe(code)}: {last[-300:]}", flush=True)
    codes = np.array(codes)
    print("\n| backbone | runs | passed | killed by a signal | other failures | median s per run |")
    print("|---|---|---|---|---|---|")
    print(f"| {args.backbone} | {len(codes)} | {(codes == 0).sum()} | {(codes < 0).sum()} | {(codes > 0).sum()} "
          f"| {np.median(seconds):.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
