#!/usr/bin/env bash
# One H200 session of the quality suites, in the background (setsid) so that the parts outlive one device call;
# results and logs in $1. Each bench run is resumable (one JSON per case and method), so a later call with the
# folders carried back finishes what this one left. Order by priority: shapeworld-v2 with the three mask-blend
# variants and vd-no-null beside the full method, the holdout range with the same, then the per-frame motion norm
# on v2 (it inverts every case again with its own models).
set -u
OUT=$1
mkdir -p "$OUT"
log() { echo "== $(date -u +%H:%M:%S) $*" | tee -a "$OUT/parts.log"; }
nvidia-smi -q -d PERFORMANCE > "$OUT/gpu_state_before.txt" 2>&1
COMMON="--device cuda --steps 25 --inner-steps 10 --workers 15 --guidance-scale 3"
BLENDS=videodirector,vd-mask-blend,vd-mask-blend-dilated,vd-mask-blend-per-edit
log "shapeworld-v2"
python -m videodirector.cli bench $COMMON --methods $BLENDS,vd-no-null --results "$OUT/v2" > "$OUT/bench_v2.log" 2>&1
log "rc=$? shapeworld-v2-holdout"
python -m videodirector.cli bench $COMMON --suite shapeworld-v2-holdout --methods $BLENDS --results "$OUT/holdout" \
    > "$OUT/bench_holdout.log" 2>&1
log "rc=$? shapeworld-v2, per-frame motion norm"
python -m videodirector.cli bench $COMMON --methods $BLENDS,vd-no-null,vd-motion-per-frame --results "$OUT/v2" \
    > "$OUT/bench_v2_per_frame.log" 2>&1
log "rc=$? all done"
nvidia-smi -q -d PERFORMANCE > "$OUT/gpu_state_after.txt" 2>&1
