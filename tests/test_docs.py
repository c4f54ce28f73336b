"""The README and docs/: every relative link and #anchor resolves, every page is on the README's map, nothing
points outside the repository, and every command's ``--help`` ends with a page that exists. Fast, no network.

Anchors follow GitHub's rules for heading ids: the heading's text as rendered (code spans and links keep their
text), lower-cased, punctuation dropped (letters, digits, ``_``, ``-`` and spaces stay), each space a hyphen; a
repeated id gets ``-1``, ``-2`` ... in order. Headings inside fenced code blocks are not headings.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
import typer
from typer.testing import CliRunner

from klipnote.cli import app
from klipnote.cli.app import DOCS

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

_FENCE = re.compile(r"^\s{0,3}(```|~~~)")
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)(?:\s+#+)?\s*$")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1")
_INLINE_LINK = re.compile(r"!?\[((?:[^\[\]]|\[[^\]]*\])*)\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
_HTML_ID = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"")
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks."""
    out, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            out.append((number, line))
    return out


def slug(heading: str) -> str:
    """GitHub's id for a heading's text, before de-duplication."""
    text = _CODE_SPAN.sub(lambda m: m.group(2), heading)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link shows its text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML shows nothing of its tags
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for _, line in prose_lines(page.read_text()):
        found.update(_HTML_ID.findall(line))
        match = _HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(page: Path) -> list[tuple[int, str]]:
    """(line number, target) of every inline and reference link and image outside code."""
    out = []
    for number, line in prose_lines(page.read_text()):
        reference = _REFERENCE.match(line)
        if reference:
            out.append((number, reference.group(1)))
            continue
        prose = _CODE_SPAN.sub("", line)  # `[x](y)` in code is not a link; [`x`](y) still is
        out.extend((number, m.group(2)) for m in _INLINE_LINK.finditer(prose))
    return out


def broken(source: Path, target: str) -> str | None:
    """Why *target*, linked from *source*, does not resolve; None when it does (or is not a local link)."""
    if _SCHEME.match(target) or target.startswith("//"):
        return None  # a web address: not checked here (no network)
    path, _, anchor = target.partition("#")
    dest = (source.parent / unquote(path)).resolve() if path else source
    if not dest.is_relative_to(REPO):
        return f"{target}: leaves the repository (readers have only the repository)"
    if not dest.exists():
        return f"{target}: {dest.relative_to(REPO)} does not exist"
    if anchor:
        if dest.suffix != ".md" or dest.is_dir():
            return f"{target}: an anchor into {dest.relative_to(REPO)}, which is not a markdown page"
        if unquote(anchor) not in anchors(dest):
            return f"{target}: no heading in {dest.relative_to(REPO)} has the id #{anchor}"
    return None


# ---------------------------------------------------------------------- the rules themselves


@pytest.mark.parametrize(("heading", "expected"), [
    ("Quick start", "quick-start"),
    ("JSON output (stable)", "json-output-stable"),
    ("`klipnote models pull | list | verify`", "klipnote-models-pull--list--verify"),
    ("A job's life", "a-jobs-life"),
    ("Several hosts: NFS, *not* SMB", "several-hosts-nfs-not-smb"),
    ("See [the spool](spool.md) first", "see-the-spool-first"),
    ("snake_case and CJK 中文", "snake_case-and-cjk-中文"),
])
def test_slug_follows_github(heading: str, expected: str) -> None:
    assert slug(heading) == expected


def test_anchors_number_duplicates_and_skip_code(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Title\n## Usage\n```sh\n# not a heading\n```\n## Usage\n### Usage\n<a id=\"custom\"></a>\n")
    assert anchors(page) == {"title", "usage", "usage-1", "usage-2", "custom"}


def test_links_outside_code_only(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "[a](a.md) and `[b](b.md)` and [`c`](c.md#x) ![d](d.png)\n```\n[e](e.md)\n```\n[f]: f.md\n"
        "[web](https://example.org) [here](#top)\n"
    )
    assert [target for _, target in links(page)] == ["a.md", "c.md#x", "d.png", "f.md", "https://example.org",
                                                     "#top"]


def test_broken_says_why(tmp_path: Path) -> None:
    readme = REPO / "README.md"
    assert broken(readme, "docs/spool.md#layout") is None
    assert broken(readme, "https://example.org/x") is None
    assert "does not exist" in broken(readme, "docs/nope.md")
    assert "no heading" in broken(readme, "docs/spool.md#nope")
    assert "leaves the repository" in broken(readme, "../shared/DESIGN.md")


# ---------------------------------------------------------------------- the pages


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_link_and_anchor_resolves(page: Path) -> None:
    problems = [f"{page.relative_to(REPO)}:{number}: {why}"
                for number, target in links(page) if (why := broken(page, target))]
    assert not problems, "\n".join(problems)


def test_every_page_of_docs_is_on_the_readme_map() -> None:
    readme = REPO / "README.md"
    mapped = {(readme.parent / target.partition("#")[0]).resolve() for _, target in links(readme)}
    missing = [str(page.relative_to(REPO)) for page in PAGES[1:] if page.resolve() not in mapped]
    assert not missing, f"add these to the README's Documentation table: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_page_sends_readers_to_the_design_brief(page: Path) -> None:
    assert "DESIGN.md" not in page.read_text(), "readers have only the repository: say it in docs/ instead"


# ---------------------------------------------------------------------- --help points to the docs


def commands(group: Any, path: str = "") -> dict[str, Any]:
    """Every command and group under a click group by its path ("config show"); "" is the root.

    Duck-typed: typer 0.28 builds its commands on its own copy of click, not on the ``click`` package.
    """
    found = {path: group}
    for name, command in group.commands.items():
        full = f"{path} {name}".strip()
        if hasattr(command, "commands"):
            found.update(commands(command, full))
        else:
            found[full] = command
    return found


def test_every_command_has_a_docs_page_that_resolves() -> None:
    every = commands(typer.main.get_command(app))
    assert sorted(every) == sorted(DOCS), "klipnote.cli.app.DOCS names exactly the commands there are"
    for path, command in every.items():
        assert command.epilog == f"Docs: {DOCS[path]}", path
        assert broken(REPO / "README.md", DOCS[path]) is None, (path, broken(REPO / "README.md", DOCS[path]))


@pytest.mark.parametrize(("argv", "page"), [
    ([], "README.md#documentation"), (["worker"], "docs/workers.md"), (["config", "show"], None),
])
def test_help_ends_with_its_page(argv: list[str], page: str | None) -> None:
    result = CliRunner().invoke(app, [*argv, "--help"], prog_name="klipnote", env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert f"Docs: {page or DOCS[' '.join(argv)]}" in result.output
