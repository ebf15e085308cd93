"""Weight conversion and checked loading, on PyTorch checkpoints with the published key layouts.

The fixtures (tests/fixtures, written by tools/make_checkpoint_fixtures.py with PyTorch) are tiny
versions of the three published files, in their formats, with what PyTorch computed on one input.
"""
from pathlib import Path

import numpy as np
import pytest

import jittor as jt

from models.ccnet import CCNetResNet
from checkpoints import CheckpointError, load_checked, model_shapes, read_state_dict, write_checkpoint
from models.resnet import ResNet
from models.van import VAN

from tools import convert_weights

FIXTURES = Path(__file__).parent / "fixtures"
OFFICIAL = FIXTURES / "ccnet_official_tiny.pth"
MIT = FIXTURES / "resnet_mit_tiny.pth"
VAN_FILE = FIXTURES / "van_tiny.pth.tar"
# the shapes tools/make_checkpoint_fixtures.py used
TINY = dict(layers=(1, 1, 2, 1), width=2)


def tiny_ccnet():
    return CCNetResNet(150, recurrence=2, head_channels=8, layers=(3, 4, 23, 3), width=2)


def tiny_van():
    return VAN((8, 8, 16, 16), (1, 1, 2, 1))


@pytest.fixture(scope="module")
def expected():
    return np.load(FIXTURES / "expected_outputs.npz")


def round_trip(source, path, model, tmp_path):
    """Convert, write the checkpoint, read it back and load it strictly into `model`."""
    state, skipped, _, _ = convert_weights.convert(source, path, model=model)
    write_checkpoint({"model": state}, tmp_path / "converted.safetensors")
    load_checked(model, read_state_dict(str(tmp_path / "converted.safetensors")), "converted.safetensors")
    model.eval()
    return skipped


def test_official_ccnet_converts_and_computes_what_pytorch_computed(expected, tmp_path):
    model = tiny_ccnet()
    skipped = round_trip("official", OFFICIAL, model, tmp_path)
    assert skipped and all(k.endswith("num_batches_tracked") for k in skipped)
    logits = model(jt.array(expected["input"])).numpy()
    np.testing.assert_allclose(logits, expected["ccnet_logits"], rtol=1e-4, atol=1e-5)


def test_mit_resnet_converts_without_its_classifier(expected, tmp_path):
    model = ResNet(**TINY)
    skipped = round_trip("mit-resnet101", MIT, model, tmp_path)
    assert {"fc.weight", "fc.bias"} <= set(skipped)
    c3, c4 = model(jt.array(expected["input"]))
    np.testing.assert_allclose(c3.numpy(), expected["resnet_c3"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(c4.numpy(), expected["resnet_c4"], rtol=1e-4, atol=1e-5)


def test_van_converts_from_nested_tar_checkpoint(expected, tmp_path):
    model = tiny_van()
    skipped = round_trip("van", VAN_FILE, model, tmp_path)
    assert {"head.weight", "head.bias"} <= set(skipped)
    for i, feature in enumerate(model(jt.array(expected["input"]))):
        np.testing.assert_allclose(feature.numpy(), expected[f"van_stage{i + 1}"], rtol=1e-4, atol=1e-5)


def converted(source, path, model):
    return convert_weights.convert(source, path, model=model)[0]


def test_strict_loading_rejects_a_renamed_key():
    model = tiny_ccnet()
    state = converted("official", OFFICIAL, model)
    state["head.cca.gama"] = state.pop("head.cca.gamma")
    with pytest.raises(CheckpointError, match=r"1 missing: head\.cca\.gamma; 1 unexpected: head\.cca\.gama"):
        load_checked(model, state, "renamed.pkl")


def test_strict_loading_rejects_a_changed_shape():
    model = tiny_ccnet()
    state = converted("official", OFFICIAL, model)
    state["dsn.3.weight"] = np.zeros((6, 8, 1, 1), np.float32)
    with pytest.raises(CheckpointError, match=r"mis-shaped: dsn\.3\.weight \[6, 8, 1, 1\] \(expected \[150, 8, 1, 1\]\)"):
        load_checked(model, state, "reshaped.pkl")


def test_failed_check_leaves_the_model_untouched():
    model = tiny_ccnet()
    before = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    state = converted("official", OFFICIAL, model)
    del state["layer1.0.conv1.weight"]
    with pytest.raises(CheckpointError):
        load_checked(model, state, "partial.pkl")
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), before[k])


def run_cli(capsys, *args):
    code = convert_weights.main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_rejects_the_wrong_backbone_naming_file_and_keys(capsys, tmp_path):
    dst = tmp_path / "out.safetensors"
    code, _, err = run_cli(capsys, "van", OFFICIAL, dst)
    assert code == 2 and not dst.exists()
    assert err.count("\n") == 1 and str(OFFICIAL) in err and "expected the weights under 'state_dict'" in err
    code, _, err = run_cli(capsys, "mit-resnet101", VAN_FILE, dst)
    assert code == 2 and "expected the weights under" not in err
    code, _, err = run_cli(capsys, "mit-resnet101", OFFICIAL, dst)  # a CCNet is not a bare backbone
    assert code == 2 and "unexpected: dsn.0.bias" in err and not dst.exists()


def test_cli_rejects_a_checkpoint_of_the_wrong_size(capsys, tmp_path):
    code, _, err = run_cli(capsys, "mit-resnet101", MIT, tmp_path / "out.safetensors")
    assert code == 2 and "mis-shaped: bn1.bias [2] (expected [64])" in err


@pytest.mark.parametrize("content", [OFFICIAL.read_bytes()[:5000], VAN_FILE.read_bytes()[:5000],
                                     b"this is not a checkpoint\n"],
                         ids=["truncated-legacy", "truncated-zip", "text"])
def test_cli_reports_truncated_or_foreign_files_in_one_line(capsys, tmp_path, content):
    broken = tmp_path / "broken.pth"
    broken.write_bytes(content)
    code, _, err = run_cli(capsys, "official", broken, tmp_path / "out.safetensors")
    assert code == 2 and err.startswith(f"error: {broken}: not a readable checkpoint") and err.count("\n") == 1


def test_cli_reports_a_missing_file(capsys, tmp_path):
    code, _, err = run_cli(capsys, "van", tmp_path / "nothing.pth.tar", tmp_path / "out.safetensors")
    assert code == 2 and "nothing.pth.tar: no such file" in err


def test_weight_files_round_trip_exactly(tmp_path):
    model = tiny_van()
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    write_checkpoint({"model": state}, tmp_path / "van.safetensors")
    read = read_state_dict(str(tmp_path / "van.safetensors"))
    assert set(read) == set(model_shapes(model))
    for k in state:
        np.testing.assert_array_equal(read[k], state[k])
