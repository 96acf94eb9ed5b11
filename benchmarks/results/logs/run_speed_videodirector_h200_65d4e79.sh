#!/usr/bin/env bash
# One H200 session for the code of 65d4e79, in the background (setsid) so that the parts outlive one device call;
# results and logs in $1. The end to end again, now with the card's slowdown counters recorded (gpu_slowdown_s),
# to tell the code's time from the card's power state; then the official cost structure at 10 steps, merged in.
set -u
OUT=$1
mkdir -p "$OUT"
log() { echo "== $(date -u +%H:%M:%S) $*" | tee -a "$OUT/parts.log"; }
nvidia-smi -q -d PERFORMANCE > "$OUT/gpu_state_before.txt" 2>&1
log "compiled, with the peer"
python benchmarks/speed.py --compile --budget-s 0 --skip-reference --out "$OUT" > "$OUT/speed_videodirector_h200.log" 2>&1
log "rc=$? reference"
python benchmarks/speed.py --compile --only-reference --reference-steps 10 --out "$OUT" > "$OUT/speed_videodirector_h200_reference.log" 2>&1
log "rc=$? all done"
nvidia-smi -q -d PERFORMANCE > "$OUT/gpu_state_after.txt" 2>&1
