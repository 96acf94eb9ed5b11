#!/usr/bin/env bash
# One H200 session for the code of b07683a (transformer blocks compiled around the opaque control attention; SA-II
# through the flash kernel), in the background (setsid) so that the parts outlive one device call; results and
# logs in $1.
# 1. the compiled headline with the peer (the CUDA-graph variant not re-run: device time);
# 2. the official cost structure at 10 steps, merged into the headline (reference_ratio).
set -u
OUT=$1
mkdir -p "$OUT"
log() { echo "== $(date -u +%H:%M:%S) $*" | tee -a "$OUT/parts.log"; }
log "compiled, with the peer"
python benchmarks/speed.py --compile --budget-s 0 --skip-reference --out "$OUT" > "$OUT/speed_videodirector_h200.log" 2>&1
log "rc=$? reference"
python benchmarks/speed.py --compile --only-reference --reference-steps 10 --out "$OUT" > "$OUT/speed_videodirector_h200_reference.log" 2>&1
log "rc=$? all done"
