"""Percentiles of a duration computed by the database, the same way on SQLite and PostgreSQL.

SQLite has no percentile function, so instead of PostgreSQL's percentile_cont this counts the
rows, then asks the database for the one or two rows around the wanted rank (ORDER BY + OFFSET).
The result is percentile_cont's: linear interpolation between the closest ranks. Two small
queries, whatever the number of rows; no row is read into Python except those two.
"""
from __future__ import annotations

import datetime as dt
import math

from django.db.models import DurationField, ExpressionWrapper, F, QuerySet

DURATION = "figure_duration"


def duration_between(queryset: QuerySet, *, start: str, end: str) -> QuerySet:
    """The queryset with `end - start` annotated, rows missing either left out."""
    return (queryset.filter(**{f"{start}__isnull": False, f"{end}__isnull": False})
            .annotate(**{DURATION: ExpressionWrapper(F(end) - F(start), output_field=DurationField())}))


def percentile(durations: QuerySet, fraction: float, *, count: int | None = None) -> dt.timedelta | None:
    """The `fraction` percentile (0.5 = median) of a queryset from duration_between; None if empty.

    Rank position fraction × (n − 1), interpolated between the rows on either side (percentile_cont).
    """
    if not 0 <= fraction <= 1:
        raise ValueError("fraction must be between 0 and 1")
    total = durations.count() if count is None else count
    if not total:
        return None
    position = fraction * (total - 1)
    low = math.floor(position)
    high = math.ceil(position)
    values = list(durations.order_by(DURATION, "pk").values_list(DURATION, flat=True)[low:high + 1])
    if len(values) == 1 or values[0] == values[-1]:
        return values[0]
    weight = position - low
    return values[0] + (values[1] - values[0]) * weight
