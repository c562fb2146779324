#!/usr/bin/env bash
# The GPU checks, as one short script (about 5 minutes on one GPU): run it on a machine with a
# CUDA build of torch in .venv (or PY=/path/to/python). Each step prints its own result; the
# script goes on after a failure and exits 1 if any step failed.
#   1. the device is seen by torch, and a GEMM runs on it
#   2. zoo verify on gpu0: forward and a training step against the float64 CPU reference
#   3. zoo bench on gpu0, one process
#   4. zoo bench on gpu0 through the distributed path (torch DDP, NCCL), one worker
# Results (JSON) go to ${OUT:-gpu-check}/.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUTDIR=${OUT:-gpu-check}
mkdir -p "$OUTDIR"
failed=0
step() {   # step NAME TIMEOUT_S COMMAND...
  local name=$1 limit=$2; shift 2
  echo "== $name"
  local t0=$SECONDS
  if timeout "$limit" "$@"; then
    echo "== $name: ok ($((SECONDS - t0)) s)"
  else
    echo "== $name: FAILED, exit $? ($((SECONDS - t0)) s)"; failed=1
  fi
}

step "cuda visible" 60 "$PY" - <<'EOF'
import torch
assert torch.cuda.is_available(), "torch sees no CUDA device"
print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0))
print("nccl available:", torch.distributed.is_nccl_available())
a = torch.randn(4096, 4096, device="cuda")
torch.cuda.synchronize()
print("gemm ok:", float((a @ a).abs().max()) > 0)
EOF
step "verify gpu0" 150 "$PY" -m zoo.cli verify alexnet-r resnet-56 --engines torch \
  --device gpu0 --mode both --json "$OUTDIR/verify.json"
step "bench gpu0" 90 "$PY" -m zoo.cli bench alexnet-r --engines torch --device gpu0 \
  --mode both --max-time 20 --json "$OUTDIR/bench.json"
step "bench gpu0, distributed (NCCL, 1 worker)" 90 "$PY" -m zoo.cli bench alexnet-r \
  --engines torch --device gpu0 --workers 1 --max-time 20 --json "$OUTDIR/bench-ddp.json"
# zoo exits 0 when a case is skipped (an engine without CUDA): here every case must have run
step "every case ran on the GPU" 30 "$PY" - "$OUTDIR" <<'EOF'
import json, pathlib, sys
bad = []
for f in sorted(pathlib.Path(sys.argv[1]).glob("*.json")):
    for r in json.loads(f.read_text()):
        if r["status"] not in ("pass", "ok"):
            case = r.get("mode") or f"{r.get('workers')} workers"
            bad.append(f"{f.name}: {r['network']}/{r['engine']}/{case}: {r['status']} {r.get('reason') or ''}")
print("\n".join(bad) or "all cases ran")
sys.exit(1 if bad else 0)
EOF
exit $failed
