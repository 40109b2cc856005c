"""Directories written once into the cache and shared by every run and trial: tiny models and
the like. Written under a file lock, into a temporary directory renamed into place, so readers
never see a half-written one; by this process (its global RNG kept), or by a fresh one where
this process is in an initialised torch.distributed group (transformers 5 writes nothing on a
rank != 0, and a Ray Train worker is in one)."""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path


def cache_root(cache_dir: str = "") -> Path:
    return Path(cache_dir or os.environ.get("DISTAR_CACHE") or Path.home() / ".cache/distar")


def materialise(name: str, module: str, args: list[str], cache_dir: str = "") -> Path:
    """``<cache>/<name>``, written first (if missing) by ``module.main([*args, DIR])`` (what
    ``python -m module *args DIR`` runs)."""
    path = cache_root(cache_dir) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.exists():
            tmp = path.with_name(name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            write(module, [*args, str(tmp)])
            os.replace(tmp, path)
    return path


def write(module: str, argv: list[str]) -> None:
    """``module.main(argv)`` in this process, its global RNG untouched by the writer's seeds and
    its stderr (save_pretrained's progress bars) shown only if it fails; ``python -m module
    *argv`` instead where this process is in an initialised torch.distributed group. In this
    process the writer's imports (diffusers, transformers: ~7 s of a fresh process's ~7.5 s)
    are mostly done already."""
    import torch
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        subprocess.run([sys.executable, "-m", module, *argv], check=True)
        return
    stderr = io.StringIO()
    try:
        with torch.random.fork_rng(devices=[]), contextlib.redirect_stderr(stderr):
            importlib.import_module(module).main(argv)
    except BaseException:
        sys.stderr.write(stderr.getvalue())
        raise
