"""REST API v1: the lifecycle, scoping (404 outside scope), strict input, stable error codes."""
import io
import json

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from automations import services
from automations.models import AuditEvent, AutomationRequest


def client_for(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def created(world, sb):
    response = client_for(world.alice).post("/api/v1/requests/", {
        "runbook": world.runbook.pk, "team": "platform", "parameters": {"InstanceId": [world.web1]},
        "justification": "patch night",
    }, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


def test_requester_submits_lead_approves_worker_dispatches_and_status_is_final(world, sb, created):
    assert created["status"] == "submitted"
    assert created["parameters"]["AutomationAssumeRole"] == [world.account.automation_role_arn]
    approve = client_for(world.bob).post(f"/api/v1/requests/{created['id']}/approve/", {"comment": "go"}, format="json")
    assert approve.status_code == 200 and approve.json()["status"] == "approved"
    services.request_dispatch(request_id=created["id"])  # what the Celery worker runs
    detail = client_for(world.alice).get(f"/api/v1/requests/{created['id']}/").json()
    assert detail["status"] == "running"
    execution_id = detail["execution"]["execution_id"]
    sb.wait_for_execution(execution_id, timeout=30)
    services.execution_statuses_sync()
    detail = client_for(world.alice).get(f"/api/v1/requests/{created['id']}/").json()
    assert detail["status"] == "succeeded"
    execution = client_for(world.alice).get(f"/api/v1/executions/{execution_id}/").json()
    assert [step["name"] for step in execution["steps"]] == ["stopInstances", "startInstances"]
    trail = client_for(world.carol).get(f"/api/v1/audit/?request={created['id']}").json()["results"]
    actions = [event["action"] for event in reversed(trail)]
    assert actions == ["request.submitted", "request.approval_added", "request.approved", "dispatch.claimed",
                       "dispatch.started", "execution.status_changed", "execution.succeeded"] or \
        actions[:5] == ["request.submitted", "request.approval_added", "request.approved", "dispatch.claimed",
                        "dispatch.started"] and actions[-1] == "execution.succeeded"
    started = next(event for event in trail if event["action"] == "dispatch.started")
    assert started["source_identity"] == "alice"
    assert started["role_session_name"].startswith(f"delegate-req-{created['id']}")
    assert started["aws_request_id"] and started["execution_id"] == execution_id
    assert started["resources"] == [world.web1]
    assert all(event["actor_name"] for event in trail)


def test_the_api_shows_the_start_body_the_worker_sends(world, sb, created):
    # The same builder as the preview page (automations.runbooks.start_body): what the API shows
    # before approval is byte for byte what the sandbox receives, minus ClientToken and Tags.
    shown = created["start_call"]
    client_for(world.bob).post(f"/api/v1/requests/{created['id']}/approve/", {}, format="json")
    assert services.request_dispatch(request_id=created["id"]) == "started"
    [sent] = [c for c in sb.calls.of("StartAutomationExecution") if c["client_token"] == created["client_token"]]
    body = {k: v for k, v in sent["params"].items() if k not in ("ClientToken", "Tags")}
    assert json.dumps(shown) == json.dumps(body)
    assert shown["Parameters"]["InstanceId"] == [world.web1]


def test_other_teams_request_is_404_everywhere(world, created):
    erin, dave = client_for(world.erin), client_for(world.dave)
    for client in (erin, dave):
        assert client.get(f"/api/v1/requests/{created['id']}/").status_code == 404
        for action in ("approve", "reject", "withdraw", "cancel"):
            response = client.post(f"/api/v1/requests/{created['id']}/{action}/", {}, format="json")
            assert response.status_code == 404
            assert response.json() == {"code": "not_found", "detail": "Not found."}
        assert client.get("/api/v1/requests/").json()["results"] == []
    assert AutomationRequest.objects.get(pk=created["id"]).status == "submitted"


def test_self_approval_is_403_with_stable_code(world, sb):
    response = client_for(world.bob).post("/api/v1/requests/", {
        "runbook": world.runbook.pk, "parameters": {"InstanceId": [world.web1]}}, format="json")
    assert response.status_code == 201
    approve = client_for(world.bob).post(f"/api/v1/requests/{response.json()['id']}/approve/", {}, format="json")
    assert approve.status_code == 403
    assert approve.json()["code"] == "self_approval"


def test_member_cannot_approve_and_auditor_cannot_write(world, created):
    assert client_for(world.alice).post(f"/api/v1/requests/{created['id']}/approve/", {}, format="json").status_code == 403
    carol = client_for(world.carol)
    assert carol.get(f"/api/v1/requests/{created['id']}/").status_code == 200  # auditors read everything
    response = carol.post(f"/api/v1/requests/{created['id']}/approve/", {}, format="json")
    assert response.status_code == 403 and response.json()["code"] == "not_a_lead"
    response = carol.post("/api/v1/requests/", {"runbook": world.runbook.pk, "parameters": {}}, format="json")
    assert response.status_code == 400 and response.json()["code"] == "runbook_not_offered"


@pytest.mark.parametrize("field, value", [
    ("status", "approved"), ("requester", 1), ("fingerprint", "0" * 64), ("execution_id", "x"),
    ("client_token", "00000000-0000-0000-0000-000000000000"), ("document_name", "AWS-DeleteEverything"),
    ("automation_role_arn", "arn:aws:iam::1:role/Admin"),
])
def test_mass_assignment_is_rejected(world, sb, field, value):
    response = client_for(world.alice).post("/api/v1/requests/", {
        "runbook": world.runbook.pk, "parameters": {"InstanceId": [world.web1]}, field: value}, format="json")
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid" and field in body["errors"]
    assert not AutomationRequest.objects.exists()


def test_role_parameter_from_client_is_refused_and_audited(world, sb):
    response = client_for(world.alice).post("/api/v1/requests/", {
        "runbook": world.runbook.pk,
        "parameters": {"InstanceId": [world.web1], "AutomationAssumeRole": "arn:aws:iam::999999999999:role/Admin"},
    }, format="json")
    assert response.status_code == 400
    assert response.json()["code"] == "server_owned_parameter"
    assert "AutomationAssumeRole" in response.json()["errors"]
    assert AuditEvent.objects.filter(action="request.refused", actor=world.alice,
                                     details__code="server_owned_parameter").exists()


def test_out_of_scope_target_is_403(world, sb):
    response = client_for(world.alice).post("/api/v1/requests/", {
        "runbook": world.runbook.pk, "parameters": {"InstanceId": [world.etl1]}}, format="json")
    assert response.status_code == 403
    assert response.json()["code"] == "out_of_scope"


def test_invalid_parameters_come_back_per_field(world, sb):
    response = client_for(world.alice).post("/api/v1/requests/", {
        "runbook": world.runbook.pk, "parameters": {"Nope": "x"}}, format="json")
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert "InstanceId" in errors and "Nope" in errors


def test_runbooks_are_scoped_and_detail_has_schema(world):
    runbooks = client_for(world.alice).get("/api/v1/runbooks/").json()
    assert [(r["name"], r["team"]) for r in runbooks] == [("AWS-RestartEC2Instance", "platform")]
    detail = client_for(world.alice).get(f"/api/v1/runbooks/{world.runbook.pk}/").json()
    assert detail["parameters"]["InstanceId"]["type"] == "StringList"
    assert detail["parameters"]["AutomationAssumeRole"]["server_owned"] is True
    outsider = client_for(world.carol)
    assert outsider.get(f"/api/v1/runbooks/{world.runbook.pk}/").status_code == 404


def test_token_auth_from_management_command(world):
    out = io.StringIO()
    call_command("create_api_token", "alice", stdout=out)
    token = out.getvalue().strip()
    client = APIClient()
    assert client.get("/api/v1/runbooks/").status_code in (401, 403)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.get("/api/v1/runbooks/").status_code == 200
    assert token not in str(list(AuditEvent.objects.values_list("details", flat=True)))


def test_session_writes_need_csrf(world, created):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(world.bob)
    response = client.post(f"/api/v1/requests/{created['id']}/approve/", {}, format="json")
    assert response.status_code == 403
    assert AutomationRequest.objects.get(pk=created["id"]).status == "submitted"


def test_audit_api_is_scoped(world, created):
    own = client_for(world.dave).get("/api/v1/audit/").json()["results"]
    assert all(event["actor_name"] == "dave" for event in own)
    assert client_for(world.carol).get("/api/v1/audit/?action=request.submitted").json()["results"]


def test_schema_and_docs_are_served(world):
    client = client_for(world.alice)
    schema = client.get("/api/schema/")
    assert schema.status_code == 200 and b"/api/v1/requests/" in schema.content
    assert client.get("/api/docs/").status_code == 200


def test_cancel_after_aws_finished_the_run_is_a_409_not_a_400(world, submit, sb):
    """Found by schemathesis's strict positive-data check: a well-formed cancel of a request whose
    run AWS already finished (before our status sync saw it) was answered 400 as if the input were bad."""
    request = services.request_approve(request=submit(), actor=world.bob)
    services.request_dispatch(request_id=request.pk)
    request.refresh_from_db()
    sb.wait_for_execution(request.execution.execution_id, timeout=30)
    response = client_for(world.alice).post(f"/api/v1/requests/{request.pk}/cancel/", {"reason": "too late"},
                                            format="json")
    assert response.status_code == 409, response.json()
    assert response.json()["code"] == "aws_error"
    assert "InvalidAutomationStatusUpdateException" in response.json()["detail"]
    assert AuditEvent.objects.filter(request=request, action="request.cancel_failed").exists()
