#!/usr/bin/env bash
# The GPU check: what one call on a machine with a CUDA GPU runs. Every part runs under its own
# `timeout`, and the budgets below add up to 8 minutes; it writes at most 8 files to $OUT (default
# runs/gpu_check), summary.txt first and each part's figures as that part ends. From the root:
#
#   bash bench/gpu_check.sh                        # every part below, in this order
#   bash bench/gpu_check.sh headline ddp           # some parts
#   PYTHON=python3.12 LEVERS="dcgan_b64" bash bench/gpu_check.sh levers
#
# part      budget  what
# startup     40 s  where the seconds before the first step go (imports, CUDA, cuDNN)
# headline    80 s  `dcgan_celeba.py --epochs 20` on the bundled digits: epoch times, wall, score
# celeba      90 s  a CelebA-shaped folder (8,000 JPEGs): the decoding pass, cached epochs, and
#                   an epoch with --no-cache
# ddp         60 s  torchrun with nccl on 2 GPUs where there are 2 (else 1, said so): a run stopped
#                   mid-epoch by --max-steps, then resumed
# speed       80 s  bench/speed.py --device cuda: our step against the tutorial's, the loader rows
# pytest      40 s  the suite's CUDA tests alone (the CPU suite runs in CI)
# levers      90 s  the levers that decide the DCGAN's recipe: batch 128 or 64, G's rate at 64
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${OUT:-runs/gpu_check}
# training runs and data, not brought back
RUN=${RUN:-/tmp/gpu_check}
mkdir -p "$OUT" "$RUN"
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
PARTS=${*:-startup headline celeba ddp speed pytest levers}
S="$OUT/summary.txt"
say() { echo "$*" | tee -a "$S"; }
since() { awk "BEGIN { printf \"%.1f\", $(date +%s.%N) - $T0 }"; }
stamp() { while IFS= read -r line; do printf '%7s s  %s\n' "$(since)" "$line"; done; }
part() { T0=$(date +%s.%N); say ""; say "== $1 (budget $2 s): $(date -u +%H:%M:%S)"; }
ended() { say "-- $1 ended in $(since) s (exit $2; 124: over its budget)"; }

gpus=$($PY -c 'import torch; print(torch.cuda.device_count())')
card=$($PY -c 'import torch; print(torch.__version__, torch.cuda.get_device_name())')
say "GPU check, $(date -u +%F), $card, $gpus GPU(s); by its budgets, at most 480 s"
say "parts: $PARTS"
for p in $PARTS; do case $p in
startup)
  part startup 40
  timeout 40 $PY - <<'EOF' 2>&1 | tee -a "$S"
import time
start = previous = time.perf_counter()


def mark(name):
    global previous
    print(f"  {name:<36} {time.perf_counter() - previous:6.2f} s")
    previous = time.perf_counter()


import torch  # noqa: E402

mark("import torch")
import dcgan_celeba  # noqa: E402

mark("import dcgan_celeba (torchvision, matplotlib, ...)")
torch.zeros(1, device="cuda")
mark("CUDA context")
g = dcgan_celeba.Generator().cuda().apply(dcgan_celeba.weights_init)
d = dcgan_celeba.Discriminator().cuda().apply(dcgan_celeba.weights_init)
optimizers = [torch.optim.Adam(m.parameters(), 2e-4) for m in (g, d)]
dcgan_celeba.train_step(g, d, *optimizers, torch.randn(128, 3, 64, 64, device="cuda"))
torch.cuda.synchronize()
mark("models and a first step (cuDNN's choice)")
print(f"  {'total':<36} {previous - start:6.2f} s")
EOF
  ended startup "${PIPESTATUS[0]}"
  ;;
headline)
  part "headline: python dcgan_celeba.py --epochs 20 (the bundled digits)" 80
  rm -rf "$RUN/headline"
  timeout 65 $PY dcgan_celeba.py --epochs 20 --out "$RUN/headline" --quiet 2>&1 | stamp \
    > "$OUT/headline.log"
  code=${PIPESTATUS[0]}
  grep -E "device|epoch (1|2|10|20):|in /" "$OUT/headline.log" | tee -a "$S"
  cp "$RUN/headline/fake_epoch_020.png" "$OUT/" 2>/dev/null
  timeout 15 $PY bench/quality.py --samples 1000 "$RUN/headline" 2>&1 \
    | grep -E "classifier|checkpoint_last" | tee -a "$S"
  ended headline "$code"
  ;;
celeba)
  part "celeba: a CelebA-shaped folder of 8,000 JPEGs" 90
  rm -rf "$RUN/celeba" "$RUN/celeba_run" "$RUN/celeba_nocache"
  timeout 30 $PY bench/speed.py --make-celeba "$RUN/celeba/img_align_celeba" 8000
  mkdir -p "$RUN/celeba/Anno" "$RUN/celeba/.ipynb_checkpoints"
  echo "202599" > "$RUN/celeba/Anno/list_attr_celeba.txt"
  say "made in $(since) s"
  timeout 35 $PY dcgan_celeba.py --data-root "$RUN/celeba" --epochs 3 --out "$RUN/celeba_run" \
    --quiet 2>&1 | stamp | tee "$OUT/celeba.log" | tee -a "$S"
  timeout 25 $PY dcgan_celeba.py --data-root "$RUN/celeba" --epochs 1 --no-cache \
    --out "$RUN/celeba_nocache" --quiet 2>&1 | stamp | tee -a "$OUT/celeba.log" | tee -a "$S"
  ended celeba "${PIPESTATUS[0]}"
  ;;
ddp)
  nproc=$((gpus >= 2 ? 2 : 1))
  part "ddp: torchrun --nproc_per_node=$nproc (nccl), stopped mid-epoch, then resumed" 60
  [ "$nproc" = 1 ] && say "one GPU here: one process, so no all-reduce between GPUs runs"
  rm -rf "$RUN/ddp"
  timeout 30 $PY -m torch.distributed.run --standalone --nproc_per_node=$nproc dcgan_celeba.py \
    --device cuda --epochs 2 --max-steps 60 --out "$RUN/ddp" --quiet 2>&1 | stamp > "$OUT/ddp.log"
  timeout 30 $PY -m torch.distributed.run --standalone --nproc_per_node=$nproc dcgan_celeba.py \
    --resume "$RUN/ddp/checkpoint_last.pt" --out "$RUN/ddp" --quiet 2>&1 | stamp >> "$OUT/ddp.log"
  code=${PIPESTATUS[0]}
  grep -E "error|Error|epoch|in /" "$OUT/ddp.log" | tail -8 | tee -a "$S"
  ended ddp "$code"
  ;;
speed)
  part "speed: bench/speed.py --device cuda --only dcgan_celeba loader" 80
  timeout 80 $PY bench/speed.py --device cuda --only dcgan_celeba loader ${SPEED_FLAGS:-} 2>&1 \
    | tee "$OUT/speed.log" | tee -a "$S"
  ended speed "${PIPESTATUS[0]}"
  ;;
pytest)
  part "pytest: the CUDA tests" 40
  timeout 40 $PY -m pytest -q -p no:cacheprovider -k cuda tests/test_dcgan_celeba.py 2>&1 \
    | tee "$OUT/pytest.log" | tail -5 | tee -a "$S"
  ended pytest "${PIPESTATUS[0]}"
  ;;
levers)
  part "levers: bench/levers.py --device cuda" 90
  timeout 90 $PY bench/levers.py --device cuda --parallel 3 \
    --only ${LEVERS:-dcgan_base dcgan_b64 dcgan_g4_b64} 2>&1 | tee "$OUT/levers.log" | tee -a "$S"
  ended levers "${PIPESTATUS[0]}"
  ;;
*) say "unknown part: $p" ;;
esac; done
say ""
say "done $(date -u +%H:%M:%S)"
