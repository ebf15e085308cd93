"""mmsegmentation's own CCNet, run on the CPU: the reference the mmseg conversion is checked against.

Needs torch and the PyPI packages mmsegmentation, mmcv-lite and mmengine (requirements-mmseg.txt).
mmcv-lite ships mmcv's Python sources without their compiled operators, and importing mmcv.ops
fails on the first compiled one. CCNet needs none of them: mmcv's CrissCrossAttention is pure
PyTorch (mmcv/ops/cc_attention.py). `import_mmseg` therefore registers an `mmcv.ops` package that
loads mmcv's own cc_attention.py and point_sample.py files unchanged and answers every other
operator with a function that raises if called; then mmsegmentation imports as published.

Models are built from mmsegmentation's own config files (its installed .mim/configs), with
BatchNorm for SyncBN (one process) and, where asked, smaller widths.
"""
import os
import sys
import types

CONFIGS = {
    "ade20k-512x512": "ccnet/ccnet_r{depth}-d8_4xb4-80k_ade20k-512x512.py",
    "cityscapes-769x769": "ccnet/ccnet_r{depth}-d8_4xb2-40k_cityscapes-769x769.py",
}


def mmseg_available():
    """'' when torch and mmsegmentation import, else why not."""
    try:
        import_mmseg()
    except ImportError as error:
        return f"needs torch and mmsegmentation (pip install -r requirements-mmseg.txt): {error}"
    return ""


def import_mmseg():
    import mmcv
    if not hasattr(sys.modules.get("mmcv.ops"), "CrissCrossAttention"):  # not yet, and no compiled mmcv
        ops = types.ModuleType("mmcv.ops")
        ops.__path__ = [os.path.join(os.path.dirname(mmcv.__file__), "ops")]
        sys.modules["mmcv.ops"] = mmcv.ops = ops
        from mmcv.ops.cc_attention import CrissCrossAttention
        from mmcv.ops.point_sample import point_sample
        ops.CrissCrossAttention, ops.point_sample = CrissCrossAttention, point_sample

        def compiled_operator(name):
            if name.startswith("__"):
                raise AttributeError(name)

            def unavailable(*args, **kwargs):
                raise RuntimeError(f"mmcv.ops.{name} needs mmcv's compiled operators")
            return unavailable
        ops.__getattr__ = compiled_operator
    import mmseg
    import mmseg.models  # noqa: F401  (registers the models)
    return mmseg


def config(protocol, depth=101, num_classes=None, width=None):
    """mmsegmentation's config of CCNet-R`depth` for `protocol`; `width` shrinks every layer."""
    from mmengine import Config
    mmseg = import_mmseg()
    root = os.path.join(os.path.dirname(mmseg.__file__), ".mim", "configs")
    cfg = Config.fromfile(os.path.join(root, CONFIGS[protocol].format(depth=depth)))
    model = cfg.model
    for part in (model.backbone, model.decode_head, model.auxiliary_head):
        part.norm_cfg = dict(type="BN", requires_grad=True)
    if num_classes:
        model.decode_head.num_classes = model.auxiliary_head.num_classes = num_classes
    if width:
        model.backbone.update(base_channels=width, stem_channels=width)
        model.decode_head.update(in_channels=32 * width, channels=2 * width)
        model.auxiliary_head.update(in_channels=16 * width, channels=width)
    return cfg


def build(cfg):
    """The model of `cfg` in eval mode, as mmseg.apis.init_model builds it (CPU, no weights)."""
    from mmseg.apis import init_model
    return init_model(cfg, checkpoint=None, device="cpu")


def randomise(model, seed):
    """Random weights with non-trivial norm statistics and gamma != 0 (as a trained model has)."""
    import torch
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                tensor.fill_(80000)
            elif name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=gen) + 0.5)
            elif name.endswith("gamma.scale"):
                tensor.fill_(0.7)
            else:
                fan_in = tensor[0].numel() if tensor.dim() > 1 else 1
                tensor.copy_(torch.randn(tensor.shape, generator=gen) / fan_in ** 0.5)
    return model


def save(model, path, legacy=True):
    """An mmcv checkpoint as the model zoo publishes them: {'meta': ..., 'state_dict': ...}."""
    import torch
    meta = {"mmcv_version": "1.0.0", "time": "Mon Jun 15 01:48:48 2020", "iter": 80000,
            "CLASSES": [f"class{i}" for i in range(model.decode_head.num_classes)]}
    torch.save({"meta": meta, "state_dict": model.state_dict()}, path,
               _use_new_zipfile_serialization=not legacy)


def predict(model, image_path):
    """(prediction [H, W] int64, logits [K, H, W] at the original size) by mmseg.apis.inference_model."""
    from mmseg.apis import inference_model
    sample = inference_model(model, image_path)
    return sample.pred_sem_seg.data[0].numpy(), sample.seg_logits.data.numpy()
