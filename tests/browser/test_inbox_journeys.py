"""Issue 15's inbox and admin journeys in a real browser: bob approves two identical low-risk
requests together from his queue (his own request is never offered, each result reported), and an
admin edits a team policy as plain fields, with a bad region refused in words; at 1280 and 390 px."""
from __future__ import annotations

import re

import pytest

from tests.browser.conftest import DESKTOP, screenshot
from tests.browser.test_pages import axe_findings, horizontal_overflow
from tests.browser.test_trust_journeys import PHONE_390, _instance, _policy, _users

pytestmark = [pytest.mark.browser, pytest.mark.integration,
              pytest.mark.django_db(transaction=True, reset_sequences=True)]


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE_390], ids=["1280", "390"])
def test_bob_approves_identical_low_risk_requests_together(stack, pages, viewport):
    from playwright.sync_api import expect

    from automations import services
    from automations.models import AuditEvent, AutomationRequest, TeamRunbook

    users = _users()
    policy = _policy("AWS-RestartEC2Instance")
    TeamRunbook.objects.filter(pk=policy.pk).update(risk=TeamRunbook.Risk.LOW)
    ask = dict(team=policy.team, runbook_id=policy.runbook_id, justification="patch night")
    one = services.request_submit(actor=users["alice"], parameters={"InstanceId": [_instance("web-1")]}, **ask)
    two = services.request_submit(actor=users["alice"], parameters={"InstanceId": [_instance("web-2")]}, **ask)

    bob = pages.as_user("bob", viewport=viewport, next_path="/approvals/")
    group = bob.locator("form.bulk-approve")
    expect(group).to_contain_text("2 identical low-risk requests")
    expect(group.get_by_role("checkbox")).to_have_count(2)
    expect(group).to_contain_text(f"web-1 ({_instance('web-1')})")
    assert horizontal_overflow(bob) is None, horizontal_overflow(bob)
    assert not axe_findings(bob)
    screenshot(bob, "approvals-bulk" if viewport == DESKTOP else "phone-approvals-bulk")
    group.get_by_label("Comment (optional, added to each approval)").fill("patch night, both fine")
    group.get_by_role("button", name="Approve selected").click()
    messages = bob.locator(".messages")
    expect(messages).to_contain_text(f"#{one.pk} approved.")
    expect(messages).to_contain_text(f"#{two.pk} approved.")
    # Approved (the worker may already be dispatching them).
    assert all(AutomationRequest.objects.filter(pk__in=[one.pk, two.pk]).values_list("approved_at", flat=True))
    added = AuditEvent.objects.filter(action="request.approval_added", request_id__in=[one.pk, two.pk])
    assert sorted(e.details["bulk_with"][0] for e in added) == sorted([one.pk, two.pk])
    assert not axe_findings(bob)


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE_390], ids=["1280", "390"])
def test_admin_edits_a_policy_as_fields_and_a_bad_region_is_refused(stack, pages, viewport):
    from playwright.sync_api import expect

    from automations.models import TeamRunbook

    policy = _policy("AWS-RestartEC2Instance")
    admin = pages.as_user("admin", viewport=viewport,
                          next_path=f"/admin/automations/teamrunbook/{policy.pk}/change/")
    regions = admin.get_by_label("Allowed regions")
    expect(regions).to_be_visible()
    regions.fill("eu-west-1\nIreland")
    admin.get_by_label("Tags every target must carry").fill("Environment = staging, dev")
    admin.get_by_role("button", name="Save", exact=True).click()
    expect(admin.locator(".errorlist")).to_contain_text("Not a region name: Ireland")
    screenshot(admin, "admin-policy-error" if viewport == DESKTOP else "phone-admin-policy-error")
    assert TeamRunbook.objects.get(pk=policy.pk).allowed_regions == policy.allowed_regions
    admin.get_by_label("Allowed regions").fill("eu-west-1")
    admin.get_by_role("button", name="Save", exact=True).click()
    expect(admin.locator(".messagelist")).to_contain_text("changed successfully")
    saved = TeamRunbook.objects.get(pk=policy.pk)
    assert saved.allowed_regions == ["eu-west-1"] and saved.target_tags == {"Environment": ["staging", "dev"]}
    expect(admin.locator("#result_list")).to_contain_text("eu-west-1")  # the list's region column
    assert re.search(r"column-region", admin.content())


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE_390], ids=["1280", "390"])
def test_map_and_map_list_editors_work_without_script_and_fit_a_phone(stack, pages, viewport):
    from playwright.sync_api import expect

    policy = _policy("Delegate-RotateLogs")
    alice = pages.as_user("alice", viewport=viewport, next_path=f"/runbooks/{policy.runbook_id}/request/")
    labels = alice.locator("#id_param_Labels")
    expect(labels.get_by_role("textbox")).to_have_count(6)  # three empty Key/Value rows
    expect(alice.locator("#id_param_Schedule textarea").first).to_have_value("Day=Sunday\nHour=03")
    assert horizontal_overflow(alice) is None, horizontal_overflow(alice)
    assert not axe_findings(alice)
    labels.get_by_label("Key 1 of Labels").fill("change")
    labels.get_by_label("Value 1 of Labels").fill("CHG-42")
    alice.locator("#id_param_Schedule").get_by_label(re.compile("Entry 2")).fill("Day=Wednesday\nHour=22")
    alice.get_by_label("Justification").fill("rotate before the audit")
    alice.get_by_role("button", name="Preview").click()
    # Refused (no instance picked): the page comes back with what was typed and fresh empty rows.
    expect(alice.locator("#error-summary")).to_be_visible()
    labels = alice.locator("#id_param_Labels")
    expect(labels.get_by_label("Key 1 of Labels")).to_have_value("change")
    expect(labels.get_by_label("Value 1 of Labels")).to_have_value("CHG-42")
    expect(labels.get_by_role("textbox")).to_have_count(6)  # the filled row and two spare ones
    expect(alice.locator("#id_param_Schedule textarea").nth(1)).to_have_value("Day=Wednesday\nHour=22")
    assert horizontal_overflow(alice) is None, horizontal_overflow(alice)
    assert not axe_findings(alice)
    screenshot(alice, "map-editors" if viewport == DESKTOP else "phone-map-editors")
