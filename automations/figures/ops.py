"""The ops view's figures, each one aggregate query over the requests a selector lets the user see.

Requests per day, time to approve, runs by outcome, failure rate per runbook, busiest targets,
all over one population: the requests submitted in the chosen period that a selector lets the
user see (selectors.ops_requests).

"Runs" are the requests a worker tried to start in AWS (dispatched_at set). A failure is a run
that failed, timed out or could not start; the failure rate is failures over finished runs that
succeeded or failed (cancelled runs are counted apart, neither success nor failure).
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from django.db import connection
from django.db.models import Count, Q, QuerySet
from django.db.models.functions import TruncDate
from django.utils import timezone

from automations import selectors
from automations.figures.percentiles import duration_between, percentile
from automations.models import AutomationRequest

PERIODS = (7, 30, 90)
TOP_TARGETS = 10
Status = AutomationRequest.Status
FAILURES = (Status.FAILED, Status.TIMED_OUT, Status.DISPATCH_FAILED)


@dataclass(frozen=True)
class RunbookRate:
    runbook_id: int
    name: str
    region: str
    runs: int
    succeeded: int
    failed: int
    cancelled: int

    @property
    def finished(self) -> int:
        return self.succeeded + self.failed

    @property
    def failure_rate(self) -> float | None:
        """Failures over finished runs (0–1), None when none finished."""
        return self.failed / self.finished if self.finished else None


@dataclass(frozen=True)
class Target:
    resource_id: str
    name: str
    runs: int

    @property
    def label(self) -> str:
        return f"{self.name} ({self.resource_id})" if self.name else self.resource_id


@dataclass
class OpsFigures:
    days: int
    since: dt.datetime
    until: dt.datetime
    submitted: int = 0
    requests_per_day: list[tuple[dt.date, int]] = field(default_factory=list)
    approved: int = 0
    approve_p50: dt.timedelta | None = None
    approve_p90: dt.timedelta | None = None
    outcomes: list[tuple[str, str, int]] = field(default_factory=list)  # (status, label, runs)
    runbooks: list[RunbookRate] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)

    @property
    def runs(self) -> int:
        return sum(count for _, _, count in self.outcomes)


def period_start(days: int, now: dt.datetime) -> dt.datetime:
    """Midnight UTC at the start of the period: today and the days-1 days before it."""
    today = now.astimezone(dt.UTC).date()
    return dt.datetime.combine(today - dt.timedelta(days=days - 1), dt.time.min, tzinfo=dt.UTC)


def ops_figures(user, *, days: int, now: dt.datetime | None = None) -> OpsFigures:
    if days not in PERIODS:
        raise ValueError(f"days must be one of {PERIODS}")
    now = now or timezone.now()
    since = period_start(days, now)
    submitted = selectors.ops_requests(user).filter(created_at__gte=since, created_at__lte=now)
    figures = OpsFigures(days=days, since=since, until=now)
    figures.requests_per_day = _per_day(submitted, since.date(), days)
    figures.submitted = sum(count for _, count in figures.requests_per_day)
    approvals = duration_between(submitted, start="created_at", end="approved_at")
    figures.approved = approvals.count()
    figures.approve_p50 = percentile(approvals, 0.5, count=figures.approved)
    figures.approve_p90 = percentile(approvals, 0.9, count=figures.approved)
    runs = submitted.filter(dispatched_at__isnull=False)
    figures.outcomes = _outcomes(runs)
    figures.runbooks = _runbook_rates(runs)
    figures.targets = busiest_targets(runs)
    return figures


def _per_day(submitted: QuerySet, first: dt.date, days: int) -> list[tuple[dt.date, int]]:
    counted = dict(submitted.order_by().annotate(day=TruncDate("created_at", tzinfo=dt.UTC))
                   .values("day").annotate(n=Count("pk")).values_list("day", "n"))
    return [(first + dt.timedelta(days=offset), counted.get(first + dt.timedelta(days=offset), 0))
            for offset in range(days)]


def _outcomes(runs: QuerySet) -> list[tuple[str, str, int]]:
    counted = dict(runs.order_by().values("status").annotate(n=Count("pk")).values_list("status", "n"))
    # In the lifecycle's order, so the same outcome is always in the same place.
    return [(status, label, counted[status]) for status, label in Status.choices if counted.get(status)]


def _runbook_rates(runs: QuerySet) -> list[RunbookRate]:
    rows = (runs.order_by().values("runbook_id", "runbook__name", "runbook__region")
            .annotate(runs=Count("pk"), succeeded=Count("pk", filter=Q(status=Status.SUCCEEDED)),
                      failed=Count("pk", filter=Q(status__in=FAILURES)),
                      cancelled=Count("pk", filter=Q(status=Status.CANCELLED))))
    rates = [RunbookRate(runbook_id=row["runbook_id"], name=row["runbook__name"], region=row["runbook__region"],
                         runs=row["runs"], succeeded=row["succeeded"], failed=row["failed"],
                         cancelled=row["cancelled"]) for row in rows]
    # Worst first; runbooks with nothing finished last.
    return sorted(rates, key=lambda r: (r.failure_rate is None, -(r.failure_rate or 0), -r.runs, r.name, r.region))


# One row per (request, target) from the JSON list of resources, counted per target; the name is
# the Name tag stored by the newest of those requests. The JSON functions differ by database.
_TARGETS_SQL = {
    "postgresql": """
        SELECT t.target, COUNT(*) AS runs,
               (ARRAY_AGG(COALESCE(r.resource_names ->> t.target, '') ORDER BY r.id DESC))[1] AS name
        FROM automations_automationrequest r
        CROSS JOIN LATERAL jsonb_array_elements_text(
            CASE WHEN jsonb_typeof(r.resources) = 'array' THEN r.resources ELSE '[]'::jsonb END) AS t(target)
        WHERE r.id IN ({ids})
        GROUP BY t.target ORDER BY runs DESC, t.target LIMIT %s""",
    # SQLite: in an aggregate query with MAX(), bare columns come from the row holding the maximum
    # (https://sqlite.org/lang_select.html#bare_columns_in_an_aggregate_query): the newest request.
    "sqlite": """
        SELECT t.value AS target, COUNT(*) AS runs, COALESCE(n.value, '') AS name, MAX(r.id)
        FROM automations_automationrequest r
        JOIN json_each(CASE WHEN json_type(r.resources) = 'array' THEN r.resources ELSE '[]' END) t
        LEFT JOIN json_each(r.resource_names) n ON n.key = t.value
        WHERE r.id IN ({ids})
        GROUP BY t.value ORDER BY runs DESC, t.value LIMIT %s""",
}


def busiest_targets(runs: QuerySet, *, limit: int = TOP_TARGETS) -> list[Target]:
    """The targets with the most runs, most first (ties by id), named as their newest request named them."""
    ids_sql, ids_params = runs.order_by().values("pk").query.sql_with_params()
    sql = _TARGETS_SQL[connection.vendor].format(ids=ids_sql)
    with connection.cursor() as cursor:
        cursor.execute(sql, (*ids_params, limit))
        rows = cursor.fetchall()
    return [Target(resource_id=str(row[0]), name=str(row[2] or ""), runs=int(row[1])) for row in rows]
