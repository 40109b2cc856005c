"""Prompt sets: the shared reference files, malformed files, deterministic stratified subsets."""

import json
from collections import Counter
from pathlib import Path

import pytest

from distar.data import prompts
from distar.data.prompts import PromptFileError

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PARTI = DATA / "PartiPrompts.tsv"
COCO = DATA / "coco2014_val_30k_captions.txt"
needs_data = pytest.mark.skipif(not PARTI.is_file(), reason="../shared/data not present")


@needs_data
def test_parti_parses_on_tabs_and_keeps_quotes():
    parti = prompts.load_parti(PARTI)
    assert len(parti) == 1632
    giggle = [p for p in parti.prompts if "G I G G L E" in p.text]
    assert len(giggle) == 1 and giggle[0].text.startswith('"G I G G L E" painted in')
    assert len({p.group for p in parti.prompts}) == 12
    assert parti.prompts[0] == prompts.Prompt("bond", "Abstract", 0, "Basic")
    # leading/trailing spaces are part of the benchmark's prompts: kept as they are
    assert sum(p.text != p.text.strip() for p in parti.prompts) == 10


@needs_data
def test_coco_keeps_all_30k_lines_including_duplicates():
    coco = prompts.load_coco(COCO)
    assert len(coco) == 30000 and len(set(coco.texts)) == 29436
    assert coco.prompts[2].text == "A picture of a dog laying on the ground."


@needs_data
def test_subsets_are_deterministic_and_stratified():
    parti = prompts.load_parti(PARTI)
    a, b, c = parti.subset(96, seed=1), parti.subset(96, seed=1), parti.subset(96, seed=2)
    assert a == b and a != c and len(a) == 96
    assert [p.index for p in a.prompts] == sorted(p.index for p in a.prompts)
    full = Counter(p.group for p in parti.prompts)
    got = Counter(p.group for p in a.prompts)
    for group, count in full.items():
        assert abs(got[group] - 96 * count / len(parti)) < 1.0  # largest-remainder quotas
    assert parti.first(5).texts == parti.texts[:5]


def test_hps_folder_of_four_styles(tmp_path):
    for i, style in enumerate(prompts.HPS_STYLES):
        (tmp_path / f"{style}.json").write_text(json.dumps([f"{style} {j}" for j in range(i + 2)]))
    hps = prompts.load_hps(tmp_path)
    assert len(hps) == 2 + 3 + 4 + 5
    assert [p.index for p in hps.prompts] == list(range(len(hps)))
    assert hps.subset(4, seed=0).prompts and {p.group for p in hps.subset(4).prompts} == set(
        prompts.HPS_STYLES
    )


def test_malformed_files_fail_clearly(tmp_path, monkeypatch):
    bad = tmp_path / "parti.tsv"
    bad.write_text("prompt,category\nbond,Abstract\n")
    with pytest.raises(PromptFileError, match="header"):
        prompts.load_parti(bad)
    bad.write_text("Prompt\tCategory\tChallenge\tNote\nonly-one-field\n")
    with pytest.raises(PromptFileError, match=":2: expected >= 3"):
        prompts.load_parti(bad)
    coco = tmp_path / "coco.txt"
    coco.write_text("a cat\n\na dog\n")
    with pytest.raises(PromptFileError, match=r"empty caption on line\(s\) \[2\]"):
        prompts.load_coco(coco)
    (tmp_path / "anime.json").write_text("{not json")
    with pytest.raises(PromptFileError, match="not JSON"):
        prompts.load_hps(tmp_path)
    (tmp_path / "anime.json").write_text("[]")
    with pytest.raises(PromptFileError, match="concept-art.json missing.*zhwang/HPDv2"):
        prompts.load_hps(tmp_path)
    monkeypatch.delenv("DISTAR_HPS_PROMPTS", raising=False)
    with pytest.raises(PromptFileError, match="DISTAR_HPS_PROMPTS"):  # HPSv2 is not shipped
        prompts.load_hps()
    assert not prompts.available("hps") and prompts.available("hps", tmp_path)
    with pytest.raises(KeyError, match="allowed"):
        prompts.load("drawbench")


def test_download_checks_the_hash(tmp_path):
    source = tmp_path / "src.txt"
    source.write_text("hello\n")
    url = source.as_uri()
    with pytest.raises(PromptFileError, match="sha256"):
        prompts.download(url, "0" * 64, tmp_path / "cache")
    good = prompts.sha256_of(source)
    assert prompts.download(url, good, tmp_path / "cache").read_text() == "hello\n"


def test_training_prompts_from_a_parti_file_a_line_file_or_built_in(tmp_path):
    """``world.prompts``: a Parti .tsv, one prompt per line, or (empty) the built-in list; the
    file forms once called ``texts()`` on a property and failed for every file."""
    tsv = tmp_path / "p.tsv"
    tsv.write_text("Prompt\tCategory\tChallenge\tNote\na red fox\tAnimals\tBasic\t\n")
    lines = tmp_path / "p.txt"
    lines.write_text("a lighthouse\na bowl of ramen\n")
    assert prompts.training_prompts(str(tsv)) == ["a red fox"]
    assert prompts.training_prompts(str(lines)) == ["a lighthouse", "a bowl of ramen"]
    assert prompts.training_prompts("") == list(prompts.BUILT_IN)
    with pytest.raises(FileNotFoundError, match="world.prompts"):
        prompts.training_prompts(str(tmp_path / "none.tsv"))


@needs_data
def test_shipped_prompt_files_are_the_public_ones(monkeypatch):
    """Without a path or variable, Parti is the shipped full file (the public sha256) and COCO
    the first 1,000 lines of the 30k file, each caption at its index in the full file (so its
    evaluation noise is the same whichever file is loaded)."""
    monkeypatch.delenv("DISTAR_PARTI_PROMPTS", raising=False)
    monkeypatch.delenv("DISTAR_COCO_CAPTIONS", raising=False)
    parti = prompts.load("parti")
    assert parti.source == "shipped:PartiPrompts.tsv" and len(parti) == 1632
    assert prompts.sha256_of(prompts.SHIPPED["parti"]) == prompts.PARTI_SHA256
    assert parti.texts == prompts.load_parti(DATA / "PartiPrompts.tsv").texts
    sample, full = prompts.load("coco"), prompts.load_coco(DATA / "coco2014_val_30k_captions.txt")
    assert len(sample) == 1000 and sample.source.startswith("shipped:")
    assert sample.prompts == full.prompts[:1000]
    assert prompts.select("coco", 4, None, "first", 0).texts == full.texts[:4]
    assert prompts.select("parti", 12, None, "stratified", 0).source == parti.source
