"""Where a metric's weights are on disk: an explicit path, else an environment variable. A
missing file gives one error naming the file and how to obtain it; nothing is downloaded."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


class MissingWeightsError(FileNotFoundError):
    pass


@dataclass(frozen=True)
class WeightFile:
    """One file or directory a metric loads: its environment variable, what it is, where from."""

    env: str
    what: str
    how_to_get: str
    directory: bool = False
    # for a directory: glob patterns that must each match ("a|b": either); checked up front so
    # an empty or half-downloaded folder fails here, not deep inside a library
    contains: tuple[str, ...] = ()

    def resolve(self, path: str | Path | None = None) -> Path:
        chosen = path or os.environ.get(self.env)
        if not chosen:
            raise MissingWeightsError(
                f"{self.what}: no path given and {self.env} is not set. {self.how_to_get}"
            )
        chosen = Path(chosen).expanduser()
        ok = chosen.is_dir() if self.directory else chosen.is_file()
        if not ok:
            kind = "directory" if self.directory else "file"
            raise MissingWeightsError(f"{self.what}: {kind} {chosen} not found. {self.how_to_get}")
        for pattern in self.contains:
            if not any(next(chosen.glob(p), None) for p in pattern.split("|")):
                raise MissingWeightsError(
                    f"{self.what}: {chosen} has no {pattern.replace('|', ' or ')}. "
                    f"{self.how_to_get}"
                )
        return chosen
