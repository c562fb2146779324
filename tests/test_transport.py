"""zoo/transport.py, the arrays between zoo and its children: every dtype and layout the
engines return comes back equal, names are data (never paths), and a folder written again
(a kept job folder) holds only the latest arrays."""

import numpy as np
import pytest

from zoo import transport


def arrays():
    rng = np.random.default_rng(0)
    f = rng.standard_normal((3, 4))
    return {
        "fc.weight": f.astype(np.float32),
        "float64": f,
        "transposed": f.T,                              # not C-contiguous
        "fortran": np.asfortranarray(f),
        "labels": np.arange(5, dtype=np.int64),
        "mask": np.array([True, False]),
        "scalar": np.float32(2.5),
        "empty": np.zeros((0, 3), np.float32),
        "../../etc/passwd": np.ones(2),                 # names are never paths
        "a/b\nc \u00e9": np.ones(1),
    }


def test_every_array_comes_back_equal_under_its_name(tmp_path):
    sent = arrays()
    transport.save(tmp_path / "out", sent)
    got = transport.load(tmp_path / "out")
    assert list(got) == list(sent)
    for name, a in sent.items():
        assert got[name].dtype == np.asarray(a).dtype and np.array_equal(got[name], a), name
        assert type(got[name]) is np.ndarray and got[name].flags.writeable
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        [transport.NAMES] + [f"{i}.npy" for i in range(len(sent))])


def test_a_folder_written_again_holds_only_the_latest_arrays(tmp_path):
    transport.save(tmp_path / "out", arrays())
    transport.save(tmp_path / "out", {"w": np.ones(3)})
    assert list(transport.load(tmp_path / "out")) == ["w"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["0.npy", transport.NAMES]
    (tmp_path / "out" / "mine.txt").write_text("not zoo's")
    transport.discard(tmp_path / "out")
    assert transport.load(tmp_path / "out") == {}
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["mine.txt"]   # left alone


def test_no_names_file_means_no_arrays_and_objects_are_refused(tmp_path):
    assert transport.load(tmp_path / "never-written") == {}
    with pytest.raises(ValueError):
        transport.save(tmp_path / "obj", {"o": np.array([{}], dtype=object)})
