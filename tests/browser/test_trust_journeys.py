"""Issue 15's journeys in a real browser against the live stack: a paused run resumed by a lead,
a duplicate warned, a reject without a reason refused, the cancel dialog naming the steps that ran,
"web-1" found in the audit log, and the new pages at a 390 px phone width with no axe finding."""
from __future__ import annotations

import re

import pytest

from tests.browser.conftest import DESKTOP, screenshot
from tests.browser.test_pages import axe_findings, horizontal_overflow
from tests.processes import wait_until

pytestmark = [pytest.mark.browser, pytest.mark.integration,
              pytest.mark.django_db(transaction=True, reset_sequences=True)]
PHONE_390 = {"width": 390, "height": 844}


def _users():
    from django.contrib.auth import get_user_model

    return {u.username: u for u in get_user_model().objects.all()}


def _policy(name: str, team: str = "platform"):
    from automations.models import TeamRunbook

    return TeamRunbook.objects.select_related("team", "runbook").get(
        team__name=team, runbook__name=name, runbook__region="eu-west-1")


def _instance(name: str) -> str:
    from sandbox.inventory import seeded_id

    return seeded_id("i", "eu-west-1", name)


def _patch_request(users, instance: str):
    """alice asks for Delegate-PatchWithApproval (approve step, then a pause); bob approves it."""
    from automations import services

    policy = _policy("Delegate-PatchWithApproval")
    request = services.request_submit(
        actor=users["alice"], team=policy.team, runbook_id=policy.runbook_id, justification="CHG-7 patch",
        parameters={"InstanceIds": [instance]})  # Approvers is server-owned: Delegate fills it (issue 12)
    return services.request_approve(request=request, actor=users["bob"], comment="ok")


def _wait_for_step(request, step: str):
    from automations.models import StepApproval
    from automations.services import policies

    def waiting():
        policies.step_approvals_sync()  # the worker's beat does this every 15 s; do it now
        return StepApproval.objects.filter(execution__request=request, step_name=step, state="waiting").exists()
    wait_until(waiting, timeout=60, what=f"step {step} to wait")


def test_a_paused_run_is_resumed_by_a_lead_not_the_requester(stack, pages):
    from playwright.sync_api import expect

    from automations.models import AutomationRequest

    users = _users()
    request = _patch_request(users, _instance("web-1"))
    _wait_for_step(request, "approvePatching")

    # The cancel dialog names the step that is waiting (it has started) before anyone confirms.
    alice = pages.as_user("alice", next_path=f"/requests/{request.pk}/")
    alice.get_by_text("Cancel run…").click()
    dialog = alice.locator("details.cancel-dialog")
    expect(dialog).to_contain_text("steps already run are not undone")
    expect(dialog.locator("ul.steps-ran")).to_contain_text("approvePatching")
    screenshot(alice, "cancel-dialog")
    alice.get_by_text("Cancel run…").click()  # closed again: nothing was cancelled
    assert AutomationRequest.objects.get(pk=request.pk).status == "running"

    bob = pages.as_user("bob")
    expect(bob).to_have_url(re.compile(r"/approvals/$"))  # leads land on their queue
    expect(bob.get_by_role("link", name=re.compile("Approvals"))).to_contain_text("1")
    bob.get_by_role("row").filter(has_text="approvePatching").get_by_role("button", name="Approve").click()
    expect(bob.locator(".messages")).to_contain_text("Sent “Approve”")

    _wait_for_step(request, "verifyBeforeReboot")
    alice.goto(f"/requests/{request.pk}/")
    expect(alice.locator(".step-approval")).to_contain_text("is waiting to be resumed")
    expect(alice.locator(".step-approval")).to_contain_text("then step rebootInstances runs")
    expect(alice.get_by_role("button", name="Resume run")).to_have_count(0)  # not the requester's to resume

    bob.goto("/approvals/")
    expect(bob.get_by_role("link", name=re.compile("Approvals"))).to_contain_text("1")
    bob.get_by_role("row").filter(has_text="verifyBeforeReboot").get_by_role("link", name=f"#{request.pk}").click()
    expect(bob.get_by_role("link", name=re.compile("Approvals"))).to_have_attribute("aria-current", "page")
    screenshot(bob, "resume-paused-run")
    bob.get_by_role("button", name="Resume run").click()
    expect(bob.locator(".messages")).to_contain_text("Sent “Resume”")
    expect(alice.locator("#live .badge").first).to_have_class(re.compile(r"\bbadge-succeeded\b"), timeout=60_000)


def test_back_and_submit_again_warns_about_the_duplicate(stack, pages):
    from playwright.sync_api import expect

    from automations.models import AutomationRequest

    policy = _policy("AWS-RestartEC2Instance")
    alice = pages.as_user("alice", next_path=f"/runbooks/{policy.runbook_id}/request/")

    def fill_and_preview():
        picker = alice.locator("fieldset.picker").first
        picker.get_by_role("searchbox").fill("web-1")
        # The search's answer first (api-1 gone): an answer after the tick would replace the ticked box.
        expect(picker.get_by_role("checkbox", name=re.compile("api-1"))).to_have_count(0)
        picker.get_by_role("checkbox", name=re.compile("web-1")).check()
        alice.get_by_label("Justification").fill("web-1 leaks memory.")
        alice.get_by_role("button", name="Preview").click()
        expect(alice.locator("article.preview")).to_contain_text("web-1 (")

    fill_and_preview()
    alice.get_by_role("button", name="Submit request").click()
    expect(alice.locator(".messages")).to_contain_text("submitted")
    first = int(re.search(r"/requests/(\d+)/", alice.url).group(1))
    alice.goto(f"/runbooks/{policy.runbook_id}/request/")
    fill_and_preview()
    warning = alice.locator(".overlap-warning")
    expect(warning).to_contain_text("Already requested on the same targets")
    expect(warning.get_by_role("link", name=f"Request #{first}")).to_be_visible()
    alice.get_by_role("button", name="Submit request").click()
    expect(alice.locator(".overlap-warning")).to_contain_text("Not submitted yet")
    assert AutomationRequest.objects.count() == 1
    screenshot(alice, "duplicate-warning")
    alice.set_viewport_size(PHONE_390)
    assert horizontal_overflow(alice) is None
    findings = axe_findings(alice)
    alice.get_by_label(re.compile("Submit anyway")).check()
    alice.get_by_role("button", name="Submit request").click()
    expect(alice.locator(".messages")).to_contain_text("submitted")
    assert AutomationRequest.objects.count() == 2
    assert not findings, findings


def test_a_reject_without_a_reason_is_refused_and_names_show_in_the_audit_log(stack, pages):
    from playwright.sync_api import expect

    from automations import services
    from automations.models import AutomationRequest

    users = _users()
    policy = _policy("AWS-RestartEC2Instance")
    request = services.request_submit(actor=users["alice"], team=policy.team, runbook_id=policy.runbook_id,
                                      parameters={"InstanceId": [_instance("web-1")]}, justification="CHG-9")
    bob = pages.as_user("bob", next_path=f"/requests/{request.pk}/")
    expect(bob.locator("dl.facts").first).to_contain_text(f"web-1 ({_instance('web-1')})")
    bob.get_by_text("Reject or send back…").click()
    bob.get_by_role("button", name=f"Reject request #{request.pk}").click()
    # The browser refuses the empty reason (required); the server would too (tests/services).
    assert bob.locator("#comment-reject").evaluate("el => !el.validity.valid")
    assert AutomationRequest.objects.get(pk=request.pk).status == "submitted"
    bob.locator("#comment-reject").fill("Restart it in tonight's window instead.")
    bob.get_by_role("button", name=f"Reject request #{request.pk}").click()
    expect(bob.locator(".messages")).to_contain_text("Rejected")
    assert AutomationRequest.objects.get(pk=request.pk).status_reason == "Restart it in tonight's window instead."

    carol = pages.as_user("carol", next_path="/audit/")
    carol.get_by_label("Resource").fill("WEB-1")
    carol.get_by_role("button", name="Search").click()
    rows = carol.locator("table tbody tr")
    expect(rows.filter(has_text="request.rejected")).to_have_count(1)
    expect(rows.first).to_contain_text("web-1 (")
    carol.get_by_label("Actor").fill("Bo")
    carol.get_by_role("button", name="Search").click()
    expect(rows.filter(has_text="request.rejected")).to_have_count(1)
    screenshot(carol, "audit-search-by-name")


def test_new_pages_at_390px_without_sideways_scroll_or_axe_findings(stack, pages):
    from playwright.sync_api import expect

    from automations import services

    users = _users()
    request = _patch_request(users, _instance("web-2"))
    _wait_for_step(request, "approvePatching")
    services.request_comment(request=request, actor=users["alice"], body="Patch before Friday, please.")
    findings, overflows = [], []
    for who, path in (("bob", "/approvals/"), ("bob", f"/requests/{request.pk}/"),
                      ("alice", f"/requests/{request.pk}/"), ("carol", "/audit/?resource=web-2")):
        page = pages.as_user(who, viewport=PHONE_390, next_path=path)
        expect(page.locator("main h1")).to_be_visible()
        if problem := horizontal_overflow(page):
            overflows.append(problem)
        findings += axe_findings(page)
        page.set_viewport_size(DESKTOP)
        findings += axe_findings(page)
    assert not overflows, overflows
    assert not findings, findings


def _tab_to(page, condition: str, limit: int = 80) -> None:
    """Press Tab until `condition` (JS over `el`, the focused element) holds."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate(f"() => {{ const el = document.activeElement; return !!({condition}); }}"):
            return
    pytest.fail(f"Tab never reached: {condition}")


def test_keyboard_only_form_with_an_error_fixed(stack, pages):
    from playwright.sync_api import expect

    policy = _policy("AWS-RestartEC2Instance")
    alice = pages.as_user("alice", next_path=f"/runbooks/{policy.runbook_id}/request/")
    form_url = alice.url
    alice.focus("body")
    _tab_to(alice, "el.type === 'search'")
    alice.keyboard.type("web-1")
    alice.keyboard.press("Enter")  # searches; never submits the whole form
    # The search narrowed the list to web-1 alone (so no late swap undoes the tick below).
    expect(alice.locator("fieldset.picker").first.get_by_role("checkbox")).to_have_count(1)
    expect(alice.locator("fieldset.picker").first.get_by_role("checkbox", name=re.compile("web-1"))).to_have_count(1)
    assert alice.url == form_url and alice.locator("#error-summary").count() == 0
    _tab_to(alice, "el.type === 'checkbox' && el.labels[0] && el.labels[0].textContent.includes('web-1')")
    alice.keyboard.press("Space")
    expect(alice.locator("fieldset.picker").first.get_by_role("checkbox", name=re.compile("web-1"))).to_be_checked()
    _tab_to(alice, "el.textContent.trim() === 'Preview'")
    alice.keyboard.press("Enter")
    summary = alice.locator("#error-summary")
    expect(summary).to_contain_text("Justification")
    expect(summary).to_be_focused()  # the summary takes focus, so a screen reader reads it first
    screenshot(alice, "form-error-summary")
    alice.keyboard.press("Tab")
    alice.keyboard.press("Enter")  # the summary's link leads to the field
    expect(alice).to_have_url(re.compile("#id_justification$"))
    alice.locator("#id_justification").focus()
    alice.keyboard.type("web-1 leaks memory; CHG-1234.")
    _tab_to(alice, "el.textContent.trim() === 'Preview'")
    alice.keyboard.press("Enter")
    expect(alice.locator("article.preview")).to_be_focused()
    expect(alice.locator("article.preview")).to_contain_text("web-1 (")
    _tab_to(alice, "el.textContent.trim() === 'Submit request'")
    alice.keyboard.press("Enter")
    expect(alice.locator(".messages")).to_contain_text("submitted")


def test_run_at_is_honoured(stack, pages):
    import datetime as dt

    from playwright.sync_api import expect

    from automations import services
    from automations.models import AutomationRequest
    from django.utils import timezone

    policy = _policy("AWS-RestartEC2Instance")
    when = (timezone.now() + dt.timedelta(hours=1)).replace(second=0, microsecond=0)
    alice = pages.as_user("alice", next_path=f"/runbooks/{policy.runbook_id}/request/")
    expect(alice.get_by_label("Run at (UTC, optional)")).to_be_visible()
    picker = alice.locator("fieldset.picker").first
    picker.get_by_role("searchbox").fill("api-1")
    picker.get_by_role("checkbox", name=re.compile("api-1")).check()
    alice.get_by_label("Justification").fill("Restart api-1 after the batch job.")
    alice.get_by_label("Run at (UTC, optional)").fill(when.strftime("%Y-%m-%dT%H:%M"))
    alice.get_by_role("button", name="Preview").click()
    expect(alice.locator("article.preview")).to_contain_text(f"at {when:%Y-%m-%d %H:%M} UTC, once approved")
    alice.get_by_role("button", name="Submit request").click()
    request = AutomationRequest.objects.get(pk=int(re.search(r"/requests/(\d+)/", alice.url).group(1)))
    assert request.run_at == when
    services.request_approve(request=request, actor=_users()["bob"], comment="ok")
    alice.reload()
    expect(alice.locator("main")).to_contain_text(f"Scheduled to run at {when:%Y-%m-%d %H:%M} UTC")
    # The worker and its beat run all along; the request waits for its time.
    wait_until(lambda: AutomationRequest.objects.get(pk=request.pk).status == "approved", timeout=5,
               what="the approval")
    import time

    time.sleep(4)
    assert AutomationRequest.objects.get(pk=request.pk).status == "approved"
