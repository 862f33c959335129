"""The change-calendar gate end to end against the sandbox: dispatch asks GetCalendarState (boto3
over HTTP), a CLOSED calendar holds the request until it opens (audited once, released by the
outbox sweep), and the emergency override freeze windows use lets two approvers past it."""
from __future__ import annotations

import datetime as dt
import uuid

import boto3
import pytest
from django.utils import timezone

from automations import selectors, services, tasks
from automations.models import AuditEvent, AutomationRequest, DispatchOutbox, FreezeOverride
from automations.services.requests import requests_release_held

Status = AutomationRequest.Status
REGION = "eu-west-1"


def ssm(sb):
    return boto3.client("ssm", endpoint_url=sb.url, region_name=REGION, aws_access_key_id="test",
                        aws_secret_access_key="test")


def ical_time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def calendar(sb, *, closed_from: dt.datetime, closed_until: dt.datetime) -> str:
    """A DEFAULT_OPEN ChangeCalendar document with one CLOSED event; its name."""
    name = f"Test-Calendar-{uuid.uuid4().hex[:8]}"
    content = calendar_content(name, closed_from=closed_from, closed_until=closed_until)
    ssm(sb).create_document(Name=name, Content=content, DocumentType="ChangeCalendar", DocumentFormat="TEXT")
    return name


def calendar_content(name: str, *, closed_from: dt.datetime, closed_until: dt.datetime) -> str:
    return "\r\n".join([
        "BEGIN:VCALENDAR", "PRODID:-//AWS//Change Calendar 1.0//EN", "VERSION:2.0", "X-CALENDAR-TYPE:DEFAULT_OPEN",
        "BEGIN:VEVENT", f"UID:{name}", "DTSTAMP:20260101T000000Z", f"DTSTART:{ical_time(closed_from)}",
        f"DTEND:{ical_time(closed_until)}", "SUMMARY:Quarter-end change freeze", "END:VEVENT", "END:VCALENDAR", ""])


@pytest.fixture(autouse=True)
def _own_documents(sb):
    """The session's sandbox is shared: calendars a test made are deleted after it."""
    before = set(sb.state.region(REGION).documents)
    yield
    for name in set(sb.state.region(REGION).documents) - before:
        ssm(sb).delete_document(Name=name)


def gate(team, *names):
    team.change_calendars = list(names)
    team.save(update_fields=["change_calendars"])


def starts(sb, request):
    return [c for c in sb.calls.of("StartAutomationExecution") if c["client_token"] == str(request.client_token)]


def held_events(request):
    return AuditEvent.objects.filter(request=request, action="dispatch.held")


def in_process(pk):
    tasks.dispatch_request.run(pk)


class TestCalendarHold:
    def test_closed_calendar_holds_the_request_then_releases_it_when_it_opens(self, world, submit, sb, client):
        now = timezone.now().replace(microsecond=0)
        opens = now + dt.timedelta(hours=1)
        name = calendar(sb, closed_from=now - dt.timedelta(hours=1), closed_until=opens)
        gate(world.platform, name)
        request = services.request_approve(request=submit(), actor=world.bob)
        assert request.status == Status.APPROVED

        assert services.request_dispatch(request_id=request.pk) == "held"
        request.refresh_from_db()
        assert request.status == Status.APPROVED and not starts(sb, request)
        asked = sb.calls.of("GetCalendarState")
        assert asked and asked[-1]["params"]["CalendarNames"] == [name] and asked[-1]["error"] is None
        row = DispatchOutbox.objects.get(pk=request.pk)
        assert row.next_attempt_at == opens  # AWS's NextTransitionTime
        event = held_events(request).get()
        assert event.details["reason"] == "change calendar" and event.details["calendars"] == [name]
        assert event.details["state"] == "CLOSED"
        message = f"held by change calendar {name} until {opens:%Y-%m-%d %H:%M} UTC"
        assert event.details["message"] == message
        # The request page and the API say so, beside Delegate's own freezes.
        hold = selectors.request_hold(request)
        assert hold["message"] == message and hold["calendars"] == [name]
        client.force_login(world.alice)
        page = client.get(f"/requests/{request.pk}/").content.decode()
        assert message in page and "<strong>CLOSED</strong>" in page and name in page
        api = client.get(f"/api/v1/requests/{request.pk}/").json()
        assert api["hold"]["message"] == message and api["hold"]["calendars"] == [name]

        # Looked at again while still closed (the sweeper re-drives it): no second audit event.
        DispatchOutbox.objects.filter(pk=request.pk).update(next_attempt_at=timezone.now())
        assert services.request_dispatch(request_id=request.pk) == "held"
        assert held_events(request).count() == 1

        # The calendar's owner ends the closed period now (a new default version), and the row's time
        # comes (as it would at the OPEN time): the periodic sweep re-drives it and AWS says OPEN.
        ended = calendar_content(name, closed_from=now - dt.timedelta(hours=1), closed_until=timezone.now())
        ssm(sb).update_document(Name=name, Content=ended, DocumentVersion="$LATEST", DocumentFormat="TEXT")
        ssm(sb).update_document_default_version(Name=name, DocumentVersion="2")
        DispatchOutbox.objects.filter(pk=request.pk).update(next_attempt_at=timezone.now())
        assert services.dispatch_outbox_sweep(publish=in_process) == 1  # the periodic machinery
        request.refresh_from_db()
        assert request.status == Status.RUNNING and len(starts(sb, request)) == 1
        assert held_events(request).count() == 1
        assert selectors.request_hold(request) is None

    def test_an_open_calendar_lets_the_request_go(self, world, submit, sb):
        now = timezone.now()
        gate(world.platform, calendar(sb, closed_from=now + dt.timedelta(hours=1), closed_until=now + dt.timedelta(hours=2)))
        request = services.request_approve(request=submit(), actor=world.bob)
        assert services.request_dispatch(request_id=request.pk) == "started"
        assert not held_events(request).exists()

    def test_a_calendar_aws_cannot_evaluate_holds_the_request(self, world, submit, sb):
        gate(world.platform, "No-Such-Calendar")
        request = services.request_approve(request=submit(), actor=world.bob)
        assert services.request_dispatch(request_id=request.pk) == "held"
        event = held_events(request).get()
        assert event.details["state"] == "UNKNOWN" and event.details["error"].startswith("InvalidDocument")
        assert not starts(sb, request)

    def test_runbook_calendars_gate_every_team(self, world, submit, sb):
        now = timezone.now()
        name = calendar(sb, closed_from=now - dt.timedelta(hours=1), closed_until=now + dt.timedelta(hours=1))
        world.runbook.change_calendars = [name]
        world.runbook.save(update_fields=["change_calendars"])
        request = services.request_approve(request=submit(actor=world.dave, team=world.data,
                                                          parameters={"InstanceId": [world.etl1]}), actor=world.erin)
        assert services.request_dispatch(request_id=request.pk) == "held"


class TestCalendarOverride:
    def test_two_emergency_overrides_let_the_request_past_a_closed_calendar(self, world, submit, sb):
        now = timezone.now()
        name = calendar(sb, closed_from=now - dt.timedelta(hours=1), closed_until=now + dt.timedelta(hours=2))
        gate(world.platform, name)
        request = services.request_approve(request=submit(), actor=world.bob, emergency=True,
                                           comment="payments down, INC-7")
        assert request.status == Status.SUBMITTED  # one override is not enough, as in a freeze
        held = AuditEvent.objects.get(request=request, action="request.approval_held")
        assert held.details["reason"] == "change calendar" and held.details["calendars"] == [name]
        assert requests_release_held() == 0  # still CLOSED: the tick leaves it waiting
        request = services.request_approve(request=request, actor=world.frank, emergency=True,
                                           comment="confirmed, INC-7")
        assert request.status == Status.APPROVED
        approved = AuditEvent.objects.get(request=request, action="request.approved")
        assert approved.details["emergency_override"] is True and approved.details["calendars"] == [name]
        overrides = list(FreezeOverride.objects.filter(approval__request=request))
        assert len(overrides) == 2 and all(o.calendars == [name] and o.freeze_id is None for o in overrides)
        sb.calls.clear()
        assert services.request_dispatch(request_id=request.pk) == "started"
        assert len(starts(sb, request)) == 1 and not held_events(request).exists()

    def test_emergency_without_a_closed_calendar_or_freeze_is_refused(self, world, submit, sb):
        from automations.errors import NotAllowed

        now = timezone.now()
        gate(world.platform, calendar(sb, closed_from=now + dt.timedelta(hours=1), closed_until=now + dt.timedelta(hours=2)))
        with pytest.raises(NotAllowed) as error:
            services.request_approve(request=submit(), actor=world.bob, emergency=True, comment="because")
        assert error.value.code == "no_freeze"

    def test_override_through_the_form_beside_a_freeze_free_page(self, world, submit, sb, client):
        now = timezone.now()
        name = calendar(sb, closed_from=now - dt.timedelta(hours=1), closed_until=now + dt.timedelta(hours=1))
        gate(world.platform, name)
        request = submit()
        client.force_login(world.bob)
        page = client.get(f"/requests/{request.pk}/").content.decode()
        assert "<strong>CLOSED</strong>" in page and 'name="emergency"' in page and "Change freeze" not in page
        client.post(f"/requests/{request.pk}/approve/", {"comment": "outage", "emergency": "on"})
        client.force_login(world.frank)
        client.post(f"/requests/{request.pk}/approve/", {"comment": "confirmed", "emergency": "on"})
        request.refresh_from_db()
        assert request.status == Status.APPROVED


class TestDemo:
    def test_the_demo_gates_stops_with_the_seeded_stop_window(self, db, sb, client, monkeypatch):
        """seed_demo names the sandbox's Delegate-StopWindow on AWS-StopEC2Instance; that calendar is
        CLOSED outside 02:00-03:00 UTC, so a stop approved at 10:00 UTC waits until 02:00 the next day."""
        from django.core.management import call_command

        from automations.aws import change_control
        from automations.models import Runbook

        monkeypatch.setenv("AWS_ENDPOINT_URL", sb.url)
        call_command("seed_demo", stdout=open("/dev/null", "w"))
        stop = Runbook.objects.select_related("account").get(name="AWS-StopEC2Instance", region=REGION)
        assert stop.change_calendars == ["Delegate-StopWindow"]
        state = change_control.calendar_state(region=REGION, role_arn=stop.account.dispatch_role_arn,
                                              calendar_names=stop.change_calendars,
                                              at=dt.datetime(2026, 12, 3, 10, 0, tzinfo=dt.timezone.utc))
        assert state.closed and state.next_transition == dt.datetime(2026, 12, 4, 2, 0, tzinfo=dt.timezone.utc)
