#!/usr/bin/env bash
# The mutation checks of tests/test_fsdp.py and the offload tests (their docstrings name them):
# each mutation breaks one fix in a fresh copy of the working tree and runs the tests that must
# then fail; every block below should end in "failed" or "errors". ~8 minutes on 2 cores.
#   bash scripts/fsdp_mutations.sh
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
run() {
  name=$1; file=$2; from=$3; to=$4; tests=$5
  copy=$(mktemp -d)
  git -C "$ROOT" ls-files -co --exclude-standard | tar -C "$ROOT" -cf - -T - | tar -C "$copy" -xf -
  python - "$copy/$file" "$from" "$to" <<'PY'
import sys
path, old, new = sys.argv[1:]
text = open(path).read()
assert old in text, f"{path}: {old!r} not found (the code moved: update the mutation)"
open(path, "w").write(text.replace(old, new))
PY
  (cd "$copy" && PYTHONPATH="$copy" timeout 900 python -m pytest -q -p no:cacheprovider $tests \
    2>&1 | tail -4 | sed "s/^/[$name] /")
  rm -rf "$copy"
}
run no-lazy-init distar/sharding.py "    initialise_now(network)" "    pass" "tests/test_fsdp.py"
run cast-inputs distar/sharding.py "cast_forward_inputs=False" "cast_forward_inputs=True" \
  "tests/test_fsdp.py -k timestep"
run assistant-trainable distar/trainer.py 'with frozen(self.params["assistant"]), gathered(' \
  'with gathered(' "tests/test_fsdp.py -k collectives"
run reference-per-chunk distar/trainer.py \
  'with frozen(self.params["assistant"]), gathered(*world.frozen_networks()):' \
  'with frozen(self.params["assistant"]):' "tests/test_fsdp.py -k collectives"
run offload-nccl-only distar/distributed.py 'return "cuda:nccl,cpu:gloo" if offload else "nccl"' \
  'return "nccl"' "tests/test_distributed.py"
