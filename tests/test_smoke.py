"""Smoke test: the demo's story through the real URLs, on whatever database the run uses.

What `python3 dev.py demo` sets up (seed_demo against the sandbox), then one request the way people
make it: alice signs in with the demo password and submits through the API, bob approves in the
web UI, the sweeper publishes (here: runs the task body in this process, as a worker would), the
status sync sees AWS finish, the request page says so, and the audit chain verifies. If any layer
of the stack is broken (settings, URLs, middleware, services, gateway, sandbox, audit) this fails.
"""
import io
import os

import pytest
from django.core.management import call_command
from django.test import Client

from automations import services, tasks
from automations.services import publishing
from automations.models import AuditEvent, AutomationRequest, TeamRunbook
from tests.conftest import seeded_instance

PASSWORD = "delegate-demo"  # seed_demo's


def signed_in(username: str) -> Client:
    client = Client()
    response = client.post("/accounts/login/", {"username": username, "password": PASSWORD})
    assert response.status_code == 302, f"{username} could not sign in with the demo password"
    return client


@pytest.mark.django_db
def test_the_demo_story_from_sign_in_to_a_verified_audit_trail(sb, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", sb.url)
    with open(os.devnull, "w") as quiet:
        call_command("seed_demo", stdout=quiet)
    policy = TeamRunbook.objects.select_related("runbook").get(
        team__name="platform", runbook__name="AWS-RestartEC2Instance", runbook__region="eu-west-1")

    alice = signed_in("alice")
    assert alice.get("/", follow=True).status_code == 200
    created = alice.post("/api/v1/requests/", {
        "runbook": policy.runbook_id, "team": "platform",
        "parameters": {"InstanceId": [seeded_instance("web-1")]}, "justification": "smoke test",
    }, content_type="application/json")
    assert created.status_code == 201, created.content
    request = AutomationRequest.objects.get(pk=created.json()["id"])
    assert request.status == AutomationRequest.Status.SUBMITTED

    bob = signed_in("bob")
    page = bob.get(f"/requests/{request.pk}/")
    assert page.status_code == 200 and b"AWS-RestartEC2Instance" in page.content
    monkeypatch.setattr(publishing, "publish_dispatch", lambda pk, source: None)  # no broker here: the sweep below publishes
    decided = bob.post(f"/requests/{request.pk}/approve/", {"comment": "go"})
    assert decided.status_code == 302
    request.refresh_from_db()
    assert request.status == AutomationRequest.Status.APPROVED

    assert services.dispatch_outbox_sweep(publish=lambda pk: tasks.dispatch_request.run(pk)) == 1
    request.refresh_from_db()
    assert request.status == AutomationRequest.Status.RUNNING
    sb.wait_for_execution(request.execution.execution_id, timeout=60)
    services.execution_statuses_sync()
    request.refresh_from_db()
    assert request.status == AutomationRequest.Status.SUCCEEDED
    assert "Succeeded" in bob.get(f"/requests/{request.pk}/").content.decode()
    assert list(AuditEvent.objects.filter(request=request).order_by("sequence").values_list("action", flat=True)) \
        [:2] == ["request.submitted", "request.approval_added"]

    out = io.StringIO()
    call_command("verify_audit", "--no-digests", stdout=out, stderr=io.StringIO())  # CommandError if broken
    assert "verified" in out.getvalue() and "OK: the audit log is intact." in out.getvalue(), out.getvalue()


@pytest.mark.django_db
def test_no_model_change_lacks_its_migration():
    """What RULES and CI require: `makemigrations --check` finds nothing to write."""
    out = io.StringIO()
    call_command("makemigrations", "--check", "--dry-run", stdout=out)
    assert "No changes detected" in out.getvalue()


@pytest.mark.django_db(transaction=True)
def test_the_demo_offers_a_multi_account_run_over_the_granted_ous(sb, monkeypatch):
    """The demo's second story (README): alice runs the fleet runbook across the two OUs the demo
    grants platform, bob approves, every member account × Region reports back, and production
    (not granted) is refused."""
    import time

    from automations.models import LocationExecution

    monkeypatch.setenv("AWS_ENDPOINT_URL", sb.url)
    with open(os.devnull, "w") as quiet:
        call_command("seed_demo", stdout=quiet)
    policy = TeamRunbook.objects.select_related("runbook").get(
        team__name="platform", runbook__name="Delegate-LabelFleet", runbook__region="eu-west-1")
    alice = signed_in("alice")
    form = alice.get(f"/runbooks/{policy.runbook_id}/request/?team=platform").content.decode()
    assert "ou-dlg0-staging0" in form and "ou-dlg0-development" in form and "ou-dlg0-production" not in form

    body = {"runbook": policy.runbook_id, "team": "platform", "parameters": {"Label": ["demo-wave"]},
            "justification": "demo", "location_regions": ["eu-west-1"]}
    refused = alice.post("/api/v1/requests/", {**body, "location_targets": ["ou-dlg0-production"]},
                         content_type="application/json")
    assert refused.status_code in (400, 403) and refused.json()["code"] == "location_not_granted", refused.content
    created = alice.post("/api/v1/requests/", {**body, "location_targets": ["ou-dlg0-staging0", "ou-dlg0-development"]},
                         content_type="application/json")
    assert created.status_code == 201, created.content
    request = AutomationRequest.objects.get(pk=created.json()["id"])
    assert len(request.location_accounts) == 8

    published = []
    monkeypatch.setattr(publishing, "publish_dispatch", lambda pk, source: published.append(pk))
    assert signed_in("bob").post(f"/requests/{request.pk}/approve/", {"comment": "go"}).status_code == 302
    request.refresh_from_db()
    assert request.status == AutomationRequest.Status.APPROVED, (request.status, request.status_reason)
    assert published == [request.pk]  # at commit, as to the broker; the worker's task body runs here
    tasks.dispatch_request.run(request.pk)
    deadline = time.time() + 120
    while not request.is_terminal and time.time() < deadline:
        services.execution_statuses_sync()
        request.refresh_from_db()
        time.sleep(0.3)
    assert request.status == AutomationRequest.Status.SUCCEEDED, (request.status, request.status_reason)
    assert LocationExecution.objects.filter(request=request, aws_status="Success").count() == 8
