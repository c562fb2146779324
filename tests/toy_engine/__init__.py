"""A toy engine, "numpy": zoo's float64 reference run as if it were an engine (tests only).

It is added the way the README says any engine is: one converter module (converter.py), one
runner module (runner.py) and one declaration (below). The tests import this module, and
the child processes find it through ZOO_EXTRA_ENGINES=toy_engine (with tests/ on
PYTHONPATH): zoo/engines.py imports it, and it registers itself.
"""

from zoo import engines

ENGINE = engines.register(engines.Engine(
    "numpy", ("numpy",), ("numpy",), "test", train=False,
    converter="toy_engine.converter", runner="toy_engine.runner",
    cpu_only="the numpy toy engine runs on the CPU only",
    note="the toy engine runs inference only"))
