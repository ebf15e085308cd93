"""Write the small PyTorch checkpoints the converter tests read (needs torch; run once).

    pip install torch==2.13.0 && python tools/make_checkpoint_fixtures.py

They have the published files' key layouts and formats at tiny widths, so tests can prove the
conversion without torch and without the real files:
  ccnet_official_tiny.pth  official CCNet state dict saved from DataParallel ("module." keys),
                           legacy (non-zip) format, with BatchNorm's num_batches_tracked
  resnet_mit_tiny.pth      MIT ImageNet ResNet (deep stem + fc), legacy format
  van_tiny.pth.tar         official VAN checkpoint: weights nested under "state_dict", zip format
  expected_outputs.npz     one input and what the PyTorch models compute on it (eval mode)
"""
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from torch_models import CCNet, VAN, ImageNetResNet  # noqa: E402

OUT = ROOT / "tests" / "fixtures"
# Tiny shapes; tests/test_convert_weights.py builds the Jittor models with the same ones.
RESNET = dict(layers=(1, 1, 2, 1), width=2)
CCNET = dict(num_classes=5, recurrence=2, head_channels=8, **RESNET)
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


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    x = torch.randn(1, 3, 40, 48, generator=torch.Generator().manual_seed(0))
    expected = {"input": x.numpy()}

    ccnet = randomise(CCNet(**CCNET), seed=1)
    state = {f"module.{k}": v for k, v in ccnet.state_dict().items()}
    torch.save(state, OUT / "ccnet_official_tiny.pth", _use_new_zipfile_serialization=False)
    with torch.no_grad():
        expected["ccnet_logits"] = ccnet(x).numpy()

    resnet = randomise(ImageNetResNet(classes=10, **RESNET), seed=2)
    torch.save(resnet.state_dict(), OUT / "resnet_mit_tiny.pth", _use_new_zipfile_serialization=False)
    with torch.no_grad():
        expected["resnet_c3"], expected["resnet_c4"] = (t.numpy() for t in resnet.features(x))

    van = randomise(VAN(classes=10, **VAN_TINY), seed=3)
    torch.save({"epoch": 300, "state_dict": van.state_dict()}, OUT / "van_tiny.pth.tar")
    with torch.no_grad():
        for i, feature in enumerate(van.features(x)):
            expected[f"van_stage{i + 1}"] = feature.numpy()

    np.savez(OUT / "expected_outputs.npz", **expected)
    for path in sorted(OUT.iterdir()):
        print(f"{path.relative_to(ROOT)}: {path.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
