"""Placement groups that nobody can remove any more: found and removed by the sweep's driver.

Ray Train's controller (an actor, on the trial driver's node) creates each worker group's
placement group. A group made by a non-detached actor lives until its creator actor *and* its
job are both dead (GCS: ``IsPlacementGroupLifetimeDone``), so when the node under the
controller dies, the group outlives it for as long as the sweep (the job) runs. Ray then
reschedules the group's bundles from the dead node onto a live one, where it holds a CPU (or
GPU) with no actor in it. Ray Train's ``PlacementGroupCleaner`` removes a group only once the
controller has registered it (after the worker group started); a group whose start the node's
death cut short is known to nobody. Measured in ``tests/test_multinode.py``: a group left so
held the head's only CPU and the sweep waited forever (2 of 4 full-suite runs).

An orphan here: a group of this job, not detached, not removed, made by an actor that is dead.
No one uses such a group in a sweep (Ray Train hands its groups to no actor it does not own, and
the workers die with their controller), so removing it is safe; the sweep driver
(:class:`OrphanReaper`, a Tune callback) does so every few seconds.
"""

from __future__ import annotations

import sys
import time

from ray.tune import Callback

REAP_EVERY_SECONDS = 2.0


def orphaned_groups() -> list[str]:
    """Hex ids of this job's placement groups whose creator actor is dead (not removed yet).

    ``ray.util.placement_group_table`` leaves out who made a group; GCS's own record (the
    ``PlacementGroupTableData`` message its accessor returns) says it."""
    import ray
    from ray._private.state import state
    from ray.core.generated import gcs_pb2

    job, by_a_driver = ray.get_runtime_context().get_job_id(), ray.ActorID.nil().binary()
    orphans = []
    for raw in state._connect_and_get_accessor().get_placement_group_table():
        group = gcs_pb2.PlacementGroupTableData.FromString(raw)
        if (
            group.creator_job_id.hex() == job
            and group.state != gcs_pb2.PlacementGroupTableData.REMOVED
            and not group.is_detached
            and group.creator_actor_id != by_a_driver  # Tune's trial groups: made by the driver
            and group.creator_actor_dead
        ):
            orphans.append(group.placement_group_id.hex())
    return orphans


def remove_orphaned_groups() -> list[str]:
    """Remove every orphaned placement group of this job; returns their hex ids."""
    from ray._raylet import PlacementGroupID
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    orphans = orphaned_groups()
    for hex_id in orphans:
        remove_placement_group(PlacementGroup(PlacementGroupID(bytes.fromhex(hex_id))))
    return orphans


class OrphanReaper(Callback):
    """Removes orphaned placement groups at most every ``REAP_EVERY_SECONDS``, between Tune's
    steps (the sweep driver is the job that owns them), and says which it removed."""

    def __init__(self) -> None:
        self.last = 0.0

    def on_step_begin(self, iteration: int, trials: list, **info) -> None:
        if time.monotonic() - self.last < REAP_EVERY_SECONDS:
            return
        self.last = time.monotonic()
        try:
            removed = remove_orphaned_groups()
        except Exception as error:  # noqa: BLE001 - a GCS hiccup (a node dying) must not end the sweep
            print(f"placement groups: not checked this time ({error!r})", file=sys.stderr)
            return
        for hex_id in removed:
            print(
                f"removed placement group {hex_id}: its creator (a Ray Train controller) died "
                "with its node, and it held resources with no worker in it",
                file=sys.stderr,
                flush=True,
            )
