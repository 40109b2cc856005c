"""The layer order the code obeys (README, "Layout"): every import of the project's own modules,
function-level ones included, points down or sideways, never up, and never closes a cycle.

A function-level (lazy) import of a project module is allowed only where it defers a heavy
third-party import (torch, ray, mlflow, diffusers, ...) that the importing module does not
already make at import time; a lazy import that defers nothing only hides an edge.

Run it as a script to print the graph's numbers: ``python tests/test_layers.py [ROOT]``.
"""

from __future__ import annotations

import ast
import fnmatch
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOP_PACKAGES = ("distar", "sweeps", "analysis", "benchmarks", "scripts")
# What a lazy import may defer: the third-party packages that cost seconds or gigabytes to import.
HEAVY = frozenset(
    {
        "torch",
        "torchvision",
        "ray",
        "mlflow",
        "diffusers",
        "transformers",
        "peft",
        "open_clip",
        "torchmetrics",
        "torch_fidelity",
        "pandas",
        "scipy",
        "matplotlib",
        "optuna",
        "safetensors",
    }
)

# Bottom to top: one folder of ``distar/`` per layer (a module takes the layer of its folder), the
# entry points above them all. No folder spans two layers.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("config", ("distar.config.*",)),
    ("data", ("distar.data.*",)),
    ("util", ("distar.util.*",)),
    ("runtime", ("distar.runtime.*",)),
    ("track", ("distar.track.*",)),
    ("method", ("distar.method.*",)),
    ("t2i", ("distar.t2i.*",)),
    ("rewards", ("distar.rewards.*",)),
    ("worlds", ("distar.worlds.*",)),
    ("loop", ("distar.loop.*",)),
    ("evaluation", ("distar.evaluation.*",)),
    ("raytune", ("distar.raytune.*",)),
    ("cli", ("distar.cli.*",)),
    ("entry points", ("sweeps.*", "analysis.*", "benchmarks.*", "scripts.*")),
)
# analysis/ reads MLflow and the paper module; it never imports the sweep layer
FORBIDDEN = (("analysis.*", "distar.raytune.*"),)


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    lazy: bool  # inside a function body
    line: int


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules(root: Path) -> dict[str, Path]:
    found = {}
    for top in TOP_PACKAGES:
        for path in sorted((root / top).rglob("*.py")) if (root / top).is_dir() else []:
            found[module_name(path, root)] = path
    return found


def resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The project module an import names (``from a.b import c``: ``a.b.c`` if a module)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imports(path: Path) -> list[tuple[str, bool, int]]:
    """(dotted name, lazy, line) of every import in the file; ``from a import b`` gives
    ``a.b`` (resolved to ``a`` when ``b`` is not a module)."""
    tree = ast.parse(path.read_text(), str(path))
    lazy_lines: set[int] = set()
    typing_only: set[int] = set()  # under ``if TYPE_CHECKING:``: never run
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            for inner in ast.walk(node):
                if isinstance(inner, ast.Import | ast.ImportFrom):
                    lazy_lines.add(inner.lineno)
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING"):
            typing_only |= {n.lineno for n in ast.walk(node) if isinstance(n, ast.stmt)}
    out = []
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in typing_only:
            continue
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno in lazy_lines, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                name = f"{node.module}.{alias.name}"
                out.append((name, node.lineno in lazy_lines, node.lineno))
    return out


@dataclass
class Graph:
    modules: dict[str, Path]
    edges: list[Edge]
    third_party: dict[str, set[str]]  # module -> top-level third-party packages imported eagerly

    @classmethod
    def read(cls, root: Path) -> Graph:
        modules = project_modules(root)
        edges, third = [], defaultdict(set)
        for name, path in modules.items():
            for target, lazy, line in imports(path):
                found = resolve(target, modules)
                if found is None:
                    if not lazy:
                        third[name].add(target.split(".")[0])
                elif found != name:
                    edges.append(Edge(name, found, lazy, line))
        return cls(
            modules, sorted(set(edges), key=lambda e: (e.source, e.line, e.target)), dict(third)
        )

    def eager_closure(self, module: str) -> set[str]:
        """Modules ``module`` imports at import time, itself included, transitively (a package's
        ``__init__`` runs before its submodules: counted as well)."""
        eager = defaultdict(set)
        for e in self.edges:
            if not e.lazy:
                eager[e.source].add(e.target)
        seen, todo = set(), [module]
        while todo:
            m = todo.pop()
            if m in seen:
                continue
            seen.add(m)
            todo += eager[m]
            todo += [p for p in parents(m) if p in self.modules]
        return seen

    def heavy_at_import(self, module: str) -> set[str]:
        return {p for m in self.eager_closure(module) for p in self.third_party.get(m, ())} & HEAVY

    def cycles(self) -> list[list[str]]:
        """Strongly connected components of more than one module (Tarjan)."""
        succ = defaultdict(set)
        for e in self.edges:
            succ[e.source].add(e.target)
        index, low, stack, on, out = {}, {}, [], set(), []

        def visit(v: str) -> None:
            index[v] = low[v] = len(index)
            stack.append(v)
            on.add(v)
            for w in sorted(succ[v]):
                if w not in index:
                    visit(w)
                    low[v] = min(low[v], low[w])
                elif w in on:
                    low[v] = min(low[v], index[w])
            if low[v] == index[v]:
                part = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    part.append(w)
                    if w == v:
                        break
                if len(part) > 1:
                    out.append(sorted(part))

        sys.setrecursionlimit(10_000)
        for v in sorted(self.modules):
            if v not in index:
                visit(v)
        return out


def parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def layer_of(module: str) -> int | None:
    for i, (_, patterns) in enumerate(LAYERS):
        if any(fnmatch.fnmatchcase(module, p) for p in patterns):
            return i
    if module in TOP_PACKAGES or module.endswith(".__init__"):
        return None
    return None


def upward(graph: Graph) -> list[Edge]:
    bad = []
    for e in graph.edges:
        a, b = layer_of(e.source), layer_of(e.target)
        if a is not None and b is not None and b > a:
            bad.append(e)
    return bad


def unplaced(graph: Graph) -> list[str]:
    """Modules no layer names (package ``__init__`` files aside: they hold no imports)."""
    return sorted(
        m for m, p in graph.modules.items() if layer_of(m) is None and p.name != "__init__.py"
    )


def needless_lazy(graph: Graph) -> list[Edge]:
    """Lazy project imports that defer no heavy third-party import the source lacks."""
    return [
        e
        for e in graph.edges
        if e.lazy and not (graph.heavy_at_import(e.target) - graph.heavy_at_import(e.source))
    ]


def forbidden(graph: Graph) -> list[Edge]:
    return [
        e
        for e in graph.edges
        for src, dst in FORBIDDEN
        if fnmatch.fnmatchcase(e.source, src) and fnmatch.fnmatchcase(e.target, dst)
    ]


def init_imports(graph: Graph) -> list[Edge]:
    """Package ``__init__`` files import nothing of the project (importing any submodule runs
    them, so an import there would be an edge no one sees)."""
    return [e for e in graph.edges if graph.modules[e.source].name == "__init__.py"]


def shared_basenames(graph: Graph) -> dict[str, list[str]]:
    """Modules sharing a file name (library, entry points, benchmarks alike), except the same
    role in sibling worlds."""
    by_name = defaultdict(list)
    for m, path in graph.modules.items():
        if path.name != "__init__.py":
            by_name[path.stem].append(m)
    clash = {}
    for stem, ms in by_name.items():
        siblings = all(fnmatch.fnmatchcase(m, f"distar.worlds.*.{stem}") for m in ms)
        if len(ms) > 1 and not siblings:
            clash[stem] = sorted(ms)
    return clash


def show(edges: list[Edge]) -> str:
    return "\n".join(
        f"  {e.source}:{e.line} -> {e.target}{' (lazy)' if e.lazy else ''}" for e in edges
    )


GRAPH = Graph.read(ROOT)


def test_every_module_has_a_layer():
    assert not unplaced(GRAPH), unplaced(GRAPH)


def test_no_cycles():
    assert GRAPH.cycles() == []


def test_no_upward_imports():
    bad = upward(GRAPH)
    assert not bad, "imports pointing up:\n" + show(bad)


def test_lazy_imports_only_defer_heavy_third_party_modules():
    bad = needless_lazy(GRAPH)
    assert not bad, "lazy imports that defer nothing heavy:\n" + show(bad)


def test_analysis_never_imports_the_sweep_layer():
    assert not forbidden(GRAPH), show(forbidden(GRAPH))


def test_package_inits_import_nothing_of_the_project():
    assert not init_imports(GRAPH), show(init_imports(GRAPH))


def test_module_names_are_unique():
    assert shared_basenames(GRAPH) == {}


# the registries that import every world's package; nothing else may, but for the commands
# that exist for one world only (the export writes SD UNets; a flow run is refused there)
WORLD_REGISTRIES = ("distar.worlds.builders", "distar.worlds.footprints")
ONE_WORLD_COMMANDS = {"distar.cli.export": "distar.worlds.sd"}


def world_package_of(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) > 3 and parts[:2] == ["distar", "worlds"]:
        return ".".join(parts[:3])
    return None


def foreign_world_imports(graph: Graph) -> list[Edge]:
    """Imports of a world's package (``distar.worlds.<world>.*``) from outside it, other than
    the registries': a new world is one package, a config module and a line in each registry."""
    return [
        e
        for e in graph.edges
        if world_package_of(e.target)
        and world_package_of(e.source) != world_package_of(e.target)
        and e.source not in WORLD_REGISTRIES
        and ONE_WORLD_COMMANDS.get(e.source) != world_package_of(e.target)
        and not e.source.startswith(("tests.", "benchmarks.", "scripts."))
    ]


def test_a_world_is_one_package():
    bad = foreign_world_imports(GRAPH)
    assert not bad, "imports of a world's package from outside it:\n" + show(bad)
    packages = {world_package_of(m) for m in GRAPH.modules} - {None}
    assert packages >= {"distar.worlds.gmm", "distar.worlds.sd", "distar.worlds.flow"}


def test_the_checks_catch_what_they_check(tmp_path):
    """A tree with a cycle, an upward import and a lazy import that defers nothing fails."""
    lib = tmp_path / "distar"
    for folder in ("config", "util", "method", "loop"):
        (lib / folder).mkdir(parents=True)
        (lib / folder / "__init__.py").write_text("")
    (lib / "__init__.py").write_text("")
    (lib / "config" / "tree.py").write_text("from distar.loop.trainer import Trainer\n")
    (lib / "loop" / "trainer.py").write_text("import torch\nfrom distar.config import tree\n")
    (lib / "util" / "registry.py").write_text("import json\n")
    (lib / "method" / "losses.py").write_text("def f():\n    from distar.util.registry import x\n")
    graph = Graph.read(tmp_path)
    assert graph.cycles() == [["distar.config.tree", "distar.loop.trainer"]]
    assert [(e.source, e.target) for e in upward(graph)] == [
        ("distar.config.tree", "distar.loop.trainer")
    ]
    assert [(e.source, e.target) for e in needless_lazy(graph)] == [
        ("distar.method.losses", "distar.util.registry")
    ]
    (lib / "worlds" / "a").mkdir(parents=True)
    (lib / "worlds" / "b").mkdir(parents=True)
    for part in ("worlds", "worlds/a", "worlds/b"):
        (lib / part / "__init__.py").write_text("")
    (lib / "worlds" / "a" / "world.py").write_text("import torch\n")
    (lib / "worlds" / "b" / "world.py").write_text("from distar.worlds.a.world import x\n")
    (lib / "worlds" / "builders.py").write_text("from distar.worlds.a import world\n")
    graph = Graph.read(tmp_path)
    assert [(e.source, e.target) for e in foreign_world_imports(graph)] == [
        ("distar.worlds.b.world", "distar.worlds.a.world")
    ]


def per_folder(graph: Graph) -> dict[str, int]:
    """How many modules (package ``__init__`` files aside) each folder holds, ``distar`` for the
    package's own top level."""
    count: dict[str, int] = defaultdict(int)
    for m, path in graph.modules.items():
        if path.name != "__init__.py":
            parts = m.split(".")
            count[".".join(parts[:2]) if parts[0] == "distar" and len(parts) > 2 else parts[0]] += 1
    return dict(sorted(count.items()))


def summary(graph: Graph) -> str:
    lazy = [e for e in graph.edges if e.lazy]
    sizes = sorted(
        ((len(p.read_text().splitlines()), m) for m, p in graph.modules.items()), reverse=True
    )[:8]
    lines = [
        f"modules: {len(graph.modules)}, internal imports: {len(graph.edges)} "
        f"({len(lazy)} function-level)",
        f"cycles: {len(graph.cycles())}",
        *[f"  {' <-> '.join(c)}" for c in graph.cycles()],
        f"upward imports: {len(upward(graph))}",
        show(upward(graph)),
        f"lazy imports deferring nothing heavy: {len(needless_lazy(graph))}",
        f"modules without a layer: {', '.join(unplaced(graph)) or '-'}",
        f"shared module basenames: {shared_basenames(graph) or '-'}",
        "largest modules: " + ", ".join(f"{m} {n}" for n, m in sizes),
        "modules per folder: " + ", ".join(f"{k} {v}" for k, v in per_folder(graph).items()),
    ]
    return "\n".join(line for line in lines if line)


if __name__ == "__main__":
    print(summary(Graph.read(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT)))


def top_level_names(path: Path) -> set[str]:
    """What a module defines at its top level (functions, classes, assignments, imports)."""
    names: set[str] = set()
    for node in ast.parse(path.read_text(), str(path)).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


def test_every_import_of_the_project_names_something_it_has():
    """``from distar import timing`` after timing moved to distar.runtime broke two benchmarks
    that no test imports: every project import, in every folder, must resolve."""
    modules = project_modules(ROOT)
    broken = []
    for path in modules.values():
        for target, _, line in imports(path):
            found = resolve(target, modules)
            if found is None or found == target:
                continue
            rest, defined = target[len(found) + 1 :].split("."), top_level_names(modules[found])
            if "__getattr__" in defined:  # a module's lazy attributes (PEP 562): not checked
                continue
            if len(rest) > 1 or rest[0] not in defined:
                broken.append(f"{path.relative_to(ROOT)}:{line}: {target}")
    assert not broken, "\n".join(broken)
