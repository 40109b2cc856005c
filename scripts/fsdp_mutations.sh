#!/usr/bin/env bash
# The mutation checks of tests/test_fsdp.py and the offload tests (their docstrings name them):
# each mutation breaks one fix in a fresh copy of the working tree and runs the tests that must
# then fail; every block below should end in "failed" or "errors". ~8 minutes on 2 cores.
#   bash scripts/fsdp_mutations.sh
set -u
source "$(dirname "$0")/mutation_lib.sh"
run no-lazy-init distar/runtime/sharding.py "    initialise_now(network)" "    pass" "tests/test_fsdp.py"
run cast-inputs distar/runtime/sharding.py "cast_forward_inputs=False" "cast_forward_inputs=True" \
  "tests/test_fsdp.py -k timestep"
run assistant-trainable distar/method/di_star.py 'with frozen(self.params["assistant"]):' \
  'with nullcontext():' "tests/test_fsdp.py -k collectives"
run reference-per-chunk distar/method/di_star.py \
  'held = gathered(*world.frozen_networks()) if leaf is not x0 else nullcontext()' \
  'held = nullcontext()' "tests/test_fsdp.py -k collectives"
run offload-nccl-only distar/runtime/distributed.py 'return "cuda:nccl,cpu:gloo" if offload else "nccl"' \
  'return "nccl"' "tests/test_distributed.py"
