#!/usr/bin/env bash
# The mutation checks of tests/test_callbacks.py (the generator EMA, the LR warm-up): each block
# below should end in "failed". ~2 min.
#   bash scripts/callback_mutations.sh
set -u
source "$(dirname "$0")/mutation_lib.sh"
T=tests/test_callbacks.py
F=distar/runtime/callbacks.py
run ema-decay-swapped $F ".lerp_(_local(p.detach()), 1.0 - self.decay)" \
  ".lerp_(_local(p.detach()), self.decay)" "$T"
run eval-not-restored $F "                    _local(p.detach()).copy_(kept[key])" \
  "                    pass" "$T"
run warmup-off-by-one $F "min(1.0, (step + 1) / steps)" "min(1.0, max(step, 1) / steps)" "$T"
run resume-forgets-callbacks distar/loop/trainer.py \
  "                cb.load_state_dict(state.get(\"callbacks\", {}).get(cb.name, {}))" \
  "                pass" "$T"
run ema-not-checkpointed distar/loop/trainer.py \
  "        return state, {cb.name: cb.tensors() for cb in named if cb.tensors()}" \
  "        return state, {}" "$T"
