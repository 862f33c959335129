"""The ops view for leads and auditors: five figures over a chosen period, with their exports.

Each figure is drawn as a server-rendered SVG bar chart (no script, no inline style: the site's
CSP holds) with its data table beside it, and each is exportable as CSV or JSON.

The figures come from automations.figures.ops, over what selectors.ops_requests lets the user
see: auditors everything, leads their teams. Anyone else is refused, and that is audited.
"""
from __future__ import annotations

import csv
import datetime as dt
import io
import json

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from automations import audit, policy, selectors
from automations.audit import ClientInfo
from automations.figures.ops import PERIODS, OpsFigures, ops_figures

DEFAULT_DAYS = 30
FIGURES = ("requests-per-day", "time-to-approve", "runs-by-outcome", "failure-rate", "busiest-targets")

# Chart geometry, in SVG user units; the SVG scales to its box (app.css .chart svg).
WIDTH = 400
LABEL_ROOM = 20  # a label line above each horizontal bar
BAR = 14
ROW = LABEL_ROOM + BAR + 8
VALUE_ROOM = 90  # the value written after the longest bar


def _refuse(request) -> None:
    with transaction.atomic():
        audit.record(action="authz.denied", actor=request.user, client=ClientInfo.from_request(request),
                     details={"status": 403, "method": request.method, "path": request.path[:500],
                              "route": "automations:ops"})
    raise PermissionDenied


def _days(value: str | None) -> int | None:
    if value in (None, ""):
        return DEFAULT_DAYS
    try:
        days = int(value)
    except (TypeError, ValueError):
        return None
    return days if days in PERIODS else None


def minutes(value: dt.timedelta | None) -> str:
    """'25 min', '1 h 5 min', '40 s'; '—' for no value."""
    if value is None:
        return "—"
    seconds = round(value.total_seconds())
    if seconds < 60:
        return f"{seconds} s"
    hours, rest = divmod(round(seconds / 60), 60)
    return f"{hours} h {rest} min" if hours else f"{rest} min"


def percent(fraction: float | None) -> str:
    return "—" if fraction is None else f"{fraction * 100:.0f}%"


#
# Charts
#

def horizontal_bars(rows: list[tuple[str, float, str]], *, kind: str = "") -> dict:
    """(label, value, value text) rows as bars with their label above; the longest bar fills the width."""
    top = max((value for _, value, _ in rows), default=0) or 1
    room = WIDTH - VALUE_ROOM
    bars = []
    for index, (label, value, text) in enumerate(rows):
        y = index * ROW
        width = round(room * value / top, 1) if value else 0
        bars.append({"label": label, "text": text, "label_y": y + 14, "y": y + LABEL_ROOM, "width": width,
                     "text_x": width + 6, "text_y": y + LABEL_ROOM + BAR - 2, "kind": kind})
    return {"width": WIDTH, "height": max(ROW * len(rows), ROW), "bars": bars, "empty": not rows}


def day_columns(per_day: list[tuple[dt.date, int]]) -> dict:
    """One column per day, the tallest reaching the top; the first and last days written below."""
    height, base = 140, 120
    top = max((count for _, count in per_day), default=0) or 1
    step = WIDTH / max(len(per_day), 1)
    columns = []
    for index, (day, count) in enumerate(per_day):
        tall = round((base - 10) * count / top, 1)
        columns.append({"x": round(index * step + step * 0.15, 1), "width": round(step * 0.7, 1),
                        "y": round(base - tall, 1), "height": tall, "title": f"{day.isoformat()}: {count}"})
    return {"width": WIDTH, "height": height, "base": base, "columns": columns, "top": top,
            "first": per_day[0][0].isoformat() if per_day else "",
            "last": per_day[-1][0].isoformat() if per_day else "", "empty": not any(c for _, c in per_day)}


def _charts(figures: OpsFigures) -> dict:
    return {
        "per_day": day_columns(figures.requests_per_day),
        "approve": horizontal_bars(
            [(name, value.total_seconds(), minutes(value)) for name, value in
             (("p50 (median)", figures.approve_p50), ("p90", figures.approve_p90)) if value is not None]),
        "outcomes": horizontal_bars([(label, count, str(count)) for _, label, count in figures.outcomes]),
        "runbooks": horizontal_bars(
            [(f"{rate.name} · {rate.region}", rate.failure_rate or 0,
              f"{percent(rate.failure_rate)} of {rate.finished} finished") for rate in figures.runbooks], kind="failed"),
        "targets": horizontal_bars([(target.label, target.runs, str(target.runs)) for target in figures.targets]),
    }


@login_required
@require_GET
def ops_view(request):
    if not selectors.may_see_ops(request.user):
        _refuse(request)
    days = _days(request.GET.get("days"))
    if days is None:
        messages.error(request, f"Choose a period of {', '.join(map(str, PERIODS))} days; showing {DEFAULT_DAYS}.")
        days = DEFAULT_DAYS
    figures = ops_figures(request.user, days=days)
    return render(request, "automations/ops.html", {
        "figures": figures, "charts": _charts(figures), "days": days, "periods": PERIODS,
        "approve_p50": minutes(figures.approve_p50), "approve_p90": minutes(figures.approve_p90),
        "rates": [(rate, percent(rate.failure_rate)) for rate in figures.runbooks],
        "scope": ("every team" if request.user.is_superuser or policy.is_auditor(request.user)
                  else ", ".join(selectors.teams_led_by(request.user).order_by("name").values_list("name", flat=True))),
    })


#
# Exports
#

def _seconds(value: dt.timedelta | None):
    return None if value is None else round(value.total_seconds(), 3)


def figure_rows(figures: OpsFigures, figure: str) -> tuple[list[str], list[list]]:
    """One figure as columns and rows: what the CSV and JSON exports hold, and the page's tables."""
    if figure == "requests-per-day":
        return ["day", "requests"], [[day.isoformat(), count] for day, count in figures.requests_per_day]
    if figure == "time-to-approve":
        return (["percentile", "seconds", "approved_requests"],
                [["p50", _seconds(figures.approve_p50), figures.approved],
                 ["p90", _seconds(figures.approve_p90), figures.approved]])
    if figure == "runs-by-outcome":
        return ["status", "label", "runs"], [[status, label, count] for status, label, count in figures.outcomes]
    if figure == "failure-rate":
        return (["runbook", "region", "runs", "succeeded", "failed", "cancelled", "failure_rate"],
                [[rate.name, rate.region, rate.runs, rate.succeeded, rate.failed, rate.cancelled,
                  None if rate.failure_rate is None else round(rate.failure_rate, 4)] for rate in figures.runbooks])
    if figure == "busiest-targets":
        return (["resource_id", "name", "label", "runs"],
                [[target.resource_id, target.name, target.label, target.runs] for target in figures.targets])
    raise KeyError(figure)


def _defused(value):
    """A text cell that a spreadsheet would run as a formula gets a leading quote (as audit export does)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return "" if value is None else value


@login_required
@require_GET
def ops_export(request, figure: str, fmt: str):
    if not selectors.may_see_ops(request.user):
        _refuse(request)
    days = _days(request.GET.get("days"))
    if figure not in FIGURES or fmt not in ("csv", "json") or days is None:
        return JsonResponse({"code": "invalid_export", "detail": f"Export one of {', '.join(FIGURES)} as csv or "
                             f"json, for {', '.join(map(str, PERIODS))} days."}, status=400)
    figures = ops_figures(request.user, days=days)
    columns, rows = figure_rows(figures, figure)
    with transaction.atomic():
        audit.record(action="ops.exported", actor=request.user, client=ClientInfo.from_request(request),
                     details={"figure": figure, "format": fmt, "days": days, "rows": len(rows)})
    name = f"delegate-{figure}-{days}d-{figures.until:%Y%m%d}"
    if fmt == "json":
        body = {"figure": figure, "days": days, "since": figures.since.isoformat(),
                "until": figures.until.isoformat(), "rows": [dict(zip(columns, row)) for row in rows]}
        response = HttpResponse(json.dumps(body, indent=1), content_type="application/json")
    else:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(columns)
        writer.writerows([[_defused(cell) for cell in row] for row in rows])
        response = HttpResponse(buffer.getvalue(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{name}.{fmt}"'
    return response
