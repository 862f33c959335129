"""Issue 12: what the lead approved is exactly what runs, as the role the page names.

End to end against the sandbox: content swaps (at dispatch, between submit and approval, before a
step signal), identity (lower-camel assumeRole, literal and absent assumeRole, the "Runs as" of
every fixture runbook and sandbox document against the role the sandbox records), role
parameters of both kinds, and aws:approve Approvers that AWS (the sandbox) enforces.
"""
import json
import uuid

import boto3
import pytest
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from automations import services
from automations.errors import ContentChanged, InvalidRequest, ServerOwnedParameter
from automations.models import (
    Approval,
    AuditEvent,
    AutomationRequest,
    ContentRevision,
    DispatchOutbox,
    Execution,
    NotificationDelivery,
    RoleParameter,
    Runbook,
    StepApproval,
    TeamRole,
    TeamRunbook,
)
from automations.runbooks import fingerprint_for
from automations.services import notifications, policies
from tests.conftest import seeded_instance
from tests.services.test_catalog import synced  # noqa: F401 - the synced catalog fixture
from tests.processes import wait_until

REGION = "eu-west-1"
START = "StartAutomationExecution"
Status = AutomationRequest.Status


def _ssm(sb):
    return boto3.client("ssm", region_name=REGION, endpoint_url=sb.url,
                        aws_access_key_id="AKIDTESTTESTTEST0000", aws_secret_access_key="test")


def harmless(instance_parameter: str = "InstanceId") -> list[dict]:
    return [{"name": "look", "action": "aws:executeAwsApi",
             "inputs": {"Service": "ec2", "Api": "DescribeInstances", "InstanceIds": [f"{{{{ {instance_parameter} }}}}"]}}]


def malicious(victim: str) -> list[dict]:
    return [{"name": "stopOther", "action": "aws:changeInstanceState",
             "inputs": {"InstanceIds": [victim], "DesiredState": "stopped"}}]


def document(steps, *, assume_role="{{ AutomationAssumeRole }}", role_parameter="AutomationAssumeRole",
             parameters=None) -> str:
    content = {"schemaVersion": "0.3", "description": "Team runbook",
               "parameters": {"InstanceId": {"type": "String"},
                              **({role_parameter: {"type": "String", "default": ""}} if role_parameter else {}),
                              **(parameters or {})},
               "mainSteps": steps}
    if assume_role is not None:
        content["assumeRole"] = assume_role
    return json.dumps(content)


@pytest.fixture
def own(world, sb):
    """own(content) -> a TeamRunbook for a fresh self-owned document, synced and offered to `team`."""
    ssm = _ssm(sb)
    created = []

    def make(content: str, team=None, name=None):
        name = name or f"Team-Doc-{uuid.uuid4().hex[:8]}"
        ssm.create_document(Name=name, DocumentType="Automation", DocumentFormat="JSON", Content=content)
        created.append(name)
        runbook, _ = Runbook.objects.get_or_create(account=world.account, region=REGION, name=name,
                                                   defaults={"owner": world.account.account_id, "owner_kind": "self"})
        report = services.runbook_sync(runbook=runbook)
        assert report.errors == []
        runbook.refresh_from_db()
        return TeamRunbook.objects.get_or_create(team=team or world.platform, runbook=runbook,
                                                defaults={"justification_required": False})[0]

    make.ssm = ssm
    yield make
    for name in created:
        try:
            ssm.delete_document(Name=name)
        except ssm.exceptions.InvalidDocument:
            pass


def swap(ssm, name: str, content: str) -> None:
    """The attack: delete the document and create it again under the same name (version 1 again)."""
    ssm.delete_document(Name=name)
    ssm.create_document(Name=name, DocumentType="Automation", DocumentFormat="JSON", Content=content)
    assert ssm.describe_document(Name=name)["Document"]["LatestVersion"] == "1"


def submit(world, policy, parameters=None, actor=None, **kwargs):
    return services.request_submit(actor=actor or world.alice, team=policy.team, runbook_id=policy.runbook_id,
                                   parameters=parameters if parameters is not None else {"InstanceId": world.web1},
                                   **kwargs)


@pytest.fixture
def deliveries(monkeypatch):
    monkeypatch.setattr(notifications, "publish", lambda delivery_id: True)


def emails_for(request, event):
    return sorted({email for d in NotificationDelivery.objects.filter(request=request, event=event)
                   for email in d.recipients})


#
# 1. Bind content
#


class TestContentSwap:
    def test_the_fingerprint_binds_content_hash_owner_and_run_at(self, world, own):
        policy = own(document(harmless()))
        request = submit(world, policy)
        version = policy.runbook.versions.get(version="1")
        assert request.document_hash == version.ssm_hash == _ssm_hash(own.ssm, policy.runbook.name, "1")
        assert version.ssm_hash_type == "Sha256"
        original = request.fingerprint
        for field, value in (("document_hash", "0" * 64), ("run_at", request.created_at)):
            changed = AutomationRequest(**{f.attname: getattr(request, f.attname) for f in request._meta.concrete_fields})
            setattr(changed, field, value)
            assert fingerprint_for(changed) != original, field
        owner = Runbook(name=request.runbook.name, owner="999999999999")
        other = AutomationRequest(**{f.attname: getattr(request, f.attname) for f in request._meta.concrete_fields})
        other.runbook = owner
        assert fingerprint_for(other) != original

    def test_swapped_while_the_first_start_went_unanswered_nothing_new_starts(self, world, own, sb):
        """Found by the lifecycle machine: AWS answered the first Start with a 5xx (it did not start),
        the document was swapped, and the re-driven attempt skipped the content check because 'AWS
        may already run it', so it started the swapped content under the old approval."""
        policy = own(document(harmless()))
        name = policy.runbook.name
        request = services.request_approve(request=submit(world, policy), actor=world.bob)
        sb.faults.error_next(START, "InternalServerError", n=5, status=500)
        assert services.request_dispatch(request_id=request.pk) != "started"
        request.refresh_from_db()
        assert request.status == Status.DISPATCHING  # uncertain: re-driven later with the same token
        sb.faults.reset()
        swap(own.ssm, name, document(malicious(world.etl1)))
        sb.calls.clear()
        DispatchOutbox.objects.filter(pk=request.pk).update(next_attempt_at=timezone.now())
        services.request_dispatch(request_id=request.pk)
        request.refresh_from_db()
        assert sb.calls.of(START) == [], "the swapped content was started under the old approval"
        assert request.status == Status.DISPATCH_FAILED and request.reason_code == "content_changed"
        assert "may have" in request.status_reason  # says the first attempt's outcome is unknown
        assert sb.instance_state(world.etl1) == "running"

    def test_swapped_after_approval_nothing_starts(self, world, own, sb, deliveries,
                                                   django_capture_on_commit_callbacks):
        """The issue's story: approved, then deleted and re-created with a step that stops another
        team's instance. Nothing starts; content_changed; audit; requester and approver told."""
        policy = own(document(harmless()))
        name = policy.runbook.name
        request = services.request_approve(request=submit(world, policy), actor=world.bob)
        assert request.status == Status.APPROVED
        victim = world.etl1
        assert sb.instance_state(victim) == "running"
        swap(own.ssm, name, document(malicious(victim)))
        sb.calls.clear()
        with django_capture_on_commit_callbacks(execute=True):
            assert services.request_dispatch(request_id=request.pk) == "refused"
        request.refresh_from_db()
        assert request.status == Status.DISPATCH_FAILED and request.reason_code == "content_changed"
        assert "content changed" in request.status_reason
        assert sb.calls.of(START) == []
        described = sb.calls.of("DescribeDocument")
        assert described and all(c["params"].get("DocumentVersion") == "1" for c in described)
        assert sb.instance_state(victim) == "running"
        event = AuditEvent.objects.get(request=request, action="request.content_changed")
        assert event.details["bound_hash"] == request.document_hash != event.details["found_hash"]
        refused = AuditEvent.objects.get(request=request, action="dispatch.refused").details
        # x__dispatch__mutmut_130: the refusal names both hashes under their names.
        assert (refused["code"], refused["bound_hash"], refused["found_hash"]) == (
            "content_changed", request.document_hash, event.details["found_hash"])
        assert emails_for(request, "request.content_changed") == ["alice@example.com", "bob@example.com"]
        # The new content is a new revision of version 1 in the catalog, and what forms show now.
        version = policy.runbook.versions.get(version="1")
        assert version.revision == 2 and [s["name"] for s in version.steps] == ["stopOther"]
        assert ContentRevision.objects.filter(runbook_version=version).count() == 2
        assert AuditEvent.objects.filter(action="catalog.content_changed", runbook=name).exists()

    def test_catalog_sync_notices_a_new_hash_under_a_known_version(self, world, own):
        policy = own(document(harmless()))
        swap(own.ssm, policy.runbook.name, document(malicious(world.etl1)))
        report = services.runbook_sync(runbook=policy.runbook)
        assert report.content_changes == 1 and f"content changed: {policy.runbook.name} v1" in report.changes
        version = policy.runbook.versions.get(version="1")
        assert version.revision == 2 and version.ssm_hash == _ssm_hash(own.ssm, policy.runbook.name, "1")
        assert services.runbook_sync(runbook=policy.runbook).content_changes == 0  # seen once, recorded once

    def test_swapped_between_submit_and_approval_the_approver_sees_it_and_cannot_approve(
            self, world, own, sb, client, deliveries, django_capture_on_commit_callbacks):
        policy = own(document(harmless()))
        request = submit(world, policy)
        swap(own.ssm, policy.runbook.name, document(malicious(world.etl1)))
        client.force_login(world.bob)
        page = client.get(request.get_absolute_url()).content.decode()
        assert "content changed since this request was submitted" in page
        assert "stopOther" in page and "look" in page  # the new steps, and the ones requested
        api = APIClient()
        api.force_login(world.bob)
        content = api.get(f"/api/v1/requests/{request.pk}/content/").json()
        assert content["changed_since_submit"] is True
        assert [s["name"] for s in content["current_steps"]] == ["stopOther"]
        assert [s["name"] for s in content["steps"]] == ["look"]
        with django_capture_on_commit_callbacks(execute=True):
            response = api.post(f"/api/v1/requests/{request.pk}/approve/", {"comment": "ok"}, format="json")
        assert response.status_code == 409 and response.json()["code"] == "content_changed"
        request.refresh_from_db()
        assert request.status == Status.REJECTED and request.reason_code == "content_changed"
        assert not Approval.objects.filter(request=request).exists()
        assert AuditEvent.objects.filter(request=request, action="request.invalidated").exists()
        assert "alice@example.com" in emails_for(request, "request.content_changed")
        with pytest.raises(Exception):
            services.request_approve(request=request, actor=world.frank)

    def test_a_step_signal_is_refused_when_the_content_changed(self, world, own, sb, deliveries):
        steps = [{"name": "approve", "action": "aws:approve",
                  "inputs": {"Approvers": "{{ Approvers }}", "MinRequiredApprovals": 1, "Message": "go?"}},
                 *harmless()]
        policy = own(document(steps, parameters={"Approvers": {"type": "StringList"}}))
        assert policy.runbook.versions.get(version="1").parameters["Approvers"]["server_owned"]
        request = services.request_approve(request=submit(world, policy), actor=world.bob)
        assert request.parameters["Approvers"] == [world.account.dispatch_role_arn]
        assert services.request_dispatch(request_id=request.pk) == "started"
        entry = _waiting_step(request)
        swap(own.ssm, policy.runbook.name, document(malicious(world.etl1)))
        sb.calls.clear()
        with pytest.raises(ContentChanged):
            policies.step_decide(step_approval=entry, actor=world.frank, decision="Approve")
        assert sb.calls.of("SendAutomationSignal") == []
        assert AuditEvent.objects.filter(request=request, action="step.refused",
                                         details__code="content_changed").exists()

    def test_a_rerun_binds_the_content_of_its_own_submit(self, world, own, sb):
        policy = own(document(harmless()))
        first = services.request_approve(request=submit(world, policy), actor=world.bob)
        assert services.request_dispatch(request_id=first.pk) == "started"
        swap(own.ssm, policy.runbook.name, document(malicious(world.etl1)))
        TeamRunbook.objects.filter(pk=policy.pk).update(approvals_required=0)  # re-runs need no approval here
        rerun = submit(world, policy, rerun_of=first)
        assert rerun.document_hash == first.document_hash  # the catalog had not seen the swap yet
        rerun.refresh_from_db()
        assert rerun.status == Status.APPROVED
        assert services.request_dispatch(request_id=rerun.pk) == "refused"
        rerun.refresh_from_db()
        assert rerun.reason_code == "content_changed"


def _ssm_hash(ssm, name, version):
    return ssm.describe_document(Name=name, DocumentVersion=version)["Document"]["Hash"]


def _waiting_step(request):
    def waiting():
        services.execution_statuses_sync()
        steps = Execution.objects.get(request=request).steps
        return any(s["action"] == "aws:approve" and s["status"] == "Waiting" for s in steps)

    wait_until(waiting, timeout=30, what="the aws:approve step to wait")
    policies.step_approvals_sync()
    return StepApproval.objects.get(execution__request=request)


#
# 2. Show what will run
#


class TestApproverSeesTheContent:
    def test_steps_with_service_and_api_code_collapsed_and_a_diff_against_the_last_run(self, world, own, client):
        steps = [*harmless(), {"name": "script", "action": "aws:executeScript",
                               "inputs": {"Runtime": "python3.11", "Handler": "h", "Script": "def h(e, c):\n    return 'hi'"}}]
        policy = own(document(steps))
        first = services.request_approve(request=submit(world, policy), actor=world.bob)
        assert services.request_dispatch(request_id=first.pk) == "started"
        second = submit(world, policy)
        client.force_login(world.bob)
        page = client.get(second.get_absolute_url()).content.decode()
        assert "ec2:DescribeInstances" in page
        assert "<summary>Script / inline code</summary>" in page and "return &#x27;hi&#x27;" in page
        assert f"Same content as the team's last run (#{first.pk})" in page, page[page.find("Steps of exactly"):][:3000]
        # A new version with another step: the diff names it.
        own.ssm.update_document(Name=policy.runbook.name, DocumentVersion="$LATEST", DocumentFormat="JSON",
                                Content=document([*steps, *malicious(world.etl1)]))
        services.runbook_sync(runbook=policy.runbook)
        third = submit(world, policy, version="2")
        api = APIClient()
        api.force_login(world.bob)
        content = api.get(f"/api/v1/requests/{third.pk}/content/").json()
        assert [s["name"] for s in content["steps"]] == ["look", "script", "stopOther"]
        assert content["steps"][0]["service"] == "ec2" and content["steps"][0]["api"] == "DescribeInstances"
        assert content["diff_against_request"] == first.pk and '+   "name": "stopOther"' in content["diff"]


#
# 3. Identity
#


class TestIdentity:
    def test_lower_camel_assume_role_runs_as_the_automation_role(self, world, own, sb, client):
        policy = own(document(harmless(), assume_role="{{ automationAssumeRole }}",
                              role_parameter="automationAssumeRole"))
        schema = policy.runbook.versions.get(version="1").parameters
        assert schema["automationAssumeRole"]["server_owned"] and schema["automationAssumeRole"]["role_kind"] == "automation"
        with pytest.raises(ServerOwnedParameter):
            submit(world, policy, {"InstanceId": world.web1, "automationAssumeRole": "arn:aws:iam::123456789012:role/Admin"})
        request = submit(world, policy)
        role = world.account.automation_role_arn
        assert request.parameters["automationAssumeRole"] == [role] and request.run_as == role
        request = services.request_approve(request=request, actor=world.bob)
        assert services.request_dispatch(request_id=request.pk) == "started"
        run_as = sb.execution(request.execution.execution_id)["RunAs"]
        assert run_as == {"RoleArn": role, "PrincipalArn": role, "Source": "assumeRole"}
        client.force_login(world.alice)
        assert _runs_as_shown(client, request) == role

    @pytest.mark.parametrize("assume_role", ["arn:aws:iam::123456789012:role/SomeoneElses", None])
    def test_a_literal_or_absent_assume_role_is_offered_only_when_allowed_and_named_truly(
            self, world, own, sb, client, assume_role):
        policy = own(document(harmless(), assume_role=assume_role, role_parameter=None))
        client.force_login(world.alice)
        card = client.get(reverse("automations:catalog"), {"q": policy.runbook.name}).content.decode()
        assert "needs setup" in card and "assumeRole" in card
        with pytest.raises(InvalidRequest) as refused:
            submit(world, policy)
        assert refused.value.code == "needs_setup"
        Runbook.objects.filter(pk=policy.runbook_id).update(allow_unmanaged_identity=True)
        card = client.get(reverse("automations:catalog"), {"q": policy.runbook.name}).content.decode()
        assert "needs setup" not in card
        request = submit(world, policy)
        expected = assume_role or world.account.dispatch_role_arn
        assert request.run_as == expected
        form = client.get(reverse("automations:request_new", args=[policy.runbook_id])).content.decode()
        assert expected in form and world.account.automation_role_arn not in form
        request = services.request_approve(request=request, actor=world.bob)
        assert services.request_dispatch(request_id=request.pk) == "started"
        run_as = sb.execution(request.execution.execution_id)["RunAs"]
        assert run_as["RoleArn"] == expected and run_as["Source"] == ("assumeRole" if assume_role else "caller")
        assert _runs_as_shown(client, request) == expected
        api = APIClient()
        api.force_login(world.alice)
        body = api.get(f"/api/v1/requests/{request.pk}/").json()
        assert body["runs_as"] == expected
        assert body["runs_as_source"] == ("fixed_role" if assume_role else "dispatch_session")


def _runs_as_shown(client, request) -> str:
    import re

    page = client.get(request.get_absolute_url()).content.decode()
    found = re.search(r"<dt>Runs as</dt><dd><span class=\"mono\">([^<]+)</span>", page)
    assert found, "no Runs as on the request page"
    return found.group(1)


class TestRunsAsEverywhere:
    def test_every_fixture_runbook_and_sandbox_document_runs_as_the_role_the_page_names(
            self, world, synced, sb, client):
        """For each runbook: submit, approve, start; the sandbox's record of who the execution
        runs as equals what the request page and the API say."""
        from tests.services.test_catalog import valid_parameters

        client.force_login(world.alice)
        api = APIClient()
        api.force_login(world.alice)
        checked = []
        for name, policy in sorted(synced.items()):
            version = policy.runbook.versions.get(version=policy.runbook.default_version)
            for parameter, spec in version.parameters.items():
                if spec["role_kind"] == "handoff":
                    RoleParameter.objects.update_or_create(
                        runbook=policy.runbook, parameter=parameter,
                        defaults={"value": f"arn:aws:iam::{world.account.account_id}:role/DelegateLambda"})
            request = services.request_submit(actor=world.alice, team=world.platform, runbook_id=policy.runbook_id,
                                              parameters=valid_parameters(world, name, version.parameters))
            request = services.request_approve(request=request, actor=world.bob)
            outcome = services.request_dispatch(request_id=request.pk)
            request.refresh_from_db()
            assert outcome == "started", (name, request.status_reason)
            recorded = sb.execution(request.execution.execution_id)["RunAs"]["RoleArn"]
            assert recorded == request.run_as == _runs_as_shown(client, request), name
            assert api.get(f"/api/v1/requests/{request.pk}/").json()["runs_as"] == recorded, name
            checked.append(name)
        assert len(checked) == len(synced) >= 23


#
# 4. Two kinds of role parameters
#


def attach_iam_document() -> str:
    steps = [
        {"name": "getRole", "action": "aws:executeAwsApi",
         "inputs": {"Service": "iam", "Api": "GetInstanceProfile", "InstanceProfileName": "{{ RoleName }}"}},
        {"name": "attach", "action": "aws:executeAwsApi",
         "inputs": {"Service": "ec2", "Api": "AssociateIamInstanceProfile", "InstanceId": "{{ InstanceId }}",
                    "IamInstanceProfile": {"Name": "{{ RoleName }}"}}},
    ]
    return document(steps, parameters={"RoleName": {"type": "String", "description": "(Required) The role to attach."}})


class TestRoleParameters:
    def test_a_role_to_attach_is_picked_from_the_team_allowlist(self, world, own, client):
        policy = own(attach_iam_document(), name=f"Team-AttachIAMToInstance-{uuid.uuid4().hex[:6]}")
        schema = policy.runbook.versions.get(version="1").parameters
        assert schema["RoleName"]["role_kind"] == "subject" and not schema["RoleName"]["server_owned"]
        client.force_login(world.alice)
        card = client.get(reverse("automations:catalog"), {"q": "AttachIAMToInstance"}).content.decode()
        assert "needs setup" in card and "RoleName: no role in your team&#x27;s allowlist" in card
        with pytest.raises(InvalidRequest) as refused:
            submit(world, policy, {"InstanceId": world.web1, "RoleName": "AppServer"})
        assert refused.value.code == "needs_setup"
        api = APIClient()
        api.force_login(world.alice)
        detail = api.get(f"/api/v1/runbooks/{policy.runbook_id}/").json()
        assert detail["needs_setup"] == ["RoleName: no role in your team's allowlist"]
        assert detail["runs_as"] == world.account.automation_role_arn
        TeamRole.objects.create(team=world.platform, account=world.account,
                                arn=f"arn:aws:iam::{world.account.account_id}:role/AppServer")
        detail = api.get(f"/api/v1/runbooks/{policy.runbook_id}/").json()
        assert detail["needs_setup"] == [] and detail["parameters"]["RoleName"]["allowedValues"] == ["AppServer"]
        form = client.get(reverse("automations:request_new", args=[policy.runbook_id])).content.decode()
        assert '<select name="param_RoleName"' in form and '<option value="AppServer"' in form
        with pytest.raises(InvalidRequest) as refused:
            submit(world, policy, {"InstanceId": world.web1, "RoleName": "Administrator"})
        assert "RoleName" in refused.value.errors
        request = submit(world, policy, {"InstanceId": world.web1, "RoleName": "AppServer"})
        assert request.parameters["RoleName"] == ["AppServer"]
        client.force_login(world.bob)
        page = client.get(request.get_absolute_url()).content.decode()
        assert "<code>RoleName</code> = <span class=\"mono\">AppServer</span>" in page
        # Another team has no allowlist: still needs setup for them.
        data_policy = TeamRunbook.objects.create(team=world.data, runbook=policy.runbook, justification_required=False)
        with pytest.raises(InvalidRequest):
            submit(world, data_policy, {"InstanceId": world.etl1, "RoleName": "AppServer"}, actor=world.dave)

    def test_an_arn_parameter_gets_arns_and_an_admin_can_override_the_kind(self, world, own):
        policy = own(document(harmless(), parameters={"ClusterRoleArn": {"type": "String"}}))
        TeamRole.objects.create(team=world.platform, account=world.account,
                                arn=f"arn:aws:iam::{world.account.account_id}:role/EksCluster")
        request = submit(world, policy, {"InstanceId": world.web1,
                                         "ClusterRoleArn": f"arn:aws:iam::{world.account.account_id}:role/EksCluster"})
        assert request.parameters["ClusterRoleArn"] == [f"arn:aws:iam::{world.account.account_id}:role/EksCluster"]
        RoleParameter.objects.create(runbook=policy.runbook, parameter="ClusterRoleArn", kind="handoff",
                                     value=f"arn:aws:iam::{world.account.account_id}:role/Fixed")
        with pytest.raises(ServerOwnedParameter):
            submit(world, policy, {"InstanceId": world.web1, "ClusterRoleArn": "x"})
        assert submit(world, policy).parameters["ClusterRoleArn"] == [f"arn:aws:iam::{world.account.account_id}:role/Fixed"]

    def test_handed_off_roles_are_set_per_runbook_parameter_not_per_account_name(self, world, own, client):
        lambda_role = {"LambdaAssumeRole": {"type": "String"}}
        first = own(document(harmless(), parameters=lambda_role))
        second = own(document(harmless(), parameters=lambda_role))
        assert first.runbook.versions.get().parameters["LambdaAssumeRole"]["role_kind"] == "handoff"
        RoleParameter.objects.create(runbook=first.runbook, parameter="LambdaAssumeRole",
                                     value=f"arn:aws:iam::{world.account.account_id}:role/FirstLambda")
        assert submit(world, first).parameters["LambdaAssumeRole"] == [
            f"arn:aws:iam::{world.account.account_id}:role/FirstLambda"]
        with pytest.raises(InvalidRequest) as refused:
            submit(world, second)
        assert refused.value.code == "needs_setup" and "LambdaAssumeRole" in refused.value.detail
        client.force_login(world.alice)
        card = client.get(reverse("automations:catalog"), {"q": second.runbook.name}).content.decode()
        assert "LambdaAssumeRole: no role configured for this runbook parameter" in card


#
# 5. Approvers AWS accepts
#


class TestApproversAwsAccepts:
    def test_with_approval_runbook_reaches_success_with_approvers_enforced(self, world, sb, client, deliveries):
        from tests import factories as f

        assert sb.faults.enforce_approvers is True  # AWS's behaviour is the sandbox's default
        runbook = f.RunbookFactory(account=world.account, name="AWS-StopEC2InstanceWithApproval")
        f.RunbookVersionFactory(runbook=runbook, filename="aws-StopEC2InstanceWithApproval.json")
        policy = f.TeamRunbookFactory(team=world.platform, runbook=runbook, approvals_required=2)
        instance = seeded_instance("api-1")
        with pytest.raises(ServerOwnedParameter):
            submit(world, policy, {"InstanceId": [instance], "Approvers": ["arn:aws:iam::123456789012:user/mallory"]})
        request = submit(world, policy, {"InstanceId": [instance],
                                         "SNSTopicArn": "arn:aws:sns:eu-west-1:123456789012:AutomationApprovals"})
        assert request.parameters["Approvers"] == [world.account.dispatch_role_arn]
        services.request_approve(request=request, actor=world.bob)
        request = services.request_approve(request=request, actor=world.frank)
        assert services.request_dispatch(request_id=request.pk) == "started"
        entry = _waiting_step(request)
        sb.calls.clear()
        client.force_login(world.bob)
        assert client.post(f"/approvals/steps/{entry.pk}/", {"decision": "Approve"}).status_code == 302
        assert sb.calls.of("SendAutomationSignal") == []  # one of two: AWS hears nothing yet
        assert AuditEvent.objects.filter(request=request, action="step.approval_added").exists()
        client.force_login(world.frank)
        assert client.post(f"/approvals/steps/{entry.pk}/", {"decision": "Approve"}).status_code == 302
        signal = sb.calls.of("SendAutomationSignal")
        assert len(signal) == 1 and signal[0]["error"] is None and signal[0]["source_identity"] == "frank"

        def finished():
            services.execution_statuses_sync()
            return AutomationRequest.objects.get(pk=request.pk).status in (Status.SUCCEEDED, Status.FAILED)

        wait_until(finished, timeout=30, what="the run to finish")
        request.refresh_from_db()
        assert request.status == Status.SUCCEEDED, request.execution.failure_message
        assert sb.instance_state(instance) == "stopped"


#
# 6. Canonical targets
#

BAD_VALUES = {
    # parameter (name decides the kind for plain String parameters) -> values AWS would not accept as that kind
    "InstanceId": ["I-0123456789ABCDEF0", "i-0123456789abcdef0,i-0fedcba9876543210", "i-123", "web-1"],
    "VolumeId": ["vol-XYZ", "vol-0123456789abcdef0/x"],
    "SnapshotId": ["snap-", "snapshot-0123456789abcdef0"],
    "ImageId": ["ami-0123456789abcdef", "AMI-0123456789ABCDEF0"],
    "DBInstanceIdentifier": ["1orders", "orders--db", "orders_db"],
    "BucketName": ["Platform-Logs", "platform..logs", "platform-logs/key", "192.168.1.1"],
    "QueueUrl": ["https://evil.example.com/123456789012/q", "sqs://queue"],
}


def every_kind_document() -> str:
    parameters = {name: {"type": "String", "default": ""} for name in BAD_VALUES if name != "InstanceId"}
    return document(harmless(), parameters=parameters)


class TestCanonicalTargets:
    @pytest.mark.parametrize(("parameter", "bad"), [(p, v) for p, values in BAD_VALUES.items() for v in values])
    def test_bad_syntax_is_a_field_error_for_every_resource_type(self, world, own, parameter, bad):
        policy = own(every_kind_document())
        values = {"InstanceId": world.web1, parameter: bad}
        with pytest.raises(InvalidRequest) as refused:
            submit(world, policy, values)
        assert parameter in refused.value.errors, refused.value.errors
        assert refused.value.errors[parameter][0].startswith("Enter ")

    def test_values_are_trimmed_and_then_scope_checked(self, world, own, sb):
        policy = own(every_kind_document())
        request = submit(world, policy, {"InstanceId": f"  {world.web1} "})
        assert request.parameters["InstanceId"] == [world.web1] and request.resources == [world.web1]
        from automations.errors import OutOfScope

        with pytest.raises(OutOfScope):
            submit(world, policy, {"InstanceId": f" {world.etl1}"})  # trimmed, then found to be data's

    def test_buckets_db_instances_and_queues_are_checked_against_the_team_allowlist(self, world, own):
        from automations.errors import OutOfScope
        from automations.models import TeamResource

        policy = own(every_kind_document())
        queue = f"https://sqs.eu-west-1.amazonaws.com/{world.account.account_id}/platform-jobs"
        named = {"BucketName": "platform-logs", "DBInstanceIdentifier": "orders-db", "QueueUrl": queue}
        for parameter, value in named.items():
            with pytest.raises(OutOfScope):
                submit(world, policy, {"InstanceId": world.web1, parameter: value})
        for kind, identifier in (("bucket", "platform-logs"), ("db_instance", "orders-db"), ("queue", queue)):
            TeamResource.objects.create(team=world.platform, account=world.account, kind=kind, identifier=identifier,
                                        region=REGION)
        request = submit(world, policy, {"InstanceId": world.web1, **named})
        assert set(request.resources) == {world.web1, "arn:aws:s3:::platform-logs",
                                          f"arn:aws:rds:{REGION}:{world.account.account_id}:db:orders-db", queue}
        with pytest.raises(OutOfScope):  # data has no allowlist: the same names are outside its scope
            data_policy = TeamRunbook.objects.create(team=world.data, runbook=policy.runbook, justification_required=False)
            submit(world, data_policy, {"InstanceId": world.etl1, "BucketName": "platform-logs"}, actor=world.dave)

    def test_images_are_described_with_owners(self, world, sb):
        from automations.aws import inventory

        images = inventory.team_resources("image", tag=world.platform.scope_tag, region=REGION,
                                          role_arn=world.account.dispatch_role_arn)
        assert images and all(image["id"].startswith("ami-") for image in images)
        call = sb.calls.of("DescribeImages")[-1]
        # EC2's query protocol puts boto3's Owners=["self"] on the wire as Owner.1 (OwnerIds was refused by boto3).
        assert call["error"] is None and call["params"].get("Owner.1") == "self", call["params"]



#
# 7. The content check fails closed: an approval, a step signal or a start that cannot confirm
#    the bound content does nothing (issue 12, follow-up)
#

def _approval_trail(request) -> list[str]:
    return list(AuditEvent.objects.filter(request=request).values_list("action", flat=True))


class TestContentCheckFailsClosed:
    @pytest.mark.parametrize("how", ["refused", "throttled", "deleted"])
    def test_an_approval_that_cannot_read_the_hash_is_refused_and_nothing_is_approved(
            self, world, own, sb, deliveries, django_capture_on_commit_callbacks, how):
        from automations.errors import ContentUnverifiable

        policy = own(document(harmless()))
        request = submit(world, policy)
        if how == "refused":
            sb.faults.error_next("DescribeDocument", "AccessDeniedException", n=1)
        elif how == "throttled":
            sb.faults.throttle_next("DescribeDocument", 10)  # more than the client's retries
        else:
            own.ssm.delete_document(Name=policy.runbook.name)
        with django_capture_on_commit_callbacks(execute=True), pytest.raises(ContentUnverifiable) as refused:
            services.request_approve(request=request, actor=world.bob)
        assert refused.value.code == "content_unverifiable"
        request.refresh_from_db()
        assert request.status == Status.SUBMITTED and request.approved_at is None
        assert not Approval.objects.filter(request=request).exists()
        trail = _approval_trail(request)
        assert "request.approval_added" not in trail and "request.approved" not in trail
        event = AuditEvent.objects.get(request=request, action="approval.refused")
        assert event.details["code"] == "content_unverifiable"
        assert sb.calls.of(START) == []

    def test_the_api_answers_content_unverifiable(self, world, own, sb):
        policy = own(document(harmless()))
        request = submit(world, policy)
        sb.faults.error_next("DescribeDocument", "AccessDeniedException", n=1)
        api = APIClient()
        api.force_login(world.bob)
        response = api.post(f"/api/v1/requests/{request.pk}/approve/", {"comment": "ok"}, format="json")
        assert response.json()["code"] == "content_unverifiable", response.json()
        assert response.status_code == 503
        request.refresh_from_db()
        assert request.status == Status.SUBMITTED

    def test_a_step_signal_that_cannot_read_the_hash_is_refused_with_content_unverifiable(
            self, world, own, sb, deliveries):
        from automations.errors import ContentUnverifiable

        steps = [{"name": "approve", "action": "aws:approve",
                  "inputs": {"Approvers": "{{ Approvers }}", "MinRequiredApprovals": 1, "Message": "go?"}},
                 *harmless()]
        policy = own(document(steps, parameters={"Approvers": {"type": "StringList"}}))
        request = services.request_approve(request=submit(world, policy), actor=world.bob)
        assert services.request_dispatch(request_id=request.pk) == "started"
        entry = _waiting_step(request)
        sb.calls.clear()
        sb.faults.throttle_next("DescribeDocument", 10)
        with pytest.raises(ContentUnverifiable):
            policies.step_decide(step_approval=entry, actor=world.frank, decision="Approve")
        assert sb.calls.of("SendAutomationSignal") == []


#
# 8. Requests from before the content binding (no document_hash) never start
#

class TestRowsWithoutContentHash:
    def _legacy(self, world, own):
        policy = own(document(harmless()))
        request = services.request_approve(request=submit(world, policy), actor=world.bob)
        # What migration 0011 left on rows submitted before the binding: no hash, and the old
        # fingerprint (without the hash) on the request and its approvals.
        AutomationRequest.objects.filter(pk=request.pk).update(document_hash="")
        request.refresh_from_db()
        return request

    def test_dispatch_refuses_an_unbound_request_with_content_unbound(
            self, world, own, sb, deliveries, django_capture_on_commit_callbacks):
        request = self._legacy(world, own)
        sb.calls.clear()
        with django_capture_on_commit_callbacks(execute=True):
            assert services.request_dispatch(request_id=request.pk) == "refused"
        request.refresh_from_db()
        assert request.status == Status.DISPATCH_FAILED and request.reason_code == "content_unbound"
        assert "submit" in request.status_reason.lower()
        assert sb.calls.of(START) == []
        assert AuditEvent.objects.filter(request=request, action="dispatch.refused",
                                         details__code="content_unbound").exists()

    def test_an_unbound_request_cannot_be_approved(self, world, own, sb, deliveries):
        from automations.errors import ContentUnverifiable

        policy = own(document(harmless()))
        request = submit(world, policy)
        AutomationRequest.objects.filter(pk=request.pk).update(document_hash="")
        request.refresh_from_db()
        with pytest.raises(ContentUnverifiable) as refused:
            services.request_approve(request=request, actor=world.bob)
        assert refused.value.code == "content_unbound"
        request.refresh_from_db()
        assert request.status == Status.REJECTED and request.reason_code == "content_unbound"
        assert not Approval.objects.filter(request=request).exists()
        assert AuditEvent.objects.filter(request=request, action="request.invalidated",
                                         details__code="content_unbound").exists()


#
# 9. Every resource type a request can name is scope-checked against the team (issue 12, follow-up):
#    security groups, subnets, VPCs (EC2 tags) and CloudFormation stacks (stack tags); an AWS::
#    type Delegate cannot check fails closed.
#

@pytest.fixture
def network(sb):
    """A VPC, subnet and security group per team, tagged Team=platform / Team=data, and a stack each."""
    ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=sb.url,
                       aws_access_key_id="AKIDTESTTESTTEST0000", aws_secret_access_key="test")
    cfn = boto3.client("cloudformation", region_name=REGION, endpoint_url=sb.url,
                       aws_access_key_id="AKIDTESTTESTTEST0000", aws_secret_access_key="test")
    found = {}
    suffix = uuid.uuid4().hex[:6]
    for team in ("platform", "data"):
        tags = [{"Key": "Team", "Value": team}]
        vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16", TagSpecifications=[{"ResourceType": "vpc", "Tags": tags}])
        vpc_id = vpc["Vpc"]["VpcId"]
        subnet = ec2.create_subnet(VpcId=vpc_id, CidrBlock="10.9.1.0/24",
                                   TagSpecifications=[{"ResourceType": "subnet", "Tags": tags}])["Subnet"]["SubnetId"]
        group = ec2.create_security_group(GroupName=f"{team}-{suffix}", Description=team, VpcId=vpc_id,
                                          TagSpecifications=[{"ResourceType": "security-group", "Tags": tags}])["GroupId"]
        stack = f"{team}-stack-{suffix}"
        cfn.create_stack(StackName=stack, Tags=tags, TemplateBody=json.dumps(
            {"Resources": {"Topic": {"Type": "AWS::SNS::Topic"}}}))
        found[team] = {"vpc": vpc_id, "subnet": subnet, "security_group": group, "stack": stack}
    return found


# parameter name (plain String: the name decides the kind) -> the kind in `network`
NAMED_KINDS = {"SecurityGroupId": "security_group", "SubnetId": "subnet", "VpcId": "vpc", "StackNameOrId": "stack"}
# AWS:: parameter types -> the kind in `network`
TYPED_KINDS = {"AWS::EC2::SecurityGroup::Id": "security_group", "AWS::EC2::Subnet::Id": "subnet",
               "AWS::EC2::VPC::Id": "vpc"}


def _kinds_document(parameters: dict) -> str:
    return document(harmless(), parameters=parameters)


class TestEveryResourceTypeIsScopeChecked:
    @pytest.mark.parametrize("parameter", sorted(NAMED_KINDS))
    def test_another_teams_resource_named_by_parameter_name_is_refused(self, world, own, network, parameter):
        from automations.errors import OutOfScope

        policy = own(_kinds_document({parameter: {"type": "String", "default": ""}}))
        kind = NAMED_KINDS[parameter]
        before = AutomationRequest.objects.count()
        with pytest.raises(OutOfScope) as refused:
            submit(world, policy, {"InstanceId": world.web1, parameter: network["data"][kind]})
        assert refused.value.code == "out_of_scope"
        assert parameter in refused.value.errors, refused.value.errors
        assert AutomationRequest.objects.count() == before
        request = submit(world, policy, {"InstanceId": world.web1, parameter: network["platform"][kind]})
        assert len(request.resources) == 2  # the instance and this resource, both checked again at dispatch

    @pytest.mark.parametrize("kind_type", sorted(TYPED_KINDS))
    def test_another_teams_resource_of_an_aws_type_is_refused(self, world, own, network, kind_type):
        from automations.errors import OutOfScope

        policy = own(_kinds_document({"Target": {"type": kind_type}}))
        kind = TYPED_KINDS[kind_type]
        with pytest.raises(OutOfScope) as refused:
            submit(world, policy, {"InstanceId": world.web1, "Target": network["data"][kind]})
        assert "Target" in refused.value.errors
        assert network["platform"][kind] in submit(world, policy, {"InstanceId": world.web1,
                                                                   "Target": network["platform"][kind]}).resources

    def test_an_ec2_id_in_any_parameter_is_checked_by_its_shape(self, world, own, network):
        from automations.errors import OutOfScope

        policy = own(_kinds_document({"Notes": {"type": "String", "default": ""}}))
        with pytest.raises(OutOfScope):
            submit(world, policy, {"InstanceId": world.web1, "Notes": network["data"]["security_group"]})

    def test_a_stack_arn_of_another_team_or_account_is_refused(self, world, own, network, sb):
        from automations.errors import OutOfScope

        policy = own(_kinds_document({"StackNameOrId": {"type": "String", "default": ""}}))
        cfn = boto3.client("cloudformation", region_name=REGION, endpoint_url=sb.url,
                           aws_access_key_id="AKIDTESTTESTTEST0000", aws_secret_access_key="test")
        arn = cfn.describe_stacks(StackName=network["data"]["stack"])["Stacks"][0]["StackId"]
        for value in (arn, arn.replace(world.account.account_id, "999999999999"), "no-such-stack"):
            with pytest.raises(OutOfScope):
                submit(world, policy, {"InstanceId": world.web1, "StackNameOrId": value})

    @pytest.mark.parametrize("kind_type", ["AWS::Lambda::Function::Name", "AWS::EC2::KeyPair::KeyName",
                                           "List<AWS::SSM::Parameter::Name>"])
    def test_an_aws_type_delegate_cannot_check_fails_closed(self, world, own, kind_type):
        policy = own(_kinds_document({"Target": {"type": kind_type, "default": ""}}))
        before = AutomationRequest.objects.count()
        with pytest.raises(InvalidRequest) as refused:
            submit(world, policy, {"InstanceId": world.web1, "Target": "anything"})
        assert refused.value.code == "resource_type_unsupported"
        assert "Target" in refused.value.errors
        assert AutomationRequest.objects.count() == before

    def test_a_stack_to_create_is_not_a_stack_to_check(self):
        from automations.runbooks.validation import resource_kind

        # AWS-CreateManagedInstance names the stack it creates "StackName": it cannot be in scope yet.
        assert resource_kind("StackName", {"type": "String"}) is None
        assert resource_kind("StackNameOrId", {"type": "String"}) == "stack"
        assert resource_kind("Target", {"type": "AWS::CloudFormation::Stack::Name"}) == "stack"
        assert resource_kind("Role", {"type": "AWS::IAM::Role::Arn", "role_kind": "subject"}) is None

    def test_dispatch_checks_them_again(self, world, own, network, sb, deliveries):
        policy = own(_kinds_document({"SecurityGroupId": {"type": "String", "default": ""}}))
        group = network["platform"]["security_group"]
        request = services.request_approve(
            request=submit(world, policy, {"InstanceId": world.web1, "SecurityGroupId": group}), actor=world.bob)
        ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=sb.url,
                           aws_access_key_id="AKIDTESTTESTTEST0000", aws_secret_access_key="test")
        ec2.create_tags(Resources=[group], Tags=[{"Key": "Team", "Value": "data"}])  # handed over meanwhile
        sb.calls.clear()
        assert services.request_dispatch(request_id=request.pk) == "refused"
        request.refresh_from_db()
        assert group in request.status_reason and sb.calls.of(START) == []


class TestThePageSaysWhenContentCannotBeChecked:
    """The request page reads the version's hash to show what SSM serves now. When SSM cannot be
    asked, the page must say so (truth rule) instead of failing or staying silent."""

    def test_the_approver_sees_that_the_content_could_not_be_checked(self, world, own, sb, client):
        policy = own(document(harmless()))
        request = submit(world, policy)
        sb.faults.error_next("DescribeDocument", "AccessDeniedException", n=1)
        client.force_login(world.bob)
        response = client.get(reverse("automations:request_detail", args=[request.pk]))
        assert response.status_code == 200
        page = response.content.decode()
        assert "could not confirm the content" in page and "AccessDeniedException" in page

    def test_no_notice_when_the_content_is_confirmed(self, world, own, sb, client):
        policy = own(document(harmless()))
        request = submit(world, policy)
        client.force_login(world.bob)
        response = client.get(reverse("automations:request_detail", args=[request.pk]))
        assert response.status_code == 200 and "could not confirm the content" not in response.content.decode()
