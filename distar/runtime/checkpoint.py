"""Full-state checkpoints without pickled code: the trained weights as safetensors; optimiser
states, step and RNG states as tensors/primitives loaded with ``weights_only=True``; config as
YAML. Only what a run trains is written (parameters that require grad): frozen weights the world
loads itself -- the reference a LoRA assistant shares -- are not copied into every checkpoint.

Sharded runs (``resources.strategy=fsdp``) write the same directory with the trained weights and
optimizer states as a distributed checkpoint (``sharded/``, torch DCP): every rank its own
shards, no rank ever holding a whole network; resuming reshards to any number of ranks."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from distar.config.tree import Config

LATEST = "latest"
SHARDED = "sharded"  # the DCP folder of a sharded checkpoint
GENERATOR_EMA = "generator_ema"  # the generator EMA's weights (train.ema), beside "generator"


Tensors = dict[str, torch.Tensor]


def save_checkpoint(
    root: Path,
    step: int,
    modules: dict[str, nn.Module],
    state: dict[str, Any],
    config: Config,
    tensors: dict[str, Tensors] | None = None,
) -> Path:
    """Write ``root/step_XXXXXXX/`` and point ``root/latest`` at it; returns the directory.
    ``tensors``: more named groups of weights (a callback's: the generator EMA), written as the
    networks' are."""
    path = Path(root) / f"step_{step:07d}"
    path.mkdir(parents=True, exist_ok=True)
    groups = {name: trained_state(m) for name, m in modules.items()} | (tensors or {})
    for name, group in groups.items():
        on_host = {k: v.detach().cpu().contiguous() for k, v in group.items()}
        save_file(on_host, str(path / f"{name}.safetensors"))
    torch.save({"step": step, **state}, path / "trainer.pt")
    (path / "config.yaml").write_text(config.to_yaml())
    (Path(root) / LATEST).write_text(path.name)
    return path


def trained_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: p for k, p in module.named_parameters() if p.requires_grad}


def load_trained_state(module: nn.Module, tensors: dict[str, torch.Tensor], what: str) -> None:
    """Copy ``tensors`` into the trained parameters of ``module``; the names must match exactly."""
    load_into(trained_state(module), tensors, what)


def load_into(params: Tensors, tensors: Tensors, what: str) -> None:
    """Copy ``tensors`` into ``params`` in place; the names must match exactly."""
    missing, unexpected = sorted(set(params) - set(tensors)), sorted(set(tensors) - set(params))
    if missing or unexpected:
        raise ValueError(
            f"checkpoint {what}: does not match the trained parameters "
            f"(missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''})"
        )
    with torch.no_grad():
        for k, p in params.items():
            p.copy_(tensors[k])


def _sharded_tree(
    modules: dict[str, nn.Module], optimizers: dict[str, Any], tensors: dict[str, Tensors]
) -> dict[str, Any]:
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    tree: dict[str, Any] = {name: trained_state(m) for name, m in modules.items()} | tensors
    for name, opt in optimizers.items():
        tree[f"opt_{name}"] = get_optimizer_state_dict(modules[name], opt)
    return tree


def save_sharded_checkpoint(
    root: Path,
    step: int,
    modules: dict[str, nn.Module],
    optimizers: dict[str, Any],
    state: dict[str, Any],
    config: Config,
    tensors: dict[str, Tensors] | None = None,
) -> Path:
    """Every rank (collective): its shards of the trained weights, of ``tensors`` and of
    ``optimizers``' states into ``root/step_XXXXXXX/sharded/``; rank 0 also ``trainer.pt``
    (``state``), the config and, once every rank has written, the ``latest`` pointer."""
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp

    path = Path(root) / f"step_{step:07d}"
    dcp.save(_sharded_tree(modules, optimizers, tensors or {}), checkpoint_id=path / SHARDED)
    first = dist.get_rank() == 0
    if first:
        torch.save({"step": step, **state}, path / "trainer.pt")
        (path / "config.yaml").write_text(config.to_yaml())
    dist.barrier()  # the pointer moves only once every rank's shards are on disk
    if first:
        (Path(root) / LATEST).write_text(path.name)
    return path


def load_sharded_checkpoint(
    path: Path,
    modules: dict[str, nn.Module],
    optimizers: dict[str, Any],
    tensors: dict[str, Tensors] | None = None,
) -> dict[str, Any]:
    """Every rank (collective): load a sharded checkpoint into the sharded ``modules``,
    ``tensors`` and ``optimizers`` in place; returns the trainer state."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    path = resolve_checkpoint(path)
    if not (path / SHARDED).is_dir():
        raise ValueError(
            f"checkpoint {path}: written unsharded (resources.strategy=ddp); resume it with "
            "resources.strategy=ddp, or export its generator (python -m distar.cli.export)"
        )
    tree = _sharded_tree(modules, optimizers, tensors or {})
    dcp.load(tree, checkpoint_id=path / SHARDED)
    for name, opt in optimizers.items():
        set_optimizer_state_dict(modules[name], opt, tree[f"opt_{name}"])
    return torch.load(path / "trainer.pt", weights_only=True)


def generator_weights(path: Path) -> dict[str, torch.Tensor]:
    """What a run's evaluations scored, whole: the generator EMA's weights when the run kept
    one (``train.ema``), else the generator's last (export and ``evaluate --checkpoint``)."""
    ema = checkpoint_config(path).train.ema
    return read_trained_weights(path, GENERATOR_EMA if ema else "generator")


def read_trained_weights(path: Path, name: str) -> dict[str, torch.Tensor]:
    """The weights of group ``name`` ("generator", "assistant", ``GENERATOR_EMA``) from a
    checkpoint, whole, in this process alone: from ``<name>.safetensors``, or gathered from the
    shards of a sharded checkpoint (no process group needed)."""
    path = resolve_checkpoint(path)
    if not (path / SHARDED).is_dir():
        return load_file(str(path / f"{name}.safetensors"))
    import torch.distributed.checkpoint as dcp

    metadata = dcp.FileSystemReader(str(path / SHARDED)).read_metadata()
    prefix = f"{name}."
    tensors = {
        key.removeprefix(prefix): torch.empty(meta.size, dtype=meta.properties.dtype)
        for key, meta in metadata.state_dict_metadata.items()
        if key.startswith(prefix) and hasattr(meta, "size")
    }
    dcp.load({name: tensors}, checkpoint_id=path / SHARDED, no_dist=True)
    return tensors


def saved_callbacks(path: Path) -> set[str] | None:
    """The names of the callbacks whose state a checkpoint holds; None if its ``trainer.pt``
    cannot be read (loading it then says so, or falls back to an earlier one)."""
    try:
        # mmap: only the names are read, not an unsharded run's optimiser states (GBs on SDXL),
        # which the load that follows reads anyway
        state = torch.load(resolve_checkpoint(path) / "trainer.pt", weights_only=True, mmap=True)
    except (OSError, RuntimeError, EOFError):
        return None
    return set(state.get("callbacks", {}))


def resolve_checkpoint(path: Path) -> Path:
    """Accept a checkpoint directory or a root holding a ``latest`` pointer."""
    path = Path(path)
    if (path / LATEST).exists():
        path = path / (path / LATEST).read_text().strip()
    if not (path / "trainer.pt").exists():
        raise FileNotFoundError(f"no checkpoint at {path} (expected trainer.pt inside)")
    return path


class CorruptCheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated or unreadable."""

    label = "checkpoint error"  # how distar.util.refusals starts its one line


def read_checkpoint(path: Path, names: list[str]) -> tuple[dict[str, dict], dict[str, Any]]:
    """Every file of one checkpoint directory, or :class:`CorruptCheckpointError` naming the
    file that could not be read."""
    tensors = {}
    for file in [path / f"{n}.safetensors" for n in names] + [path / "trainer.pt"]:
        try:
            if file.suffix == ".safetensors":
                tensors[file.stem] = load_file(str(file))
            else:
                state = torch.load(file, weights_only=True)
        except Exception as error:  # safetensors and torch.load each raise their own types
            raise CorruptCheckpointError(
                f"checkpoint file {file} is missing or corrupt ({type(error).__name__}: {error})"
            ) from None
    return tensors, state


def earlier_checkpoints(path: Path) -> list[Path]:
    """The step directories beside ``path`` that come before it, newest first."""
    steps = sorted(p for p in path.parent.glob("step_*") if p.is_dir() and p.name < path.name)
    return [p for p in reversed(steps) if (p / "trainer.pt").exists()]


def load_checkpoint(
    path: Path,
    modules: dict[str, nn.Module],
    fallback: bool = False,
    tensors: dict[str, Tensors] | None = None,
) -> dict[str, Any]:
    """Load weights into ``modules`` and ``tensors`` in place and return the trainer state. A
    corrupt checkpoint raises naming the file; with ``fallback`` the newest readable earlier one
    of the same run is used instead (said on stderr)."""
    path = resolve_checkpoint(path)
    if (path / SHARDED).is_dir():
        raise ValueError(
            f"checkpoint {path}: written sharded (resources.strategy=fsdp); resume it with "
            "resources.strategy=fsdp, or export its generator (python -m distar.cli.export)"
        )
    for candidate in [path, *(earlier_checkpoints(path) if fallback else [])]:
        try:
            found, state = read_checkpoint(candidate, [*modules, *(tensors or {})])
        except CorruptCheckpointError as error:
            if not fallback:
                raise
            print(f"{error}; trying an earlier checkpoint", file=sys.stderr)
            continue
        for name, module in modules.items():
            load_trained_state(module, found[name], str(candidate / f"{name}.safetensors"))
        for name, group in (tensors or {}).items():
            load_into(group, found[name], str(candidate / f"{name}.safetensors"))
        return state
    raise CorruptCheckpointError(f"no readable checkpoint at or before {path}")


def checkpoint_config(path: Path) -> Config:
    return Config.from_yaml((resolve_checkpoint(path) / "config.yaml").read_text())
