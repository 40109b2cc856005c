"""Prompts: the benchmark prompt sets Parti (P2), COCO-2014 30k captions and HPSv2 (four
styles), the subset a benchmark evaluates, and the prompts a text-to-image world trains on.

Each set loads from a local path (argument, else an environment variable, else the copy shipped
in ``distar/data``: the full Parti set and the first 1,000 of the 30k COCO captions; HPSv2 is not
shipped). :func:`download` fetches a public copy into a cache and checks its sha256; nothing
here downloads on import or implicitly.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import urllib.request
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HPS_STYLES = ("anime", "concept-art", "paintings", "photo")
DATA = Path(__file__).resolve().parent  # this package's folder holds the shipped files
# what a benchmark falls back to when neither a path nor its variable is given
SHIPPED = {
    "parti": DATA / "PartiPrompts.tsv",  # all 1,632 prompts (Apache-2.0)
    "coco": DATA / "coco2014_val_captions_first1000.txt",  # lines 1-1000 of DMD2's 30k
}
ENV = {"parti": "DISTAR_PARTI_PROMPTS", "coco": "DISTAR_COCO_CAPTIONS", "hps": "DISTAR_HPS_PROMPTS"}


class PromptFileError(ValueError):
    """A prompt file is missing or not in the format its benchmark uses."""


@dataclass(frozen=True)
class Prompt:
    text: str
    group: str  # Parti category, HPS style; "" for COCO
    index: int  # position in the full benchmark: the per-prompt seed derives from it
    challenge: str = ""  # Parti only


@dataclass(frozen=True)
class PromptSet:
    name: str
    prompts: tuple[Prompt, ...]
    source: str = ""  # the file it was read from ("shipped:" + name for distar/data's copies)

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def texts(self) -> list[str]:
        return [p.text for p in self.prompts]

    def first(self, n: int) -> PromptSet:
        return PromptSet(self.name, self.prompts[:n], self.source)

    def subset(self, n: int, seed: int = 0) -> PromptSet:
        """``n`` prompts drawn with ``seed``, stratified by group (each group gets its share of
        ``n``, largest remainders first); kept in benchmark order. Same ``seed``, same subset."""
        if n >= len(self):
            return self
        groups: dict[str, list[Prompt]] = defaultdict(list)
        for p in self.prompts:
            groups[p.group].append(p)
        quota = {g: n * len(ps) / len(self) for g, ps in groups.items()}
        counts = {g: int(q) for g, q in quota.items()}
        by_remainder = sorted(groups, key=lambda g: (counts[g] - quota[g], g))
        for g in by_remainder[: n - sum(counts.values())]:
            counts[g] += 1
        rng = random.Random(seed)
        chosen = [p for g in sorted(groups) for p in rng.sample(groups[g], counts[g])]
        return PromptSet(self.name, tuple(sorted(chosen, key=lambda p: p.index)), self.source)


def load_parti(path: str | Path | None = None) -> PromptSet:
    """PartiPrompts.tsv: columns Prompt, Category, Challenge, Note. Split on tabs: CSV quoting
    would rewrite prompts that contain quotes (``"G I G G L E" painted in ...``)."""
    path = _locate(path, "parti", "PartiPrompts.tsv")
    lines = path.read_text(encoding="utf-8").splitlines()
    header = lines[0].split("\t") if lines else []
    if header[:3] != ["Prompt", "Category", "Challenge"]:
        raise PromptFileError(f"{path}: header {header[:3]} is not Prompt, Category, Challenge")
    prompts = []
    for lineno, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) < 3 or not fields[0].strip():
            raise PromptFileError(f"{path}:{lineno}: expected >= 3 tab-separated fields")
        prompts.append(Prompt(fields[0], fields[1], len(prompts), fields[2]))
    return PromptSet("parti", tuple(prompts), _source(path))


def load_coco(path: str | Path | None = None) -> PromptSet:
    """COCO-2014 30k captions, one per line (duplicates kept: they are part of the protocol)."""
    path = _locate(path, "coco", "coco2014_val_30k_captions.txt")
    lines = path.read_text(encoding="utf-8").splitlines()
    blank = [i + 1 for i, line in enumerate(lines) if not line.strip()]
    if blank:
        raise PromptFileError(f"{path}: empty caption on line(s) {blank[:5]}")
    return PromptSet("coco", tuple(Prompt(t, "", i) for i, t in enumerate(lines)), _source(path))


def load_hps(directory: str | Path | None = None) -> PromptSet:
    """HPSv2 benchmark: ``<dir>/<style>.json``, each a JSON list of prompt strings."""
    directory = _locate(directory, "hps", "the HPSv2 benchmark folder")
    prompts: list[Prompt] = []
    for style in HPS_STYLES:
        file = directory / f"{style}.json"
        if not file.is_file():
            raise PromptFileError(f"{file} missing; {HPS_HOW_TO}")
        try:
            texts = json.loads(file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise PromptFileError(f"{file}: not JSON ({err})") from err
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise PromptFileError(f"{file}: expected a JSON list of strings")
        prompts += [Prompt(t, style, len(prompts) + i) for i, t in enumerate(texts)]
    return PromptSet("hps", tuple(prompts), _source(directory))


LOADERS: dict[str, Callable[[str | Path | None], PromptSet]] = {
    "parti": load_parti,
    "coco": load_coco,
    "hps": load_hps,
}


def load(name: str, path: str | Path | None = None) -> PromptSet:
    if name not in LOADERS:
        raise KeyError(f"benchmark: got {name!r}; allowed: {sorted(LOADERS)}")
    return LOADERS[name](path)


def select(name: str, n: int | None, path: str | Path | None, subset: str, seed: int) -> PromptSet:
    """The prompts a benchmark evaluates: all (``n`` None), the first ``n``, or ``n``
    stratified by group with ``seed`` (``subset`` = ``"first"`` / ``"stratified"``)."""
    full = load(name, path)
    if n is None:
        return full
    return full.first(n) if subset == "first" else full.subset(n, seed)


# --- what a text-to-image world trains on -----------------------------------------------------

# a small built-in list that only exists to make the tiny worlds and first runs work without files
BUILT_IN = (
    "a photo of a red fox in a snowy forest",
    "an oil painting of a lighthouse at dawn",
    "a bowl of ramen on a wooden table, studio lighting",
    "a watercolor of a city street in the rain",
    "a close-up portrait of an elderly fisherman",
    "a futuristic train crossing a desert canyon",
    "a cat wearing a tiny wizard hat, digital art",
    "a mountain lake reflecting autumn trees",
    "a robot reading a book in a library",
    "a bouquet of sunflowers in a blue vase",
    "an astronaut riding a horse on the moon",
    "a cozy cabin interior with a fireplace",
    "a hummingbird drinking from a flower, macro photo",
    "a medieval castle on a cliff above the sea",
    "a plate of colorful macarons, pastel background",
    "a neon-lit alley in Tokyo at night",
)


def training_prompts(spec: str) -> list[str]:
    """``world.prompts``: ``""`` the built-in list; ``*.tsv`` Parti prompts; otherwise a file of
    one prompt per line (the COCO captions file, your own)."""
    if not spec:
        return list(BUILT_IN)
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(
            f"world.prompts: {path} is not a file (a Parti .tsv, or one prompt per line)"
        )
    return (load_parti(path) if path.suffix == ".tsv" else load_coco(path)).texts


# --- explicit downloads --------------------------------------------------------------------

PARTI_URL = (
    "https://raw.githubusercontent.com/google-research/parti/"
    "5a657978f7b7abce2a2bfc5bc3bbbd4bbbcc5fde/PartiPrompts.tsv"
)
PARTI_SHA256 = "fab29e41bb512a169b56acab4cf2a41dcb675e285df2efcde6640c7dd3c440eb"
COCO_URL = (
    "https://raw.githubusercontent.com/tianweiy/DMD2/main/main/coco_eval/captions_coco14_test.txt"
)
COCO_SHA256 = "edabd2a556026cbf5d36a5fffa35ad43d7ba71b72f6d640b727c1edefb7f1945"
HPS_HOW_TO = (
    "the HPSv2 benchmark prompts are benchmark/<style>.json in the Hugging Face dataset "
    "zhwang/HPDv2 (huggingface-cli download zhwang/HPDv2 --repo-type dataset "
    "--include 'benchmark/*.json'); point DISTAR_HPS_PROMPTS at that benchmark folder"
)


def download(url: str, sha256: str, cache: str | Path) -> Path:
    """Fetch ``url`` into ``cache`` unless a copy with ``sha256`` is there; verify the hash."""
    target = Path(cache) / Path(url).name
    if not target.is_file() or sha256_of(target) != sha256:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(target.suffix + ".part")
        urllib.request.urlretrieve(url, tmp)  # noqa: S310 - fixed https URLs above
        got = sha256_of(tmp)
        if got != sha256:
            tmp.unlink()
            raise PromptFileError(f"{url}: sha256 {got}, expected {sha256}")
        tmp.replace(target)
    return target


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def file_of(name: str, path: str | Path | None = None) -> Path:
    """The file (folder, for HPS) benchmark ``name`` loads from: as :func:`load` finds it."""
    return _locate(path, name, f"the {name} prompts")


def available(name: str, path: str | Path | None = None) -> bool:
    """Whether :func:`load` would find a file for benchmark ``name`` (a given or configured path
    that exists, or a shipped copy): what an optional benchmark (``hps?``) asks."""
    path = _candidate(name, path)
    return bool(path) and Path(path).expanduser().exists()


def _candidate(name: str, path: str | Path | None) -> str | Path | None:
    """Where benchmark ``name``'s prompts are looked for: the given path, its variable, the
    shipped copy (None: nowhere)."""
    return path or os.environ.get(ENV[name]) or SHIPPED.get(name)


def _source(path: Path) -> str:
    return f"shipped:{path.name}" if path.resolve() in SHIPPED.values() else str(path)


def _locate(path: str | Path | None, name: str, what: str) -> Path:
    env = ENV[name]
    path = _candidate(name, path)
    if not path:
        raise PromptFileError(f"no path for {what}: pass one or set {env}")
    path = Path(path).expanduser()
    if not path.exists():
        raise PromptFileError(f"{path} does not exist ({what}; or set {env})")
    return path
