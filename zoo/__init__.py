"""zoo: a declarative model zoo and cross-framework converter.

A network is written once as a spec (specs/zoo.proto); zoo builds it for each engine,
verifies that the engines agree with a float64 NumPy reference, and benchmarks them.
See zoo/api.py for the Python API; the `zoo` command (cli.py) is a thin layer over it.
"""

__version__ = "0.1.0"

from . import data, reference, weights  # noqa: E402,F401  (light: numpy only)
from .api import convert, list_networks, show, summary, validate  # noqa: E402,F401
from .errors import SpecError, ZooError  # noqa: E402,F401
from .net import Net, from_text, load  # noqa: E402,F401


def build(*args, **kwargs):
    """See zoo.builds.build."""
    from .builds import build as _build
    return _build(*args, **kwargs)


def verify(*args, **kwargs):
    """See zoo.verifier.verify."""
    from .verifier import verify as _verify
    return _verify(*args, **kwargs)


def bench(*args, **kwargs):
    """See zoo.benchmark.bench."""
    from .benchmark import bench as _bench
    return _bench(*args, **kwargs)
