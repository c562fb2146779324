#!/usr/bin/env bash
# Sets up (idempotent, cached) and runs the test suite. Engines that are not installed are
# skipped with the reason printed (-rs); CI installs every engine, so nothing is skipped there.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --no-run
exec .venv/bin/python -m pytest -rs -q "$@"
