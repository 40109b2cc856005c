"""The placement groups of a trial's Ray Train worker groups: rank 0 records its own, and the
trial driver removes any that Ray Train left behind."""

from __future__ import annotations

from pathlib import Path

PLACEMENT_GROUPS_FILE = "placement_groups.txt"  # one per worker-group start of the trial


def record_placement_group(out_dir: Path) -> None:
    """Rank 0 notes its worker group's placement group for :func:`remove_placement_groups`."""
    from ray.util import get_current_placement_group

    group = get_current_placement_group()
    if group is not None:
        with (out_dir / PLACEMENT_GROUPS_FILE).open("a") as f:
            f.write(group.id.hex() + "\n")


def remove_placement_groups(out_dir: Path) -> None:
    """Remove the trial's recorded worker-group placement groups that are still there.

    Ray Train removes its own when a fit ends, except when the controller fails while losing
    a node (ControllerError: an actor it calls died with the node): the group, rescheduled onto
    a live node, then held that node's CPU with no worker and the sweep waited forever (seen in
    tests/test_multinode.py, 2 runs in 8)."""
    from ray._raylet import PlacementGroupID
    from ray.util.placement_group import (
        PlacementGroup,
        placement_group_table,
        remove_placement_group,
    )

    path = out_dir / PLACEMENT_GROUPS_FILE
    if not path.exists():
        return
    for hex_id in sorted(set(path.read_text().split())):
        group = PlacementGroup(PlacementGroupID(bytes.fromhex(hex_id)))
        if placement_group_table(group).get("state") not in (None, "REMOVED"):
            remove_placement_group(group)
    path.unlink()
