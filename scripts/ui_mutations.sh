#!/usr/bin/env bash
# The mutation checks of the browser test (tests/test_mlflow_ui.py, embedded world only) and of
# tests/test_mlflow_app.py: each block below should end in "failed". ~5 minutes; needs chromium.
#   bash scripts/ui_mutations.sh
set -u
source "$(dirname "$0")/mutation_lib.sh"
T="tests/test_mlflow_ui.py -k gmm"
# the stock page: one click from the printed link opens a run in MLflow's GenAI layout
run no-defaults distar/track/mlflow_app.py 'return html.replace("<head>", "<head>" + SCRIPT, 1)' \
  "return html" "$T"
# the defaults, but no saved view seeded: Back from a run lands on an ungrouped table
run no-saved-view distar/track/mlflow_app.py "(SET_DEFAULTS, SEED_SAVED_VIEW)" "(SET_DEFAULTS,)" "$T"
# a key this MLflow does not read
run wrong-key distar/track/mlflow_app.py '"mlflow.workflowType_v1"' '"mlflow.workflowType_v2"' \
  tests/test_mlflow_app.py
