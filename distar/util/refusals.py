"""How every entry point refuses an anticipated bad input: one line on stderr naming the flag or
field and what is allowed, exit code 2, and nothing left behind (an output folder the command
made is removed). A truly unexpected error still shows its traceback.

Anticipated: a config value (:class:`ConfigError`), a file or folder the user named that is
missing or of the wrong kind (world folders, weights, prompts, checkpoints: the loaders raise
``FileNotFoundError`` subclasses naming the field), YAML that does not parse, a folder that
cannot be written, and what an entry point adds (checkpoint errors, tracking-store errors).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import yaml

from distar.config.extras import missing_extra
from distar.config.sections import ConfigError

ANTICIPATED: tuple[type[BaseException], ...] = (
    ConfigError,
    FileNotFoundError,  # WorldLoadError, MissingWeightsError and the user's own paths
    NotADirectoryError,
    IsADirectoryError,
    FileExistsError,
    PermissionError,
    yaml.YAMLError,
)


def one_line(error: BaseException) -> str:
    """The error's text on one line (YAML and library messages span several)."""
    return " ".join(str(error).split())


def label(error: BaseException) -> str:
    """What the line starts with: an error class may name its own (``label``)."""
    if isinstance(error, ConfigError):
        return "config error"
    return getattr(error, "label", "error")


# what a started run or sweep has made: a folder holding one is never removed by a refusal
WORK = ("trials", "checkpoints", "metrics.jsonl")


class Outputs:
    """Folders a command may create: the ones that did not exist when :meth:`watch` saw them
    are removed if the command is refused -- unless work started in them (:data:`WORK`)."""

    def __init__(self) -> None:
        self.fresh: list[Path] = []

    def watch(self, *paths: str | Path | None) -> None:
        for p in paths:
            if p is not None and not Path(p).exists():
                self.fresh.append(Path(p))

    def remove(self) -> None:
        for path in self.fresh:
            if path.is_dir() and not any((path / w).exists() for w in WORK):
                shutil.rmtree(path, ignore_errors=True)


def refusing(body: Callable[[Outputs], int], extra: Iterable[type[BaseException]] = ()) -> int:
    """Run an entry point's ``body``; an anticipated error (or one of ``extra``) becomes one
    line on stderr and exit code 2, and the outputs it watched and made are removed."""
    outputs = Outputs()
    try:
        return body(outputs)
    except ModuleNotFoundError as error:
        if (missing := missing_extra(error)) is None:
            raise
        return refuse(missing, outputs)
    except (*ANTICIPATED, *extra) as error:
        return refuse(error, outputs)


def refuse(error: BaseException, outputs: Outputs) -> int:
    """The refusal itself: one line on stderr, exit code 2, fresh outputs removed."""
    outputs.remove()
    print(f"{label(error)}: {one_line(error)}", file=sys.stderr)
    return 2


def check_writable_dir(path: str | Path, flag: str) -> None:
    """``path`` is (or can be made as) a writable folder: refused in seconds, not after Ray or
    a model started. Nothing is created."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag}: {path} is a file; allowed: a folder (existing or new)")
    existing = path
    while not existing.exists():
        existing = existing.parent
    try:  # a probe folder, at once removed: os.access says yes to root on read-only mounts
        os.rmdir(tempfile.mkdtemp(prefix=".distar-probe-", dir=existing))
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ConfigError(f"{flag}: {path} cannot be written ({existing}: {reason})") from None


def check_name(value: str, flag: str) -> None:
    """A sweep, experiment or run name: non-empty, one line, no quote (MLflow's search filter
    quotes it)."""
    if not value.strip() or any(c in value for c in "'\"\n\r\\"):
        raise ConfigError(f"{flag}: got {value!r}; allowed: a non-empty name without quotes")
