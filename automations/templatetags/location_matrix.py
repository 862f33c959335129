"""The multi-account matrix's rows as one piece of HTML, built in Python.

At 25 accounts × 4 Regions the same markup through template tags cost ~5 template lookups, filters and escapes per cell (about two
thirds of the request page's template time at 200 locations, bench/multi_account.py). Every value
is escaped here as the template would (format_html)."""
from __future__ import annotations

from django import template
from django.template.defaultfilters import truncatechars
from django.utils.html import format_html, format_html_join

register = template.Library()


def _cell(cell: dict, location_base: str) -> str:
    title = format_html(' title="{}"', cell["failure_message"]) if cell["failure_message"] else ""
    if cell["execution_id"]:
        body = format_html('<a href="{}{}/"><span class="badge badge-step-{}">{}</span> '
                           '<small class="mono hide-small location-id">{}…</small></a>', location_base,
                           cell["execution_id"], cell["aws_status"], cell["aws_status"], cell["execution_id"][:8])
    else:
        body = format_html('<span class="muted">{}</span>', "not started")
    if cell["failure_message"]:
        body += format_html('<br><small class="hide-small location-failure">{}</small>',
                            truncatechars(cell["failure_message"], 120))
    return format_html('<td class="location-{}"{}>{}</td>', cell["state"], title, body)


@register.simple_tag
def location_rows(matrix: dict, location_base: str) -> str:
    """<tr> per account of this page (selectors.location_matrix's rows), or the empty row."""
    if not matrix["rows"]:
        return format_html('<tr><td colspan="{}">No location matches.</td></tr>', len(matrix["regions"]) + 2)
    return format_html_join("\n", '<tr class="location-row"><th scope="row"><code>{}</code></th>'
                            '<td class="hide-small mono"><small>{}</small></td>{}</tr>', (
                                (row["account_id"], ", ".join(row["via"]),
                                 format_html_join("", "{}", ((_cell(cell, location_base),) for cell in row["cells"])))
                                for row in matrix["rows"]))
