"""tools/ablation.py: its pictures are what it says, and its model sees exactly as far as it claims."""

import numpy as np
import pytest

import jittor as jt

from jittor_helpers import load_random_float64

from tools import ablation


def marker_of(label):
    rows, columns = np.nonzero(label == 0)
    return rows.min(), columns.min()


def test_scenes_hold_one_marker_and_its_colour_everywhere_else():
    rng = np.random.default_rng(0)
    for _ in range(200):
        image, label, kind = ablation.make_scene(rng)
        top, left = marker_of(label)
        marker = np.s_[top:top + ablation.MARKER, left:left + ablation.MARKER]
        assert (label[marker] == 0).all() and (label == 0).sum() == ablation.MARKER ** 2
        colour = image[(slice(None),) + marker].mean(axis=(1, 2))
        expected = 1 + int(colour[2] > colour[0])  # blue marker -> "blue picture"
        assert set(np.unique(label)) == {0, expected}
        rows, columns = np.mgrid[:ablation.SIZE, :ablation.SIZE]
        row_gap = np.maximum(np.maximum(top - rows, rows - top - ablation.MARKER + 1), 0)
        column_gap = np.maximum(np.maximum(left - columns, columns - left - ablation.MARKER + 1), 0)
        cross = kind == ablation.CROSS
        away = kind == ablation.AWAY
        assert cross.any() and away.any()
        assert (np.minimum(row_gap, column_gap)[cross] == 0).all()
        assert (np.maximum(row_gap, column_gap)[cross] >= ablation.FAR).all()
        assert (np.minimum(row_gap, column_gap)[away] >= ablation.FAR).all()


def reach(recurrence, seed=0):
    """Pixels whose logits change when the marker changes colour, in a random model (gamma 1)."""
    model = ablation.SmallCCNet(recurrence, width=16)
    fixed = {"head.cca.gamma": np.array([1.0])} if recurrence else {}
    load_random_float64(model, seed, **fixed)
    model.eval()
    image, label, _ = ablation.make_scene(np.random.default_rng(seed))
    top, left = marker_of(label)
    recoloured = image.copy()
    other = 2 - label.max()  # the colour the marker does not have (labels 1, 2: red, blue)
    recoloured[:, top:top + ablation.MARKER, left:left + ablation.MARKER] = ablation.COLOURS[other][:, None, None]
    with jt.no_grad():
        logits = [model(jt.array(x[None])).numpy()[0] for x in (image, recoloured)]
    changed = np.abs(logits[0] - logits[1]).max(axis=0) > 1e-9
    rows, columns = np.mgrid[:ablation.SIZE, :ablation.SIZE]
    row_gap = np.maximum(np.maximum(top - rows, rows - top - ablation.MARKER + 1), 0)
    column_gap = np.maximum(np.maximum(left - columns, columns - left - ablation.MARKER + 1), 0)
    return changed, row_gap, column_gap


@pytest.mark.parametrize("seed", [0, 1])
def test_receptive_field_is_near_without_attention(float64, seed):
    changed, row_gap, column_gap = reach(0, seed)
    distance = np.maximum(row_gap, column_gap)
    assert changed[distance <= ablation.NEAR].all() and not changed[distance > ablation.NEAR].any()


@pytest.mark.parametrize("seed", [0, 1])
def test_one_recurrence_reaches_the_marker_rows_and_columns_only(float64, seed):
    changed, row_gap, column_gap = reach(1, seed)
    band = np.minimum(row_gap, column_gap)
    assert changed[band <= ablation.NEAR].all() and not changed[band > ablation.NEAR].any()


def test_two_recurrences_reach_every_pixel(float64):
    changed, _, _ = reach(2)
    assert changed.all()
