#!/usr/bin/env bash
# GPU check, ready to run on a CUDA machine with no network (issue 13 item 7): installs what is missing from
# bench/wheelhouse (made by bench/make_wheelhouse.sh), then runs the data step on synthetic frames, train.py
# (resnet18, 180 px, 2 epochs, the precision bddseg.device's rule picks), eval.py, a 2-trial offline sweep, a census
# of host syncs per source line (bench/gpu_syncs.py), and prints train.py images/s vs the bare training step.
# W&B runs offline; every output goes under $GPU_CHECK_OUT.
#
#     bash bench/gpu_check.sh                                          # the GPU machine (under 8 minutes)
#     GPU_CHECK_DEVICE=cpu GPU_CHECK_N=40 GPU_CHECK_SIZE=64 bash bench/gpu_check.sh    # dry run on a CPU
#
# Settings (environment): PYTHON (python3), GPU_CHECK_WHEELS (bench/wheelhouse), GPU_CHECK_OUT (/tmp/gpu_check),
# GPU_CHECK_N (200 frames), GPU_CHECK_SIZE (180 px), GPU_CHECK_EPOCHS (2), GPU_CHECK_BS (8), GPU_CHECK_DEVICE
# (cuda; cpu hides the GPUs). Packages go to $GPU_CHECK_OUT/site with pip --target --no-index --no-deps: only
# those this Python lacks (bench/missing_wheels.py), so the machine's torch and the rest stay as they are.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
WHEELS=${GPU_CHECK_WHEELS:-bench/wheelhouse}
WORK=${GPU_CHECK_OUT:-/tmp/gpu_check}
N=${GPU_CHECK_N:-200}
SIZE=${GPU_CHECK_SIZE:-180}
EPOCHS=${GPU_CHECK_EPOCHS:-2}
BS=${GPU_CHECK_BS:-8}
DEVICE=${GPU_CHECK_DEVICE:-cuda}
T0=$(date +%s)
step() { echo "== [$(($(date +%s) - T0))s] $*"; }

rm -rf "$WORK" && mkdir -p "$WORK"
step "python: $($PY -V 2>&1) ($(command -v "$PY")); installing what it lacks from $WHEELS"
mapfile -t MISSING < <($PY bench/missing_wheels.py "$WHEELS" 2>"$WORK/kept.txt")
echo "kept the machine's own: $(sed 's/^kept //' "$WORK/kept.txt" | tr '\n' ',' | sed 's/,$//; s/,/, /g')"
if ((${#MISSING[@]})); then
  echo "installing ${#MISSING[@]}: $(for w in "${MISSING[@]}"; do basename "$w" | cut -d- -f1-2; done | tr '\n' ' ')"
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$WORK/site" "${MISSING[@]}"
fi
export PYTHONPATH="$ROOT:$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
export WANDB_MODE=offline WANDB_DIR="$WORK" WANDB_SILENT=true HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
export BDDSEG_ARTIFACTS="$WORK/artifacts" BDDSEG_MODELS="$WORK/models" BDDSEG_EVAL="$WORK/eval"
export BDDSEG_SWEEPS="$WORK/sweeps" BDDSEG_REPORTS="$WORK/reports"
if [ "$DEVICE" = cpu ]; then export CUDA_VISIBLE_DEVICES=""; fi
$PY - "$DEVICE" <<'PY'
import sys, warnings
warnings.filterwarnings("ignore", message=".*torch.jit.script.*")
import torch, fastai, wandb, optuna, sweeps
from bddseg import device as dev
d = dev.get_device()
name = torch.cuda.get_device_name(d) if d.type == "cuda" else "cpu"
print(f"torch {torch.__version__} (cuda {torch.version.cuda}), fastai {fastai.__version__}, wandb {wandb.__version__}, "
      f"optuna {optuna.__version__}; device {d} ({name}); precision by the rule: {dev.precision_name(d)}")
if sys.argv[1] != "cpu" and d.type != "cuda":
    sys.exit("no CUDA device: this is the GPU check (GPU_CHECK_DEVICE=cpu for a dry run on a CPU)")
PY
$PY -m pip check 2>&1 | sed 's/^/pip check: /' | head -20 || true

step "data step: $N synthetic frames"
$PY data/prepare.py --source synthetic --n "$N" --seed 0 --out "$WORK/artifacts" --no-wandb --workers "$(nproc)" \
  >"$WORK/prepare.log" 2>&1 || { tail -20 "$WORK/prepare.log"; exit 1; }
tail -3 "$WORK/prepare.log"
DATA="$WORK/artifacts/bdd_simple_1k_split"

step "train.py: resnet18, img_size $SIZE, $EPOCHS epochs, batch $BS"
$PY train.py --data "$DATA" --arch resnet18 --img_size "$SIZE" --epochs "$EPOCHS" --batch_size "$BS" \
  --pretrained False --output "$WORK/models"
RUN=$(ls -d "$WORK"/models/*/* | head -1)

step "eval.py on the test split"
$PY eval.py --model "$RUN" --split test --batch_size "$BS" --out "$WORK/eval"

step "offline sweep: 2 trials (sweep.yaml, optuna journal storage, one worker per GPU)"
GPUS=(--gpus all); [ "$DEVICE" = cpu ] && GPUS=()
$PY sweep.py sweep.yaml --count 2 --storage "$WORK/sweeps/sweeps.journal" --param epochs=1 \
  --param img_size="$SIZE" --param batch_size="$BS" --param arch=resnet18 --param pretrained=False \
  --param data="$DATA" "${GPUS[@]}"

step "host syncs per source line in one training epoch (CUDA sync debug mode)"
$PY bench/gpu_syncs.py "$DATA" "$SIZE" "$BS"

step "throughput: train.py vs the bare step"
$PY bench/gpu_speed.py "$RUN"
step "done"
