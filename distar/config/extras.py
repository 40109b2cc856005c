"""Which optional install (a ``pyproject.toml`` extra) each third-party module comes from, and
the one line that says which to install when one is missing.

The base install trains and evaluates the embedded world. ``sweep`` adds Ray Tune, MLflow and
Optuna (the sweeps, the reports); ``eval`` the benchmark metric models; ``t2i`` the
text-to-image worlds (diffusers, peft) on top of ``eval``. Entry points check a world's extra
before anything starts (:func:`require`), and :func:`distar.util.refusals.refusing` turns a missing
module met later into the same line (:func:`missing_extra`).
"""

from __future__ import annotations

import importlib.util

# the import name -> (the extra that installs it, the distribution pip installs)
MODULES: dict[str, tuple[str, str]] = {
    "ray": ("sweep", "ray"),
    "mlflow": ("sweep", "mlflow"),
    "optuna": ("sweep", "optuna"),
    "transformers": ("eval", "transformers"),
    "open_clip": ("eval", "open_clip_torch"),
    "torchmetrics": ("eval", "torchmetrics"),
    "torch_fidelity": ("eval", "torch-fidelity"),
    "cleanfid": ("eval", "clean-fid"),
    "torchvision": ("eval", "torchvision"),
    "PIL": ("eval", "pillow"),
    "diffusers": ("t2i", "diffusers"),
    "peft": ("t2i", "peft"),
}
# what each extra must make importable (``t2i`` installs ``eval`` too)
EXTRAS: dict[str, tuple[str, ...]] = {
    "sweep": ("ray", "mlflow", "optuna"),
    "eval": (
        "transformers",
        "open_clip",
        "torchmetrics",
        "torch_fidelity",
        "cleanfid",
        "torchvision",
        "PIL",
        "mlflow",
    ),
    "t2i": ("diffusers", "peft", "transformers", "open_clip", "torchmetrics", "torchvision"),
}


class MissingExtraError(ModuleNotFoundError):
    """An optional dependency is not installed; the message names the pip command."""

    label = "missing dependency"


def install_line(extra: str) -> str:
    return f'pip install -e ".[{extra}]"'


def missing(modules: tuple[str, ...]) -> list[str]:
    """The modules not importable here (found without importing them)."""
    return [m for m in modules if _absent(m)]


def _absent(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is None
    except (ImportError, ValueError):  # a parent package missing, or a half-set sys.modules
        return True


def require(extra: str, needed_by: str, modules: tuple[str, ...] = ()) -> None:
    """Refuse at once, in one line, unless ``modules`` (default: all of ``extra``'s) are
    installed."""
    if gone := missing(modules or EXTRAS[extra]):
        raise MissingExtraError(
            f"{needed_by} needs the '{extra}' extra ({', '.join(gone)} not installed): "
            f"{install_line(extra)}"
        )


def missing_extra(error: ModuleNotFoundError) -> MissingExtraError | None:
    """The one-line form of an import that failed for want of an optional dependency; None if
    the module is not one (a genuine bug keeps its traceback)."""
    if isinstance(error, MissingExtraError):
        return error
    root = (error.name or "").partition(".")[0]
    if root not in MODULES or not _absent(root):  # installed: a genuine error
        return None
    extra, distribution = MODULES[root]
    return MissingExtraError(
        f"{distribution} is not installed (it comes with the '{extra}' extra): "
        f"{install_line(extra)}"
    )
