"""Training steps of CCNet (full width, 2 x 3 x 33 x 33) against the reference training steps,
written in PyTorch, from the same weights and batch.

CCNet-R101 against the official CCNet step: the official model's train-mode arithmetic (InPlaceABN:
|weight| + eps scale, batch statistics, running variance from the unbiased batch variance, momentum
0.1; reference/torch_models.py's mirror with the official module names), its CriterionDSN and
CriterionOhemDSN, its poly learning rate (lr_poly, no floor) and its SGD (one parameter group of
every trainable tensor, momentum 0.9, weight decay 5e-4). CCNet-VAN-base against the VAN authors'
segmentation recipe: AdamW (0.9, 0.999), weight decay 0.01 except on parameters named "*norm*"
(mmcv custom_keys), mmcv's linear warm-up from 1e-6 then poly 1.0 to 0. Dropout and drop path are
0 on both sides (their masks are random). Skips without torch; OHEM also needs scipy, as the
official code does.

Both sides compute in float64. In float32 this comparison cannot tell a wrong detail from rounding:
at random initialisation the gradients of a 100-layer network with train-mode batch norm are so
sensitive that the official step itself, in float32, changes some tensors 5% differently from the
same step in float64 (20-40% in the worst elements), and after three steps at lr 0.01 the float32
and float64 trajectories have parted. In float64 (Python numbers included: Jittor otherwise makes
them float32 constants) the two implementations agree to 1e-7, so any difference of arithmetic (a
momentum, the unbiased running variance, weight decay on one tensor, OHEM's threshold) shows. The
weights: batch-norm scales drawn in 0.5-1.5 (x 0.1 for the last norm of each residual block, which
keeps three steps from diverging), classifiers x 5 so that OHEM has confident pixels to drop."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

import jittor as jt  # noqa: E402

import numpy_reference as ref  # noqa: E402
import train  # noqa: E402
from losses import Ohem  # noqa: E402
from models import build_ccnet  # noqa: E402
from reference.torch_models import CCNet, CCNetVAN  # noqa: E402

CLASSES, SHAPE, ITERS, STEPS = 19, (2, 3, 33, 33), 10, 3
RECIPES = {
    "resnet101": dict(optimizer="sgd", lr=0.01, weight_decay=5e-4, power=0.9, min_lr=0.0, warmup_iters=0,
                      iters=ITERS, aux_weight=0.4),
    # A warm-up of 2 iterations, so that the three steps see it and the poly decay after it.
    "van_base": dict(optimizer="adamw", lr=6e-5, weight_decay=0.01, power=1.0, min_lr=0.0, warmup_iters=2,
                     iters=ITERS, aux_weight=0.4),
}
OHEM = Ohem(0.7, 64 * 20)  # 33 x 33 labels zoom to 4 x 4: the threshold is 0.7, then raised
CONFIDENCE = 5  # classifier weights x this: OHEM has confident (not saturated) pixels to drop
# Measured here over the three steps: losses within 6e-8 of each other. The change of every tensor
# within 1.6e-7 of the official change (the largest difference of an element, over the largest
# change) with SGD; within 1e-5 (the norm of the difference over the norm of the change) with
# AdamW, which divides each element by its own gradient's size, so that an element whose gradient
# is near eps (1e-8) moves by a fraction of lr that the gradient's last digits decide (up to 7e-3
# of the largest change). A wrong detail moves these by far more: the biased running variance
# alone changes running_var's update by 1 / (2 * 5 * 5 - 1) = 2e-2.
LOSS_TOLERANCE = 1e-6
UPDATE_TOLERANCE = {"sgd": 1e-5, "adamw": 1e-4}
# Tensors whose gradient is 0 in exact arithmetic (conv biases that a train-mode norm follows, the
# key bias, a constant added to all of a pixel's energies): their change is weight decay plus
# rounding noise (SGD), or that noise divided by its own size (AdamW), and is not compared.
ZERO_GRADIENT = {
    "resnet101": {"dsn.0.bias", "head.cca.key_conv.bias"},
    "van_base": {"dsn.0.bias", "head.cca.key_conv.bias"} | {f"backbone.patch_embed{i}.proj.bias" for i in range(1, 5)},
}


def official_lr(backbone, iteration):
    """lr_poly of the official CCNet code; mmcv's poly with linear warm-up (ratio 1e-6) for VAN."""
    recipe = RECIPES[backbone]
    lr = recipe["lr"] * (1 - iteration / ITERS) ** recipe["power"]
    if iteration < recipe["warmup_iters"]:
        lr *= 1 - (1 - iteration / recipe["warmup_iters"]) * (1 - 1e-6)
    return lr


def official_optimizer(backbone, model):
    params = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    recipe = RECIPES[backbone]
    if backbone == "resnet101":
        return torch.optim.SGD([{"params": [p for _, p in params]}], lr=recipe["lr"], momentum=0.9,
                               weight_decay=recipe["weight_decay"])
    return torch.optim.AdamW([{"params": [p for n, p in params if "norm" not in n]},
                              {"params": [p for n, p in params if "norm" in n], "weight_decay": 0.0}],
                             lr=recipe["lr"], betas=(0.9, 0.999), weight_decay=recipe["weight_decay"])


def official_ohem_target(main, target):
    """OhemCrossEntropy2d.generate_new_target: the labels with the pixels above the threshold
    ignored; and the threshold."""
    prob = F.softmax(main, 1).detach().numpy()
    labels = target.numpy()
    threshold = ref.official_ohem_threshold(prob, labels, OHEM.threshold, OHEM.min_kept, OHEM.factor)
    valid = labels != 255
    true_prob = np.take_along_axis(prob, np.where(valid, labels, 0)[:, None], axis=1)[:, 0]
    return torch.from_numpy(np.where(valid & (true_prob <= threshold), labels, 255)), threshold


def official_criterion(preds, target, ohem):
    """CriterionDSN, or CriterionOhemDSN (OHEM on the main output only); and OHEM's threshold."""
    size = target.shape[1:]
    main = F.interpolate(preds[0], size=size, mode="bilinear", align_corners=True)
    aux = F.interpolate(preds[1], size=size, mode="bilinear", align_corners=True)
    main_target, threshold = official_ohem_target(main, target) if ohem else (target, None)
    loss = F.cross_entropy(main, main_target, ignore_index=255) + 0.4 * F.cross_entropy(aux, target, ignore_index=255)
    return loss, threshold


def official_model(backbone):
    """The mirror with non-trivial weights and norms, and gamma != 0 so that attention acts."""
    torch.manual_seed(0)
    model = CCNet(CLASSES) if backbone == "resnet101" else CCNetVAN(CLASSES)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.copy_(torch.rand(module.weight.shape, generator=gen) + 0.5)
                module.bias.copy_(torch.randn(module.bias.shape, generator=gen) * 0.1)
        for name, module in model.named_modules():  # small residual branches: a tame trajectory
            if name.startswith("layer") and name.endswith(".bn3"):
                module.weight.mul_(0.1)
        model.head.cca.gamma.fill_(0.1)
        for classifier in (model.head.bottleneck[3], model.dsn[3]):  # confident: OHEM has pixels to drop
            classifier.weight.mul_(CONFIDENCE)
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout2d):
            module.p = 0.0
    return model.train()


def jittor_model(backbone, state):
    model = build_ccnet(backbone, num_classes=CLASSES)
    model.load_state_dict({k: v.numpy() for k, v in state.items() if not k.endswith("num_batches_tracked")})
    for var in model.state_dict().values():
        var.assign(var.float64())
    for module in model.modules():
        if type(module).__name__ in ("Dropout2d", "DropPath"):
            module.p = 0.0
    model.train()
    return model


def batch():
    rng = np.random.default_rng(2)
    image = rng.normal(size=SHAPE)
    blocks = rng.integers(0, CLASSES, (SHAPE[0], 3, 3))
    labels = blocks.repeat(11, axis=1).repeat(11, axis=2)
    labels[rng.random(labels.shape) < 0.1] = 255
    return image, labels


def initial_state(backbone):
    return {k: v.clone() for k, v in official_model(backbone).state_dict().items()}


def run_official(backbone, state, ohem):
    model = official_model(backbone).double()
    model.load_state_dict(state)
    image, labels = batch()
    x, y = torch.from_numpy(image).double(), torch.from_numpy(labels).long()
    optimizer = official_optimizer(backbone, model)
    losses, states, thresholds, no_gradient = [], [], [], set()
    for iteration in range(STEPS):
        optimizer.zero_grad()
        for group in optimizer.param_groups:
            group["lr"] = official_lr(backbone, iteration)
        loss, threshold = official_criterion(model(x), y, ohem)
        loss.backward()
        if iteration == 0:
            largest = {n: p.grad.abs().max().item() for n, p in model.named_parameters()}
            no_gradient = {n for n, g in largest.items() if g < 1e-9 * max(largest.values())}
        optimizer.step()
        losses.append(loss.item())
        states.append({k: v.detach().numpy().copy() for k, v in model.state_dict().items()})
        thresholds.append(threshold)
    return losses, states, thresholds, no_gradient


def run_ours(backbone, state, ohem):
    with jt.flag_scope(auto_convert_64_to_32=0):  # Python numbers become float64 constants too
        return steps_of_ours(backbone, state, ohem)


def steps_of_ours(backbone, state, ohem):
    model = jittor_model(backbone, state)
    image, labels = batch()
    x, y = jt.array(image).float64(), jt.array(labels.astype(np.int32))
    recipe = RECIPES[backbone]
    optimizer = train.make_optimizer(model, recipe)
    losses, states = [], []
    for iteration in range(STEPS):
        lr = train.learning_rate(iteration, recipe)
        assert lr == pytest.approx(official_lr(backbone, iteration), rel=1e-12)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss = train.training_loss(model(x), y, recipe, OHEM if ohem else None)
        optimizer.step(loss)
        losses.append(loss.item())
        states.append({k: v.numpy().copy() for k, v in model.state_dict().items()})
    return losses, states


def keep_float64_beside_python_numbers(monkeypatch):
    """Jittor turns a Python float into a float32 constant, also beside a float64 variable: AdamW's
    `p * (1 - lr * weight_decay)` with lr * weight_decay = 6e-13 becomes p * 1.0, and `b0 * m`
    makes a float64 buffer float32. Here a float beside a float64 variable becomes float64 (the
    flag scope of run_ours keeps NumPy's float64)."""
    for name in ("__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__", "__truediv__",
                 "__rtruediv__"):
        def operator(self, other, original=getattr(jt.Var, name)):
            if isinstance(other, float) and str(self.dtype) == "float64":
                other = jt.array(np.array(other))
            return original(self, other)
        monkeypatch.setattr(jt.Var, name, operator)


def update_errors(initial, ours, official, norm):
    """Per tensor, |our change - official change| / |official change|, as the largest element
    (norm=False) or as Euclidean norms (norm=True)."""
    measure = np.linalg.norm if norm else (lambda a: np.abs(a).max())
    errors = {}
    for name, before in initial.items():
        if name.endswith("num_batches_tracked"):
            continue
        before = before.double().numpy()
        change = official[name] - before
        assert measure(change) > 0, f"{name} did not change in the official step"
        errors[name] = measure((ours[name] - before) - change) / measure(change)
    return errors


@pytest.mark.parametrize("backbone, ohem", [("resnet101", False), ("resnet101", True), ("van_base", False)],
                         ids=["resnet101", "resnet101-ohem", "van_base"])
def test_training_steps_match_the_reference_step(backbone, ohem, monkeypatch):
    if ohem:
        pytest.importorskip("scipy.ndimage")
    keep_float64_beside_python_numbers(monkeypatch)
    start = initial_state(backbone)
    official_losses, official_states, thresholds, no_gradient = run_official(backbone, start, ohem)
    our_losses, our_states = run_ours(backbone, start, ohem)
    if ohem:  # the threshold was raised above 0.7 and pixels were dropped
        assert any(0.7 < t < 1.0 for t in thresholds), thresholds
    np.testing.assert_allclose(our_losses, official_losses, rtol=LOSS_TOLERANCE)
    assert no_gradient == ZERO_GRADIENT[backbone]
    optimizer = RECIPES[backbone]["optimizer"]
    for step in range(STEPS):
        errors = update_errors(start, our_states[step], official_states[step], norm=optimizer == "adamw")
        for name in no_gradient:
            errors.pop(name)
        worst = max(errors, key=errors.get)
        assert errors[worst] <= UPDATE_TOLERANCE[optimizer], (step + 1, worst, errors[worst])
