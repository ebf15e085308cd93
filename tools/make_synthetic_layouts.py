"""Write the generated scenes of tools/make_synthetic_ade20k.py in the Cityscapes or Pascal VOC layout.

    python tools/make_synthetic_layouts.py cityscapes --out data/synthetic_cityscapes --train 8 --val 4
    python tools/make_synthetic_layouts.py voc --out data/synthetic_voc --train 8 --val 4

The scenes (and so what is learnable in them) are make_synthetic_ade20k's; only their classes are
renamed into the target dataset's (SCENE_CLASSES) and the files laid out as the real dataset's:

cityscapes  leftImg8bit/{train,val}/CITY/CITY_000000_NNNNNN_leftImg8bit.png and gtFine/.../
            ..._gtFine_labelIds.png (label ids, which the loader maps to train ids), or with
            --train-ids ..._gtFine_labelTrainIds.png; frames spread over two cities per split
voc         JPEGImages/NAME.jpg, SegmentationClass/NAME.png (palette PNGs, 255 on the painting's
            frame), ImageSets/Segmentation/{train,val,trainval}.txt; with --aug also
            SegmentationClassAug/ and aug.txt for a second half of training images (mmsegmentation's
            voc12aug split)
"""
import argparse
import os
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import make_synthetic_ade20k as scenes  # noqa: E402
from datasets.cityscapes import EVALUATED_IDS  # noqa: E402
from datasets.voc import PALETTE as VOC_PALETTE  # noqa: E402

# scene class (ADE20K annotation value) -> (Cityscapes train id, VOC class); 0 (the painting's frame) -> 255
SCENE_CLASSES = {
    scenes.WALL: (2, 0), scenes.FLOOR: (0, 0), scenes.BED: (13, 18), scenes.TABLE: (14, 11), scenes.CHAIR: (15, 9),
    scenes.LAMP: (6, 5), scenes.PAINTING: (7, 20), scenes.SOFA: (11, 15), scenes.ARMCHAIR: (12, 8),
}
CITIES = ("aachen", "bremen")


def renamed(label, column):
    """Scene labels -> the target dataset's training labels (255 where the scene has 0)."""
    table = np.full(256, 255, np.uint8)
    for scene_class, targets in SCENE_CLASSES.items():
        table[scene_class] = targets[column]
    return table[label]


def scene(seed, split_code, index, size):
    return scenes.draw_scene(np.random.default_rng([seed, split_code, index]), size)


def write_cityscapes(out, counts, size, seed, train_ids):
    id_of_train_id = np.full(256, 0, np.uint8)  # ignored pixels become id 0 ("unlabeled")
    id_of_train_id[:len(EVALUATED_IDS)] = EVALUATED_IDS
    for code, (split, count) in enumerate(counts.items()):
        for index in range(count):
            city = CITIES[index % len(CITIES)]
            stem = f"{city}_000000_{index:06d}"
            image, label = scene(seed, code, index, size)
            image_dir, label_dir = (os.path.join(out, kind, split, city) for kind in ("leftImg8bit", "gtFine"))
            os.makedirs(image_dir, exist_ok=True)
            os.makedirs(label_dir, exist_ok=True)
            train_label = renamed(label, 0)
            Image.fromarray(image).save(os.path.join(image_dir, stem + "_leftImg8bit.png"))
            if train_ids:
                Image.fromarray(train_label).save(os.path.join(label_dir, stem + "_gtFine_labelTrainIds.png"))
            else:
                Image.fromarray(id_of_train_id[train_label]).save(os.path.join(label_dir, stem + "_gtFine_labelIds.png"))


def write_voc(out, counts, size, seed, aug):
    folders = {kind: os.path.join(out, kind) for kind in
               ("JPEGImages", "SegmentationClass", "SegmentationClassAug", os.path.join("ImageSets", "Segmentation"))}
    for folder in folders.values():
        os.makedirs(folder, exist_ok=True)
    palette = np.zeros((256, 3), np.uint8)
    palette[:len(VOC_PALETTE)] = VOC_PALETTE
    palette[255] = (224, 224, 192)  # VOC's border colour
    lists = {"train": [], "val": [], "aug": []}
    for code, (split, count) in enumerate(counts.items()):
        total = count * (2 if aug and split == "train" else 1)
        for index in range(total):
            name = f"2012_{code}{index:05d}"
            in_aug = split == "train" and index >= count
            image, label = scene(seed, code, index, size)
            Image.fromarray(image).save(os.path.join(folders["JPEGImages"], name + ".jpg"), quality=95)
            target = Image.fromarray(renamed(label, 1))
            if in_aug:  # SBD labels as mmsegmentation converts them: one-channel PNGs
                target.save(os.path.join(folders["SegmentationClassAug"], name + ".png"))
            else:
                target = target.convert("P")
                target.putpalette(palette.ravel().tolist())
                target.save(os.path.join(folders["SegmentationClass"], name + ".png"))
            lists["aug" if in_aug else split].append(name)
    lists["trainval"] = lists["train"] + lists["val"]
    for split, names in lists.items():
        if split != "aug" or aug:
            with open(os.path.join(folders[os.path.join("ImageSets", "Segmentation")], split + ".txt"), "w") as f:
                f.write("".join(name + "\n" for name in names))


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
    if args.size < 64:
        parser.error(f"--size must be at least 64 pixels, got {args.size}")
    if args.train < 1 or args.val < 1:
        parser.error("--train and --val must be at least 1")
    counts = {"train": args.train, "val": args.val}
    if args.layout == "cityscapes":
        write_cityscapes(args.out, counts, args.size, args.seed, args.train_ids)
    else:
        write_voc(args.out, counts, args.size, args.seed, args.aug)
    print(f"{args.out}: {args.layout} layout, {args.train} training and {args.val} validation images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
