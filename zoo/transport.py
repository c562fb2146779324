"""How arrays cross between zoo and its children: a folder with one .npy file per array and
names.json, their names in order, written last (a folder without it holds no arrays).

Not an .npz: a zip's CRC is computed when it is written and again when it is read, and each
member is copied out of it. A whole-zoo verify moves every network's parameters this way
several times (each training engine's updated weights, the float64 oracle's blobs and
weights), and the parent spent ~20 s reading them. A .npy is read straight into its array.
(Not mapped: each mapping keeps a file descriptor open, and the parent holds thousands of
arrays at once.) Names are data in names.json, never file names; object arrays are refused
(no pickle).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np

NAMES = "names.json"
INPUTS, OUTPUTS = "inputs", "outputs"     # a child job's folders of arrays (zoo/isolation.py)


def save(folder: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write `arrays` into `folder` (made if needed; what an earlier `save` left there is
    replaced)."""
    discard(folder)
    folder.mkdir(exist_ok=True)
    for i, a in enumerate(arrays.values()):
        np.save(folder / f"{i}.npy", np.asarray(a), allow_pickle=False)
    (folder / NAMES).write_text(json.dumps(list(arrays)))


def load(folder: Path) -> dict[str, np.ndarray]:
    """The arrays `save` wrote ({} when it wrote none)."""
    try:
        names = json.loads((folder / NAMES).read_text())
    except FileNotFoundError:
        return {}
    return {name: np.load(folder / f"{i}.npy", allow_pickle=False) for i, name in enumerate(names)}


def discard(folder: Path) -> None:
    """Remove what `save` wrote in `folder` (names.json first: the arrays stop counting at
    once), and the folder if nothing else is left in it."""
    with contextlib.suppress(FileNotFoundError, ValueError):
        names = json.loads((folder / NAMES).read_text())
        (folder / NAMES).unlink()
        for i in range(len(names)):
            with contextlib.suppress(FileNotFoundError):
                (folder / f"{i}.npy").unlink()
    with contextlib.suppress(OSError):
        folder.rmdir()
