"""Every relative link and image in README.md and docs/**/*.md points to a file of the repository, and a
``#anchor`` on a Markdown file to one of its headings (GitHub's heading ids). External links (``https:`` ...)
are not followed.

Cross-cutting (a property of the documentation, not of one module), so at the top level of tests/."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parents[1]

_FENCE = re.compile(r"^(```|~~~)")
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
# [text](target "title") and ![alt](target); the text may hold one level of brackets (an image in a link)
_INLINE = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+[\"'][^)]*[\"'])?\s*\)")
_REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def doc_files(root: Path = ROOT) -> list[Path]:
    docs = root / "docs"
    return [root / "README.md", *sorted(docs.rglob("*.md"))] if docs.is_dir() else [root / "README.md"]


def _prose_lines(text: str, *, code_spans: bool = False) -> list[tuple[int, str]]:
    """(line number, line) for every line outside fenced code blocks, its code spans removed unless asked."""
    out, fence = [], None
    for n, line in enumerate(text.splitlines(), 1):
        m = _FENCE.match(line.lstrip())
        if m:
            fence = None if fence == m.group(1) else (fence or m.group(1))
            continue
        if fence is None:
            out.append((n, line if code_spans else _CODE_SPAN.sub("", line)))
    return out


def links(text: str) -> list[tuple[int, str]]:
    """(line number, target) of every inline link, image and reference definition outside code."""
    found, previous = [], ""
    for n, line in _prose_lines(text):
        found += [(n, m.group(1)) for m in _INLINE.finditer(line)]
        # a reference definition cannot interrupt a paragraph ("[+0.78, +42.97]: the ..." inside one is text)
        if not previous.strip() and (m := _REFERENCE.match(line)):
            found.append((n, m.group(1)))
        previous = line
    return found


def slug(heading: str) -> str:
    """GitHub's id for a heading: its text without Markdown, lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links and images: their text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").lower()
    kept = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LN")
    return kept.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """The ids of a Markdown file's headings; a repeated heading gets -1, -2, ... as on GitHub."""
    ids, counts = set(), {}
    for _, line in _prose_lines(text, code_spans=True):
        if m := _HEADING.match(line):
            base = slug(m.group(1))
            n = counts.get(base, 0)
            counts[base] = n + 1
            ids.add(base if n == 0 else f"{base}-{n}")
    return ids


def broken_links(files: list[Path], root: Path = ROOT) -> list[str]:
    """One line per relative link that does not resolve: 'file:line: target (why)'."""
    problems = []
    for path in files:
        text = path.read_text(encoding="utf-8")
        for n, target in links(text):
            if _SCHEME.match(target) or target.startswith("//"):
                continue  # external: not followed
            where = f"{path.relative_to(root)}:{n}: {target}"
            file_part, _, anchor = target.partition("#")
            file_part = unquote(file_part.split("?", 1)[0])
            dest = (path.parent / file_part).resolve() if file_part else path
            if not dest.is_relative_to(root.resolve()):
                problems.append(f"{where} (outside the repository)")
            elif not dest.exists():
                problems.append(f"{where} (no such file)")
            elif anchor and dest.suffix == ".md" and unquote(anchor) not in anchors(
                    dest.read_text(encoding="utf-8")):
                problems.append(f"{where} (no heading with that id in {dest.name})")
    return problems


def test_every_relative_link_in_the_readme_and_docs_resolves() -> None:
    files = doc_files()
    assert (ROOT / "docs").is_dir() and len(files) > 1
    assert broken_links(files) == []


def test_the_checker_finds_broken_links_and_anchors(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A page\n\n## Two words, and `code`\n\ntext\n", encoding="utf-8")
    (tmp_path / "fig.png").write_bytes(b"")
    (tmp_path / "README.md").write_text(
        "# T\n\n![fig](fig.png) [ok](docs/a.md) [ok](docs/a.md#two-words-and-code) [self](#t)\n"
        "[web](https://example.com/x) `[code](missing.md)`\n\n```\n[fenced](missing.md)\n```\n"
        "[gone](docs/b.md) ![img](nope.png) [bad anchor](docs/a.md#nowhere) [out](../x.md)\n"
        "[+0.78, +42.97]: inside a paragraph, text\n\n[ref]: docs/missing.md\n", encoding="utf-8")
    problems = broken_links(doc_files(tmp_path), tmp_path)
    assert [p.split(": ", 1)[1] for p in problems] == [
        "docs/b.md (no such file)", "nope.png (no such file)",
        "docs/a.md#nowhere (no heading with that id in a.md)", "../x.md (outside the repository)",
        "docs/missing.md (no such file)"]


def test_heading_ids_follow_github() -> None:
    assert slug("2026-12-07 — The mechanism preset") == "2026-12-07--the-mechanism-preset"
    assert slug("Prompt conditions: standard and router-only") == "prompt-conditions-standard-and-router-only"
    assert slug("promoe bench --quick and bf16 autocast") == "promoe-bench---quick-and-bf16-autocast"
    assert slug("Measuring: `promoe bench`") == "measuring-promoe-bench"
    assert anchors("# A\n## A\n## A\n") == {"a", "a-1", "a-2"}
