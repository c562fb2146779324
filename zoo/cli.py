"""`zoo.cli`, the `zoo` command's module: the command line itself is cli.py at the top of the
source tree, installed beside this package as the module `cli` (pyproject.toml)."""
from cli import *  # noqa: F401,F403
from cli import app, main  # noqa: F401

if __name__ == "__main__":
    main()
