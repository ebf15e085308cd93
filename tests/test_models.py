"""Backbones and CCNet: shapes and strides, pooling and dilation, NumPy references, full models."""
import numpy as np
import pytest

import jittor as jt
from jittor import nn

import numpy_reference as ref
from jittor_helpers import load_random_float64
from models import build_ccnet
from models.ccnet import CCNetVAN
from models.resnet import Bottleneck, ResNet, resnet101
from models.van import VAN, Block, van_b0, van_b1, van_b2, van_b3, van_base

TINY_RESNET = dict(layers=(1, 1, 2, 1), width=2)


def conv_out(size, stride=2):
    """A 3x3 conv with padding 1: ceil(size / stride)."""
    return (size - 1) // stride + 1


def pool_out_ceil(size):
    """3x3 max pool, stride 2, padding 1, ceil_mode=True."""
    return -(-(size + 2 - 3) // 2) + 1


def test_resnet_features_have_output_stride_8_and_ceil_mode_sizes():
    c3, c4 = ResNet(**TINY_RESNET)(jt.randn(2, 3, 64, 46))
    h = conv_out(pool_out_ceil(conv_out(64)))  # stem conv /2, pool /2 (ceil), layer2 /2
    w = conv_out(pool_out_ceil(conv_out(46)))
    assert (h, w) == (9, 6)  # 64 -> 32 -> 17 -> 9 (a floor-mode pool would give 16 -> 8)
    assert c3.shape == [2, 32, h, w] and c4.shape == [2, 64, h, w]


def test_resnet101_channels_and_block_counts():
    model = resnet101()
    assert [len(getattr(model, f"layer{i}")) for i in range(1, 5)] == [3, 4, 23, 3]
    assert model.out_channels == (1024, 2048)
    c3, c4 = model(jt.randn(1, 3, 65, 33))  # shapes only: Jittor infers them without running
    assert c3.shape == [1, 1024, 9, 5] and c4.shape == [1, 2048, 9, 5]


def test_max_pool_uses_ceil_mode_on_a_hand_computed_case():
    x = jt.array(np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4))
    out = ResNet(**TINY_RESNET).maxpool(x).numpy()[0, 0]
    # windows over rows/columns {0,1}, {1,2,3}, {3}: the ceil mode adds the last one
    np.testing.assert_array_equal(out, [[5, 7, 7], [13, 15, 15], [13, 15, 15]])


def test_every_layer3_and_layer4_block_is_dilated():
    model = resnet101()
    for layer, dilation in (("layer3", 2), ("layer4", 4)):
        for block in getattr(model, layer):
            conv = block.conv2
            assert (conv.dilation, conv.padding, conv.stride) == ((dilation,) * 2, (dilation,) * 2, (1, 1))


@pytest.mark.parametrize("layer,dilation", [("layer3", 2), ("layer4", 4)])
def test_dilated_conv_reaches_taps_dilation_apart(layer, dilation):
    conv = getattr(ResNet(**TINY_RESNET), layer)[1 if layer == "layer3" else 0].conv2
    conv.weight.assign(jt.ones(conv.weight.shape))
    x = np.zeros((1, conv.in_channels, 13, 13), dtype=np.float32)
    x[0, 0, 6, 6] = 1.0  # an impulse lights exactly the 3x3 taps, `dilation` apart
    response = conv(jt.array(x)).numpy()[0, 0] != 0
    expected = np.zeros((13, 13), dtype=bool)
    for dy in (-dilation, 0, dilation):
        for dx in (-dilation, 0, dilation):
            expected[6 + dy, 6 + dx] = True
    np.testing.assert_array_equal(response, expected)


@pytest.mark.parametrize("stride,dilation,downsample", [(1, 1, True), (2, 1, True), (1, 2, False)])
def test_bottleneck_matches_numpy_reference(float64, stride, dilation, downsample):
    in_channels = 8 if downsample else 16
    down = None
    if downsample:
        from models.norm import ABN
        down = nn.Sequential(nn.Conv2d(in_channels, 16, 1, stride=stride, bias=False), ABN(16, "identity"))
    block = Bottleneck(in_channels, 4, stride, dilation, down)
    params = load_random_float64(block, seed=stride + dilation)
    block.eval()
    x = np.random.default_rng(0).standard_normal((2, in_channels, 7, 6))
    np.testing.assert_allclose(block(jt.array(x)).numpy(),
                               ref.bottleneck(x, params, "", stride, dilation), rtol=1e-7, atol=1e-9)


def test_van_block_matches_numpy_reference(float64):
    block = Block(dim=4, mlp_ratio=2)
    params = load_random_float64(block, seed=3)
    block.eval()
    x = np.random.default_rng(4).standard_normal((2, 4, 9, 8))
    # float32 Python scalars (Jittor's GELU uses sqrt(2) and 0.5) limit agreement to ~1e-7
    np.testing.assert_allclose(block(jt.array(x)).numpy(), ref.van_block(x, params, ""),
                               rtol=1e-6, atol=1e-8)


def test_van_stage_norm_is_layer_norm_over_channels_with_eps_1e6(float64):
    model = VAN([4, 4, 8, 8], [1, 1, 1, 1])
    params = load_random_float64(model, seed=5)
    model.eval()
    x = np.random.default_rng(6).standard_normal((1, 3, 32, 32))
    features = model(jt.array(x))
    stage1 = ref.batch_norm(ref.conv2d(x, params["patch_embed1.proj.weight"], params["patch_embed1.proj.bias"],
                                       stride=4, padding=3), params, "patch_embed1.norm.")
    stage1 = ref.van_block(stage1, params, "block1.0.")
    stage1 = ref.layer_norm_channels(stage1, params["norm1.weight"], params["norm1.bias"])
    np.testing.assert_allclose(features[0].numpy(), stage1, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("factory,dims,depths", [
    (van_b0, [32, 64, 160, 256], [3, 3, 5, 2]), (van_b1, [64, 128, 320, 512], [2, 2, 4, 2]),
    (van_b2, [64, 128, 320, 512], [3, 3, 12, 3]), (van_b3, [64, 128, 320, 512], [3, 5, 27, 3])])
def test_van_variants_give_four_maps_at_strides_4_to_32(factory, dims, depths):
    model = factory()
    assert [len(getattr(model, f"block{i}")) for i in range(1, 5)] == depths
    features = model(jt.randn(1, 3, 64, 96))  # shapes only
    assert [f.shape for f in features] == [[1, d, 64 // s, 96 // s] for d, s in zip(dims, (4, 8, 16, 32))]


def trainable_parameters(module):
    return sum(int(np.prod(p.shape)) for name, p in module.state_dict().items()
               if not name.endswith(("running_mean", "running_var")))


def test_van_base_has_the_published_parameter_count():
    # VAN-B2: 26.6M parameters with its 1000-class ImageNet classifier (512 * 1000 + 1000)
    assert van_base is van_b2
    assert round((trainable_parameters(van_base()) + 513_000) / 1e6, 1) == 26.6


def test_van_path_fuses_stages_2_to_4_at_stride_8():
    model = CCNetVAN("van_b0", num_classes=3, embed_dims=[8, 8, 16, 16], depths=[1, 1, 1, 1])
    assert model.head.conva[0].in_channels == 8 + 16 + 16
    main, aux = model(jt.randn(1, 3, 64, 96))
    assert main.shape == [1, 3, 8, 12] and aux.shape == [1, 3, 4, 6]


def test_unknown_backbone_and_layout_rejected():
    with pytest.raises(ValueError, match="backbone must be one of resnet101, resnet50, van_b0"):
        build_ccnet("resnet152")
    with pytest.raises(ValueError, match="layout must be one of official, mmseg"):
        build_ccnet("resnet50", layout="timm")
    with pytest.raises(ValueError, match="van_b0 has only the official layout"):
        build_ccnet("van_b0", layout="mmseg")


def assert_trains(model, shape, main_shape, aux_shape):
    """Train-mode forward gives (main, aux); backward reaches backbone, head and DSN; eval gives main."""
    main, aux = model(jt.randn(shape))
    assert main.shape == main_shape and aux.shape == aux_shape
    loss = main.sqr().mean() + 0.4 * aux.sqr().mean()
    names = [n for n, p in model.named_parameters() if not p.is_stop_grad()]
    grads = jt.grad(loss, [p for p in model.parameters() if not p.is_stop_grad()])
    jt.sync(grads)
    norms = {n: float(np.abs(g.numpy()).max()) for n, g in zip(names, grads)}
    assert all(np.isfinite(v) for v in norms.values())
    for part in ("head.conva", "head.bottleneck", "dsn."):
        assert any(v > 0 for n, v in norms.items() if n.startswith(part)), part
    model.eval()
    assert model(jt.randn(shape)).shape == main_shape


def test_ccnet_resnet101_runs_forward_and_backward():
    model = build_ccnet("resnet101", num_classes=150)
    assert_trains(model, (1, 3, 64, 64), [1, 150, 9, 9], [1, 150, 9, 9])


def test_ccnet_van_base_runs_forward_and_backward():
    model = build_ccnet("van_base", num_classes=150)
    assert_trains(model, (1, 3, 64, 64), [1, 150, 8, 8], [1, 150, 4, 4])


def test_mmseg_layout_is_resnet_v1c_with_contract_dilation():
    """mmsegmentation's CCNet: stem 32-32-64 at width 64, floor pooling (a 64 input gives 8 x 8
    logits where the official ceil-mode pool gives 9 x 9), the first block of layer3 / layer4 at
    half the dilation, BatchNorm + ReLU heads and a 256-wide auxiliary conv without bias."""
    full = build_ccnet("resnet50", layout="mmseg")
    assert [c.weight.shape[0] for c in (full.conv1, full.conv2, full.conv3)] == [32, 32, 64]
    assert [block.conv2.dilation[0] for block in full.layer3][:2] == [1, 2]
    assert [block.conv2.dilation[0] for block in full.layer4][:2] == [2, 4]
    assert full.dsn[0].weight.shape[0] == 256 and full.dsn[0].bias is None
    assert full.head.conva[1].activation == "relu" and not full.head.conva[1].positive_scale
    sizes = {}
    for layout in ("mmseg", "official"):
        model = build_ccnet("resnet50", num_classes=3, layout=layout, width=2, head_channels=8).eval()
        sizes[layout] = model(jt.randn(1, 3, 64, 64)).shape[2:]
    assert sizes == {"mmseg": [8, 8], "official": [9, 9]}
