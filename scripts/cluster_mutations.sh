#!/usr/bin/env bash
# The mutation checks of issue 35's tests: the reaper of orphaned placement groups
# (tests/test_multinode.py), the fencing token (tests/test_faults.py) and the cluster over a
# real network (tests/test_cluster_up.py). Each block below should end in "failed".
# ~25 min (the cluster ones bring a cluster up each).
#   bash scripts/cluster_mutations.sh [fast]    # fast: the first eight only (~5 min)
set -u
source "$(dirname "$0")/mutation_lib.sh"
PL=distar/raytune/placement.py
FE=distar/raytune/fence.py
M="tests/test_multinode.py -k reaped"
F="tests/test_faults.py -k claims"
baseline "$M"  # these two should end in "passed"
baseline "$F"
run reaper-idle $PL "    for hex_id in orphans:" "    for hex_id in []:" "$M"
run reaps-tune-groups $PL "            or group.creator_actor_id == by_a_driver" \
  "            or False" "$M"
run no-idle-rule $PL \
  "        elif group.state in placed and group.placement_group_id not in occupied:" \
  "        elif False:" "$M"
run no-dead-creator-rule $PL "        if group.creator_actor_dead:" "        if False:" "$M"
run no-grace $PL "            if now - idle_since.setdefault(hex_id, now) >= grace:" \
  "            if True:" "$M"
run actors-unseen $PL "        if actor.state != gcs_pb2.ActorTableData.DEAD" "        if False" "$M"
run fence-open $FE "        if owns(self.out_dir, self.token):" "        if True:" "$F"
run no-fence-before-checkpoint distar/loop/trainer.py \
  '        self._notify("before_checkpoint", self.step)' "" \
  "tests/test_faults.py -k claims"
[ "${1:-}" = fast ] && exit 0
C="-x tests/test_cluster_up.py"
run no-reaper distar/raytune/tuner.py ", OrphanReaper()]" "]" "tests/test_multinode.py -k losing"  # fails in some runs only (1 in 3 hit the stall)
run worker-never-fenced distar/raytune/worker.py \
  '    callbacks: list[Callback] = [Fence(out_dir, loop_config["attempt"])]' \
  '    callbacks: list[Callback] = []' "$C"
run workers-not-stopped sweeps/cluster_node.sh "then stop_workers; fi" "then :; fi" "$C"
