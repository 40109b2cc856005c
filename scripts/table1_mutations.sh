#!/usr/bin/env bash
# The mutation checks of tests/test_table1.py (released models on diffusers pipelines, Table 1
# from evaluation runs): each block below should end in "failed". ~12 min.
#   bash scripts/table1_mutations.sh
set -u
source "$(dirname "$0")/mutation_lib.sh"
T="-x tests/test_table1.py"
baseline "$T"  # should end in "passed"
C=distar/config/pipelines.py
P=distar/evaluation/pipeline_generator.py
run dmd2-timestep $C "        timesteps=(399,)," "        timesteps=(400,)," \
  "$T -k dmd2_card"
run latents-ignored $P "prompt=list(prompts), latents=latents," "prompt=list(prompts), latents=None," \
  "$T -k fixed_by_its_noise"
run negative-prompt-dropped $P '            options["negative_prompt"] = [s.negative_prompt] * n' \
  '            options["negative_prompt"] = None' "$T -k sdxl"
run guidance-fixed $P "            guidance_scale=s.guidance," "            guidance_scale=3.5," \
  "$T -k fixed_by_its_noise"
run unet-ignored $P '        parts["unet"] = load_unet_override(cfg.unet, path, dtype, files)' \
  '        load_unet_override(cfg.unet, path, dtype, files)' "$T -k dmd2_card"
run cfg-calls $C "2 if self.guidance > 1 and" "2 if self.guidance >= 0 and" \
  "$T -k planner_reproduces"
run warm-up-timed distar/evaluation/inference_time.py \
  "        generator(texts[:1], noise[:1])  # lazily built state (caches, allocator) is not timed" \
  "" "$T -k timing_is_ten"
run failed-run-counts analysis/table1.py '            done = ours[ours["status"] == "FINISHED"]' \
  "            done = ours" "$T -k from_tiny"
