"""Directories written once into the cache and shared by every run and trial: tiny models and
the like. Written by a fresh Python process (transformers 5 writes nothing on a rank != 0 of an
initialised torch.distributed group, and a Ray Train worker is in one), under a file lock, into
a temporary directory renamed into place, so readers never see a half-written one."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path


def cache_root(cache_dir: str = "") -> Path:
    return Path(cache_dir or os.environ.get("DISTAR_CACHE") or Path.home() / ".cache/distar")


def materialise(name: str, module: str, args: list[str], cache_dir: str = "") -> Path:
    """``<cache>/<name>``, written first (if missing) by ``python -m module *args DIR``."""
    path = cache_root(cache_dir) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.exists():
            tmp = path.with_name(name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            subprocess.run([sys.executable, "-m", module, *args, str(tmp)], check=True)
            os.replace(tmp, path)
    return path
