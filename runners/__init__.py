"""One module per engine: load a native model in a child process and run or time it.

Each module defines `Runner(base.Runner)`; `child.py` is the child process's entry point.
"""
