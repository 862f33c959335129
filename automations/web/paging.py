"""Keyset pages over requests, newest first by (created_at, id): the same cost on page 1,000 as on page 1.

Django's Paginator counts every row and skips with OFFSET, which grows with the list (a requester
with 10,000 requests paid for all of them on each page). A cursor is "<created_at µs>_<id>" of the
row a link continues from; it only narrows an already scoped queryset, so a forged one can skip
rows the user may see but never reveal one they may not.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from django.db.models import Q, QuerySet

_CURSOR = re.compile(r"^(\d{1,17})_(\d{1,18})$")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)


@dataclass
class KeysetPage:
    object_list: list
    newer: str | None  # pass as ?after= to see newer rows
    older: str | None  # pass as ?before= to see older rows


def cursor_of(row) -> str:
    # Integer arithmetic: a float timestamp can lose the last microsecond and skip a row.
    return f"{(row.created_at - _EPOCH) // _MICROSECOND}_{row.pk}"


def parse_cursor(value) -> tuple[datetime, int] | None:
    """(created_at, id) of a cursor from cursor_of(), or None when it is not one."""
    match = _CURSOR.match(value or "")
    if not match:
        return None
    try:
        moment = _EPOCH + int(match[1]) * _MICROSECOND
    except (OverflowError, OSError, ValueError):
        return None
    return moment, int(match[2])


def newest_first_page(queryset: QuerySet, *, before=None, after=None, size: int = 25) -> KeysetPage:
    """One page of `queryset` ordered -created_at, -id, continuing from a cursor in either direction."""
    before, after = parse_cursor(before), parse_cursor(after)
    if after is not None:
        moment, pk = after
        rows = list(queryset.filter(Q(created_at__gt=moment) | Q(created_at=moment, pk__gt=pk))
                    .order_by("created_at", "id")[:size + 1])
        page = rows[:size][::-1]
        return KeysetPage(page, newer=cursor_of(page[0]) if len(rows) > size else None,
                          older=cursor_of(page[-1]) if page else None)
    if before is not None:
        moment, pk = before
        queryset = queryset.filter(Q(created_at__lt=moment) | Q(created_at=moment, pk__lt=pk))
    rows = list(queryset.order_by("-created_at", "-id")[:size + 1])
    page = rows[:size]
    return KeysetPage(page, newer=cursor_of(page[0]) if before is not None and page else None,
                      older=cursor_of(page[-1]) if len(rows) > size else None)
