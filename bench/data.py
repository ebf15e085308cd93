"""Loading throughput of the ADE20K training pipeline (decode, augment, normalise, batch).

    python bench/data.py --root ../shared/data/ade20k_sample --split validation

Reads the split's files as training samples (the real ADE20K validation samples in
../shared are enough: every draw decodes and augments a file afresh) and prints images/s for
each number of worker processes.
"""
import argparse
import time


from datasets import ADE20K, Loader


def throughput(root, split, workers, draws, batch, crop):
    dataset = ADE20K(root, split, crop_size=crop, augment=True)
    with Loader(dataset, batch, stop=draws, workers=workers) as loader:
        iterator = iter(loader)
        next(iterator)  # worker start-up is not loading
        start = time.perf_counter()
        count = sum(1 for _ in iterator)
        seconds = time.perf_counter() - start
    return count * batch / seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, help="dataset root (images/, annotations/)")
    parser.add_argument("--split", default="training", help="split to read (default training)")
    parser.add_argument("--draws", type=int, default=160, help="samples per measurement (default 160)")
    parser.add_argument("--batch-size", type=int, default=8, help="batch size (default 8)")
    parser.add_argument("--crop-size", type=int, default=512, help="crop size (default 512)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2],
                        help="worker counts to measure (default 0 1 2)")
    args = parser.parse_args()
    print(f"| workers | images/s (train transforms, {args.crop_size} crop, batch {args.batch_size}) |")
    print("|---|---|")
    for workers in args.workers:
        rate = throughput(args.root, args.split, workers, args.draws, args.batch_size, args.crop_size)
        print(f"| {workers} | {rate:.1f} |", flush=True)


if __name__ == "__main__":
    main()
