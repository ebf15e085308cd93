"""Published trained CCNets through tools/convert_weights.py and test.py, against what their own code
computes: mmsegmentation's model zoo files and the official CCNet code's.

The fixtures were written by mmsegmentation's and PyTorch's own code (tools/make_mmseg_fixtures.py,
tools/make_checkpoint_fixtures.py): the published key lists, a tiny mmsegmentation CCNet saved as the
model zoo saves, a tiny official-layout CCNet, and their predictions for the three real ADE20K
images in ../shared. The live tests rebuild mmsegmentation's model and compare on the spot; they
need torch and mmsegmentation (requirements-mmseg.txt) and skip, saying so, without them.
"""
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

import jittor as jt
from jittor import nn

import test as test_script
import train
from datasets import PascalVOC
from checkpoints import (DATASET_PROTOCOLS, build_model, load_model, make_protocol, model_shapes, protocol_normalization,
                         read_state_dict, write_checkpoint)
from inference import Protocol, predict
from datasets.transforms import MIT_CAFFE
import numpy_reference as ref

from tools import convert_weights
from datasets import synthetic
from reference import mmseg as mmseg_reference

FIXTURES = Path(__file__).parent / "fixtures"
MMSEG_TINY = FIXTURES / "ccnet_r50-d8_512x512_80k_ade20k_tiny.pth"
OFFICIAL_TINY = FIXTURES / "ccnet_official_tiny.pth"
SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "ade20k_sample"
needs_sample = pytest.mark.skipif(not SAMPLE.is_dir(), reason=f"the real ADE20K sample is not at {SAMPLE}")
MMSEG_MISSING = mmseg_reference.mmseg_available()
if MMSEG_MISSING and os.environ.get("CCNET_REQUIRE_MMSEG") == "1":
    raise RuntimeError(f"CCNET_REQUIRE_MMSEG=1 but mmsegmentation {MMSEG_MISSING}")
needs_mmseg = pytest.mark.skipif(bool(MMSEG_MISSING), reason=MMSEG_MISSING)


def run(main, capsys, *args):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def predictions(pred_dir):
    """Benchmark PNGs (1..150) as training ids (0..149), by image name."""
    return {p.stem: np.asarray(Image.open(p)).astype(np.int64) - 1 for p in sorted(Path(pred_dir).glob("*.png"))}


# ---- the published key lists (no torch) ---------------------------------------------------------

@pytest.mark.parametrize("depth,keys,tensors", [(101, 671, 561), (50, 365, 306)])
def test_every_published_mmseg_key_maps_onto_the_full_size_model(depth, keys, tensors):
    published = json.loads((FIXTURES / "mmseg_ccnet_keys.json").read_text())[f"resnet{depth}"]
    assert len(published) == keys
    state = {k: np.zeros(shape, np.float32) for k, shape in published.items()}
    name = f"ccnet_r{depth}-d8_512x512_80k_ade20k_20200615_014848-1f4929a3.pth"
    renamed, skipped, arch, protocol = convert_weights.convert_mmseg(state, name)
    assert arch == {"backbone": f"resnet{depth}", "layout": "mmseg", "num_classes": 150, "recurrence": 2, "ccl": False}
    assert len(renamed) == tensors and len(renamed) + len(skipped) == keys  # each key used once
    assert all(k.endswith("num_batches_tracked") for k in skipped)
    assert set(renamed) == set(model_shapes(build_model(arch)))
    assert renamed["head.cca.gamma"].shape == (1,) and published["decode_head.cca.gamma.scale"] == []
    assert protocol == make_protocol("mmseg", "ade20k-512x512") and protocol["align_corners"] is False


@pytest.mark.parametrize("name,expected", [
    ("ccnet_r101-d8_512x512_80k_ade20k_20200615_014848-1f4929a3.pth", "ade20k-512x512"),
    ("ccnet_r101-d8_769x769_80k_cityscapes_20200618_011502-ad3cd481.pth", "cityscapes-769x769"),
    ("ccnet_r101-d8_512x1024_40k_cityscapes_20200616_142540-a3b84ba6.pth", "cityscapes-512x1024"),
    ("ccnet_r101-d8_512x512_20k_voc12aug_20200617_193212-0007b61d.pth", "voc12aug-512x512"),
    ("ccnet_r101-d8_4xb4-80k_ade20k-512x512.pth", "ade20k-512x512"),
])
def test_protocol_follows_the_published_file_name(name, expected):
    arch = {"backbone": "resnet101"}
    assert convert_weights.mmseg_protocol_name(name, arch) == expected
    protocol = make_protocol("mmseg", expected)
    assert protocol["align_corners"] is expected.endswith("769x769")
    assert protocol["mode"] == ("slide" if expected.endswith("769x769") else "whole")


# ---- the tiny mmsegmentation CCNet through the converter and test.py ---------------------------

@pytest.fixture(scope="module")
def mmseg_tiny(tmp_path_factory):
    """The converted tiny mmsegmentation CCNet (an evaluation checkpoint)."""
    dst = tmp_path_factory.mktemp("mmseg") / "ccnet_tiny.safetensors"
    assert convert_weights.main(["mmseg", str(MMSEG_TINY), str(dst)]) == 0
    return dst


def test_converted_mmseg_model_computes_mmsegs_logits(mmseg_tiny):
    expected = np.load(FIXTURES / "mmseg_tiny_expected.npz")
    model, checkpoint = load_model(str(mmseg_tiny))
    assert checkpoint["arch"]["layout"] == "mmseg" and "optimizer" not in checkpoint
    logits = model(jt.array(expected["input"])).numpy()
    scale = np.abs(expected["logits"]).max()
    np.testing.assert_allclose(logits, expected["logits"], rtol=0, atol=1e-4 * scale)


@needs_sample
def test_converted_mmseg_model_predicts_what_mmseg_predicted_through_test_py(mmseg_tiny, tmp_path):
    expected = np.load(FIXTURES / "mmseg_tiny_expected.npz")
    out = tmp_path / "out"
    assert test_script.main(["--ckpt", str(mmseg_tiny), "--data-root", str(SAMPLE), "--save-pred",
                             "--out", str(out)]) == 0
    ours = predictions(out / "pred")
    assert sorted(ours) == sorted(k[len("prediction_"):] for k in expected.files if k.startswith("prediction_"))
    for name, prediction in ours.items():
        np.testing.assert_array_equal(prediction, expected[f"prediction_{name}"], err_msg=name)
    reported = json.loads((out / "metrics.json").read_text())["protocol"]
    assert reported["align_corners"] is False and reported["normalization"]["bgr"] is False
    assert reported["iteration"] is None and reported["model"]["backbone"] == "resnet50"


@needs_sample
def test_converted_official_model_predicts_what_the_official_code_predicted(tmp_path, capsys):
    expected = np.load(FIXTURES / "expected_outputs.npz")
    dst = tmp_path / "official.safetensors"
    code, out, _ = run(convert_weights.main, capsys, "official", OFFICIAL_TINY, dst)
    assert code == 0 and f"python test.py --ckpt {dst}" in out
    assert test_script.main(["--ckpt", str(dst), "--data-root", str(SAMPLE), "--save-pred",
                             "--out", str(tmp_path / "out")]) == 0
    ours = predictions(tmp_path / "out" / "pred")
    assert len(ours) == 3
    for name, prediction in ours.items():
        np.testing.assert_array_equal(prediction, expected[f"official_prediction_{name}"], err_msg=name)


def test_evaluation_checkpoints_cannot_be_resumed(mmseg_tiny, capsys):
    code, _, err = run(train.main, capsys, "--resume", mmseg_tiny)
    assert code == 2 and err.count("\n") == 1
    assert "cannot resume from an evaluation-only checkpoint" in err and str(mmseg_tiny) in err


def test_train_checkpoints_written_before_the_record_still_load(tmp_path):
    config = {**train.DEFAULTS, "backbone": "van_b0", "num_classes": 150, "recurrence": 1, "img_scale": [256, 64]}
    model = build_model({"backbone": "van_b0", "num_classes": 150, "recurrence": 1})
    path = tmp_path / "old.pkl"  # jt.save's format, which train.py wrote before safetensors
    jt.save({"model": {k: v.numpy() for k, v in model.state_dict().items()}, "optimizer": {},
             "iteration": 5, "config": config}, str(path))
    _, checkpoint = load_model(str(path))
    assert checkpoint["arch"]["recurrence"] == 1 and checkpoint["protocol"]["scale"] == [256, 64]
    assert checkpoint["protocol"]["align_corners"] is True and checkpoint["protocol"]["normalization"]["bgr"] is False


# ---- bad input: one line naming the file, nothing written --------------------------------------

def mmseg_state():
    from checkpoints import read_state_dict
    return read_state_dict(str(MMSEG_TINY), "state_dict")


def write_mmseg_like(path, state):
    jt.save({"meta": {"iter": 1}, "state_dict": state}, str(path))
    return path


@pytest.mark.parametrize("case,message", [
    ("classifier", "expected the weights under 'state_dict'"),
    ("van", "not an mmsegmentation CCNet checkpoint (ResNetV1c backbone, CCHead, FCNHead auxiliary head) "
            "(no decode_head.cca.query_conv.weight)"),
    ("train", "expected the weights under 'state_dict', found ['arch', 'config'"),
    ("truncated", "not a readable checkpoint"),
    ("renamed", "1 missing: decode_head.cca.gamma.scale; 1 unexpected: decode_head.cca.gama.scale"),
    ("extra", "1 unexpected: decode_head.extra.weight"),
    ("reshaped", "mis-shaped: decode_head.cca.value_conv.bias [3] (expected [16])"),
    ("unnamed", "the file name does not say which dataset and crop"),
    ("wrong-name", "the name says ResNet-101 but the weights are a resnet50"),
    ("wrong-classes", "the model has 150 classes but cityscapes-769x769 has 19"),
])
def test_bad_mmseg_input_is_one_line_and_writes_nothing(tmp_path, capsys, mmseg_tiny, case, message):
    name = "ccnet_r50-d8_512x512_80k_ade20k_x.pkl"
    state = mmseg_state()
    if case == "classifier":
        src = FIXTURES / "resnet_mit_tiny.pth"
    elif case == "van":
        src = FIXTURES / "van_tiny.pth.tar"
    elif case == "train":
        src = tmp_path / "latest.safetensors"
        write_checkpoint({"model": {}, "optimizer": {"n_step": 1, "groups": []}, "iteration": 1, "config": {},
                          "arch": {}, "protocol": {}}, str(src))
    elif case == "truncated":
        src = tmp_path / MMSEG_TINY.name
        src.write_bytes(MMSEG_TINY.read_bytes()[:100_000])
    else:
        if case == "renamed":
            state["decode_head.cca.gama.scale"] = state.pop("decode_head.cca.gamma.scale")
        elif case == "extra":
            state["decode_head.extra.weight"] = np.zeros(3, np.float32)
        elif case == "reshaped":
            state["decode_head.cca.value_conv.bias"] = np.zeros(3, np.float32)
        name = {"unnamed": "my_model.pkl", "wrong-name": name.replace("r50", "r101"),
                "wrong-classes": "ccnet_r50-d8_769x769_40k_cityscapes_x.pkl"}.get(case, name)
        src = write_mmseg_like(tmp_path / name, state)
    dst = tmp_path / "out.safetensors"
    code, _, err = run(convert_weights.main, capsys, "mmseg", src, dst)
    assert code == 2 and not dst.exists() and err.count("\n") == 1
    assert err.startswith(f"error: {src}") and message in err


def test_renamed_file_converts_with_an_explicit_protocol(tmp_path, capsys):
    src = write_mmseg_like(tmp_path / "my_model.pkl", mmseg_state())
    dst = tmp_path / "out.safetensors"
    code, out, _ = run(convert_weights.main, capsys, "mmseg", src, dst, "--protocol", "ade20k-512x512")
    assert code == 0 and dst.exists() and "'align_corners': False" in out


def test_dataset_root_of_the_wrong_layout_is_one_line(mmseg_tiny, tmp_path, capsys):
    code, _, err = run(test_script.main, capsys, "--ckpt", mmseg_tiny, "--data-root", tmp_path)
    assert code == 2 and err.count("\n") == 1 and "expected the ADEChallengeData2016 layout" in err


def test_a_converted_voc_model_evaluates_on_voc_with_its_class_names(tmp_path, capsys):
    src = write_mmseg_like(tmp_path / "ccnet_r50-d8_512x512_20k_voc12aug_x.pkl",
                           {**mmseg_state(), **voc_classifier()})
    dst = tmp_path / "voc.safetensors"
    assert run(convert_weights.main, capsys, "mmseg", src, dst)[0] == 0
    root = tmp_path / "voc"
    synthetic.write_voc(str(root), train=1, val=2, size=64)
    code, out, _ = run(test_script.main, capsys, "--ckpt", dst, "--data-root", root, "--out", tmp_path / "test")
    metrics = json.loads((tmp_path / "test" / "metrics.json").read_text())
    assert code == 0 and metrics["protocol"]["dataset"] == "voc12aug" and metrics["protocol"]["split"] == "val"
    assert len(metrics["IoU"]) == 21 and "mIoU (devkit, all 21)" in out
    assert any(f"| {name} |" in out for name in PascalVOC.NAMES[1:])


def test_official_cityscapes_model_converts_to_its_evaluate_protocol(tmp_path, capsys):
    """A 19-class official state (the tiny fixture with a Cityscapes classifier): R as given, sliding
    769 crops every 513 pixels over the image at its own size, BGR minus the mean, align_corners True;
    then test.py runs it on a generated Cityscapes tree."""
    state = read_state_dict(str(OFFICIAL_TINY))
    rng = np.random.default_rng(0)
    for name in ("module.head.bottleneck.3", "module.dsn.3"):  # saved from DataParallel
        channels = state[f"{name}.weight"].shape[1]
        state[f"{name}.weight"] = rng.standard_normal((19, channels, 1, 1)).astype(np.float32)
        state[f"{name}.bias"] = rng.standard_normal(19).astype(np.float32)
    src, dst = tmp_path / "CS_scenes_60000.pkl", tmp_path / "cityscapes_r1.safetensors"
    jt.save(state, str(src))
    assert run(convert_weights.main, capsys, "official", src, dst, "--recurrence", "1")[0] == 0
    model, checkpoint = load_model(str(dst))
    protocol = checkpoint["protocol"]
    assert checkpoint["arch"]["recurrence"] == 1 and model.head.recurrence == 1
    assert {k: protocol[k] for k in ("dataset", "mode", "crop_size", "stride", "scale", "align_corners")} == {
        "dataset": "cityscapes", "mode": "slide", "crop_size": 769, "stride": 513, "scale": [2048, 1024],
        "align_corners": True}
    assert protocol_normalization(protocol) == MIT_CAFFE
    root = tmp_path / "cityscapes"
    synthetic.write_cityscapes(str(root), train=1, val=2, size=64)
    code, out, _ = run(test_script.main, capsys, "--ckpt", dst, "--data-root", root, "--out", tmp_path / "test")
    assert code == 0 and "mIoU (devkit, all 19)" in out


def voc_classifier():
    rng = np.random.default_rng(0)
    return {f"{head}.conv_seg.{p}": rng.standard_normal(shape).astype(np.float32)
            for head, c in (("decode_head", 16), ("auxiliary_head", 8))
            for p, shape in (("weight", (21, c, 1, 1)), ("bias", (21,)))}


# ---- the inference order against a NumPy reference of mmsegmentation's ---------------------------

class SubsampleModel(nn.Module):
    """Logits = a fixed 1x1 mixing of every 8th pixel (K = 4 classes, stride 8 like CCNet)."""
    mix = np.random.default_rng(7).standard_normal((4, 3)).astype(np.float32)

    def execute(self, x):
        return jt.matmul(jt.array(self.mix), x[:, :, ::8, ::8].reshape(x.shape[0], 3, -1)).reshape(
            x.shape[0], 4, (x.shape[2] + 7) // 8, (x.shape[3] + 7) // 8)


def reference_logits(x):
    """SubsampleModel in NumPy, x [3, h, w] -> [4, h/8, w/8]."""
    return np.einsum("kc,chw->khw", SubsampleModel.mix.astype(np.float64), x[:, ::8, ::8])


def reference_prediction(image, normalization, protocol):
    """mmsegmentation 0.x's aug_test: per scale and flip, cv2 keep-ratio resize, encode_decode
    (logits resized to the input; slide: per window, summed and divided by the count), resize to
    the original size, softmax, flip back; the mean over all views."""
    height, width = image.shape[:2]

    def resize(logits, size):
        return ref.bilinear_resize(logits[None], *size, align_corners=protocol.align_corners)[0]

    def encode_decode(x):
        return resize(reference_logits(x), x.shape[1:])

    def slide(x):
        crop, stride = protocol.crop_size, protocol.stride
        _, h, w = x.shape
        total, count = np.zeros((4, h, w)), np.zeros((h, w))
        for row in range(max(h - crop + stride - 1, 0) // stride + 1):
            for col in range(max(w - crop + stride - 1, 0) // stride + 1):
                y2, x2 = min(row * stride + crop, h), min(col * stride + crop, w)
                y1, x1 = max(y2 - crop, 0), max(x2 - crop, 0)
                total[:, y1:y2, x1:x2] += encode_decode(x[:, y1:y2, x1:x2])
                count[y1:y2, x1:x2] += 1
        return total / count

    views = []
    for ratio in protocol.scales:
        long, short = int(protocol.scale[0] * ratio), int(protocol.scale[1] * ratio)
        factor = min(long / max(height, width), short / min(height, width))
        size = (int(width * factor + 0.5), int(height * factor + 0.5))
        resized = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
        for flip in ((False, True) if protocol.flip else (False,)):
            view = resized[:, ::-1] if flip else resized
            pixels = view[:, :, ::-1] if normalization.bgr else view
            x = ((pixels - np.array(normalization.mean)) / np.array(normalization.std)).transpose(2, 0, 1)
            logits = resize(encode_decode(x) if protocol.mode == "whole" else slide(x), (height, width))
            probs = np.exp(logits - logits.max(0))
            probs /= probs.sum(0)
            views.append(probs[:, :, ::-1] if flip else probs)
    return np.mean(views, axis=0)


@pytest.mark.parametrize("framework,mode", [("mmseg", "whole"), ("official", "whole"), ("mmseg", "slide")])
@pytest.mark.parametrize("align_corners", [False, True])
def test_multi_scale_flip_inference_follows_mmsegs_order(framework, mode, align_corners):
    image = np.random.default_rng(3).integers(0, 256, (21, 29, 3)).astype(np.uint8)
    normalization = protocol_normalization(make_protocol(framework, "ade20k-512x512"))
    protocol = Protocol(mode, scales=(0.5, 1.0, 1.5), flip=True, crop_size=24, stride=16, scale=(48, 24),
                        align_corners=align_corners)
    ours = predict(SubsampleModel(), image, normalization, protocol)
    np.testing.assert_allclose(ours, reference_prediction(image, normalization, protocol), rtol=0, atol=2e-6)


# ---- live: mmsegmentation's own model, rebuilt here -----------------------------------------------

@needs_mmseg
@needs_sample
@pytest.mark.parametrize("protocol_name", ["ade20k-512x512", "cityscapes-769x769"])
def test_mmseg_parity_live(tmp_path, capsys, protocol_name):
    """Random mmsegmentation CCNet (align_corners False for ADE20K 512, True for Cityscapes 769),
    saved as the model zoo saves, converted: logits and predictions equal mmsegmentation's."""
    import torch
    classes = DATASET_PROTOCOLS[protocol_name]["num_classes"]
    reference = mmseg_reference.randomise(mmseg_reference.build(
        mmseg_reference.config(protocol_name, depth=50, num_classes=classes, width=8)), seed=5)
    crop, dataset = protocol_name.split("-")[1], protocol_name.split("-")[0]
    src = tmp_path / f"ccnet_r50-d8_{crop}_40k_{dataset}_live.pth"
    mmseg_reference.save(reference, src)
    dst = tmp_path / "converted.safetensors"
    assert run(convert_weights.main, capsys, "mmseg", src, dst)[0] == 0
    model, checkpoint = load_model(str(dst))
    assert checkpoint["protocol"]["align_corners"] is (protocol_name == "cityscapes-769x769")

    x = np.random.default_rng(1).standard_normal((1, 3, 72, 96)).astype(np.float32)
    with torch.no_grad():
        expected = reference.decode_head(reference.extract_feat(torch.from_numpy(x))).numpy()
    np.testing.assert_allclose(model(jt.array(x)).numpy(), expected, rtol=0, atol=1e-4 * np.abs(expected).max())

    saved = checkpoint["protocol"]
    protocol = Protocol(saved["mode"], crop_size=saved["crop_size"], stride=saved["stride"],
                        scale=tuple(saved["scale"]), align_corners=saved["align_corners"])
    for path in sorted((SAMPLE / "images" / "validation").glob("*.jpg")):
        theirs, logits = mmseg_reference.predict(reference, str(path))
        image = test_script.read_image(str(path))
        ours = predict(model, image, protocol_normalization(saved), protocol).argmax(0)
        assert_same_up_to_ties(ours, theirs, logits, path.name)


def assert_same_up_to_ties(ours, theirs, logits, name):
    """Equal predictions, except where mmsegmentation's own logits of the two classes tie in float32
    (measured: 1 pixel of 651,696 at align_corners=True, two logits both 7.9689612)."""
    differ = np.nonzero(ours != theirs)
    gap = np.abs(logits[ours[differ], *differ] - logits[theirs[differ], *differ])
    assert len(gap) <= 1e-4 * ours.size, f"{name}: {len(gap)} pixels differ"
    assert (gap <= 1e-5 * np.abs(logits).max()).all(), f"{name}: a differing pixel is no tie: {gap.max()}"
