"""zoo/transport.py, the arrays between zoo and its children: every dtype and layout the
engines return comes back equal, names are data (never paths), a mapped array may be written
without touching the file, and it outlives the job folder."""

import shutil

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


@pytest.mark.parametrize("mapped", [True, False])
def test_every_array_comes_back_equal_under_its_name(tmp_path, mapped):
    sent = arrays()
    transport.save(tmp_path / "out", sent)
    got = transport.load(tmp_path / "out", mapped=mapped)
    assert list(got) == list(sent)
    for name, a in sent.items():
        assert got[name].dtype == np.asarray(a).dtype and np.array_equal(got[name], a), name
        assert type(got[name]) is np.ndarray
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        [transport.NAMES] + [f"{i}.npy" for i in range(len(sent))])


def test_a_mapped_array_is_private_and_outlives_its_folder(tmp_path):
    transport.save(tmp_path / "out", {"w": np.arange(1 << 16, dtype=np.float32)})
    got = transport.load(tmp_path / "out")["w"]
    got += 1                                            # copy-on-write: the file keeps 0..n
    assert np.array_equal(transport.load(tmp_path / "out")["w"], np.arange(1 << 16))
    shutil.rmtree(tmp_path / "out")                     # as the job folder is removed
    assert np.array_equal(got, np.arange(1 << 16) + 1)


def test_no_names_file_means_no_arrays_and_objects_are_refused(tmp_path):
    assert transport.load(tmp_path / "never-written") == {}
    with pytest.raises(ValueError):
        transport.save(tmp_path / "obj", {"o": np.array([{}], dtype=object)})
