"""Dropout2d and DropPath: what they zero, how they scale, and that eval mode leaves x alone."""
import numpy as np

import jittor as jt

from models.stochastic import Dropout2d, DropPath


def test_dropout2d_zeroes_whole_channels_and_scales_the_rest():
    jt.set_global_seed(0)
    y = Dropout2d(0.25)(jt.ones((8, 16, 3, 4))).numpy()
    per_channel = y.reshape(8, 16, -1)
    assert (per_channel.min(2) == per_channel.max(2)).all()  # a channel is kept or dropped whole
    assert set(np.unique(y)) <= {0.0, np.float32(1 / 0.75)}
    assert 0.1 < (per_channel[:, :, 0] == 0).mean() < 0.4


def test_drop_path_drops_whole_samples():
    jt.set_global_seed(1)
    y = DropPath(0.5)(jt.ones((64, 2, 2, 2))).numpy().reshape(64, -1)
    assert (y.min(1) == y.max(1)).all() and set(np.unique(y)) == {0.0, 2.0}


def test_eval_mode_is_the_identity():
    x = jt.randn(2, 3, 4, 4)
    for module in (Dropout2d(0.5), DropPath(0.5)):
        module.eval()
        np.testing.assert_array_equal(module(x).numpy(), x.numpy())
