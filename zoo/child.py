# Kept until the verifier/benchmark switch to zoo.isolation (the lead removes this file).
# Until then zoo.child.run reports the old status names ("error" for unsupported and
# engine-unavailable, with "Type: message" reasons; "crash"), which verifier.py, builds.py and
# benchmark.py still read.
from .isolation import *  # noqa: F401,F403
from . import isolation as _isolation

_OLD_STATUS = {"unsupported": "error", "engine-unavailable": "error", "crashed": "crash"}


def run(*args, **kwargs):
    res = _isolation.run(*args, **kwargs)
    if res.status in ("unsupported", "engine-unavailable", "error") and "type" in res.result:
        res.reason = f"{res.result['type']}: {res.result['message']}"
    res.status = _OLD_STATUS.get(res.status, res.status)
    return res
