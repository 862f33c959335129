"""Every main page, as each role sees it, in a real browser: no serious or critical axe finding,
nothing wider than a 375 px phone screen, keyboard focus visible, and a screenshot for the README."""
from __future__ import annotations

import re

import pytest

from tests.browser.conftest import DESKTOP, PHONE, screenshot
from tests.processes import wait_until

# reset_sequences: request #1 in the screenshots, whatever ran before.
pytestmark = [pytest.mark.browser, pytest.mark.integration,
              pytest.mark.postgres(reason="the Celery worker shares the test database"),
              pytest.mark.django_db(transaction=True, reset_sequences=True)]

FAIL_IMPACTS = {"serious", "critical"}


def axe_findings(page) -> list[str]:
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page)
    return [f"{page.url} [{v['impact']}] {v['id']}: {v['help']} -> "
            + "; ".join(node["target"][0] if isinstance(node["target"][0], str) else str(node["target"])
                        for node in v["nodes"][:5])
            for v in results.response["violations"] if v.get("impact") in FAIL_IMPACTS]


def horizontal_overflow(page) -> str | None:
    """The page scrolls sideways at this width: name the widest offenders."""
    widths = page.evaluate("""() => {
        const root = document.scrollingElement;
        const limit = root.clientWidth;
        const wide = [...document.querySelectorAll('body *')]
            .filter(el => el.getBoundingClientRect().right > limit + 1)
            .filter(el => !el.parentElement.closest('[data-scrolls]') && getComputedStyle(el).position !== 'fixed')
            .slice(0, 5).map(el => el.tagName.toLowerCase() + (el.className ? '.' + el.className : '')
                                   + ' ' + Math.round(el.getBoundingClientRect().right));
        return {scroll: root.scrollWidth, client: limit, wide};
    }""")
    if widths["scroll"] <= widths["client"]:
        return None
    return f"{page.url}: scrollWidth {widths['scroll']} > clientWidth {widths['client']}: {widths['wide']}"


@pytest.fixture
def story(stack):
    """Requests in every state a page shows: succeeded (run by the worker), waiting, rejected."""
    from django.contrib.auth import get_user_model

    from automations import services
    from automations.models import AutomationRequest, Team, TeamRunbook

    users = {u.username: u for u in get_user_model().objects.all()}
    platform = Team.objects.get(name="platform")
    restart = TeamRunbook.objects.get(team=platform, runbook__name="AWS-RestartEC2Instance",
                                      runbook__region="eu-west-1").runbook
    from sandbox.inventory import seeded_id

    def submit(names, why):
        return services.request_submit(actor=users["alice"], team=platform, runbook_id=restart.pk,
                                       parameters={"InstanceId": [seeded_id("i", "eu-west-1", n) for n in names]},
                                       justification=why)

    done = submit(["web-1"], "Weekly restart of web-1.")
    services.request_approve(request=done, actor=users["bob"], comment="ok")
    rejected = submit(["api-1", "api-2"], "Both API nodes at once.")
    services.request_reject(request=rejected, actor=users["bob"], comment="Not both at once, please.")
    waiting = submit(["web-2"], "web-2 is slow since the deploy.")
    wait_until(lambda: AutomationRequest.objects.get(pk=done.pk).is_terminal, timeout=60,
               what="the approved request to finish")
    return {"done": AutomationRequest.objects.get(pk=done.pk), "waiting": waiting, "rejected": rejected,
            "users": users}


def test_main_pages_accessible_and_phone_sized(story, pages, live_server):
    from playwright.sync_api import expect

    from automations.models import AuditEvent

    done, waiting = story["done"], story["waiting"]
    assert done.status == "succeeded"
    event = AuditEvent.objects.filter(request_id=done.pk, action="dispatch.started").get()
    # (who, path, screenshot name or None): each role's main pages.
    visits = [
        (None, "/accounts/login/", "login"),
        ("alice", "/runbooks/", None),
        ("alice", f"/runbooks/{_runbook_pk()}/request/", "request-form"),
        ("alice", "/requests/", "my-requests"),
        ("alice", f"/requests/{done.pk}/", None),
        ("dave", "/requests/", "empty-requests"),
        ("bob", "/approvals/", None),
        ("bob", f"/requests/{waiting.pk}/", "approve-request"),
        ("bob", "/approvals/delegations/", None),
        ("carol", "/audit/", None),
        ("carol", f"/audit/requests/{done.pk}/", None),
        ("carol", f"/audit/events/{event.sequence}/", "audit-event"),
        ("carol", f"/audit/resources/{done.resources[0]}/", None),
        ("carol", "/audit/?actor=nobody-at-all", None),
    ]
    findings, overflows = [], []
    sessions = {}
    for who, path, name in visits:
        if who not in sessions:
            sessions[who] = pages.as_user(who) if who else pages.open()
        page = sessions[who]
        page.set_viewport_size(DESKTOP)
        page.goto(path)
        expect(page.locator("main h1")).to_be_visible()
        findings += axe_findings(page)
        if name:
            screenshot(page, name)
        page.set_viewport_size(PHONE)
        if problem := horizontal_overflow(page):
            overflows.append(problem)
        findings += axe_findings(page)  # the phone layout hides and wraps things: check it too
        if name in ("request-form", "my-requests", "approve-request"):
            screenshot(page, f"phone-{name}")
    assert not findings, "axe found serious/critical problems:\n" + "\n".join(findings)
    assert not overflows, "pages wider than a phone:\n" + "\n".join(overflows)


def test_keyboard_only_approval(story, pages):
    """bob reaches the comment box and the Approve button with Tab alone, and sees where focus is."""
    from playwright.sync_api import expect

    bob = pages.as_user("bob", next_path=f"/requests/{story['waiting'].pk}/")
    bob.focus("body")
    for _ in range(60):
        bob.keyboard.press("Tab")
        if bob.evaluate("document.activeElement.id") == "comment-approve":
            break
    else:
        pytest.fail("Tab never reached the approval comment")
    bob.keyboard.type("Fine by me.")
    bob.keyboard.press("Tab")
    focused = bob.evaluate("""() => { const el = document.activeElement; const s = getComputedStyle(el);
        return {text: el.textContent.trim(), outline: s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) > 0,
                ring: s.boxShadow !== 'none'}; }""")
    assert focused["text"] == "Approve"
    assert focused["outline"] or focused["ring"], "no visible focus indicator on the Approve button"
    bob.keyboard.press("Enter")
    expect(bob.locator(".messages")).to_contain_text("Approved")
    story["waiting"].refresh_from_db()
    assert story["waiting"].status in ("approved", "dispatching", "running", "succeeded")


def _runbook_pk() -> int:
    from automations.models import Runbook

    return Runbook.objects.get(name="AWS-RestartEC2Instance", region="eu-west-1").pk


def test_phone_navigation_reaches_every_section(stack, pages):
    """At phone width the main navigation stays on screen and usable."""
    page = pages.as_user("bob", viewport=PHONE)
    for label in ("Runbooks", "My requests", "Approvals", "Audit log"):
        link = page.get_by_role("navigation", name="Main").get_by_role("link", name=re.compile(label))
        expect_in_viewport(link)
    assert horizontal_overflow(page) is None


def expect_in_viewport(locator):
    from playwright.sync_api import expect

    expect(locator).to_be_visible()
    expect(locator).to_be_in_viewport()


def test_a_200_location_matrix_reads_on_desktop_and_phone(stack, pages):
    """Issue 18: a multi-account request at 200 locations (the demo's fleet runbook over its two
    granted OUs, widened in the database to 50 accounts x 4 Regions with children recorded as
    status sync records them): summary and failures above a page of 25 accounts, paging and the
    filters in a real browser, no serious axe finding, nothing wider than a phone."""
    from django.contrib.auth import get_user_model
    from playwright.sync_api import expect

    from automations import services
    from automations.models import Team, TeamRunbook
    from tests.web.test_location_matrix import widen

    alice = get_user_model().objects.get(username="alice")
    platform = Team.objects.get(name="platform")
    policy = TeamRunbook.objects.get(team=platform, runbook__name="Delegate-LabelFleet", runbook__region="eu-west-1")
    request = services.request_submit(actor=alice, team=platform, runbook_id=policy.runbook_id,
                                      parameters={"Label": ["wave-200"]}, justification="all of them",
                                      location_targets=["ou-dlg0-development", "ou-dlg0-staging0"],
                                      location_regions=["eu-west-1"])
    request = widen(request, accounts=50, status="submitted")  # submitted: the worker leaves it alone
    page = pages.as_user("alice")
    page.goto(f"/requests/{request.pk}/")
    matrix = page.locator("section.locations")
    expect(matrix.locator("tr.location-row")).to_have_count(25)
    expect(matrix).to_contain_text("Accounts 1–25 of 50 · page 1 of 2")
    expect(matrix).to_contain_text("Failed locations (")
    findings = axe_findings(page)
    matrix.scroll_into_view_if_needed()
    screenshot(page, "multi-account-matrix", full_page=False)
    matrix.get_by_role("link", name="next →").click()
    expect(page.locator("section.locations tr.location-row").first).to_contain_text("400000000026")
    page.locator("section.locations .location-filters").get_by_role("link", name="failed only").click()
    expect(page.locator("section.locations")).to_contain_text("failed only")
    page.set_viewport_size(PHONE)
    page.goto(f"/requests/{request.pk}/")
    overflow = horizontal_overflow(page)
    findings += axe_findings(page)
    page.locator("section.locations").scroll_into_view_if_needed()
    screenshot(page, "phone-multi-account-matrix", full_page=False)
    assert not findings, "axe found serious/critical problems:\n" + "\n".join(findings)
    assert overflow is None, overflow
