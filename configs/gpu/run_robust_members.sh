#!/usr/bin/env bash
# The ensemble's members (paper §5.2) trained on one GPU in a fixed wall-clock budget, all in one go:
#
#   CNN_FGSM, CNN_PGD          configs/cnn_fgsm.toml, configs/cnn_pgd.toml from CNN_clean, up to 40 epochs
#   ResNet-18 clean            from scratch (no ImageNet file offline), 12 epochs, lr 1e-3 (as on the CPU)
#   ResNet18_PGD, two recipes  configs/gpu/resnet18_pgd5.toml (the paper's eps range) and
#                              configs/gpu/resnet18_pgd5_eps02.toml (twice the range), from that clean model
#
# Every run keeps best.pt = its most robust epoch (PGD-10, eps 0.01, on the 571-scan validation
# split carved from Training); Testing is never looked at here (--no-eval).  When the budget runs
# out the runs are stopped (their last finished epoch stays) and configs/gpu/pack.py writes the
# best.pt files, slimmed and split, to OUT.
#
#   DATA=folder-with-Training CNN_CLEAN=runs/cnn_clean/checkpoint.pt OUT=dir BUDGET=510 \
#       configs/gpu/run_robust_members.sh
#
# DATA needs Training/ (all of it) and Testing/: training never looks at Testing (a few scans would
# do with EVAL=0), the drills after it (EVAL=1, the default) need all of it.
# DEVICE (default cuda) goes to every command, EXTRA to every train command (e.g. DEVICE=cpu
# EXTRA="--max-train-images 64" DRILL_EXTRA="--set max_test_images=16" for a
# dry run).  BUDGET is the training time; the drills get 150 s more.  Restore here: python configs/gpu/pack.py unpack OUT NAME runs/NAME.
set -u
: "${DATA:?DATA}" "${CNN_CLEAN:?CNN_CLEAN}" "${OUT:?OUT}"
BUDGET=${BUDGET:-510}
WORK=${WORK:-/tmp/breakfix-gpu}
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
EXTRA="--device $DEVICE ${EXTRA:-}"
export PYTHONUNBUFFERED=1
T0=$(date +%s)
left() { local l=$(( $1 - ($(date +%s) - T0) )); [ "$l" -lt 5 ] && l=5; echo "$l"; }
mkdir -p "$WORK" "$OUT"
common=(--data "$DATA" --no-eval --max-test-images 8 --threads 2 --workers 2 $EXTRA)
train() {  # train NAME SECONDS ARGS...: one run, stopped (SIGINT, then TERM) when its time is up
  local name=$1 secs=$2; shift 2
  echo "[$(($(date +%s) - T0)) s] start $name (${secs} s)"
  timeout -s INT -k 20 "$secs" $PY -m training --events json train --out "$WORK/$name" "${common[@]}" "$@" \
      >"$WORK/$name.jsonl" 2>"$WORK/$name.log"
  echo "[$(($(date +%s) - T0)) s] end $name: rc $? $(tail -n 1 "$WORK/$name.log")"
}
train cnn_fgsm "$(left $BUDGET)" --config configs/cnn_fgsm.toml --init "$CNN_CLEAN" --epochs 40 \
    --precision bf16 --robust-val-images 571 &
train cnn_pgd "$(left $BUDGET)" --config configs/cnn_pgd.toml --init "$CNN_CLEAN" --epochs 40 \
    --precision bf16 --robust-val-images 571 &
train resnet18_clean "$(left 120)" --arch resnet18 --epochs 12 --lr 1e-3 --precision bf16
train resnet18_pgd5 "$(left $BUDGET)" --config configs/gpu/resnet18_pgd5.toml \
    --init "$WORK/resnet18_clean/checkpoint.pt" &
train resnet18_pgd5_eps02 "$(left $BUDGET)" --config configs/gpu/resnet18_pgd5_eps02.toml \
    --init "$WORK/resnet18_clean/checkpoint.pt" &
wait
# Tables 3 and 4 on all of Testing for the new members and both ensembles (EVAL=0 skips them):
# FGSM grid, PGD-5, and the per-image worst case of PGD-20 x2.
ck() { if [ -f "$1/best.pt" ]; then echo "$1/best.pt"; else echo "$1/checkpoint.pt"; fi; }
if [ "${EVAL:-1}" = 1 ]; then
  for v in pgd5 pgd5_eps02; do
    $PY -m training --events none make-ensemble --member "CNN_FGSM=$(ck "$WORK/cnn_fgsm")" \
        --member "CNN_PGD=$(ck "$WORK/cnn_pgd")" --member "ResNet18_PGD=$(ck "$WORK/resnet18_$v"):2" \
        --out "$WORK/ensemble_$v.json" >>"$WORK/eval.log" 2>&1
  done
  M="models={\"CNN_clean\":null,\"CNN_FGSM\":\"$(ck "$WORK/cnn_fgsm")\",\"CNN_PGD\":\"$(ck "$WORK/cnn_pgd")\",\"ResNet_PGD\":\"$(ck "$WORK/resnet18_pgd5")\",\"ResNet_PGD_eps02\":\"$(ck "$WORK/resnet18_pgd5_eps02")\",\"Ensemble\":\"$WORK/ensemble_pgd5.json\",\"Ensemble_eps02\":\"$WORK/ensemble_pgd5_eps02.json\"}"
  dr=(--data "$DATA" --threads 2 --device "$DEVICE" --set "$M" --set attack_batch_size=256 ${DRILL_EXTRA:-})
  echo "[$(($(date +%s) - T0)) s] drills"
  drill() {  # drill NAME OUTNAME SETTINGS...: stopped when the drills' time is up
    local name=$1 outname=$2; shift 2
    timeout -s INT -k 10 "$(left $((BUDGET + 150)))" $PY -m training --events none drill "$name" "${dr[@]}" "$@" \
        --out "$WORK/drills/$outname" >"$WORK/$outname.log" 2>&1
  }
  none='strong_attack={"steps":20,"restarts":0,"eps":0.01,"alpha":0.0025}'
  drill table3-fgsm table3 --set "$none" &
  drill table4-pgd table4 --set 'settings_grid=[[0.01,0.001,5]]' --set "$none" &
  drill table4-pgd table4-worst --set 'settings_grid=[]' \
      --set 'strong_attack={"steps":20,"restarts":2,"eps":0.01,"alpha":0.0025}' &
  wait
  echo "[$(($(date +%s) - T0)) s] drills done"; cat "$WORK"/drills/*/table.txt 2>/dev/null
fi
for name in cnn_fgsm cnn_pgd resnet18_pgd5 resnet18_pgd5_eps02; do
  $PY configs/gpu/pack.py pack "$WORK/$name" "$name" "$OUT" || echo "pack $name failed"
done
# histories, configs and logs of every run (small) in one file
tar -czf "$OUT/logs.tar.gz" -C "$WORK" --exclude='*.pt' . && ls -l "$OUT"
echo "[$(($(date +%s) - T0)) s] done"
