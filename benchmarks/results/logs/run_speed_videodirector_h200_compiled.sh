#!/usr/bin/env bash
# The compiled headline run alone (second H200 session of 2026-12-03), in the background; results and log in $1.
set -u
OUT=$1
mkdir -p "$OUT"
echo "== $(date -u +%H:%M:%S) compiled, with the peer" >> "$OUT/parts.log"
python benchmarks/speed.py --compile --budget-s 0 --skip-reference --skip-fast --skip-estimate --cuda-graph-too --out "$OUT" > "$OUT/speed_videodirector_h200.log" 2>&1
echo "== $(date -u +%H:%M:%S) rc=$? all done" >> "$OUT/parts.log"
