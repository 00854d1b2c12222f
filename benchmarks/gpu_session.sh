#!/usr/bin/env bash
# One GPU session, run as-is from the repository root on a CUDA machine:
#
#   bash benchmarks/gpu_session.sh [OUT_DIR]          # default OUT_DIR = gpu-session-out
#
# The machine is expected to have torch (CUDA), numpy, scipy, h5py and cupy, and no network.
# sigpy, cvxpy, ptwt (and their pure-Python dependencies) are installed from wheels carried in the
# repository tree under wheels/ when that folder exists. Fetch them beforehand, on a machine
# with network access and the same Python version as the GPU machine:
#
#   pip download sigpy cvxpy ptwt pywavelets numba llvmlite tqdm matplotlib -d wheels \
#       --python-version 3.12 --only-binary=:all: --platform manylinux2014_x86_64
#
# Steps, each with its own time limit, everything written to OUT_DIR (logs, results):
#   1. pip install --no-index --find-links wheels/ (only if wheels/ exists), then the package itself
#      (--no-deps, so nothing heavy is pulled);                                     ~30 s
#   2. the CUDA tests: python -m pytest -m gpu tests/test_gpu.py, plus tests/test_device.py;  ~60 s
#   3. ESPIRiT timing per device (benchmarks/bench_data.py --espirit-only);          ~30 s
#   4. benchmarks/run_knee.py --config gpu --device cuda (prints its own estimate, ~6 min;
#      budget 8 min, killed at 9 min);                                              <= 540 s
#   5. the Fig. 4 measurement alone (benchmarks.kit.memory.measured_memory_table), if step 4 was killed
#      before it got there;                                                         ~60 s
#   6. exact ReLU (relu_method="auto": ADMM at this size) against gated on one
#      block of the paper's width (benchmarks/bench_gpu.py, TF32, tol 1e-3, 4,000 ADMM iterations at most);
#      killed at 240 s                                                              <= 240 s
# Total: about 10-15 minutes (step 6 last, so that a short device budget loses it first).
set -u
OUT=${1:-gpu-session-out}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
log() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$OUT/session.log"; }

log "machine: $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | head -1); $(nproc) cores"
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" 2>&1 | tee -a "$OUT/session.log"

if [ -d wheels ]; then
  log "installing wheels from wheels/"
  timeout 300 $PY -m pip install --no-index --find-links wheels sigpy cvxpy ptwt >"$OUT/pip.log" 2>&1 || log "pip from wheels failed (see pip.log)"
fi
timeout 120 $PY -m pip install --no-deps --no-build-isolation -e . >>"$OUT/pip.log" 2>&1 || log "editable install failed; using PYTHONPATH"
$PY -c "import sigpy" 2>/dev/null || log "WARNING: sigpy missing: data preprocessing and the tests that need it will fail"

log "step 2: CUDA tests"
timeout 600 $PY -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider >"$OUT/test_gpu.log" 2>&1
log "test_gpu exit $?: $(tail -1 "$OUT/test_gpu.log")"
timeout 300 $PY -m pytest -q tests/test_device.py -p no:cacheprovider >"$OUT/test_device.log" 2>&1
log "test_device exit $?: $(tail -1 "$OUT/test_device.log")"

log "step 3: ESPIRiT per device"
timeout 300 $PY benchmarks/bench_data.py --slices 1 --espirit-only --out "$OUT/bench_data" >"$OUT/bench_data.log" 2>&1
log "bench_data exit $?"

log "step 4: run_knee --config gpu"
start=$(date +%s)
timeout 540 $PY benchmarks/run_knee.py --config gpu --device cuda --out "$OUT/knee-gpu" >"$OUT/run_knee.log" 2>&1
rc=$?
log "run_knee exit $rc after $(( $(date +%s) - start )) s (124 = killed at 540 s)"

if [ ! -f "$OUT/knee-gpu/results.json" ]; then
  log "step 5: Fig. 4 measurement alone"
  timeout 300 $PY - "$OUT" >"$OUT/memory.log" 2>&1 <<'PYEOF'
import json, sys, torch
from benchmarks.kit.memory import measured_memory_table
table = measured_memory_table(torch.device("cuda"))
with open(f"{sys.argv[1]}/memory_measured.json", "w") as f:
    json.dump(table, f, indent=2, default=str)
print(json.dumps({k: table[k] for k in ("end_to_end", "convex_solve")}, indent=2, default=str))
PYEOF
  log "memory measurement exit $?"
fi
log "step 6: exact ReLU at the paper's width (C_in 256, 7x7, P 64, one 320x320 slice) against gated"
timeout 240 $PY benchmarks/bench_gpu.py --images 1 --activations gated relu --tf32 on --tol 1e-3 \
  --relu-max-iter 4000 --out "$OUT/relu-seed" >"$OUT/relu_seed.log" 2>&1
log "bench_gpu relu exit $? (124 = killed at 240 s)"
log "done; outputs in $OUT"
