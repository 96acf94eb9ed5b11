#!/usr/bin/env bash
# One H200 session for the code of 6634292 (cross-attention control by value mixing, no maps formed), in the background
# (setsid) so that the parts outlive one device call; results and logs in $1.
# 1. the edit from a synthetic cached inversion by phase, beside the same edit with the maps formed (edit_speed_probe);
# 2. the compiled headline with the peer;
# 3. the official cost structure at 10 steps, merged into the headline (reference_ratio).
set -u
OUT=$1
mkdir -p "$OUT"
log() { echo "== $(date -u +%H:%M:%S) $*" | tee -a "$OUT/parts.log"; }
log "edit probe"
python benchmarks/edit_speed_probe.py --parts edit --out "$OUT" > "$OUT/edit_speed_probe_h200.log" 2>&1
log "rc=$? compiled, with the peer"
python benchmarks/speed.py --compile --budget-s 0 --skip-reference --out "$OUT" > "$OUT/speed_videodirector_h200.log" 2>&1
log "rc=$? reference"
python benchmarks/speed.py --compile --only-reference --reference-steps 10 --out "$OUT" > "$OUT/speed_videodirector_h200_reference.log" 2>&1
log "rc=$? all done"
