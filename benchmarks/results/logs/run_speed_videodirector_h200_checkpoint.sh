#!/usr/bin/env bash
# One H200 session with model.recompute_feedforward as torch.utils.checkpoint, in the background (setsid) so that the
# parts outlive one device call; results and logs in $1. Order by priority: the compiled headline run (peer, fast
# inversion, null-text estimate, then the experimental CUDA graph last), the quality suite's second seed range
# (shapeworld-v2-holdout), the official cost structure merged into the headline, where the memory goes (eager),
# then the eager peak at 10 steps.
set -u
OUT=$1
mkdir -p "$OUT"
log() { echo "== $(date -u +%H:%M:%S) $*" | tee -a "$OUT/parts.log"; }
log "compiled, with the peer, CUDA graph last"
python benchmarks/speed.py --compile --budget-s 0 --skip-reference --cuda-graph-too --out "$OUT" > "$OUT/speed_videodirector_h200.log" 2>&1
log "rc=$? holdout suite"
python -m videodirector.cli bench --device cuda --suite shapeworld-v2-holdout --steps 25 --inner-steps 10 --workers 15 \
    --guidance-scale 3 --methods videodirector,vd-mask-blend --results "$OUT/bench" > "$OUT/bench_holdout.log" 2>&1
log "rc=$? reference"
python benchmarks/speed.py --compile --only-reference --reference-steps 10 --out "$OUT" > "$OUT/speed_reference.log" 2>&1
log "rc=$? memory profile (eager)"
python benchmarks/memory_profile.py --out "$OUT" > "$OUT/memory_profile_h200.log" 2>&1
log "rc=$? eager, 10 steps"
python benchmarks/speed.py --steps 10 --warmup-steps 1 --skip-peer --skip-reference --skip-fast --skip-estimate \
    --name speed_videodirector_h200_eager_ff_on --out "$OUT" > "$OUT/speed_videodirector_h200_eager_ff_on.log" 2>&1
log "rc=$? all done"
