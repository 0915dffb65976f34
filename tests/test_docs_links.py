"""The README is the front door and docs/ the house: every relative link and image in README.md and docs/*.md
points at a file that exists (and a `#anchor` at a heading of that file), the README stays short, and every
docs page is reachable from it."""
import glob
import os
import re

import pytest

from conftest import ROOT

README_MAX_LINES = 260
# Pages written on another branch at the same time; a link to one is allowed while it does not exist yet and is
# checked like any other once it does.

LINK = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^\s*(```|~~~)")
CODE_SPAN = re.compile(r"(`+).*?\1")


def prose_lines(text):
    """The lines of a Markdown text outside fenced code blocks, with inline code spans blanked out."""
    inside = False
    for line in text.splitlines():
        if FENCE.match(line):
            inside = not inside
            continue
        if not inside:
            yield CODE_SPAN.sub("", line)


def links(text):
    """Every link and image target in `text` that is not a URL with a scheme or an e-mail address."""
    found = []
    for line in prose_lines(text):
        for target in LINK.findall(line):
            if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target):
                continue
            found.append(target)
    return found


def slug(heading):
    """The anchor GitHub gives a heading: lower case, inline markup and punctuation dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())  # a link in a heading keeps its text
    text = text.lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(text):
    """The anchors of every heading of a Markdown text (a repeated heading gets -1, -2, ... as on GitHub)."""
    seen = {}
    result = set()
    inside = False
    for line in text.splitlines():
        if FENCE.match(line):
            inside = not inside
            continue
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if inside or not match:
            continue
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def broken_links(page, root):
    """(target, reason) for every relative link of the Markdown file `page` that does not resolve under `root`."""
    text = open(page, encoding="utf-8").read()
    problems = []
    for target in links(text):
        path, _, anchor = target.partition("#")
        resolved = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
        relative = os.path.relpath(resolved, root)
        if relative.startswith(".."):
            problems.append((target, "leads outside the repository"))
        elif not os.path.exists(resolved):
            problems.append((target, f"no file {relative}"))
        elif anchor and resolved.endswith(".md") and anchor not in anchors(open(resolved, encoding="utf-8").read()):
            problems.append((target, f"no heading #{anchor} in {relative}"))
    return problems


def markdown_pages():
    return [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))


@pytest.mark.parametrize("page", markdown_pages(), ids=lambda p: os.path.relpath(p, ROOT))
def test_every_relative_link_and_image_resolves(page):
    assert broken_links(page, ROOT) == []


def test_the_readme_is_short():
    lines = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines: move sections to docs/"


def test_every_docs_page_is_linked_from_the_readme():
    readme = os.path.join(ROOT, "README.md")
    linked = {os.path.normpath(os.path.join(ROOT, target.partition("#")[0]))
              for target in links(open(readme, encoding="utf-8").read())}
    pages = sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
    assert pages, "no docs/*.md pages"
    assert [os.path.relpath(p, ROOT) for p in pages if p not in linked] == []


def test_the_checker_finds_a_broken_link_image_and_anchor(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "page.md").write_text("# A page\n\n## What survives `what`\n")
    (tmp_path / "docs" / "fig.png").write_bytes(b"")
    readme = tmp_path / "README.md"
    readme.write_text(
        "[ok](docs/page.md) [anchor ok](docs/page.md#what-survives-what) ![fig](docs/fig.png) [top](#title)\n"
        "# Title\n"
        "[gone](docs/gone.md) ![lost](docs/lost.png) [bad anchor](docs/page.md#nowhere) [self](#nowhere)\n"
        "[web](https://example.org/x.md) `[code](docs/in_code.md)`\n"
        "```\n[fenced](docs/fenced.md)\n```\n")
    assert [target for target, _ in broken_links(str(readme), str(tmp_path))] == [
        "docs/gone.md", "docs/lost.png", "docs/page.md#nowhere", "#nowhere"]
