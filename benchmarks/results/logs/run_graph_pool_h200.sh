#!/usr/bin/env bash
# One H200 session for inversion.cuda_graph with the null-text iteration and the STDG gradient captured into one
# shared memory pool, in the background (setsid) so that the parts outlive one device call; results and logs in $1.
# 1. the graph against eager on the bundled ShapeWorld models in float64/float32/bf16 (is the capture right?);
# 2. the compiled headline with the peer, the CUDA-graph run last, both with the reserved peak (peak_reserved_gb).
set -u
OUT=$1
mkdir -p "$OUT"
log() { echo "== $(date -u +%H:%M:%S) $*" | tee -a "$OUT/parts.log"; }
log "cuda_graph_check"
python benchmarks/cuda_graph_check.py --out "$OUT" > "$OUT/cuda_graph_check.log" 2>&1
log "rc=$? compiled, with the peer, CUDA graph last"
python benchmarks/speed.py --compile --budget-s 0 --skip-reference --cuda-graph-too --out "$OUT" > "$OUT/speed_videodirector_h200.log" 2>&1
log "rc=$? all done"
