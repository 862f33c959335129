"""Runbook descriptions, Markdown from the document's owner, rendered to HTML that is safe to show.

The Markdown is written by whoever owns the document (AWS, our admins, or another account that
shared it). Render it, then clean the HTML with nh3 (an allow-list sanitiser): no raw HTML,
scripts, styles, event handlers, images or non-web links survive.
The CSP would block most of that anyway; this makes the output safe on its own.
"""

from __future__ import annotations

import functools
import html as html_lib
import re

import markdown as markdown_lib
import nh3
from django.utils.safestring import SafeString, mark_safe

MAX_SOURCE_CHARS = 20_000  # SSM documents are at most 64 KB; a description is a fraction of that
_TAGS = {
    "p",
    "br",
    "hr",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "strong",
    "em",
    "b",
    "i",
    "code",
    "pre",
    "blockquote",
    "ul",
    "ol",
    "li",
    "a",
    "table",
    "thead",
    "tbody",
    "tr",
    "th",
    "td",
    "dl",
    "dt",
    "dd",
}
_PARAGRAPH = re.compile(r"<p>(.*?)</p>", re.DOTALL)
_ATTRIBUTES = {"a": {"href", "title"}, "th": {"align"}, "td": {"align"}}


@functools.lru_cache(maxsize=256)
def _render(source: str) -> str:
    # Headings are demoted two levels: the page already has its h1 and h2.
    html = markdown_lib.markdown(
        source, extensions=["tables", "fenced_code", "sane_lists"], output_format="html"
    )
    html = (
        html.replace("<h1", "<h3").replace("</h1>", "</h3>").replace("<h2", "<h4").replace("</h2>", "</h4>")
    )
    return nh3.clean(
        html,
        tags=_TAGS,
        attributes=_ATTRIBUTES,
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
        strip_comments=True,
    )


def render(source: str | None) -> SafeString:
    """Markdown → sanitised HTML, safe to put in a template."""
    text = str(source or "")[:MAX_SOURCE_CHARS]
    # Safe: nh3 has removed every tag and attribute not on the allow-list above.
    return mark_safe(_render(text))  # noqa: S308


@functools.lru_cache(maxsize=1024)
def excerpt(source: str | None, length: int = 180) -> str:
    """The first paragraph as plain text, for one line in the catalog (the template escapes it)."""
    html = _render(str(source or "")[:MAX_SOURCE_CHARS])
    paragraphs = _PARAGRAPH.findall(html) or [html]
    for paragraph in paragraphs:
        line = " ".join(html_lib.unescape(nh3.clean(paragraph, tags=set())).split())
        if line:
            return line if len(line) <= length else line[: length - 1].rstrip() + "…"
    return ""
