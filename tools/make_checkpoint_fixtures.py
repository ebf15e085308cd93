"""Write the small PyTorch checkpoints the converter tests read (needs torch; run once).

    pip install torch==2.13.0 && python tools/make_checkpoint_fixtures.py

They have the published files' key layouts and formats at tiny widths, so tests can prove the
conversion without torch and without the real files:
  ccnet_official_tiny.pth  official CCNet-R101 state dict (full depth, width 2, 150 classes) saved
                           from DataParallel ("module." keys), legacy (non-zip) format, with
                           BatchNorm's num_batches_tracked
  resnet_mit_tiny.pth      MIT ImageNet ResNet (deep stem + fc), legacy format
  van_tiny.pth.tar         official VAN checkpoint: weights nested under "state_dict", zip format
  expected_outputs.npz     one input and what the PyTorch models compute on it (eval mode), and the
                           official CCNet's predictions for the ADE20K sample images in
                           ../shared/data/ade20k_sample under the official protocol (OpenCV decoding,
                           keep-ratio resize to 2048 x 512, BGR minus the Caffe mean, logits resized
                           with align_corners=True to the resized and then the original image)
"""
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
from reference.torch_models import CCNet, VAN, ImageNetResNet

OUT = ROOT / "tests" / "fixtures"
SAMPLE = ROOT.parent / "shared" / "data" / "ade20k_sample" / "images" / "validation"
# Tiny shapes; tests/test_convert_weights.py builds the Jittor models with the same ones.
RESNET = dict(layers=(1, 1, 2, 1), width=2)
CCNET = dict(num_classes=150, recurrence=2, head_channels=8, layers=(3, 4, 23, 3), width=2)
CAFFE_MEAN_BGR = np.array([104.00699, 116.66877, 122.67891], np.float32)
VAN_TINY = dict(dims=(8, 8, 16, 16), depths=(1, 1, 2, 1))


def randomise(model, seed):
    """Random weights with non-trivial norm statistics (negative scales too) and gamma != 0."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                tensor.fill_(7)
            elif name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=gen) + 0.5)
            else:
                tensor.copy_(torch.randn(tensor.shape, generator=gen) * 0.3)
    return model.eval()


def official_prediction(model, path):
    """The official protocol at one scale, written out with OpenCV and PyTorch."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    h, w = image.shape[:2]
    factor = min(2048 / max(h, w), 512 / min(h, w))
    resized = cv2.resize(image, (int(w * factor + 0.5), int(h * factor + 0.5)), interpolation=cv2.INTER_LINEAR)
    x = torch.from_numpy((resized.astype(np.float32) - CAFFE_MEAN_BGR).transpose(2, 0, 1)[None].copy())
    with torch.no_grad():
        logits = F.interpolate(model(x), size=resized.shape[:2], mode="bilinear", align_corners=True)
        logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=True)
    return logits[0].argmax(0).numpy().astype(np.uint8)


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    x = torch.randn(1, 3, 40, 48, generator=torch.Generator().manual_seed(0))
    expected = {"input": x.numpy()}

    ccnet = randomise(CCNet(**CCNET), seed=1)
    state = {f"module.{k}": v for k, v in ccnet.state_dict().items()}
    torch.save(state, OUT / "ccnet_official_tiny.pth", _use_new_zipfile_serialization=False)
    with torch.no_grad():
        expected["ccnet_logits"] = ccnet(x).numpy()
    for path in sorted(SAMPLE.glob("*.jpg")):
        expected[f"official_prediction_{path.stem}"] = official_prediction(ccnet, path)

    resnet = randomise(ImageNetResNet(classes=10, **RESNET), seed=2)
    torch.save(resnet.state_dict(), OUT / "resnet_mit_tiny.pth", _use_new_zipfile_serialization=False)
    with torch.no_grad():
        expected["resnet_c3"], expected["resnet_c4"] = (t.numpy() for t in resnet.features(x))

    van = randomise(VAN(classes=10, **VAN_TINY), seed=3)
    torch.save({"epoch": 300, "state_dict": van.state_dict()}, OUT / "van_tiny.pth.tar")
    with torch.no_grad():
        for i, feature in enumerate(van.features(x)):
            expected[f"van_stage{i + 1}"] = feature.numpy()

    np.savez_compressed(OUT / "expected_outputs.npz", **expected)
    for path in sorted(OUT.iterdir()):
        print(f"{path.relative_to(ROOT)}: {path.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
