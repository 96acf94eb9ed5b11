#!/usr/bin/env bash
# The six shapeworld-v2-holdout cases that run_suites_h200_544d185.sh left (its machine was given back first), resumed from
# the stored cases carried as gpu_partial/ (a copy of benchmarks/results/mask-blend-h200/shapeworld-v2-holdout). Output in $1.
set -u
OUT=$1
mkdir -p "$OUT"
log() { echo "== $(date -u +%H:%M:%S) $*" | tee -a "$OUT/parts.log"; }
log "holdout, the rest"
python -m videodirector.cli bench --device cuda --steps 25 --inner-steps 10 --guidance-scale 3 --workers 6 \
    --suite shapeworld-v2-holdout --methods videodirector,vd-mask-blend,vd-mask-blend-dilated,vd-mask-blend-per-edit \
    --results gpu_partial/holdout > "$OUT/bench_holdout_rest.log" 2>&1
log "rc=$? holdout done"
tar czf "$OUT/holdout.tgz" --exclude='*/workers/*' --exclude='*/strips/*' gpu_partial/holdout
