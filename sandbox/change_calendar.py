"""Change Calendar: ChangeCalendar documents (iCalendar content) and GetCalendarState.

A ChangeCalendar document is iCalendar text (DocumentFormat TEXT) whose `X-CALENDAR-TYPE` says
what the calendar is between events: `DEFAULT_OPEN` (events are CLOSED periods) or
`DEFAULT_CLOSED` (events are OPEN periods), as AWS stores it. GetCalendarState evaluates the
events of each named calendar's default version at `AtTime` (now when absent), recurrences
included (`recurring-ical-events`), and answers OPEN only if every calendar is open.
`NextTransitionTime` is when that combined state next changes, looked for up to a year ahead
(left out when nothing changes within it).

Errors as AWS names them: `InvalidDocument` (no such document), `InvalidDocumentType` (not a
ChangeCalendar), `UnsupportedCalendarException` (content the calendar cannot be read from),
`ValidationException` (no calendar names, or an AtTime that is not ISO 8601).
"""

from __future__ import annotations

import datetime as dt

import icalendar
import recurring_ical_events

from . import document_store
from .errors import AwsError, validation
from .state import Request

CALENDAR_TYPES = ("DEFAULT_OPEN", "DEFAULT_CLOSED")
HORIZON = dt.timedelta(days=366)
UTC = dt.timezone.utc


def parse(text: str) -> tuple[icalendar.Calendar, str]:
    """The calendar and its type; raises ValueError saying what is wrong."""
    try:
        calendar = icalendar.Calendar.from_ical(text)
    except ValueError as exc:
        raise ValueError(f"the content is not iCalendar: {exc}") from None
    kind = str(calendar.get("X-CALENDAR-TYPE", "")).strip()
    if kind not in CALENDAR_TYPES:
        raise ValueError("X-CALENDAR-TYPE must be DEFAULT_OPEN or DEFAULT_CLOSED")
    return calendar, kind


def check_content(text: str) -> None:
    """CreateDocument/UpdateDocument of a ChangeCalendar: AWS refuses content it cannot read."""
    try:
        parse(text)
    except ValueError as exc:
        raise AwsError("InvalidDocumentContent", f"The content for the document is not valid: {exc}.") from None


def _utc(value) -> dt.datetime:
    """An event boundary as an aware UTC datetime: all-day dates start at midnight UTC; floating
    times (no TZID, no Z) are read as UTC."""
    if not isinstance(value, dt.datetime):
        value = dt.datetime.combine(value, dt.time())
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _event_periods(calendar: icalendar.Calendar, start: dt.datetime, end: dt.datetime) -> list[tuple]:
    """The events' (start, end) periods overlapping [start, end), overlapping ones joined."""
    periods = []
    for event in recurring_ical_events.of(calendar).between(start, end):
        if event.name != "VEVENT" or event.get("DTSTART") is None:
            continue
        begin = _utc(event["DTSTART"].dt)
        finish = _utc(event["DTEND"].dt) if event.get("DTEND") is not None else begin
        if finish > begin:
            periods.append((begin, finish))
    periods.sort()
    joined: list[list] = []
    for begin, finish in periods:
        if joined and begin <= joined[-1][1]:
            joined[-1][1] = max(joined[-1][1], finish)
        else:
            joined.append([begin, finish])
    return [tuple(p) for p in joined]


class _Calendar:
    """One calendar's state over [at - a day, at + HORIZON)."""

    def __init__(self, text: str, at: dt.datetime):
        calendar, self.kind = parse(text)
        # Look back a little so an event that began before `at` and still runs is found.
        self.periods = _event_periods(calendar, at - dt.timedelta(days=1), at + HORIZON)

    def is_open(self, when: dt.datetime) -> bool:
        in_event = any(begin <= when < finish for begin, finish in self.periods)
        return in_event if self.kind == "DEFAULT_CLOSED" else not in_event

    def boundaries(self) -> set[dt.datetime]:
        return {moment for period in self.periods for moment in period}


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _at_time(raw) -> tuple[dt.datetime, str]:
    if raw in (None, ""):
        now = dt.datetime.now(UTC).replace(microsecond=0)
        return now, _iso(now)
    try:
        parsed = dt.datetime.fromisoformat(str(raw).replace("z", "Z"))
    except ValueError:
        raise validation(f"AtTime {raw!r} is not an ISO 8601 time.") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC), str(raw)  # AWS echoes the AtTime it was given


def _calendar_text(region, name: str) -> str:
    record = document_store.resolve(region, name)  # InvalidDocument when unknown
    if record["DocumentType"] != "ChangeCalendar":
        raise AwsError(
            "InvalidDocumentType", f"The document {name} is a {record['DocumentType']} document, not a ChangeCalendar."
        )
    return document_store.version_of(record, None)["Content"]


def get_calendar_state(req: Request) -> dict:
    names = req.params.get("CalendarNames")
    if not isinstance(names, list) or not names:
        raise validation("CalendarNames must name at least one ChangeCalendar document.")
    at, at_text = _at_time(req.params.get("AtTime"))
    calendars = []
    for name in names:
        text = _calendar_text(req.region, str(name))
        try:
            calendars.append(_Calendar(text, at))
        except ValueError as exc:
            raise AwsError("UnsupportedCalendarException", f"The calendar {name} is not supported: {exc}.") from None

    def open_at(when: dt.datetime) -> bool:
        return all(calendar.is_open(when) for calendar in calendars)

    now_open = open_at(at)
    answer = {"State": "OPEN" if now_open else "CLOSED", "AtTime": at_text}
    for moment in sorted(set().union(*(c.boundaries() for c in calendars))):
        if at < moment < at + HORIZON and open_at(moment) != now_open:
            answer["NextTransitionTime"] = _iso(moment)
            break
    return answer


OPERATIONS = {"GetCalendarState": get_calendar_state}
