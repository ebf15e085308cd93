"""Write the mmsegmentation test fixtures with mmsegmentation's own code (needs torch; run once).

    pip install -r requirements-mmseg.txt && python tools/make_mmseg_fixtures.py

  mmseg_ccnet_keys.json    every key and shape of the published ADE20K CCNet-R50 and -R101 files
                           (the models of mmsegmentation's own configs; no weights)
  ccnet_r50-d8_512x512_80k_ade20k_tiny.pth
                           a CCNet-R50-D8 of mmsegmentation at 1/8 width, random weights with
                           non-trivial norm statistics and gamma != 0, saved as the model zoo saves
                           (mmcv {'meta', 'state_dict'}, legacy torch format), under a published name
  mmseg_tiny_expected.npz  what mmsegmentation computes with it: decode-head logits of one input, and
                           its predictions (mmseg.apis.inference_model, the ADE20K test pipeline) for
                           the ADE20K sample images in ../shared/data/ade20k_sample
"""
import json
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
from reference import mmseg

OUT = ROOT / "tests" / "fixtures"
SAMPLE = ROOT.parent / "shared" / "data" / "ade20k_sample" / "images" / "validation"
TINY = dict(depth=50, num_classes=150, width=8)  # tests/test_convert_mmseg.py reads the same sizes
TINY_NAME = "ccnet_r50-d8_512x512_80k_ade20k_tiny.pth"


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    keys = {}
    for depth in (50, 101):
        model = mmseg.build(mmseg.config("ade20k-512x512", depth=depth))
        keys[f"resnet{depth}"] = {k: list(v.shape) for k, v in model.state_dict().items()}
    (OUT / "mmseg_ccnet_keys.json").write_text(json.dumps(keys))

    model = mmseg.randomise(mmseg.build(mmseg.config("ade20k-512x512", **TINY)), seed=11)
    mmseg.save(model, OUT / TINY_NAME, legacy=True)
    x = torch.randn(1, 3, 64, 80, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = {"input": x.numpy(), "logits": model.decode_head(model.extract_feat(x)).numpy()}
    for path in sorted(SAMPLE.glob("*.jpg")):
        expected[f"prediction_{path.stem}"] = mmseg.predict(model, str(path))[0].astype(np.uint8)
    np.savez_compressed(OUT / "mmseg_tiny_expected.npz", **expected)
    for path in sorted(OUT.glob("*mmseg*")) + [OUT / TINY_NAME]:
        print(f"{path.relative_to(ROOT)}: {path.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
