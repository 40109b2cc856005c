"""Placement groups that nobody can remove any more: found and removed by the sweep's driver.

Ray Train's controller (an actor, on the trial driver's node) creates each worker group's
placement group. A group made by a non-detached actor lives until its creator actor *and* its
job are both dead (GCS: ``IsPlacementGroupLifetimeDone``), so when the node under the
controller dies, the group outlives it for as long as the sweep (the job) runs. Ray then
reschedules the group's bundles from the dead node onto a live one, where it holds a CPU (or
GPU) with no actor in it. A trial's TorchTrainer starts no ``PlacementGroupCleaner``
(:func:`distar.raytune.trial.trial_trainer_class`), and Ray's would know a group only once its
worker group had started: the reaper below is what removes such groups.

An orphan here: a group of this job, not detached, not removed, made by an actor, that nobody
will remove: its creator is dead, or its creator lives but the group is placed and has held no
actor that is not dead for ``IDLE_GRACE_SECONDS`` (abandoned). The second is what Ray Train
leaves when a node dies while a worker group starts: a worker died after the group's state was
built, so the start fails, the controller drops that worker group without shutting it down, and
retries with a new group (``FailureConfig.controller_failure_limit`` is -1: for ever); Ray moves
the dropped group onto a live node, where it holds the CPU the new group waits for, and the
sweep waits for ever. A worker group's actors are made as soon as
its group is placed, and its shutdown removes the group just after killing them, so a healthy
group is never without an actor for seconds. No one uses either kind in a sweep (Ray Train
hands its groups to no actor it does not own, and the workers die with their controller), so
removing them is safe; the sweep driver (:class:`OrphanReaper`, a Tune callback) does so every
few seconds.
"""

from __future__ import annotations

import sys
import time

from ray.tune import Callback

REAP_EVERY_SECONDS = 2.0
IDLE_GRACE_SECONDS = 30.0


def orphaned_groups(idle_since: dict[str, float], grace: float) -> dict[str, str]:
    """This job's orphaned placement groups (hex id -> why). ``idle_since`` keeps when each
    placed group was first seen with no actor in it (updated here, between calls); an idle group
    counts once it has been idle for ``grace`` seconds.

    ``ray.util.placement_group_table`` leaves out who made a group, and the actor table which
    group an actor is in; GCS's own records (the messages its accessor returns) say both."""
    import ray
    from ray._private.state import state
    from ray.core.generated import gcs_pb2

    job, by_a_driver = ray.get_runtime_context().get_job_id(), ray.ActorID.nil().binary()
    gcs = state._connect_and_get_accessor()
    occupied = {
        actor.placement_group_id
        for actor in map(gcs_pb2.ActorTableData.FromString, gcs.get_actor_table(None, None))
        if actor.state != gcs_pb2.ActorTableData.DEAD
    }
    orphans, now, idle = {}, time.monotonic(), set()
    # a group that lost a node and waits to be placed again still holds its other bundles
    placed = (gcs_pb2.PlacementGroupTableData.CREATED, gcs_pb2.PlacementGroupTableData.RESCHEDULING)
    for group in map(gcs_pb2.PlacementGroupTableData.FromString, gcs.get_placement_group_table()):
        if (
            group.creator_job_id.hex() != job
            or group.state == gcs_pb2.PlacementGroupTableData.REMOVED
            or group.is_detached
            or group.creator_actor_id == by_a_driver  # Tune's trial groups: made by the driver
        ):
            continue
        hex_id = group.placement_group_id.hex()
        if group.creator_actor_dead:
            orphans[hex_id] = (
                "its creator (a Ray Train controller) is dead: its trial stopped or its node died"
            )
        elif group.state in placed and group.placement_group_id not in occupied:
            idle.add(hex_id)
            if now - idle_since.setdefault(hex_id, now) >= grace:
                orphans[hex_id] = f"no actor has been in it for {now - idle_since[hex_id]:.0f} s"
    for hex_id in set(idle_since) - idle:  # an actor came, or the group went
        del idle_since[hex_id]
    return orphans


def remove_orphaned_groups(idle_since: dict[str, float], grace: float) -> dict[str, str]:
    """Remove every orphaned placement group of this job (:func:`orphaned_groups`); returns
    their hex ids, each with why."""
    from ray._raylet import PlacementGroupID
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    orphans = orphaned_groups(idle_since, grace)
    for hex_id in orphans:
        remove_placement_group(PlacementGroup(PlacementGroupID(bytes.fromhex(hex_id))))
    return orphans


class OrphanReaper(Callback):
    """Removes orphaned placement groups at most every ``REAP_EVERY_SECONDS``, between Tune's
    steps (the sweep driver is the job that owns them), and says which it removed and why."""

    def __init__(self, grace: float = IDLE_GRACE_SECONDS) -> None:
        self.last, self.grace = 0.0, grace
        self.idle_since: dict[str, float] = {}

    def on_step_begin(self, iteration: int, trials: list, **info) -> None:
        if time.monotonic() - self.last < REAP_EVERY_SECONDS:
            return
        self.last = time.monotonic()
        try:
            removed = remove_orphaned_groups(self.idle_since, self.grace)
        except Exception as error:  # noqa: BLE001 - a GCS hiccup (a node dying) must not end the sweep
            print(f"placement groups: not checked this time ({error!r})", file=sys.stderr)
            return
        for hex_id, why in removed.items():
            print(
                f"removed placement group {hex_id}: {why}, and it held resources with no "
                "worker in it",
                file=sys.stderr,
                flush=True,
            )
