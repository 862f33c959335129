"""The ops view in a real browser (issue 15): a run made by the worker shows in bob's figures,
with web-1 named; the CSV downloads; carol lands on the audit log and sees every team; the
request page shows the run's progress; at 1280 and 390 px no sideways scroll and no serious axe
finding; the charts raise no CSP violation (the pages fixture fails on any)."""
from __future__ import annotations

import re

import pytest

from tests.browser.conftest import DESKTOP, screenshot
from tests.browser.test_pages import axe_findings, horizontal_overflow
from tests.processes import wait_until

pytestmark = [pytest.mark.browser, pytest.mark.integration,
              pytest.mark.django_db(transaction=True, reset_sequences=True)]
PHONE_390 = {"width": 390, "height": 844}


def _finished_restart():
    """alice asks to restart web-1, bob approves, the worker runs it in the sandbox to the end."""
    from django.contrib.auth import get_user_model

    from automations import services
    from automations.models import AutomationRequest, TeamRunbook
    from sandbox.inventory import seeded_id

    users = {u.username: u for u in get_user_model().objects.all()}
    policy = TeamRunbook.objects.select_related("team").get(
        team__name="platform", runbook__name="AWS-RestartEC2Instance", runbook__region="eu-west-1")
    request = services.request_submit(
        actor=users["alice"], team=policy.team, runbook_id=policy.runbook_id, justification="CHG-9 restart",
        parameters={"InstanceId": [seeded_id("i", "eu-west-1", "web-1")]})
    services.request_approve(request=request, actor=users["bob"], comment="ok")
    wait_until(lambda: AutomationRequest.objects.get(pk=request.pk).is_terminal, timeout=90,
               what="the restart to finish")
    return AutomationRequest.objects.get(pk=request.pk)


def test_ops_view_for_a_lead_and_an_auditor_at_desktop_and_phone_width(stack, pages):
    from playwright.sync_api import expect

    request = _finished_restart()
    assert request.status == "succeeded", request.status_reason
    web1 = request.resource_label(request.resources[0])
    assert web1.startswith("web-1 (i-")

    bob = pages.as_user("bob")
    expect(bob).to_have_url(re.compile(r"/approvals/$"))
    bob.get_by_role("link", name="Operations").click()
    expect(bob.locator("main h1")).to_have_text("Operations")
    bob.get_by_role("link", name="Last 7 days").click()
    expect(bob.get_by_role("link", name="Last 7 days")).to_have_attribute("aria-current", "page")
    targets = bob.locator("section", has=bob.get_by_role("heading", name="Busiest targets"))
    expect(targets.get_by_role("row").filter(has_text=web1)).to_contain_text("1")
    outcomes = bob.locator("section", has=bob.get_by_role("heading", name="Runs by outcome"))
    expect(outcomes.get_by_role("row").filter(has_text="Succeeded")).to_contain_text("1")
    expect(bob.locator("svg.bars")).to_have_count(4)
    with bob.expect_download() as download:
        targets.get_by_role("link", name="CSV").click()
    body = open(download.value.path(), encoding="utf-8").read().splitlines()
    assert body[0] == "resource_id,name,label,runs" and body[1].endswith(f",{web1},1"), body
    screenshot(bob, "ops-view")

    carol = pages.as_user("carol")
    expect(carol).to_have_url(re.compile(r"/audit/$"))  # auditors land on the audit log
    carol.get_by_role("link", name="Operations").click()
    expect(carol.locator("hgroup p")).to_contain_text("for every team")

    # The request page: the run's steps with their durations, the estimate's honest absence, AWS links.
    alice = pages.as_user("alice", next_path=f"/requests/{request.pk}/")
    progress = alice.locator("section.progress")
    expect(progress).to_contain_text("No past runs of this runbook by Platform to estimate from.")
    expect(progress.get_by_role("link", name=re.compile("in the AWS console"))).to_have_attribute(
        "href", re.compile(r"^https://eu-west-1\.console\.aws\.amazon\.com/systems-manager/automation/execution/"))
    expect(progress.get_by_role("link", name=re.compile("CloudTrail event history"))).to_have_attribute(
        "href", re.compile(rf"#/events\?Username=delegate-req-{request.pk}-alice$"))
    screenshot(alice, "request-progress")

    findings, overflows = [], []
    for who, path in (("bob", "/ops/?days=7"), ("carol", "/ops/?days=90"), ("alice", f"/requests/{request.pk}/")):
        page = pages.as_user(who, viewport=PHONE_390, next_path=path)
        expect(page.locator("main h1")).to_be_visible()
        if problem := horizontal_overflow(page):
            overflows.append(problem)
        findings += axe_findings(page)
        if who == "bob":
            screenshot(page, "phone-ops-view")
        page.set_viewport_size(DESKTOP)
        if problem := horizontal_overflow(page):
            overflows.append(problem)
        findings += axe_findings(page)
    assert not overflows, overflows
    assert not findings, findings
