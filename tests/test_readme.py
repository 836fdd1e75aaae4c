"""README.md: the table of contents lists every `##` section in order, and every in-page link
(`](#anchor)`) points at a heading that exists (GitHub's anchor rules)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
BEGIN, END = "<!-- toc -->", "<!-- /toc -->"


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation but `-` and `_` dropped, spaces to `-`."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def sections(text: str) -> list[str]:
    body = re.sub(r"```.*?```", "", text, flags=re.S)  # `## ` inside code blocks is not a heading
    return [line[3:] for line in body.splitlines() if line.startswith("## ")]


def toc(text: str) -> list[tuple[str, str]]:
    block = text[text.index(BEGIN) + len(BEGIN):text.index(END)]
    return re.findall(r"^- \[(.+?)\]\(#(.+?)\)", block, flags=re.M)


def test_the_table_of_contents_lists_every_section_in_order():
    text = README.read_text(encoding="utf-8")
    listed = toc(text)
    assert [target for _, target in listed] == [anchor(h) for h in sections(text)]


def test_every_in_page_link_points_at_a_heading():
    text = README.read_text(encoding="utf-8")
    body = re.sub(r"```.*?```", "", text, flags=re.S)
    headings = {anchor(line.lstrip("#")) for line in body.splitlines() if re.match(r"#{1,6} ", line)}
    missing = sorted({a for a in re.findall(r"\]\(#([^)]+)\)", body)} - headings)
    assert missing == []


def test_anchor_follows_githubs_rules():
    assert anchor("Choosing a backbone: `hf-transfer rank`") == "choosing-a-backbone-hf-transfer-rank"
    assert anchor("Quick start (works offline)") == "quick-start-works-offline"
