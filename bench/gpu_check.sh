#!/usr/bin/env bash
# The GPU check: what one call on a machine with a CUDA GPU runs, in at most 8 minutes, writing at most
# 8 files to $OUT (default runs/gpu_check), summary.txt first. From the repository root:
#
#   bash bench/gpu_check.sh                       # every part below, in this order
#   bash bench/gpu_check.sh startup speed levers  # some parts (levers: LEVERS="..." picks bench/levers.py's)
#
# startup   where the seconds before the first line go (imports, CUDA, cuDNN)
# headline  `python dcgan_celeba.py --epochs 20` on the bundled digits: per-epoch times, wall, score
# celeba    a generated CelebA-shaped folder (20,000 JPEGs, Anno/ of text, .ipynb_checkpoints/): the
#           decoding pass, then two cached epochs; and one epoch with --no-cache (decoding as it goes)
# ddp       torchrun with nccl (one process), then --resume of its mid-epoch checkpoint
# speed     bench/speed.py --device cuda: our step against the tutorial's, layouts, bf16, torch.compile (the
#           default and CUDA graphs: reduce-overhead), and the CelebA-shaped loader row
# pytest    the suite (the tests pin the CPU where the device is not what they test)
# levers    bench/levers.py --device cuda on $LEVERS (default: every DCGAN lever)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu_check}
RUN=${RUN:-/tmp/gpu_check}  # training runs and data, not brought back
mkdir -p "$OUT" "$RUN"
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
PARTS=${*:-startup headline celeba ddp speed pytest levers}
S="$OUT/summary.txt"
say() { echo "$*" | tee -a "$S"; }
since() { awk "BEGIN { printf \"%.1f\", $(date +%s.%N) - $T0 }"; }
stamp() { while IFS= read -r line; do printf '%7s s  %s\n' "$(since)" "$line"; done; }
part() { T0=$(date +%s.%N); say ""; say "== $1: $(date -u +%H:%M:%S)"; }

card=$(python3 -c 'import torch; print(torch.__version__, torch.cuda.get_device_name())')
say "GPU check, $(date -u +%F), $card"
say "parts: $PARTS"
for p in $PARTS; do case $p in
startup)
  part "startup: seconds from a fresh interpreter"
  python3 - <<'EOF' 2>&1 | tee -a "$S"
import time
start = previous = time.perf_counter()


def mark(name):
    global previous
    print(f"  {name:<36} {time.perf_counter() - previous:6.2f} s")
    previous = time.perf_counter()


import torch  # noqa: E402
mark("import torch")
import torchvision  # noqa: E402, F401
mark("import torchvision")
import matplotlib.pyplot  # noqa: E402, F401
mark("import matplotlib.pyplot")
import dcgan_celeba  # noqa: E402
mark("import dcgan_celeba (tqdm, PIL, ...)")
torch.zeros(1, device="cuda")
mark("CUDA context")
images = dcgan_celeba.make_dataset(dcgan_celeba.parse_args(["--quiet"])).cuda()
mark("make_dataset (digits to the GPU)")
g = dcgan_celeba.Generator().cuda().apply(dcgan_celeba.weights_init)
d = dcgan_celeba.Discriminator().cuda().apply(dcgan_celeba.weights_init)
mark("models")
optimizers = [torch.optim.Adam(m.parameters(), 2e-4) for m in (g, d)]
dcgan_celeba.train_step(g, d, *optimizers, torch.randn(128, 3, 64, 64, device="cuda"))
torch.cuda.synchronize()
mark("first step (cuDNN picks its kernels)")
print(f"  {'total':<36} {previous - start:6.2f} s")
EOF
  ;;
headline)
  part "headline: python dcgan_celeba.py --epochs 20 (the bundled digits)"
  rm -rf "$RUN/headline"
  python3 dcgan_celeba.py --epochs 20 --out "$RUN/headline" --quiet 2>&1 | stamp > "$OUT/headline.log"
  grep -E "device|epoch 1:|epoch 2:|epoch 10:|epoch 20:|iterations|in /" "$OUT/headline.log" | tee -a "$S"
  cp "$RUN/headline/fake_epoch_020.png" "$OUT/" 2>/dev/null
  python3 bench/quality.py "$RUN/headline" > "$RUN/headline_score.log" 2>&1
  grep -E "classifier|checkpoint_last" "$RUN/headline_score.log" | tee -a "$S"
  du -sh "$RUN/headline" | tee -a "$S"
  ;;
celeba)
  part "celeba: a CelebA-shaped folder, 20,000 JPEGs of 178x218"
  rm -rf "$RUN/celeba" "$RUN/celeba_run" "$RUN/celeba_nocache"
  python3 bench/speed.py --make-celeba "$RUN/celeba/img_align_celeba" 20000
  mkdir -p "$RUN/celeba/Anno" "$RUN/celeba/.ipynb_checkpoints"
  echo "202599" > "$RUN/celeba/Anno/list_attr_celeba.txt"
  echo "made in $(since) s" | tee -a "$S"
  T0=$(date +%s.%N)
  python3 dcgan_celeba.py --data-root "$RUN/celeba" --epochs 2 --out "$RUN/celeba_run" --quiet 2>&1 | stamp \
    | tee "$OUT/celeba.log" | tee -a "$S"
  T0=$(date +%s.%N)
  python3 dcgan_celeba.py --data-root "$RUN/celeba" --epochs 1 --no-cache --out "$RUN/celeba_nocache" \
    --quiet 2>&1 | stamp | tee -a "$OUT/celeba.log" | tee -a "$S"
  ;;
ddp)
  part "ddp: torchrun --nproc_per_node=1 (nccl), then --resume mid-epoch"
  rm -rf "$RUN/ddp"
  torchrun --standalone --nproc_per_node=1 dcgan_celeba.py --device cuda --epochs 2 --max-steps 60 \
    --out "$RUN/ddp" --quiet 2>&1 | stamp > "$OUT/ddp.log"
  torchrun --standalone --nproc_per_node=1 dcgan_celeba.py --resume "$RUN/ddp/checkpoint_last.pt" --quiet \
    2>&1 | stamp >> "$OUT/ddp.log"
  grep -E "error|Error|epoch|in /" "$OUT/ddp.log" | tail -8 | tee -a "$S"
  ;;
speed)
  part "speed: bench/speed.py --device cuda --only dcgan_celeba loader"
  python3 bench/speed.py --device cuda --only dcgan_celeba loader ${SPEED_FLAGS:-} 2>&1 \
    | tee "$OUT/speed.log" | tee -a "$S"
  ;;
pytest)
  part "pytest"
  timeout 400 python3 -m pytest -q -p no:cacheprovider -x 2>&1 | tee "$OUT/pytest.log" | tail -15 \
    | tee -a "$S"
  ;;
levers)
  part "levers: bench/levers.py --device cuda"
  all=$(python3 bench/levers.py --list dcgan)
  python3 bench/levers.py --device cuda --parallel ${PARALLEL:-8} --only ${LEVERS:-$all} 2>&1 \
    | tee "$OUT/levers.log" | tee -a "$S"
  ;;
*) say "unknown part: $p" ;;
esac; done
say ""
say "done $(date -u +%H:%M:%S)"
