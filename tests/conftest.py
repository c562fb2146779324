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
