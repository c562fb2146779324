"""Kept until the verifier/benchmark switch: the child's entry is now `python -m zoo.runners`
(runners/__main__.py); `python -m zoo.runners.child DIR` still works meanwhile."""
import sys

from zoo.runners.__main__ import *  # noqa: F401,F403
from zoo.runners.__main__ import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
