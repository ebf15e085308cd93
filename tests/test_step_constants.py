"""Once a shape has been seen, a training step and an evaluation build no array from NumPy but their
inputs: each such array is a host operator, which on a GPU makes Jittor wait for the device and
copy, inside the step. The matrices of the resizes (features, loss, evaluation, sliding windows)
and the attention's column mask are made once per shape and reused."""
import numpy as np
import pytest

import jittor as jt

import train
from inference import Protocol, predict
from models import build_ccnet
from models.cca import criss_cross_attention_bmm
from models.ccnet import CCNetResNet


def numpy_arrays_built(run, monkeypatch):
    """How many arrays of more than one element run() builds from NumPy (jt.array)."""
    real, built = jt.array, []

    def counting(data, *args, **kwargs):
        if isinstance(data, np.ndarray) and data.size > 1:
            built.append(data.shape)
        return real(data, *args, **kwargs)
    with monkeypatch.context() as patch:
        patch.setattr(jt, "array", counting)
        run()
    return built


@pytest.mark.parametrize("backbone", ["van_b0", "resnet"])
def test_a_training_step_builds_only_its_inputs_from_numpy(backbone, monkeypatch):
    model = (build_ccnet("van_b0", num_classes=5) if backbone == "van_b0" else
             CCNetResNet(5, recurrence=2, head_channels=8, layers=(1, 1, 1, 1), width=2))
    optimizer = train.make_optimizer(model, {"optimizer": "sgd", "lr": 1e-3, "weight_decay": 1e-4})
    rng = np.random.default_rng(0)
    images = rng.random((2, 3, 48, 64), dtype=np.float32)
    labels = rng.integers(0, 5, (2, 48, 64)).astype(np.int32)
    model.train()

    def step():
        loss = train.training_loss(model(jt.array(images)), jt.array(labels), {"aux_weight": 0.4}, None)
        optimizer.step(loss)
        jt.sync_all()
    first = numpy_arrays_built(step, monkeypatch)
    assert len(first) > 2  # the resize matrices, made now
    assert numpy_arrays_built(step, monkeypatch) == [images.shape, labels.shape]


@pytest.mark.parametrize("mode", ["whole", "slide"])
def test_evaluating_a_second_image_of_a_size_builds_only_the_image(mode, monkeypatch):
    model = build_ccnet("van_b0", num_classes=5).eval()
    protocol = Protocol(mode, (1.0,), False, 48, 32, (96, 48), True)
    image = np.random.default_rng(1).integers(0, 255, (60, 90, 3)).astype(np.uint8)
    normalization = lambda view: (view.astype(np.float32) / 255).transpose(2, 0, 1)  # noqa: E731
    numpy_arrays_built(lambda: predict(model, image, normalization, protocol), monkeypatch)
    second = numpy_arrays_built(lambda: predict(model, image, normalization, protocol), monkeypatch)
    assert len(second) == 1 and second[0][0] == 1  # the image as a batch of one


def test_the_gpu_attention_builds_its_mask_once(monkeypatch):
    rng = np.random.default_rng(2)
    q, k, v = (jt.array(rng.standard_normal((1, c, 6, 5)).astype(np.float32)) for c in (2, 2, 3))
    numpy_arrays_built(lambda: criss_cross_attention_bmm(q, k, v).sync(), monkeypatch)
    assert numpy_arrays_built(lambda: criss_cross_attention_bmm(q, k, v).sync(), monkeypatch) == []
