"""Memory over a long training run: train.py for 1,000+ iterations, resident memory every 100.

    python bench/soak.py                       # van_b0, crop 64, batch 2, 2 data workers, 1,000 iterations
    python bench/soak.py --iters 3000 --backbone resnet101 --crop-size 96

Runs train.py itself (its loader, workers, checkpoints every 500 iterations and evaluation every
250, as a real run does) on a generated dataset, and prints, every log interval, the training
process's resident memory (train.py logs it) and the proportional memory of its children (the data
workers and Jittor's compiler pool, read from /proc here).
The last line gives the range after warm-up (the first evaluation compiles its kernels and fills
Jittor's allocator cache once) and the trend, a least-squares line through the rows, in MiB per
1,000 iterations. Linux only (/proc).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
from datasets import synthetic


def proportional_mib(pid):
    """A process's proportional set size: its private memory plus its share of what it shares
    (forked workers share most of their pages with train.py, which RSS would count again)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("Pss:")) / 1024
    except (OSError, StopIteration):
        return 0.0


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(child) for child in f.read().split()]
    except OSError:
        return []


def read_log(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--iters", type=int, default=1000, help="training iterations (default 1000)")
    p.add_argument("--backbone", default="van_b0", help="train.py --backbone (default van_b0)")
    p.add_argument("--crop-size", type=int, default=64, help="training crop (default 64)")
    p.add_argument("--batch-size", type=int, default=2, help="batch size (default 2)")
    p.add_argument("--workers", type=int, default=2, help="data worker processes (default 2)")
    p.add_argument("--interval", type=int, default=100, help="iterations between rows (default 100)")
    p.add_argument("--warmup", type=int, default=300,
                   help="iterations before the trend is measured: after the first evaluation (default 300)")
    return p.parse_args()


def main():
    args = parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data, work = os.path.join(tmp, "data"), os.path.join(tmp, "work")
        synthetic.write_ade20k(data, train=32, val=2, size=96)
        errors = open(os.path.join(tmp, "stderr.txt"), "w+")  # a file: a pipe nobody reads would fill
        run = subprocess.Popen(
            [sys.executable, str(ROOT / "train.py"), "--backbone", args.backbone, "--data-root", data,
             "--work-dir", work, "--iters", str(args.iters), "--crop-size", str(args.crop_size),
             "--batch-size", str(args.batch_size), "--workers", str(args.workers),
             "--log-interval", str(args.interval), "--ckpt-interval", "500", "--eval-interval", "250"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=errors)
        print(f"{args.backbone}, crop {args.crop_size}, batch {args.batch_size}, {args.workers} workers, "
              f"{args.iters} iterations (pid {run.pid})\n", flush=True)
        print("| iteration | s/iter | train.py RSS (MiB) | child processes PSS (MiB) |")
        print("|---|---|---|---|")
        rows, shown = [], 0
        while True:
            done = run.poll() is not None
            losses = [r for r in read_log(os.path.join(work, "log.jsonl")) if "loss" in r]
            for record in losses[shown:]:
                workers = sum(proportional_mib(child) for child in children(run.pid))
                rows.append((record["iter"], record["rss_mib"]))
                print(f"| {record['iter']} | {record['seconds_per_iter']:.3f} | {record['rss_mib']:.0f} | "
                      f"{workers:.0f} |", flush=True)
            shown = len(losses)
            if done:
                break
            time.sleep(0.5)
        if run.returncode:
            errors.seek(0)
            sys.exit(f"train.py failed (exit code {run.returncode}):\n{errors.read()[-2000:]}")
    after = [(i, m) for i, m in rows if i >= args.warmup]
    if len(after) >= 2:
        its, mibs = zip(*after)
        slope = 1000 * np.polyfit(its, mibs, 1)[0]
        print(f"\nafter warm-up (iterations {its[0]}-{its[-1]}): train.py RSS {min(mibs):.0f}-{max(mibs):.0f} MiB, "
              f"trend {slope:+.1f} MiB per 1,000 iterations (least squares)")

if __name__ == "__main__":
    main()
