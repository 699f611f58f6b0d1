"""The documentation's links resolve, and the repository is self-contained.

Every relative link in README.md and docs/**/*.md names a file (or folder) of the repository, and a link with
an anchor into a markdown file names one of its headings. No file of the repository (run records under
results/ aside) cites the project's design notes that live outside it: the protocol and the persona
specifications are docs/protocol.md and docs/personas.md. Only the benchmark data may be read from the
`shared` folder beside the checkout, never committed here.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# [text](target) and ![alt](target), with an optional "title"; code spans and fenced blocks are removed first
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)

# Names of files outside the repository that it must not cite (split so that this file does not cite them),
# and any path into the `shared` folder except its data.
EXTERNAL = re.compile("|".join([re.escape("DESIGN" + ".md"), re.escape("PERSONAS" + ".md"),
                                r"shared" + r"/(?!data/)"]))


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: markup dropped, lower case, punctuation removed, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    text = text.replace("`", "").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(md: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for h in HEADING.findall(FENCE.sub("", md.read_text(encoding="utf-8"))):
        s = slug(h)
        out.add(s if s not in seen else f"{s}-{seen[s]}")  # repeated headings get -1, -2, ...
        seen[s] = seen.get(s, 0) + 1
    return out


def broken_links(md: Path, root: Path = ROOT) -> list[str]:
    """The relative links of `md` that name no file under `root`, or no heading of the markdown file named."""
    text = CODE_SPAN.sub("", FENCE.sub("", md.read_text(encoding="utf-8")))
    bad = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto: ...
            continue
        path, _, anchor = target.partition("#")
        dest = (md.parent / path).resolve() if path else md.resolve()
        if not dest.is_relative_to(root.resolve()) or not dest.exists():
            bad.append(f"{md.relative_to(root)}: {target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor.lower() not in anchors(dest):
            bad.append(f"{md.relative_to(root)}: {target} (no such heading)")
    return bad


def doc_files(root: Path = ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def repository_files(root: Path = ROOT) -> list[Path]:
    """The files git tracks or would track (ignored build outputs and runs left out); without git, a walk."""
    try:
        names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                               capture_output=True, check=True).stdout.decode().split("\0")
        files = [root / n for n in names if n]
    except (OSError, subprocess.CalledProcessError):
        skip = {".git", "__pycache__", "results", "runs", "data", ".venv", "venv", ".pytest_cache"}
        files = [p for p in root.rglob("*") if p.is_file() and not skip & set(p.relative_to(root).parts)]
    return [p for p in files if p.is_file() and p.relative_to(root).parts[0] != "results"]


def test_readme_and_docs_exist():
    for name in ("README.md", "docs/protocol.md", "docs/personas.md", "docs/RESULTS.md"):
        assert (ROOT / name).is_file(), name


@pytest.mark.parametrize("md", doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(md):
    assert broken_links(md) == []


def test_the_link_check_finds_broken_links(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# Title\n\n## Two words `x`\n")
    md = tmp_path / "README.md"
    md.write_text("[ok](docs/a.md) [ok](docs/a.md#two-words-x) [web](https://example.org/x.md)\n"
                  "`[code](missing.md)`\n```\n[fenced](missing.md)\n```\n"
                  "[gone](docs/b.md) [heading](docs/a.md#three) ![img](docs/c.png) [out](../../elsewhere.md)\n")
    assert broken_links(md, tmp_path) == [
        "README.md: docs/b.md (no such file)",
        "README.md: docs/a.md#three (no such heading)",
        "README.md: docs/c.png (no such file)",
        "README.md: ../../elsewhere.md (no such file)",
    ]


def test_no_file_cites_files_outside_the_repository():
    files = repository_files()
    assert ROOT / "README.md" in files and Path(__file__).resolve() in files  # the scan sees this very file
    hits = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:  # images, binary data
            continue
        for n, line in enumerate(text.splitlines(), 1):
            if EXTERNAL.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()[:120]}")
    assert hits == []


def test_the_citation_pattern_tells_data_from_notes():
    shared = "shar" + "ed/"
    assert EXTERNAL.search("see ../" + shared + "DESIGN" + ".md")
    assert EXTERNAL.search("the " + "PERSONAS" + ".md criterion")
    assert EXTERNAL.search("../" + shared + "hooks/x")
    assert not EXTERNAL.search("../shared/data/shakespeare and /work/shared/data/shakespeare")
    assert not EXTERNAL.search("docs/personas.md and docs/protocol.md")
