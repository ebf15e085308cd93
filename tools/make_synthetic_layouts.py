"""Write the generated scenes of datasets/synthetic.py in the Cityscapes or Pascal VOC layout.

    python tools/make_synthetic_layouts.py cityscapes --out data/synthetic_cityscapes --train 8 --val 4
    python tools/make_synthetic_layouts.py voc --out data/synthetic_voc --train 8 --val 4

cityscapes  leftImg8bit/{train,val}/CITY/CITY_000000_NNNNNN_leftImg8bit.png and gtFine/.../
            ..._gtFine_labelIds.png (label ids, which the loader maps to train ids), or with
            --train-ids ..._gtFine_labelTrainIds.png; frames spread over two cities per split
voc         JPEGImages/NAME.jpg, SegmentationClass/NAME.png (palette PNGs, 255 on the painting's
            frame), ImageSets/Segmentation/{train,val,trainval}.txt; with --aug also
            SegmentationClassAug/ and aug.txt for a second half of training images (mmsegmentation's
            voc12aug split)
"""
import argparse
import sys

from datasets import synthetic


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("layout", choices=("cityscapes", "voc"))
    parser.add_argument("--out", required=True, help="folder to write (it becomes the dataset root)")
    parser.add_argument("--train", type=int, default=8, help="training images (default 8)")
    parser.add_argument("--val", type=int, default=4, help="validation images (default 4)")
    parser.add_argument("--size", type=int, default=96, help="image side in pixels (default 96, min 64)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-ids", action="store_true", help="cityscapes: write labelTrainIds, not labelIds")
    parser.add_argument("--aug", action="store_true", help="voc: also write SegmentationClassAug and aug.txt")
    args = parser.parse_args(argv)
    try:
        if args.layout == "cityscapes":
            synthetic.write_cityscapes(args.out, args.train, args.val, args.size, args.seed, args.train_ids)
        else:
            synthetic.write_voc(args.out, args.train, args.val, args.size, args.seed, args.aug)
    except ValueError as error:
        parser.error(str(error))
    print(f"{args.out}: {args.layout} layout, {args.train} training and {args.val} validation images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
