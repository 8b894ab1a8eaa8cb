"""Every relative link in README.md and docs/ points at a file of the checkout, and every
#anchor at a heading of the page it names (GitHub's heading anchors). No MPI, no network."""

import re
from pathlib import Path
from typing import Iterator, List, Set, Tuple

import pytest

from tests.support import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
_CODE_SPAN = re.compile(r"`[^`\n]*`")
# [text](target) and ![alt](target); the target ends at whitespace or the closing parenthesis.
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def _prose(text: str) -> str:
    """The page without code blocks and code spans, where brackets are not links."""
    return _CODE_SPAN.sub("", _FENCE.sub("", text))


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`|\*\*|__", "", heading.strip()).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(page: Path) -> Set[str]:
    seen: Set[str] = set()
    for line in _FENCE.sub("", page.read_text()).splitlines():
        match = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            base = _anchor(match.group(1))
            name, n = base, 0
            while name in seen:         # repeated headings get -1, -2, ...
                n += 1
                name = f"{base}-{n}"
            seen.add(name)
    return seen


def _links() -> Iterator[Tuple[Path, str]]:
    for page in PAGES:
        for target in _LINK.findall(_prose(page.read_text())):
            if not re.match(r"[a-z][a-z0-9+.-]*:", target):     # http:, mailto:, ...
                yield page, target


LINKS: List[Tuple[Path, str]] = list(_links())


def test_the_pages_have_relative_links():
    assert len(LINKS) > 10


@pytest.mark.parametrize("page,target", LINKS,
                         ids=[f"{p.relative_to(ROOT)}->{t}" for p, t in LINKS])
def test_link_target_exists(page: Path, target: str):
    path, _, anchor = target.partition("#")
    resolved = (page.parent / path).resolve() if path else page
    assert resolved.exists(), f"{page.relative_to(ROOT)} links to {target}, which does not exist"
    assert ROOT in resolved.parents or resolved == ROOT, f"{target} leaves the checkout"
    if anchor and resolved.suffix == ".md":
        assert anchor in _anchors(resolved), (
            f"{page.relative_to(ROOT)} links to {target}: no heading of "
            f"{resolved.relative_to(ROOT)} has the anchor #{anchor}")
