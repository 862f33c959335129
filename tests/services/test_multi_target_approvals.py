"""More approvers above N targets, end to end against the sandbox: the tag target resolved at submit and
AWS's execution preview give the count; submit refuses when the team cannot supply the approvers; the
second approver is needed; the request page, the approval queue and the API say why."""
import pytest
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from automations import services
from automations.errors import NotAllowed
from automations.models import AuditEvent, AutomationRequest

Status = AutomationRequest.Status
PLATFORM_TAG = [{"Key": "tag:Team", "Values": ["platform"]}]


def _rule(world, threshold: int, approvals: int):
    world.platform_policy.multi_target_threshold = threshold
    world.platform_policy.multi_target_approvals = approvals
    world.platform_policy.save()


def _fleet_restart(world, **kwargs):
    """A restart of every platform instance in eu-west-1: a tag target Delegate resolves at submit."""
    return services.request_submit(actor=world.alice, team=world.platform, runbook_id=world.runbook.pk,
                                   parameters={}, target_parameter_name="InstanceId", targets=PLATFORM_TAG,
                                   max_concurrency="2", max_errors="1", **kwargs)


def test_a_tag_target_over_the_threshold_needs_the_second_approver(world, sb):
    _rule(world, threshold=2, approvals=2)
    request = _fleet_restart(world)
    count = len(request.resources)
    assert count == 4, request.resources  # web-1, web-2, api-1, api-2
    assert request.execution_preview["status"] == "Success", request.execution_preview
    assert services.request_approve(request=request, actor=world.bob).status == Status.SUBMITTED
    page = Client()
    page.force_login(world.alice)
    html = page.get(reverse("automations:request_detail", args=[request.pk])).content.decode()
    assert "1 of 2 approvals" in html
    assert "4 targets is above this policy&#x27;s 2: 2 approvers." in html
    queue = Client()
    queue.force_login(world.frank)
    html = queue.get(reverse("automations:approval_queue")).content.decode()
    assert "1 of 2" in html and "4 targets is above this policy&#x27;s 2: 2 approvers." in html
    api = APIClient()
    api.force_authenticate(world.alice)
    body = api.get(f"/api/v1/requests/{request.pk}/").json()
    assert body["approvals_needed"] == {"count": 2, "reasons": ["4 targets is above this policy's 2: 2 approvers."]}
    assert services.request_approve(request=request, actor=world.frank).status == Status.APPROVED
    approved = AuditEvent.objects.get(request_id=request.pk, action="request.approved")
    assert approved.details["required"] == 2


def test_at_or_below_the_threshold_one_approver_is_enough(world, sb, submit):
    _rule(world, threshold=4, approvals=2)
    assert services.request_approve(request=_fleet_restart(world), actor=world.bob).status == Status.APPROVED
    assert services.request_approve(request=submit(), actor=world.bob).status == Status.APPROVED


def test_submit_refuses_when_the_team_cannot_supply_the_approvers(world, sb, submit):
    _rule(world, threshold=2, approvals=3)  # bob and frank are only two
    with pytest.raises(NotAllowed) as refused:
        _fleet_restart(world)
    assert refused.value.code == "not_enough_approvers"
    assert "4 targets is above this policy's 2: 3 approvers." in refused.value.detail
    assert "only 2 can approve" in refused.value.detail
    assert not AutomationRequest.objects.exists()
    assert AuditEvent.objects.filter(action="request.refused", details__code="not_enough_approvers").exists()
    # A single target stays under the rule and goes through.
    assert submit().status == Status.SUBMITTED


def test_the_api_and_the_form_refuse_with_the_stable_code_and_words(world, sb):
    _rule(world, threshold=2, approvals=3)
    api = APIClient()
    api.force_authenticate(world.alice)
    answer = api.post("/api/v1/requests/", {"runbook": world.runbook.pk, "parameters": {},
                                            "target_parameter_name": "InstanceId", "targets": PLATFORM_TAG,
                                            "max_concurrency": "2", "max_errors": "1"}, format="json")
    assert answer.status_code == 403, answer.content
    assert answer.json()["code"] == "not_enough_approvers"
    assert "4 targets is above this policy's 2: 3 approvers." in answer.json()["detail"]
    page = Client()
    page.force_login(world.alice)
    url = reverse("automations:request_new", args=[world.runbook.pk])
    form = {"version": "default", "mode": "rate_control", "target_parameter_name": "InstanceId", "target_key": "tag",
            "target_tag_key": "Team", "target_values": "platform", "max_concurrency": "2", "max_errors": "1",
            "justification": "patch night", "preview": "1"}
    html = page.post(url, form).content.decode()
    assert "4 targets is above this policy&#x27;s 2: 3 approvers." in html, html[:3000]
    assert not AutomationRequest.objects.exists()


def test_the_policy_is_listed_with_its_thresholds_in_the_api(world, sb):
    _rule(world, threshold=10, approvals=2)
    api = APIClient()
    api.force_authenticate(world.alice)
    (row,) = [r for r in api.get("/api/v1/runbooks/").json() if r["id"] == world.runbook.pk]
    assert row["multi_target_threshold"] == 10 and row["multi_target_approvals"] == 2
    assert row["multi_account_threshold"] == 0
