"""Write a generated dataset in the ADEChallengeData2016 layout, where some pixels need far context
(the scenes and their rules: datasets/synthetic.py).

    python tools/make_synthetic_ade20k.py --out data/synthetic --train 300 --val 60 --size 256

Every image is drawn from a generator seeded by (seed, split, index): the same flags always write
the same files.
"""
import argparse
import sys

from datasets import synthetic


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder to write (it becomes the dataset root)")
    parser.add_argument("--train", type=int, default=300, help="training images (default 300)")
    parser.add_argument("--val", type=int, default=60, help="validation images (default 60)")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels (default 256, min 64)")
    parser.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    args = parser.parse_args(argv)
    try:
        synthetic.write_ade20k(args.out, args.train, args.val, args.size, args.seed)
    except ValueError as error:
        parser.error(str(error))
    print(f"{args.out}: {args.train} training and {args.val} validation images of {args.size}x{args.size}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
