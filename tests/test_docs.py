"""The documents a user reads: every relative link resolves, the README stays short and readable,
and nothing points to a document outside the repository."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SKIP_DIRS = {".git", ".venv", "runs", "node_modules", "__pycache__", ".pytest_cache"}

# [text](target) and ![alt](target); the target ends at whitespace or ')'.
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
# Documents the code once leaned on that are not in this repository (names split so this file
# does not name them itself).
EXTERNAL = tuple("".join(parts) for parts in (
    ("policy-and-", "ppo"), ("environment", ".md"), ("experiments", ".md"),
    ("synthetic-data", ".md"), ("platform", ".md"), ("guide ", "section"),
    ("shared/", "spec"), ("../", "shared"), ("training-failure-", "analysis"),
))


def _files(suffixes: tuple[str, ...]) -> list[Path]:
    found = []
    for path in ROOT.rglob("*"):
        rel = path.relative_to(ROOT)
        if any(part in SKIP_DIRS or part.endswith(".egg-info") for part in rel.parts):
            continue
        if path.is_file() and path.suffix in suffixes:
            found.append(path)
    return sorted(found)


def _docs() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")),
            *sorted((ROOT / "benchmarks").glob("*.md"))]


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    anchors = set()
    for line in markdown.splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            title = re.sub(r"[^\w\- ]", "", title)
            anchors.add(title.replace(" ", "-"))
    return anchors


def _broken_links(doc: Path, root: Path = ROOT) -> list[str]:
    text = doc.read_text(encoding="utf-8")
    # Code blocks and inline code are not links.
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    broken = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        dest = (doc.parent / path_part).resolve() if path_part else doc
        if not dest.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest.read_text()):
            broken.append(f"{target} (no such heading)")
        elif root not in (dest, *dest.parents):
            broken.append(f"{target} (outside the repository)")
    return broken


@pytest.mark.parametrize("doc", _docs(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(doc):
    assert _broken_links(doc) == []


def test_the_link_check_sees_a_broken_link(tmp_path):
    doc = tmp_path / "x.md"
    (tmp_path / "there.md").write_text("# A heading\n")
    doc.write_text("[a](there.md) [b](there.md#a-heading) [c](missing.md) [d](there.md#nope)\n"
                   "[e](https://example.com) `[f](inline.md)`\n")
    assert _broken_links(doc, tmp_path) == ["missing.md (no such file)",
                                             "there.md#nope (no such heading)"]


def test_readme_is_short_and_readable():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.encode()) <= 10_000
    long_lines = [i for i, line in enumerate(text.splitlines(), 1) if len(line) > 100]
    assert long_lines == [], f"README lines over 100 characters: {long_lines}"
    # The test command is the one CI runs (.ci/run runs `make test`).
    assert "make test" in text
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_nothing_names_a_document_outside_the_repository():
    here = Path(__file__).resolve()
    in_repo = {p.name for p in _files((".md",))}
    names = [n for n in EXTERNAL if n.rsplit("/", 1)[-1] not in in_repo]
    hits = []
    for path in _files((".py", ".md", ".toml", ".yaml", ".sh", ".cfg")):
        if path == here:
            continue
        for i, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(),
                                 1):
            hits += [f"{path.relative_to(ROOT)}:{i}: {n}" for n in names if n in line]
    assert hits == []
