#!/usr/bin/env bash
# For a lent GPU: train `small` for a few hundred steps with DeepSpeed ZeRO-2 and bf16 under
# torchrun on every GPU; report samples/s and the loss drop as bench/results/gpu_check.json.
#   bash bench/gpu_check.sh [STEPS]
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-300}
GPUS=$(python -c "import torch; print(max(1, torch.cuda.device_count()))")
export STUDIO_HOME=${STUDIO_HOME:-$(mktemp -d)}
OUT=$STUDIO_HOME/gpu-check
python -c "from core.datasets.demo import ensure_demo_dataset; print(ensure_demo_dataset())"
start=$(date +%s)
python -m torch.distributed.run --standalone --nproc_per_node="$GPUS" -m core.training \
  --set dataset=digits --set preset=small --set stage=all --set device=cuda \
  --set vae.steps=$((STEPS / 3)) --set unet.steps="$STEPS" \
  --set vae.batch_size=64 --set unet.batch_size=64 \
  --set mixed_precision=bf16 --set deepspeed.zero_stage=2 \
  --set log_every=10 --set validate_every=100 --set sample_every=100000 --set checkpoint_every=100000 \
  --set output_dir="$OUT"
python - "$OUT" "$GPUS" "$(( $(date +%s) - start ))" <<'PY'
import json, sys
sys.path.insert(0, ".")
from bench.common import write_result
out, gpus, wall = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rows = [json.loads(l) for l in open(f"{out}/checkpoints/metrics.jsonl")]
unet = [r for r in rows if "loss" in r]
rates = [r["samples_per_s"] for r in unet[1:]]
write_result("gpu_check", {
    "preset": "small", "gpus": gpus, "zero_stage": 2, "mixed_precision": "bf16",
    "unet_steps": unet[-1]["step"], "samples_per_s": sum(rates) / len(rates),
    "first_loss": unet[0]["loss"], "last_loss": unet[-1]["loss"],
    "loss_drop": unet[0]["loss"] - unet[-1]["loss"], "wall_s": wall,
})
PY
