"""How arrays cross between zoo and its children: a folder with one .npy file per array and
names.json, their names in order, written last (a folder without it holds no arrays).

Not an .npz: a zip's CRC is computed when it is written and again when it is read, and each
member is copied out of it. A whole-zoo verify moves every network's parameters this way
several times (each training engine's updated weights, the float64 oracle's blobs and
weights), and the parent spent ~20 s reading them. A .npy is mapped by its reader instead
(copy-on-write: writes stay private), so the comparison reads the child's bytes in place.
Names are data in names.json, never file names. Object arrays are refused (no pickle).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

NAMES = "names.json"
INPUTS, OUTPUTS = "inputs", "outputs"     # a child job's folders of arrays (zoo/isolation.py)


def save(folder: Path, arrays: dict[str, np.ndarray]) -> None:
    folder.mkdir()
    for i, a in enumerate(arrays.values()):
        np.save(folder / f"{i}.npy", np.asarray(a), allow_pickle=False)
    (folder / NAMES).write_text(json.dumps(list(arrays)))


def load(folder: Path, mapped: bool = True) -> dict[str, np.ndarray]:
    """The arrays `save` wrote ({} when it wrote none); mapped: as copy-on-write maps of the
    files (they stay valid after the folder is removed), else read into memory."""
    try:
        names = json.loads((folder / NAMES).read_text())
    except FileNotFoundError:
        return {}
    out = {}
    for i, name in enumerate(names):
        f = folder / f"{i}.npy"
        if mapped:
            try:
                out[name] = np.asarray(np.load(f, mmap_mode="c", allow_pickle=False))
                continue
            except ValueError:       # an empty array cannot be mapped
                pass
        out[name] = np.load(f, allow_pickle=False)
    return out
