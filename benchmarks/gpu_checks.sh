#!/usr/bin/env bash
# The GPU checks of the worlds in one go, from the repo root on a CUDA machine (~10 minutes on
# one H100/H200, estimated from the rows' 170 s caps and the earlier 9-minute run): every world
# trains on cuda from an empty cache (also sharded: FSDP2 at world size 1 in bf16 with the SD
# presets' weighting and reuse, a LoRA assistant, a chunked generator step and CPU offload),
# host syncs per step are counted, the sd_step matrix is measured (DDP and FSDP; copy and LoRA;
# chunked; offloaded; start-up and step peaks) and the memory planner is checked against it.
# Results: OUT_DIR/sd_step.jsonl and the console. With "flow" as the second argument it runs the
# flow worlds' checks instead (sd35-tiny / flux-tiny on cuda, sharded from the host, and the
# real-size flow_step rows; ~8 minutes, estimated): OUT_DIR/flow_step.jsonl. With "table1" it
# writes a real-size random SDXL pipeline and runs the Table 1 command on it (SDXL-Base at 50
# steps and DMD2-SDXL at one step, 10 Parti prompts, tiny metric models): inference time per 10
# images on this GPU, OUT_DIR/table1/table1.md (~5 minutes, estimated).
#   bash benchmarks/gpu_checks.sh OUT_DIR [flow|table1]
set -u
OUT=${1:-runs/gpu}
MODE=${2:-sd}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 DISTAR_CACHE="$(mktemp -d)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python -c "import torch, diffusers, transformers, peft; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__)"
run() {
  echo "== $*"
  timeout 170 "$@" 2>&1 | grep -v "Loading weights\|kept in float32\|Writing model\|it/s\]" | tail -20
  echo "rc=${PIPESTATUS[0]}"
}
if [ "$MODE" = table1 ]; then
  run python benchmarks/real_size_pipeline.py sdxl "$OUT/models"
  timeout 400 python -m analysis.table1 --models-dir "$OUT/models" --tiny --device cuda \
    --benchmark parti:10 --batch-size 10 --tracking-uri "sqlite:///$OUT/table1.db" \
    --out "$OUT/table1" 2>&1 | grep -v "it/s\]" | tail -40
  exit 0
fi
if [ "$MODE" = flow ]; then
  run python -m distar.cli.train --world sd35-tiny --smoke-test --set train.device=cuda \
    --set world.dtype=bf16 --set loss.cfg_scale=7.5 --set loss.reward_scale=10 --out "$OUT/sd35-tiny"
  run python -m distar.cli.train --world flux-tiny --smoke-test --set train.device=cuda \
    --set resources.strategy=fsdp --set world.dtype=bf16 --set world.assistant=lora \
    --set loss.guidance=out --set resources.cpu_offload=true --out "$OUT/flux-tiny-fsdp"
  J="$OUT/flow_step.jsonl"
  D="--weighting dmd_normalised"
  # one GPU: the trained shards and Adam live on the host (SD3.5-Large LoRA: ~100 GB of it)
  run python benchmarks/flow_step.py --arch sd35 --batch 1 --grad-ckpt --lora-rank 64 --fsdp \
    --offload $D --json "$J"
  host_gib=$(awk '/MemTotal/ {print int($2 / 1048576)}' /proc/meminfo)
  if [ "$host_gib" -ge 180 ]; then  # FLUX's 12 B fp32 masters + Adam: ~143 GB on the host
    run python benchmarks/flow_step.py --arch flux --batch 1 --grad-ckpt --lora-rank 64 --fsdp \
      --offload $D --json "$J"
  else
    echo "== flux flow_step skipped: $host_gib GiB of host memory, ~180 needed on one GPU"
  fi
  run python -m distar.cli.plan --check "$J"
  exit 0
fi
run python -m distar.cli.train --smoke-test --set train.device=cuda --out "$OUT/gmm"
run python -m distar.cli.train --world sdxl-tiny --smoke-test --set train.device=cuda \
  --set loss.cfg_scale=7.5 --set loss.reward_scale=10 --out "$OUT/sdxl-tiny"
run python -m distar.cli.train --world sd15-tiny --smoke-test --set train.device=cuda \
  --set world.assistant=lora --set world.dtype=bf16 --set loss.guidance=out \
  --set loss.cfg_scale=2 --set loss.reward_scale=1 --out "$OUT/sd15-tiny"
run python -m distar.cli.train --world sdxl-tiny --smoke-test --set train.device=cuda \
  --set resources.strategy=fsdp --set world.dtype=bf16 --out "$OUT/sdxl-tiny-fsdp"
run python -m distar.cli.train --world sdxl-tiny --smoke-test --set train.device=cuda \
  --set resources.strategy=fsdp --set world.dtype=bf16 --set world.assistant=lora \
  --set loss.weighting=dmd_normalised --set optim.reuse_generator_samples=true \
  --set train.generator_chunk=1 --set resources.cpu_offload=true --out "$OUT/sdxl-tiny-fsdp-lora"
run python benchmarks/host_syncs.py --world gmm --set loss.reward_scale=1 --set loss.cfg_scale=1
run python benchmarks/host_syncs.py --world sdxl-tiny --set loss.reward_scale=1 \
  --set loss.cfg_scale=2 --set world.dtype=bf16 --set world.assistant=lora
J="$OUT/sd_step.jsonl"
D="--weighting dmd_normalised"  # the SD presets' weighting
run python benchmarks/sd_step.py --arch sdxl --batch 2 --grad-ckpt --json "$J"
run python benchmarks/sd_step.py --arch sd15 --batch 8 --grad-ckpt --json "$J"
run python benchmarks/sd_step.py --arch sdxl --batch 2 --grad-ckpt --lora-rank 64 $D --json "$J"
run python benchmarks/sd_step.py --arch sdxl --batch 4 --grad-ckpt --fsdp $D --json "$J"
run python benchmarks/sd_step.py --arch sdxl --batch 4 --grad-ckpt --fsdp --lora-rank 64 $D --json "$J"
run python benchmarks/sd_step.py --arch sdxl --batch 4 --grad-ckpt --fsdp --chunk 1 $D --json "$J"
run python benchmarks/sd_step.py --arch sdxl --batch 4 --grad-ckpt --fsdp --offload $D --json "$J"
run python benchmarks/sd_step.py --arch sd15 --batch 8 --grad-ckpt --fsdp --lora-rank 64 --chunk 1 \
  $D --json "$J"
run python -m distar.cli.plan --check "$J"
