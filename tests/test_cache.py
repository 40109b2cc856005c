"""Cache directories (``distar.util.cache``): a tiny component is written by this process --
the same bytes a fresh ``python -m`` process writes, this process's RNG untouched by the
writer's seeds -- except inside an initialised torch.distributed group, where transformers 5
writes nothing on a rank != 0: there a fresh process writes it.

Mutation checks (each fails the test): ``fork_rng`` dropped from ``write`` (the RNG moved); the
``dist.is_initialized()`` branch dropped (no fresh process)."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from distar.util import cache

WRITER = "distar.rewards.tiny_clip"  # the tiny PickScore: the smallest writer


def files(root: Path) -> dict[str, Path]:
    return {str(p.relative_to(root)): p for p in root.rglob("*") if p.is_file()}


def test_a_fresh_process_writes_in_a_process_group_this_one_the_same_bytes_outside(
    tmp_path, monkeypatch
):
    import torch.distributed as dist

    calls = []
    real = subprocess.run

    def recorded(argv, **kwargs):
        calls.append(argv)
        return real(argv, **kwargs)

    monkeypatch.setattr(cache.subprocess, "run", recorded)
    group = tmp_path / "group"
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rdv'}", rank=0, world_size=1)
    try:
        fresh = cache.materialise("tiny-pickscore", WRITER, ["pickscore"], str(group))
    finally:
        dist.destroy_process_group()
    assert calls == [[sys.executable, "-m", WRITER, "pickscore", str(group / "tiny-pickscore.tmp")]]
    torch.manual_seed(123)
    want = torch.rand(4)
    torch.manual_seed(123)
    here = cache.materialise("tiny-pickscore", WRITER, ["pickscore"], str(tmp_path / "alone"))
    assert len(calls) == 1  # no second process
    assert torch.equal(torch.rand(4), want)  # the writer's torch.manual_seed(0) stayed inside
    fresh, here = files(fresh), files(here)
    assert fresh.keys() == here.keys() and any(k.endswith(".safetensors") for k in fresh)
    assert all(filecmp.cmp(fresh[k], here[k], shallow=False) for k in fresh), "bytes differ"


def test_a_writers_stderr_shows_only_when_it_fails(tmp_path, monkeypatch, capsys):
    """A refusal that first writes a tiny component stays one line (its progress bars are not
    shown); a writer that fails shows what it printed, then its error."""
    (tmp_path / "noisy_writer.py").write_text(
        "import sys\n"
        "def main(argv):\n"
        "    print('progress 100%', file=sys.stderr)\n"
        "    if argv[0] == 'fail':\n"
        "        raise RuntimeError('disk full')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    cache.write("noisy_writer", ["ok", str(tmp_path / "a")])
    assert capsys.readouterr().err == ""
    with pytest.raises(RuntimeError, match="disk full"):
        cache.write("noisy_writer", ["fail", str(tmp_path / "b")])
    assert capsys.readouterr().err == "progress 100%\n"
