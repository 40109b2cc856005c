#!/usr/bin/env bash
# The mutation checks of tests/test_publisher_fixtures.py and the loader / range tests of
# tests/test_metrics.py: each mutation breaks one rule in a fresh copy of the working tree and
# runs the tests that must then fail; every block below should end in "failed". ~2 minutes.
#   bash scripts/publisher_mutations.sh
set -u
source "$(dirname "$0")/mutation_lib.sh"
T="tests/test_publisher_fixtures.py tests/test_metrics.py"
run unused-keys-not-skipped distar/evaluation/imagereward.py "        if key in UNUSED_KEYS:" \
  "        if False:" "$T"
run transformers-lenient distar/rewards/clip_common.py \
  "model, info = model_class.from_pretrained(directory, output_loading_info=True)" \
  "model, info = model_class.from_pretrained(directory), {}" "$T"
run clamp-not-refuse distar/rewards/clip_common.py "    if not (0.0 <= low and high <= 1.0):" \
  "    if False:" "$T"
run hps-stretch distar/evaluation/hps.py "    if h == w:" "    if True:" \
  "tests/test_publisher_fixtures.py -k hps"
run no-antialias distar/rewards/clip_common.py "antialias=True" "antialias=False" \
  "tests/test_publisher_fixtures.py"
