#!/usr/bin/env bash
# One H200 session for the code of fd8f5ff (null-text and STDG captured into one CUDA-graph pool), in the background
# (setsid) so that the parts outlive one device call; results and logs in $1.
# 1. the compiled headline with the peer, the CUDA-graph run last, with the reserved peaks;
# 2. the official cost structure at 10 steps, merged into the headline (reference_ratio);
set -u
OUT=$1
mkdir -p "$OUT"
log() { echo "== $(date -u +%H:%M:%S) $*" | tee -a "$OUT/parts.log"; }
log "compiled, with the peer, CUDA graph last"
python benchmarks/speed.py --compile --budget-s 0 --skip-reference --cuda-graph-too --out "$OUT" > "$OUT/speed_videodirector_h200.log" 2>&1
log "rc=$? reference"
python benchmarks/speed.py --compile --only-reference --reference-steps 10 --out "$OUT" > "$OUT/speed_videodirector_h200_reference.log" 2>&1
log "rc=$? all done"
