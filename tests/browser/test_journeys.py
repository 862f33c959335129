"""The four roles' journeys in a real browser against a live stack (web, Celery worker + beat,
the sandbox, PostgreSQL): alice asks, bob approves, the run reaches Success on alice's open page
without a reload, carol audits and exports, admin changes a policy and finds it in the log."""
from __future__ import annotations

import csv
import io
import re

import pytest

from tests.browser.conftest import screenshot

# reset_sequences: request #1 in the screenshots, whatever ran before.
pytestmark = [pytest.mark.browser, pytest.mark.integration,
              pytest.mark.postgres(reason="the Celery worker shares the test database"),
              pytest.mark.django_db(transaction=True, reset_sequences=True)]


def test_four_roles_end_to_end(stack, pages):
    from playwright.sync_api import expect

    from automations.models import AuditEvent, AutomationRequest, TeamRunbook
    from sandbox.inventory import seeded_id

    web1 = seeded_id("i", "eu-west-1", "web-1")

    # alice finds a runbook by searching the catalog (htmx narrows the list as she types).
    alice = pages.as_user("alice")
    expect(alice).to_have_url(re.compile(r"/runbooks/"))
    alice.get_by_label("Search runbooks").fill("RestartEC2")
    entries = alice.locator("li.runbook-entry")
    expect(entries).to_have_count(1)  # one entry; eu-west-1 and us-east-1 are a choice on it
    card = entries.first
    expect(card.get_by_role("heading")).to_contain_text("RestartEC2Instance")
    screenshot(alice, "catalog")
    card.get_by_label(re.compile("Region for")).select_option(label="eu-west-1")
    card.get_by_role("button", name=re.compile("Request")).click()
    expect(alice.get_by_role("heading", level=1)).to_contain_text("Request")

    # The resource picker: search the team's instances, tick web-1.
    picker = alice.locator("fieldset.picker").first
    picker.get_by_role("searchbox").fill("web-1")
    # Wait for the search's answer (api-1 gone) before ticking: the full list also has one web-1, and
    # an answer arriving after the tick would replace the ticked box with an unticked one.
    expect(picker.get_by_role("checkbox", name=re.compile("api-1"))).to_have_count(0)
    option = picker.get_by_role("checkbox", name=re.compile("web-1"))
    expect(option).to_have_count(1)
    expect(picker.get_by_role("checkbox", name=re.compile("etl-1"))).to_have_count(0)  # data's, not platform's
    option.check()
    alice.get_by_label("Justification").fill("web-1 leaks memory; restart before the evening peak.")

    # Preview shows exactly what will be sent; then submit.
    alice.get_by_role("button", name="Preview").click()
    preview = alice.locator("article.preview")
    expect(preview).to_contain_text("AWS-RestartEC2Instance")
    expect(preview).to_contain_text(web1)
    screenshot(alice, "request-preview")
    alice.get_by_role("button", name="Submit request").click()
    expect(alice.locator(".messages")).to_contain_text("submitted")
    expect(alice.locator("#live .badge").first).to_have_class(re.compile(r"\bbadge-submitted\b"))
    request_id = int(re.search(r"/requests/(\d+)/", alice.url).group(1))
    screenshot(alice, "request-submitted")
    # Keep alice's page open: from here on it must update itself. A marker proves no reload.
    alice.evaluate("window.__delegateNoReload = true")

    # bob approves from his queue.
    bob = pages.as_user("bob", next_path="/approvals/")
    queue_row = bob.get_by_role("row").filter(has_text=f"#{request_id}")
    expect(queue_row).to_contain_text("alice")
    expect(bob.get_by_role("link", name=re.compile(r"Approvals"))).to_contain_text("1")
    screenshot(bob, "approval-queue")
    queue_row.get_by_role("link", name=f"#{request_id}").click()
    expect(bob.get_by_role("heading", name="Targets as AWS describes them now")).to_be_visible()
    bob.get_by_label("Comment (optional)").fill("Go ahead, peak starts at 18:00.")
    bob.get_by_role("button", name="Approve", exact=True).click()
    expect(bob.locator(".messages")).to_contain_text("Approved")

    # alice's page follows the run to Success by htmx polling, without a reload.
    expect(alice.locator("#live .badge").first).to_have_class(re.compile(r"\bbadge-succeeded\b"), timeout=60_000)
    assert alice.evaluate("window.__delegateNoReload") is True, "the request page was reloaded"
    expect(alice.locator("#live")).to_contain_text("Success")
    screenshot(alice, "request-succeeded")
    item = AutomationRequest.objects.get(pk=request_id)
    assert item.status == "succeeded" and item.execution.execution_id
    assert stack.sandbox.instance_state(web1) == "running"

    # carol searches the audit log, opens the request's timeline and exports CSV.
    carol = pages.as_user("carol", next_path="/audit/")
    carol.get_by_label("Actor").fill("bob")
    carol.get_by_label("Action").fill("request.")
    carol.get_by_role("button", name="Search").click()
    results = carol.locator("table tbody tr")
    expect(results.first).to_contain_text("request.approved")
    expect(results.filter(has_text="alice")).to_have_count(0)  # bob's events only
    screenshot(carol, "audit-search")
    results.filter(has_text="request.approved").first.get_by_role("link", name=f"#{request_id}").click()
    expect(carol.get_by_role("heading", level=1)).to_contain_text(f"Request #{request_id}")
    for phase in ("Submitted", "Approvals", "Dispatch", "Outcome"):
        expect(carol.get_by_role("heading", name=phase, exact=True)).to_be_visible()
    expect(carol.locator("main")).to_contain_text("execution.succeeded")
    screenshot(carol, "audit-timeline")
    carol.go_back()
    with carol.expect_download() as download:
        carol.get_by_role("button", name="Export CSV").click()
    rows = list(csv.DictReader(io.StringIO(download.value.path().read_text())))
    assert rows and {row["actor_name"] for row in rows} == {"bob"}
    assert any(row["action"] == "request.approved" and row["request_id"] == str(request_id) for row in rows)
    assert AuditEvent.objects.filter(action="audit.exported", actor_name="carol").exists()

    # admin raises the approvals platform needs for this runbook, then finds the change in the log.
    team_policy = TeamRunbook.objects.get(team__name="platform", runbook__name="AWS-RestartEC2Instance",
                                         runbook__region="eu-west-1")
    admin = pages.as_user("admin", next_path=f"/admin/automations/teamrunbook/{team_policy.pk}/change/")
    admin.get_by_label("Approvals required").fill("2")
    admin.get_by_role("button", name="Save", exact=True).click()
    expect(admin.locator(".messagelist")).to_contain_text("changed successfully")
    team_policy.refresh_from_db()
    assert team_policy.approvals_required == 2
    admin.goto("/audit/?action_prefix=config.changed")
    changed = admin.locator("table tbody tr").filter(has_text="config.changed").first
    expect(changed).to_contain_text("admin")
    changed.get_by_role("link").first.click()
    expect(admin.locator("main")).to_contain_text('"approvals_required": 2')
    screenshot(admin, "audit-config-change")
