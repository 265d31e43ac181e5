"""A clone of this repository alone runs its tests, benchmarks and examples: nothing reads a
folder beside it, and the data it needs is in `data/` with its licences named."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from bitext import DATA

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("shoal", "tests", "benchmarks", "examples", "docs")
TEXT = {".py", ".toml", ".md", ".json", ".csv", ".tcss", ".txt"}

# Written so that this file's own text matches none of them (it is scanned too).
OUTSIDE = [
    # the sibling folder by relative path
    re.compile(r"\.\.[/\\]shared\b"),
    # "shared" as a part of a pathlib or os.path path
    re.compile(r"""/\s*["']shared["']|["']shared["']\s*/"""),
    re.compile(r"""(?:joinpath|path\.join)\([^)]*["']shared["']"""),
    # a data folder two or more levels above a file: outside the repository
    re.compile(r"""parents\[[2-9]\]\s*/\s*["'](?:shared|data)["']"""),
]


def outside_references(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if any(p.search(line) for p in OUTSIDE)]


def scanned_files() -> list[Path]:
    found = [ROOT / "README.md", ROOT / "pyproject.toml"]
    for top in SCANNED:
        found += [p for p in (ROOT / top).rglob("*") if p.is_file() and p.suffix in TEXT]
    return [p for p in found if p.is_file() and "__pycache__" not in p.parts]


def test_nothing_reads_outside_the_repository() -> None:
    found = {}
    for path in scanned_files():
        hits = outside_references(path.read_text(encoding="utf-8", errors="replace"))
        if hits:
            found[str(path.relative_to(ROOT))] = hits
    assert not found, f"these files reach outside the repository (use its data/ folder): {found}"


def test_the_scan_catches_what_it_looks_for() -> None:
    sibling = ".." + "/" + "shared"
    quoted = '"' + "shared" + '"'
    two_up = "parents[" + "2]"
    for line in [
        f'DATA = Path(__file__).resolve().{two_up} / {quoted} / "data"',
        f"see [the design]({sibling}/ARCHITECTURE.md)",
        f"uv run shoal eval {sibling}/data/clinc150.json",
        f"root.joinpath({quoted}, 'data')",
        f'CLINC = Path(__file__).resolve().{two_up} / "data" / "clinc150.json"',
    ]:
        assert outside_references(line), line
    for line in [
        'DATA = Path(__file__).resolve().parents[1] / "data"',
        "One loaded model per file, shared by every caller in the process.",
        "def test_shared_first_token_is_split_by_the_continuation() -> None:",
    ]:
        assert not outside_references(line), line


def test_the_data_is_in_the_repository() -> None:
    assert DATA == ROOT / "data"
    for name in ("bitext_customer_support.csv", "clinc150.json", "README.md"):
        assert (DATA / name).is_file(), name


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="not a git checkout")
def test_git_keeps_the_data() -> None:
    names = ["data/bitext_customer_support.csv", "data/clinc150.json", "data/README.md"]
    ignored = subprocess.run(["git", "check-ignore", *names], cwd=ROOT, capture_output=True, text=True)
    assert ignored.stdout.strip() == "", f".gitignore leaves out {ignored.stdout.split()}"


def test_the_data_readme_names_both_licences() -> None:
    readme = (DATA / "README.md").read_text(encoding="utf-8")
    for needed in (
        "CDLA-Sharing 1.0",
        "https://cdla.dev/sharing-1-0/",
        "Bitext",
        "CC BY 3.0",
        "https://creativecommons.org/licenses/by/3.0/",
        "Larson et al., 2019",
    ):
        assert needed in readme, needed
