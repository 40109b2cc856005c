#!/usr/bin/env bash
# The mutation checks of tests/test_flow.py (rectified flow in the EDM view): each block below
# should end in "failed". ~1 min.
#   bash scripts/flow_mutations.sh
set -u
source "$(dirname "$0")/mutation_lib.sh"
T=tests/test_flow.py
baseline "$T"  # should end in "passed"
F=distar/method/rectified_flow.py
run velocity-sign $F "(x_t.to(torch.float64) - t * v.to(torch.float64))" \
  "(x_t.to(torch.float64) + t * v.to(torch.float64))" "$T"
run sigma-map $F "    return t / (1 - t)" "    return t / (1 + t)" "$T"
run time-map $F "    return sigma / (1 + sigma)" "    return sigma / (2 + sigma)" "$T"
run input-scale $F "    return x * (1 - expand_like(t, x)), t" "    return x, t" "$T"
run shift-formula $F "    return shift * t / (1 + (shift - 1) * t)" "    return shift * t / (1 + shift * t)" "$T"
run velocity-inverse $F "    return (x_t - x0) / expand_like(t, x0)" "    return (x0 - x_t) / expand_like(t, x0)" "$T"
run flux-shift distar/config/flow.py "{**flow_noise(FLUX_MU_1024)," \
  "{**flow_noise(math.log(FLUX_MU_1024))," "$T"
run velocity-weight distar/method/sigmas.py "    return ((1 + sigma) / sigma).square()" \
  "    return (1 / sigma).square()" "$T"
