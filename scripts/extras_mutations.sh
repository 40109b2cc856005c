#!/usr/bin/env bash
# The mutation checks of tests/test_extras.py: each block below should end in "failed". ~1 min.
#   bash scripts/extras_mutations.sh
set -u
source "$(dirname "$0")/mutation_lib.sh"
T=tests/test_extras.py
run no-world-check distar/worlds/builders.py '        require(cfg.extra, f"world {cfg.name!r}")' \
  "        pass" "$T"
run tracebacks distar/util/refusals.py "        if (missing := missing_extra(error)) is None:" \
  "        if True:" "$T"
run wrong-extra distar/config/extras.py '"diffusers": ("t2i", "diffusers"),' \
  '"diffusers": ("eval", "diffusers"),' "$T"
