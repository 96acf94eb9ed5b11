#!/usr/bin/env bash
# Trains the bundled ShapeWorld image-to-video model on one GPU, then runs its quality gate and the
# I2VEdit suite side by side, within one device lease:
#   bash run_device.sh start   # launches everything in the background (setsid) and follows it 570 s
#   bash run_device.sh wait    # follows it another 570 s
#   bash run_device.sh pack S  # follows it at most S s, stops the suite, packs weights/gate/suite in $OUT
# After training: the gate (world.check_i2v), the suite (bench --methods i2vedit) and the 48-frame runs
# (benchmarks/i2vedit_long.py, one process per case) share the GPU.
set -u
W=/root/i2v
mkdir -p "$W"
if [ "$1" = start ]; then
  setsid nohup bash -c "
    python3 -m videodirector.world.train --model i2v --out $W/ckpt --dest $W/export --minutes 21 \
      --stage-minutes vae=1.5,video=15 > $W/train.log 2>&1
    touch $W/TRAINED
    for c in 00-colour 12-shape 01-colour 13-shape; do
      python3 benchmarks/i2vedit_long.py --model $W/export --case-ids \$c --device cuda --out $W/long/\$c \
        > $W/long_\$c.log 2>&1 &
    done
    python3 -m videodirector bench --methods i2vedit --workers 10 --device cuda --results $W/bench \
      --set i2vedit.model=$W/export > $W/bench.log 2>&1 &
    python3 -m videodirector.world.check_i2v --weights $W/export --device cuda --out $W/world_check_i2v.json \
      > $W/check.log 2>&1
    touch $W/DONE" > /dev/null 2>&1 < /dev/null &
fi
limit=570; [ "$1" = pack ] && limit=$2
t0=$(date +%s)
finished() { [ -e "$W/DONE" ] && ! pgrep -f "videodirector bench|i2vedit_long" > /dev/null; }
while ! finished && [ $(( $(date +%s) - t0 )) -lt "$limit" ]; do sleep 5; done
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv
grep -E "step (1|[0-9]*000)/|training|exported|stopped|Error|error" "$W/train.log" | tail -30
tail -3 "$W/bench.log" 2>/dev/null
cp "$W"/train.log "$OUT"/ 2>/dev/null
if [ "$1" = pack ]; then
  pkill -f "videodirector bench"; pkill -f i2vedit_long.py; sleep 2
  cp "$W"/check.log "$W"/world_check_i2v.json "$W"/bench.log "$OUT"/ 2>/dev/null
  tail -30 "$W/check.log"
  tail -n 4 "$W"/long_*.log
  tar -C "$W" -czf "$OUT/bench_cases.tgz" bench long long_*.log 2>/dev/null
  tar -C "$W" -cf - export | split -b 15M - "$OUT/i2v_export.tar.part-"
  ls -la "$OUT"
fi
