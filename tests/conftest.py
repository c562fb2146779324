import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from zoo import engines as E  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _build_cache(tmp_path_factory):
    """Every test session builds into its own cache: no stale builds from earlier runs."""
    if "ZOO_CACHE" not in os.environ:
        os.environ["ZOO_CACHE"] = str(tmp_path_factory.mktemp("zoo-cache"))
    yield


@pytest.fixture(scope="session", autouse=True)
def _temporary_folder(tmp_path_factory):
    """Temporary files of the session's processes go under pytest's own folder, which pytest
    rotates: the tests that SIGKILL a zoo process leave its zoo-child-*/zoo-dist-* folders
    behind by design (a SIGKILLed process cannot clean up), and they must not pile up in /tmp."""
    import tempfile
    old = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(tmp_path_factory.mktemp("tmp"))
    tempfile.tempdir = None          # re-read TMPDIR
    yield
    if old is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = old
    tempfile.tempdir = None


def require_engine(name: str):
    """Skip (with the reason printed by -rs) when the engine is not installed."""
    why = E.get(name).missing()
    if why:
        pytest.skip(f"engine {name} not installed: {why}")


def pytest_report_header(config):
    lines = []
    for e in E.ENGINES.values():
        lines.append(f"zoo engine {e.name}: " + (e.version if e.installed else f"MISSING ({e.missing()})"))
    return lines
