"""zoo/weights.py remembers a network's weights (a whole-zoo verify asked for them once per
engine's build): never stale, and never writable by one caller behind another's back."""

import os

import numpy as np
import pytest

import zoo
from zoo import spec as S
from zoo import weights as W


def test_made_weights_are_shared_read_only_and_seeded():
    net = zoo.load("linreg")
    a, sha = W.for_net_with_digest(net, 0)
    b = W.for_net(net, 0)
    assert a is not b and a["fc.weight"] is b["fc.weight"]      # made once, dicts apart
    assert sha == W.digest(W.make(net, 0))
    with pytest.raises(ValueError, match="read-only"):
        b["fc.weight"][0] = 1.0
    assert not np.array_equal(W.for_net(net, 1)["fc.weight"], a["fc.weight"])


def test_a_replaced_weights_file_is_read_again(tmp_path):
    net = zoo.load("linreg")
    path = tmp_path / "linreg.npz"
    W.save(W.make(net, seed=7), path)
    (tmp_path / "linreg.prototxt").write_text(S.to_prototxt(net.proto) + 'weights: "linreg.npz"\n')
    net2 = zoo.load(tmp_path / "linreg.prototxt")
    first = W.for_net(net2)["fc.weight"].copy()
    W.save(W.make(net, seed=8), path)              # a new file (inode) at the same path
    os.utime(path, ns=(0, 0))                      # even with an old mtime
    again = W.for_net(net2)["fc.weight"]
    assert np.array_equal(again, W.make(net, seed=8)["fc.weight"])
    assert not np.array_equal(again, first)
