"""tools/show_attention.py: its attention maps are the ones criss-cross attention aggregates with."""

import numpy as np

import jittor as jt

from models.cca import criss_cross_attention_bmm

from tools import show_attention


def test_attention_maps_reproduce_the_aggregation(float64):
    rng = np.random.default_rng(0)
    query, key, value = (rng.standard_normal((1, c, 4, 5)) for c in (2, 2, 3))
    maps = np.array([[show_attention.pixel_attention(query[0], key[0], (i, j)) for j in range(5)]
                     for i in range(4)])
    expected = np.einsum("ijhw,chw->cij", maps, value[0])
    out = criss_cross_attention_bmm(jt.array(query), jt.array(key), jt.array(value)).numpy()[0]
    np.testing.assert_allclose(out, expected, rtol=1e-7, atol=1e-9)


def test_one_recurrence_reaches_the_cross_two_reach_everything():
    rng = np.random.default_rng(1)
    pairs = [(rng.standard_normal((2, 4, 5)), rng.standard_normal((2, 4, 5))) for _ in range(2)]
    first, second = show_attention.spread(pairs, (1, 3))
    cross = np.zeros((4, 5), bool)
    cross[1, :] = cross[:, 3] = True
    assert ((first > 0) == cross).all()
    assert (second > 0).all()
    assert abs(first.sum() - 1) < 1e-12
    assert abs(second.sum() - 1) < 1e-12
