"""Reading server-rendered pages in tests that do not need a browser."""

from __future__ import annotations

import re


def cell_texts(fragment: str) -> list[list[str]]:
    """Each table row of an HTML fragment, as the text of its cells (tags dropped, spaces collapsed)."""
    return [[re.sub(r"<[^>]+>|\s+", " ", cell).strip() for cell in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S)]
            for row in re.findall(r"<tr[^>]*>(.*?)</tr>", fragment, re.S)]


def element(page: str, tag: str, element_id: str) -> str:
    """The inside of the element ``<tag id="element_id" ...>`` (not nested in one of its own tag)."""
    return re.search(rf'<{tag}[^>]* id="{element_id}"[^>]*>(.*?)</{tag}>', page, re.S).group(1)
