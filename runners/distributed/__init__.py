"""Data-parallel workers: one process per worker, each running its engine's own distributed
runtime on zoo's normal build of a network (`python -m zoo.runners.distributed RUNDIR`).
The parent's side (planning, launching, teardown, figures) is zoo/distributed.py."""
