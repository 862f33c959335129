"""The change calendar gate in a real browser (issue 18): the demo gates AWS-StopEC2Instance with the
SSM Change Calendar Delegate-StopWindow (CLOSED except 02:00-03:00 UTC). alice reads on the form that
runs follow the calendar; bob approves one stop and every page says it is held until the next OPEN
time AWS reports; a second stop gets bob's and frank's emergency overrides (with reasons) and runs
to the end on alice's open page. axe and sideways scrolling are checked at 1280 and 390 px.

No Celery worker: the test calls the worker's dispatch task and the status sync itself, so the
journey runs on SQLite as well as on PostgreSQL (on PostgreSQL, a package worker left running by
another browser test may dispatch first; each step waits for the state, not for who reached it).
"""
from __future__ import annotations

import datetime as dt
import re
import uuid
from pathlib import Path

import boto3
import pytest

from tests.browser.conftest import DESKTOP, screenshot
from tests.browser.test_pages import axe_findings, horizontal_overflow
from tests.browser.test_trust_journeys import PHONE_390, _instance, _policy, _users
from tests.processes import wait_until

pytestmark = [pytest.mark.browser, pytest.mark.integration,
              pytest.mark.django_db(transaction=True, reset_sequences=True)]
DEMO_CALENDAR = "Delegate-StopWindow"
ICS = Path(__file__).resolve().parents[2] / "sandbox" / "documents" / "own" / f"{DEMO_CALENDAR}.ics"


def _ssm(sandbox):
    return boto3.client("ssm", endpoint_url=sandbox.url, region_name="eu-west-1", aws_access_key_id="test",
                        aws_secret_access_key="test")


def _state(sandbox, name: str) -> dict:
    return _ssm(sandbox).get_calendar_state(CalendarNames=[name])


@pytest.fixture
def gate(demo_data, live_server, sandbox):
    """The calendar gating stops, CLOSED now: the demo's, except in its own 02:00-03:00 UTC OPEN hour,
    when the same calendar shifted by twelve hours stands in (so the journey runs at any time)."""
    from automations.models import Runbook

    name, made = DEMO_CALENDAR, None
    if _state(sandbox, DEMO_CALENDAR)["State"] == "OPEN":
        name = made = f"{DEMO_CALENDAR}-{uuid.uuid4().hex[:6]}"
        content = ICS.read_text().replace("T020000Z", "T140000Z").replace("T030000Z", "T150000Z")
        _ssm(sandbox).create_document(Name=name, Content=content, DocumentType="ChangeCalendar", DocumentFormat="TEXT")
        Runbook.objects.filter(name="AWS-StopEC2Instance").update(change_calendars=[name])
    state = _state(sandbox, name)
    assert state["State"] == "CLOSED", state
    yield name, dt.datetime.fromisoformat(state["NextTransitionTime"].replace("Z", "+00:00"))
    if made:
        _ssm(sandbox).delete_document(Name=made)


def _dispatch_until(request, *, status: tuple[str, ...] = (), held: bool = False, timeout: float = 30):
    """Run the worker's dispatch task (in this process) until the request is held or in a `status`."""
    from automations import tasks
    from automations.models import AutomationRequest, DispatchOutbox

    def reached():
        item = AutomationRequest.objects.get(pk=request.pk)
        if held:
            row = DispatchOutbox.objects.filter(pk=request.pk).first()
            if row is not None and row.last_error.startswith("held by change calendar"):
                return True
        elif item.status in status:
            return True
        tasks.dispatch_request.run(request.pk)
        return False
    wait_until(reached, timeout=timeout, what=f"request #{request.pk} {'held' if held else status}")


def _run_to_the_end(request, timeout: float = 90):
    from automations import services
    from automations.models import AutomationRequest

    def finished():
        services.execution_statuses_sync()
        return AutomationRequest.objects.get(pk=request.pk).is_terminal
    wait_until(finished, timeout=timeout, what=f"request #{request.pk} to finish")


def _checked(page, findings: list, overflows: list) -> None:
    """axe at 390 px and at 1280 px, and no sideways scroll at 390 px."""
    page.set_viewport_size(PHONE_390)
    if problem := horizontal_overflow(page):
        overflows.append(problem)
    findings += axe_findings(page)
    page.set_viewport_size(DESKTOP)
    findings += axe_findings(page)


def test_a_closed_calendar_holds_the_approved_stop_and_two_overrides_let_another_through(gate, pages, sandbox):
    from django.urls import reverse
    from playwright.sync_api import expect

    from automations import services
    from automations.models import AuditEvent, AutomationRequest, DispatchOutbox

    calendar, opens = gate
    opens_text = f"{opens.astimezone(dt.timezone.utc):%Y-%m-%d %H:%M} UTC"
    users = _users()
    stop = _policy("AWS-StopEC2Instance")
    findings, overflows = [], []

    # alice reads on the form, before she asks, that stops follow the calendar.
    alice = pages.as_user("alice", next_path=reverse("automations:request_new", args=[stop.runbook_id]))
    notice = alice.locator("#calendar-gate")
    expect(notice).to_contain_text(f"follow the change calendar {calendar}")
    expect(notice).to_contain_text("an approved request waits and starts when it opens")
    _checked(alice, findings, overflows)

    ask = dict(actor=users["alice"], team=stop.team, runbook_id=stop.runbook_id)
    held = services.request_submit(parameters={"InstanceId": [_instance("web-1")]},
                                   justification="web-1 is idle overnight; stop it to save cost.", **ask)
    alice.goto(f"/requests/{held.pk}/")
    alice.evaluate("window.__delegateNoReload = true")

    # bob sees the calendar CLOSED with its next OPEN time, and approves normally.
    bob = pages.as_user("bob", next_path=f"/requests/{held.pk}/")
    closed = bob.locator("#change-calendar")
    expect(closed).to_contain_text(f"{calendar}: CLOSED")
    expect(closed).to_contain_text(f"opens {opens_text}")
    expect(closed).to_contain_text("Once approved, the run waits until it opens, unless two approvers each tick "
                                   "Emergency and give a reason when approving.")
    expect(bob.get_by_label(re.compile(r"^Comment"))).to_have_accessible_name(
        "Comment (required for an emergency override: the reason)")
    _checked(bob, findings, overflows)
    bob.get_by_role("button", name="Approve", exact=True).click()
    expect(bob.locator(".messages")).to_contain_text(
        f"Approved. The change calendar {calendar} is CLOSED, so the run waits until it opens ({opens_text}).")

    # Dispatch asks GetCalendarState: held until the next OPEN time, nothing started.
    _dispatch_until(held, held=True)
    row = DispatchOutbox.objects.get(pk=held.pk)
    assert row.next_attempt_at == opens
    held.refresh_from_db()
    assert held.status == AutomationRequest.Status.APPROVED and not hasattr(held, "execution")
    hold = alice.locator("#dispatch-hold")
    expect(hold).to_contain_text(f"held by change calendar {calendar} until {opens_text}", timeout=20_000)
    expect(hold).to_contain_text("starts the run once the calendar is OPEN")
    assert alice.evaluate("window.__delegateNoReload") is True, "the request page was reloaded"
    assert sandbox.instance_state(_instance("web-1")) == "running"
    screenshot(alice, "request-held-by-calendar")
    _checked(alice, findings, overflows)

    # A second stop cannot wait: bob and frank each tick Emergency with a reason.
    urgent = services.request_submit(parameters={"InstanceId": [_instance("web-2")]},
                                     justification="web-2 is corrupting data; stop it now.", **ask)
    alice.goto(f"/requests/{urgent.pk}/")
    bob.goto(f"/requests/{urgent.pk}/")
    bob.get_by_label(re.compile(r"^Comment")).fill("Data corruption: cannot wait for the stop window.")
    bob.get_by_label(re.compile(r"Emergency: override")).check()
    bob.get_by_role("button", name="Approve", exact=True).click()
    expect(bob.locator(".messages")).to_contain_text("needs a second approver's emergency override to run now")
    urgent.refresh_from_db()
    assert urgent.status == AutomationRequest.Status.SUBMITTED

    frank = pages.as_user("frank", next_path=f"/requests/{urgent.pk}/")
    expect(frank.locator("main")).to_contain_text("emergency override")  # bob's, beside his name
    frank.get_by_label(re.compile(r"^Comment")).fill("Agreed: corruption spreads every minute.")
    frank.get_by_label(re.compile(r"Emergency: override")).check()
    _checked(frank, findings, overflows)
    frank.get_by_role("button", name="Approve", exact=True).click()
    expect(frank.locator(".messages")).to_contain_text(
        f"Approved with two emergency overrides: the run starts although the change calendar {calendar} is CLOSED.")
    approved = AuditEvent.objects.get(request_id=urgent.pk, action="request.approved")
    assert approved.details["emergency_override"] is True and approved.details["calendars"] == [calendar]

    _dispatch_until(urgent, status=(AutomationRequest.Status.RUNNING, AutomationRequest.Status.SUCCEEDED))
    _run_to_the_end(urgent)
    expect(alice.locator("#live .badge").first).to_have_class(re.compile(r"\bbadge-succeeded\b"), timeout=30_000)
    assert sandbox.instance_state(_instance("web-2")) == "stopped"
    _checked(alice, findings, overflows)
    held.refresh_from_db()
    assert held.status == AutomationRequest.Status.APPROVED  # still waiting for the calendar
    boto3.client("ec2", endpoint_url=sandbox.url, region_name="eu-west-1", aws_access_key_id="test",
                 aws_secret_access_key="test").start_instances(InstanceIds=[_instance("web-2")])  # as found
    assert not overflows, overflows
    assert not findings, findings
