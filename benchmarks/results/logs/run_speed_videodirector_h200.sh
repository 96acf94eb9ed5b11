#!/usr/bin/env bash
# One H200 session, in the background (setsid) so that the parts outlive one device call; results and logs in $1.
# Order by priority: the compiled headline run (with the diffusers peer), where the memory goes, the eager peak
# and time with and without model.recompute_feedforward, then the official cost structure merged into the headline.
set -u
OUT=$1
mkdir -p "$OUT"
log() { echo "== $(date -u +%H:%M:%S) $*" | tee -a "$OUT/parts.log"; }
log "compiled, with the peer"
python benchmarks/speed.py --compile --budget-s 0 --skip-reference --out "$OUT" > "$OUT/speed_videodirector_h200.log" 2>&1
log "rc=$? memory profile (eager)"
python benchmarks/memory_profile.py --out "$OUT" > "$OUT/memory_profile_h200.log" 2>&1
log "rc=$? eager, 10 steps, feed-forward recompute on and off"
for ff in on off; do f=""; [ $ff = off ] && f="--no-recompute-feedforward"
  python benchmarks/speed.py --steps 10 --warmup-steps 1 --skip-peer --skip-reference --skip-fast --skip-estimate $f \
      --name speed_videodirector_h200_eager_ff_$ff --out "$OUT" > "$OUT/speed_videodirector_h200_eager_ff_$ff.log" 2>&1
  log "rc=$? ff $ff done"
done
python benchmarks/speed.py --compile --only-reference --reference-steps 10 --out "$OUT" > "$OUT/speed_reference.log" 2>&1
log "rc=$? reference done"
log "all done"
