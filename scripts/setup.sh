#!/usr/bin/env bash
# Sets up everything in .venv (every engine, real Caffe built from source and cached), then
# runs the main job on a built-in default: `zoo verify alexnet-r --mode both` on every engine.
#   scripts/setup.sh            set up, then verify alexnet-r
#   scripts/setup.sh --no-run   set up only (used by scripts/test.sh and CI)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch first, pinned: an unpinned torch would pull a multi-GB CUDA build
.venv/bin/python -m pip install -q -c constraints.txt "torch==2.13.0"
.venv/bin/python -m pip install -q -c constraints.txt -e ".[all]"
# Real Caffe (BVLC, CPU): built once, cached in ~/.cache/zoo (see the script for why/how)
bash scripts/build_caffe.sh .venv
# Headless Chromium (Debian's package): `zoo report` pages are checked in a real browser
if ! command -v chromium >/dev/null; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q chromium
fi
if [ "${1:-}" != "--no-run" ]; then
  .venv/bin/zoo engines
  .venv/bin/zoo verify alexnet-r --mode both
fi
