"""The execution preview bound to the approval, end to end against the sandbox (boto3 over HTTP):
at submit Delegate asks StartExecutionPreview/GetExecutionPreview, the approver reads the figures
on the request page and in the API, the fingerprint binds them, and at dispatch a preview that
differs (what AWS would touch changed) refuses the start like the content check does."""
from __future__ import annotations

import json
import uuid

import boto3
import pytest

from automations import services
from automations.models import AuditEvent, AutomationRequest
from automations.runbooks import fingerprint_for
from tests import factories as f

Status = AutomationRequest.Status
REGION = "eu-west-1"
RESTART_FIGURES = {"steps": {"Mutating": 2, "NonMutating": 0, "Undetermined": 0}, "regions": [REGION],
                   "total_accounts": 1, "targets": [{"type": "AWS::EC2::Instance", "count": 1}]}


def ssm(sb):
    return boto3.client("ssm", endpoint_url=sb.url, region_name=REGION, aws_access_key_id="test",
                        aws_secret_access_key="test")


def starts(sb, request):
    return [c for c in sb.calls.of("StartAutomationExecution") if c["client_token"] == str(request.client_token)]


class TestAtSubmit:
    def test_submit_binds_aws_preview_figures_and_the_approver_sees_them(self, world, submit, sb, client):
        request = submit()
        assert request.execution_preview == {"status": "Success", "figures": RESTART_FIGURES}
        started = sb.calls.of("StartExecutionPreview")[-1]["params"]
        assert started["DocumentName"] == "AWS-RestartEC2Instance" and started["DocumentVersion"] == "1"
        assert started["ExecutionInputs"]["Automation"]["Parameters"]["InstanceId"] == [world.web1]
        assert sb.calls.of("GetExecutionPreview")
        # The figures are part of what the approval binds.
        request.execution_preview = {"status": "Success", "figures": {**RESTART_FIGURES, "total_accounts": 2}}
        assert fingerprint_for(request) != request.fingerprint
        request.refresh_from_db()
        assert fingerprint_for(request) == request.fingerprint

        client.force_login(world.bob)
        page = client.get(f"/requests/{request.pk}/").content.decode()
        assert 'id="execution-preview"' in page
        assert "2 mutating" in page and "0 non-mutating" in page and "0 undetermined" in page
        assert "AWS::EC2::Instance: 1" in page and "1 account" in page and REGION in page
        api = client.get(f"/api/v1/requests/{request.pk}/").json()
        assert api["execution_preview"] == {"status": "Success", "figures": RESTART_FIGURES}

    def test_when_aws_gives_no_preview_the_page_says_so_and_invents_nothing(self, world, submit, sb, client):
        sb.faults.error_next("StartExecutionPreview", "AccessDeniedException", message="not allowed to preview")
        request = submit()
        assert request.status == Status.SUBMITTED
        assert request.execution_preview["status"] == "Unavailable"
        assert "AccessDeniedException" in request.execution_preview["message"]
        assert "figures" not in request.execution_preview
        client.force_login(world.bob)
        page = client.get(f"/requests/{request.pk}/").content.decode()
        assert "AWS gave no execution preview" in page and "mutating" not in page.lower().split("execution-preview")[1][:400]

    def test_a_failed_preview_is_reported_as_failed(self, world, submit, sb):
        sb.faults.error_next("GetExecutionPreview", "InternalServerError", status=500, n=10)
        request = submit()
        assert request.execution_preview["status"] == "Unavailable"


def own_runbook(world, sb) -> tuple[str, object]:
    """A runbook of our own whose one step runs a child runbook (aws:executeAutomation); both in SSM."""
    child = f"Test-Child-{uuid.uuid4().hex[:8]}"
    ssm(sb).create_document(Name=child, DocumentType="Automation", Content=json.dumps({
        "schemaVersion": "0.3", "parameters": {"InstanceId": {"type": "String"}},
        "mainSteps": [{"name": "look", "action": "aws:executeAwsApi",
                       "inputs": {"Service": "ec2", "Api": "DescribeInstances", "InstanceIds": ["{{ InstanceId }}"]}}]}))
    parent_content = json.dumps({
        "schemaVersion": "0.3", "assumeRole": "{{ AutomationAssumeRole }}",
        "parameters": {"InstanceId": {"type": "String"}, "AutomationAssumeRole": {"type": "String", "default": ""}},
        "mainSteps": [{"name": "child", "action": "aws:executeAutomation",
                       "inputs": {"DocumentName": child, "RuntimeParameters": {"InstanceId": "{{ InstanceId }}"}}}]})
    parent = f"Test-Parent-{uuid.uuid4().hex[:8]}"
    ssm(sb).create_document(Name=parent, DocumentType="Automation", Content=parent_content)
    runbook = f.RunbookFactory(account=world.account, name=parent, owner=world.account.account_id,
                               owner_kind="self")
    f.RunbookVersionFactory(runbook=runbook, content=parent_content, document_format="JSON")
    f.TeamRunbookFactory(team=world.platform, runbook=runbook)
    return child, runbook


class TestAtDispatch:
    def test_an_unchanged_preview_starts(self, world, submit, sb):
        request = services.request_approve(request=submit(), actor=world.bob)
        assert services.request_dispatch(request_id=request.pk) == "started"
        assert len(sb.calls.of("StartExecutionPreview")) >= 2  # at submit and again right before Start

    def test_a_changed_preview_invalidates_the_approval(self, world, sb):
        child, runbook = own_runbook(world, sb)
        request = services.request_submit(actor=world.alice, team=world.platform, runbook_id=runbook.pk,
                                          parameters={"InstanceId": [world.web1]})
        assert request.execution_preview["figures"]["steps"] == {"Mutating": 0, "NonMutating": 1, "Undetermined": 0}
        request = services.request_approve(request=request, actor=world.bob)
        assert request.status == Status.APPROVED
        # The parent's content (and hash) stay the same; what its child would do changes in SSM.
        client = ssm(sb)
        client.update_document(Name=child, DocumentVersion="$LATEST", Content=json.dumps({
            "schemaVersion": "0.3", "parameters": {"InstanceId": {"type": "String"}},
            "mainSteps": [{"name": "look", "action": "aws:executeAwsApi",
                           "inputs": {"Service": "ec2", "Api": "DescribeInstances", "InstanceIds": ["{{ InstanceId }}"]}},
                          {"name": "stop", "action": "aws:changeInstanceState",
                           "inputs": {"InstanceIds": ["{{ InstanceId }}"], "DesiredState": "stopped"}}]}))
        client.update_document_default_version(Name=child, DocumentVersion="2")

        assert services.request_dispatch(request_id=request.pk) == "refused"
        request.refresh_from_db()
        assert request.status == Status.DISPATCH_FAILED and request.reason_code == "preview_changed"
        assert "1 mutating" in request.status_reason and not starts(sb, request)
        event = AuditEvent.objects.get(request=request, action="request.preview_changed")
        assert event.details["bound"]["steps"]["Mutating"] == 0 and event.details["found"]["steps"]["Mutating"] == 1
        assert AuditEvent.objects.filter(request=request, action="dispatch.refused").exists()


@pytest.fixture(autouse=True)
def _sandbox(sb):
    """The session's sandbox is shared: the runbooks a test made are deleted after it (a later catalog
    sync must not find them)."""
    before = set(sb.state.region(REGION).documents)
    yield sb
    for name in set(sb.state.region(REGION).documents) - before:
        ssm(sb).delete_document(Name=name)
