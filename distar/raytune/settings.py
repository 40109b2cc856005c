"""What a sweep is called and where it writes (:class:`SweepSettings`), from the flags every
sweep entry point shares, and what refuses a sweep before it starts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distar.config.extras import require
from distar.config.tree import Config, ConfigError
from distar.evaluation.preflight import preflight
from distar.track.tracking import SWEEP_TAG, TrackingStoreError, default_tracking_uri
from distar.util.refusals import check_name, check_writable_dir


class SweepExistsError(RuntimeError):
    pass


class SweepStartError(RuntimeError):
    """Ray could not be started or reached; the sweep recorded nothing (a rerun just works)."""


# what refuses a sweep before it starts: one line to the user, exit 2, never a traceback
SWEEP_REFUSALS = (ConfigError, SweepExistsError, SweepStartError, TrackingStoreError)


@dataclass(frozen=True)
class SweepSettings:
    name: str
    experiment: str
    storage: Path  # sweep root: trials/, tune/, ray_train/, mlartifacts/, mlflow.db
    tracking_uri: str | None = None  # None: SQLite under storage
    max_concurrent: int = 2
    resume: bool = False
    verbose: bool = False  # Tune's own status tables
    num_cpus: int | None = None  # None: all of this machine's (a cluster brings its own)
    smoke: bool = False  # --smoke-test: its runs are tagged as such (SMOKE_TAG), never results

    @staticmethod
    def add_arguments(p: Any, experiment: str, name: str, storage: str) -> None:
        """The flags every sweep entry point shares (read back by :meth:`from_args`)."""
        p.add_argument("--max-concurrent", type=int, default=2)
        p.add_argument("--tracking-uri", help="MLflow URI (default: SQLite under --storage)")
        p.add_argument("--experiment", default=experiment)
        p.add_argument("--name", default=name, help="sweep name (Tune dir, MLflow parent run)")
        p.add_argument("--storage", type=Path, default=Path(storage))
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
        p.add_argument("--resume", action="store_true", help="continue an interrupted sweep")
        p.add_argument("--verbose", action="store_true", help="Tune's status tables as well")

    @classmethod
    def from_args(cls, args: Any) -> SweepSettings:
        """From the shared command-line flags of the sweep entry points (checked: ConfigError)."""
        if not 1 <= args.max_concurrent <= 10_000:
            raise ConfigError(f"--max-concurrent: got {args.max_concurrent}; allowed: 1 to 10000")
        check_name(args.name, "--name")
        check_name(args.experiment, "--experiment")
        check_writable_dir(args.storage, "--storage")
        return cls(
            args.name,
            args.experiment,
            args.storage,
            args.tracking_uri,
            args.max_concurrent,
            args.resume,
            verbose=args.verbose,
            smoke=args.smoke_test,
        )

    def uri(self) -> str:
        return self.tracking_uri or default_tracking_uri(self.storage)


def preflight_sweep(base: Config, dry_run: bool) -> None:
    """What every trial of a sweep would read, checked here before Ray starts: the world's
    optional dependencies and files (no weight read; the machine that starts the sweep must see
    them, as its nodes do), every prompt and weight file the evaluation needs, and (unless it is
    a dry run) the sweep's own dependencies."""
    from distar.worlds.builders import check_world  # torch

    check_world(base)
    preflight(base.eval)
    if not dry_run:
        require("sweep", "a sweep (Ray Tune trials, tracked in MLflow)")


def parent_tags(settings: SweepSettings) -> dict[str, str]:
    """The tags that mark a sweep's parent MLflow run (it is found by them, never by id)."""
    return {SWEEP_TAG: settings.name, "distar.role": "parent"}
