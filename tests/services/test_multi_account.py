"""Multi-account, multi-Region requests end to end against the sandbox: the team's granted OUs,
TargetLocations in the Start body, per-location status sync, the matrix page and the API."""
import json
import time
import uuid

import boto3
import pytest
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from automations import services
from automations.errors import InvalidRequest, OutOfScope
from automations.models import AuditEvent, AutomationRequest, LocationExecution, TeamLocationGrant
from sandbox import world as sandbox_world
from tests import factories as f

Status = AutomationRequest.Status
REGIONS = ["eu-west-1", "us-east-1"]
OUS = sorted(sandbox_world.OU_IDS.values())
FAILING = (sandbox_world.MEMBER_ACCOUNTS["Staging"][1], "us-east-1")

# Finds this account's platform instances and tags them: the runbook needs no resource parameter,
# each child finds its targets in its own account and Region.
TAG_FLEET = {
    "schemaVersion": "0.3",
    "description": "Tag this account's platform instances",
    "parameters": {"Label": {"type": "String", "default": "patched", "allowedPattern": "^[a-z0-9-]{1,20}$"}},
    "mainSteps": [
        {"name": "findInstances", "action": "aws:executeAwsApi",
         "inputs": {"Service": "ec2", "Api": "DescribeInstances",
                    "Filters": [{"Name": "tag:Team", "Values": ["platform"]}]},
         "outputs": [{"Name": "InstanceIds", "Selector": "$.Reservations[0].Instances[*].InstanceId",
                      "Type": "StringList"}]},
        {"name": "tagInstances", "action": "aws:executeAwsApi",
         "inputs": {"Service": "ec2", "Api": "CreateTags", "Resources": "{{ findInstances.InstanceIds }}",
                    "Tags": [{"Key": "Delegate", "Value": "{{ Label }}"}]}},
    ],
}
WITH_APPROVAL = {
    "schemaVersion": "0.3",
    "description": "Asks a human half way",
    "parameters": {},
    "mainSteps": [
        {"name": "askFirst", "action": "aws:approve",
         "inputs": {"Approvers": ["arn:aws:iam::123456789012:role/Lead"], "MinRequiredApprovals": 1}},
        {"name": "nap", "action": "aws:sleep", "inputs": {"Duration": "PT1S"}},
    ],
}


def _register(world, sb, content: dict):
    name = f"Delegate-Fleet-{uuid.uuid4().hex[:8]}"
    text = json.dumps(content)
    boto3.client("ssm", region_name="eu-west-1", endpoint_url=sb.url).create_document(
        Name=name, Content=text, DocumentType="Automation", DocumentFormat="JSON")
    # No assumeRole: each child runs as the execution role in its account (an admin allows that).
    runbook = f.RunbookFactory(account=world.account, name=name, owner="Self", allow_unmanaged_identity=True)
    version = f.RunbookVersionFactory(runbook=runbook, version="1", content=text, document_format="JSON")
    policy = f.TeamRunbookFactory(team=world.platform, runbook=version.runbook)
    return version, policy


@pytest.fixture(autouse=True)
def _fleet_documents_removed(fleet_documents_removed):
    """Each test's Delegate-Fleet-… document is deleted after it (tests/conftest.py)."""


@pytest.fixture
def fleet(world, sb):
    world.account.regions = REGIONS
    world.account.save()
    version, policy = _register(world, sb, TAG_FLEET)
    for ou in OUS:
        TeamLocationGrant.objects.create(team=world.platform, account=world.account, target_id=ou)
    return version, policy


def _submit(world, version, **kwargs):
    values = {"location_targets": OUS, "location_regions": REGIONS, "location_max_concurrency": "6",
              "location_max_errors": "2", **kwargs}
    return services.request_submit(actor=world.alice, team=world.platform, runbook_id=version.runbook_id,
                                   parameters={"Label": ["wave1"]}, **values)


def _run_to_the_end(request, timeout: float = 90.0) -> AutomationRequest:
    deadline = time.time() + timeout
    while time.time() < deadline:
        services.execution_statuses_sync()
        request.refresh_from_db()
        if request.is_terminal:
            return request
        time.sleep(0.2)
    raise AssertionError(f"request still {request.status}")


def _member_tags(sb, account: str, region: str) -> list:
    sts = boto3.client("sts", region_name=region, endpoint_url=sb.url)
    creds = sts.assume_role(RoleArn=f"arn:aws:iam::{account}:role/{sandbox_world.EXECUTION_ROLE}",
                            RoleSessionName="test-check")["Credentials"]
    ec2 = boto3.client("ec2", region_name=region, endpoint_url=sb.url, aws_access_key_id=creds["AccessKeyId"],
                       aws_secret_access_key=creds["SecretAccessKey"], aws_session_token=creds["SessionToken"])
    return [{t["Key"]: t["Value"] for t in i.get("Tags", [])}.get("Delegate")
            for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]]


@pytest.mark.django_db(transaction=True)
def test_three_ous_by_two_regions_with_one_location_failing(world, sb, fleet):
    version, _ = fleet
    sb.faults.fail_locations = {f"{FAILING[0]}:{FAILING[1]}"}
    request = _submit(world, version)
    assert len(request.location_accounts) == 12
    assert request.location_sources[FAILING[0]] == [sandbox_world.OU_IDS["Staging"]]
    assert sorted(request.location_accounts) == sorted(a for accounts in sandbox_world.MEMBER_ACCOUNTS.values()
                                                       for a in accounts)
    services.request_approve(request=request, actor=world.bob)
    sb.calls.clear()
    assert services.request_dispatch(request_id=request.pk) == "started"
    (start,) = sb.calls.of("StartAutomationExecution")
    assert start["params"]["TargetLocations"] == [{
        "Accounts": OUS, "Regions": REGIONS, "TargetLocationMaxConcurrency": "6", "TargetLocationMaxErrors": "2",
        "ExecutionRoleName": "AWS-SystemsManager-AutomationExecutionRole"}]

    request = _run_to_the_end(request)
    assert request.status == Status.FAILED
    children = list(LocationExecution.objects.filter(request=request))
    assert len(children) == 24
    failed = [c for c in children if c.aws_status == "Failed"]
    assert [(c.account_id, c.region) for c in failed] == [FAILING]
    assert "fail_locations" in failed[0].failure_message
    assert all(c.aws_status == "Success" for c in children if c not in failed)
    # Each child audited once, with its own account and Region.
    events = AuditEvent.objects.filter(request=request, action="execution.location_started")
    assert events.count() == 24
    assert {(e.account_id, e.region, e.execution_id) for e in events} == {
        (c.account_id, c.region, c.execution_id) for c in children}
    # The effect is in each member account (not in the failing location).
    assert set(_member_tags(sb, *FAILING)) == {None}
    assert set(_member_tags(sb, FAILING[0], "eu-west-1")) == {"wave1"}

    # Finished children cost no calls.
    sb.calls.clear()
    services.execution_statuses_sync()
    assert sb.calls.of("DescribeAutomationExecutions") == [] and sb.calls.of("DescribeAutomationStepExecutions") == []

    # The API and the page say the same.
    api = APIClient()
    api.force_authenticate(world.alice)
    body = api.get(f"/api/v1/requests/{request.pk}/").json()
    assert body["locations"]["counts"] == {"succeeded": 23, "failed": 1, "running": 0, "not_started": 0}
    assert body["locations"]["progress_percent"] == 100
    cell = next(c for row in body["locations"]["rows"] for c in row["cells"]
                if (c["account_id"], c["region"]) == FAILING)
    assert cell["aws_status"] == "Failed" and cell["execution_id"] == failed[0].execution_id

    page = Client()
    page.force_login(world.alice)
    html = page.get(reverse("automations:request_detail", args=[request.pk]) + "?failed_only=1").content.decode()
    assert 'data-location-counts="succeeded:23 failed:1 running:0 not_started:0"' in html
    assert html.count('class="location-row"') == 1 and FAILING[0] in html
    assert 'role="progressbar"' in html and 'aria-valuenow="100"' in html
    # Drill into the failed location: its child's steps, read from AWS.
    drill = page.get(reverse("automations:request_location", args=[request.pk, failed[0].execution_id]))
    assert drill.status_code == 200
    assert "findInstances" in drill.content.decode() and "fail_locations" in drill.content.decode()
    outsider = Client()
    outsider.force_login(world.dave)  # team data: may not see platform's request
    assert outsider.get(reverse("automations:request_location",
                                args=[request.pk, failed[0].execution_id])).status_code == 404
    assert page.get(reverse("automations:request_location", args=[request.pk, uuid.uuid4()])).status_code == 404
    full = page.get(reverse("automations:request_detail", args=[request.pk])).content.decode()
    assert full.count('class="location-row"') == 12
    by_ou = page.get(reverse("automations:request_detail", args=[request.pk]),
                     {"via": sandbox_world.OU_IDS["Production"]}).content.decode()
    assert by_ou.count('class="location-row"') == 4
    assert all(f"<code>{a}</code>" in by_ou for a in sandbox_world.MEMBER_ACCOUNTS["Production"])
    assert f'<tr class="location-row"><th scope="row"><code>{FAILING[0]}</code>' not in by_ou
    assert "Failed location (1)" in by_ou  # the failed locations stay listed above, the whole run's


def test_an_ou_not_granted_to_the_team_is_refused(world, sb, fleet):
    version, _ = fleet
    TeamLocationGrant.objects.filter(target_id=sandbox_world.OU_IDS["Staging"]).delete()
    with pytest.raises(OutOfScope) as refused:
        _submit(world, version)
    assert refused.value.code == "location_not_granted"
    assert sandbox_world.OU_IDS["Staging"] in refused.value.detail
    assert not AutomationRequest.objects.exists()
    assert AuditEvent.objects.filter(action="request.refused", details__code="location_not_granted").exists()

    api = APIClient()
    api.force_authenticate(world.alice)
    answer = api.post("/api/v1/requests/", {"runbook": version.runbook_id, "parameters": {"Label": ["x"]},
                                            "location_targets": [sandbox_world.OU_IDS["Staging"]],
                                            "location_regions": ["eu-west-1"]}, format="json")
    assert answer.status_code == 403 and answer.json()["code"] == "location_not_granted"
    assert not AutomationRequest.objects.exists()


def test_an_unknown_ou_granted_by_mistake_is_refused_through_organizations(world, sb, fleet):
    version, _ = fleet
    TeamLocationGrant.objects.create(team=world.platform, account=world.account, target_id="ou-dlg0-nosuchou1")
    with pytest.raises(OutOfScope) as refused:
        _submit(world, version, location_targets=["ou-dlg0-nosuchou1"])
    assert refused.value.code == "location_not_granted"


def test_a_runbook_with_aws_approve_is_refused_for_multi_account(world, sb, fleet):
    version, _ = _register(world, sb, WITH_APPROVAL)
    with pytest.raises(InvalidRequest) as refused:
        services.request_submit(actor=world.alice, team=world.platform, runbook_id=version.runbook_id,
                                parameters={}, location_targets=OUS, location_regions=REGIONS)
    assert refused.value.code == "approve_not_multi_account"
    assert "aws:approve" in refused.value.detail
    assert not AutomationRequest.objects.exists()


def test_more_approvers_above_the_account_threshold(world, sb, fleet):
    version, policy = fleet
    policy.multi_account_threshold, policy.multi_account_approvals = 4, 2
    policy.save()
    TeamLocationGrant.objects.create(team=world.platform, account=world.account,
                                     target_id=sandbox_world.MEMBER_ACCOUNTS["Production"][0])
    small = _submit(world, version, location_targets=[sandbox_world.MEMBER_ACCOUNTS["Production"][0]])
    assert services.request_approve(request=small, actor=world.bob).status == Status.APPROVED
    big = _submit(world, version)
    assert services.request_approve(request=big, actor=world.bob).status == Status.SUBMITTED
    page = Client()
    page.force_login(world.alice)
    html = page.get(reverse("automations:request_detail", args=[big.pk])).content.decode()
    assert "1 of 2 approvals" in html
    assert "more than 4 accounts needs 2 distinct approvers" in html
    assert services.request_approve(request=big, actor=world.frank).status == Status.APPROVED


def test_a_grant_withdrawn_after_approval_refuses_the_dispatch(world, sb, fleet):
    version, _ = fleet
    request = _submit(world, version)
    services.request_approve(request=request, actor=world.bob)
    TeamLocationGrant.objects.filter(target_id=sandbox_world.OU_IDS["Development"]).delete()
    sb.calls.clear()
    assert services.request_dispatch(request_id=request.pk) == "refused"
    request.refresh_from_db()
    assert request.status == Status.DISPATCH_FAILED and request.reason_code == "location_not_granted"
    assert sb.calls.of("StartAutomationExecution") == []


def test_execution_role_name_is_never_the_users(world, sb, fleet):
    version, _ = fleet
    api = APIClient()
    api.force_authenticate(world.alice)
    answer = api.post("/api/v1/requests/", {"runbook": version.runbook_id, "parameters": {"Label": ["x"]},
                                            "location_targets": OUS, "location_regions": ["eu-west-1"],
                                            "execution_role_name": "Admin"}, format="json")
    assert answer.status_code == 400
    assert not AutomationRequest.objects.exists()


def test_the_request_form_offers_granted_ous_and_submits_a_multi_account_request(world, sb, fleet):
    version, _ = fleet
    page = Client()
    page.force_login(world.alice)
    url = reverse("automations:request_new", args=[version.runbook_id])
    html = page.get(url).content.decode()
    assert all(f'value="{ou}"' in html for ou in OUS) and 'value="us-east-1"' in html
    assert "AWS-SystemsManager-AutomationExecutionRole" in html
    form = {"version": "default", "param_Label": "wave2", "mode": "simple",
            "location_targets": OUS[:2], "location_regions": REGIONS,
            "location_max_concurrency": "3", "location_max_errors": "1"}
    preview = page.post(url, {**form, "preview": "1"})
    assert preview.context["preview"] is not None, preview.context["form"].errors
    assert "TargetLocations" in preview.content.decode()
    assert "8 accounts × 2 Regions" in preview.content.decode()
    sent = page.post(url, {**form, "submit": "1", "previewed": preview.context["preview"].fingerprint})
    assert sent.status_code == 302
    request = AutomationRequest.objects.get()
    assert request.location_targets == OUS[:2] and len(request.location_accounts) == 8
    # An OU the form did not offer is a form error, and nothing is saved.
    bad = page.post(url, {**form, "location_targets": ["ou-dlg0-elsewhere1"], "preview": "1"})
    assert bad.context["form"].errors.get("location_targets")
    assert AutomationRequest.objects.count() == 1


def test_the_form_offers_no_locations_for_a_runbook_with_aws_approve(world, sb, fleet):
    version, _ = _register(world, sb, WITH_APPROVAL)
    page = Client()
    page.force_login(world.alice)
    html = page.get(reverse("automations:request_new", args=[version.runbook_id])).content.decode()
    assert "location_targets" not in html


def test_too_few_approvers_for_the_multi_account_rule_is_refused_at_submit(world, sb, fleet):
    version, policy = fleet
    policy.multi_account_threshold, policy.multi_account_approvals = 4, 3  # bob and frank are only two
    policy.save()
    with pytest.raises(Exception) as refused:
        _submit(world, version)
    assert getattr(refused.value, "code", "") == "not_enough_approvers"
    assert not AutomationRequest.objects.exists()


def test_the_approver_sees_how_many_accounts_and_regions_aws_would_touch(world, sb, fleet):
    """The execution preview of a multi-account request (StartExecutionPreview with its
    TargetLocations) counts the member accounts and Regions, and the fingerprint binds them."""
    version, _ = fleet
    request = _submit(world, version, location_targets=OUS[:2])
    assert request.execution_preview["status"] == "Success", request.execution_preview
    figures = request.execution_preview["figures"]
    assert figures["total_accounts"] == len(request.location_accounts) == 8
    assert figures["regions"] == sorted(REGIONS)
    page = Client()
    page.force_login(world.bob)
    html = page.get(f"/requests/{request.pk}/").content.decode()
    assert "<dt>Accounts</dt><dd>8 accounts</dd>" in html


def test_the_matrix_estimates_the_finish_from_this_runs_finished_locations(world, sb, fleet):
    """ETA = now + (locations left / locations at a time, rounded up) x the median time of the
    locations already finished in this run; none before the first one finishes (never invented)."""
    import datetime as dt

    from django.utils import timezone

    from automations import selectors

    version, _ = fleet
    request = _submit(world, version, location_targets=OUS[:2], location_regions=["eu-west-1"],
                      location_max_concurrency="2")  # 8 accounts x 1 Region
    assert selectors.location_matrix(request)["estimate"] is None
    start = timezone.now() - dt.timedelta(minutes=5)
    for n, (account, took) in enumerate(zip(request.location_accounts[:3], (10, 20, 60))):
        LocationExecution.objects.create(request=request, execution_id=f"00000000-0000-4000-8000-00000000000{n}",
                                         account_id=account, region="eu-west-1", aws_status="Success",
                                         started_at=start, ended_at=start + dt.timedelta(seconds=took))
    matrix = selectors.location_matrix(request)
    estimate = matrix["estimate"]
    assert (estimate["finished"], estimate["median_seconds"], estimate["at_a_time"]) == (3, 20.0, 2)
    # 5 left, 2 at a time: 3 more rounds of the 20 s median.
    assert abs((estimate["finish_at"] - timezone.now()).total_seconds() - 60) < 5
    page = Client()
    page.force_login(world.alice)
    assert "estimated finish" in page.get(f"/requests/{request.pk}/").content.decode()


def _ssm_as(sb, account: str, region: str, role: str):
    sts = boto3.client("sts", region_name=region, endpoint_url=sb.url)
    creds = sts.assume_role(RoleArn=f"arn:aws:iam::{account}:role/{role}", RoleSessionName="test-read")["Credentials"]
    return boto3.client("ssm", region_name=region, endpoint_url=sb.url, aws_access_key_id=creds["AccessKeyId"],
                        aws_secret_access_key=creds["SecretAccessKey"], aws_session_token=creds["SessionToken"])


def test_children_are_read_where_they_run_and_their_status_comes_from_the_parents_steps(world, sb, fleet):
    """AWS: the central automation "contains aws:executeAutomation steps" whose output is each child's
    AutomationExecutionId; "to view the output of the child automations created in your target
    accounts, specify the appropriate account, Region, and AutomationExecutionId" (docs/multi-account.md).
    So status sync reads the parent's steps in the central account (never a ParentExecutionId listing
    there), and a child's own steps are read in its account and Region, through Delegate's member read role."""
    from botocore.exceptions import ClientError
    from django.conf import settings

    version, _ = fleet
    account = sandbox_world.MEMBER_ACCOUNTS["Staging"][0]
    TeamLocationGrant.objects.get_or_create(team=world.platform, account=world.account, target_id=account)
    request = _submit(world, version, location_targets=[account], location_regions=["us-east-1"])
    services.request_approve(request=request, actor=world.bob)
    assert services.request_dispatch(request_id=request.pk) == "started"
    sb.calls.clear()
    request = _run_to_the_end(request)
    assert request.status == Status.SUCCEEDED
    listings = [c for c in sb.calls.of("DescribeAutomationExecutions")
                if any(f.get("Key") == "ParentExecutionId" for f in c["params"].get("Filters") or [])]
    assert listings == []
    (child,) = LocationExecution.objects.filter(request=request)
    assert (child.account_id, child.region, child.aws_status) == (account, "us-east-1", "Success")

    parent_steps = boto3.client("ssm", region_name="eu-west-1", endpoint_url=sb.url).describe_automation_step_executions(
        AutomationExecutionId=request.execution.execution_id)["StepExecutions"]
    (step,) = parent_steps
    assert step["Action"] == "aws:executeAutomation"
    assert step["Outputs"] == {"ExecutionId": [child.execution_id], "Status": ["Success"]}
    central = boto3.client("ssm", region_name="eu-west-1", endpoint_url=sb.url)
    with pytest.raises(ClientError) as missing:
        central.get_automation_execution(AutomationExecutionId=child.execution_id)
    assert missing.value.response["Error"]["Code"] == "AutomationExecutionNotFoundException"
    member = _ssm_as(sb, account, "us-east-1", settings.DELEGATE_MEMBER_READ_ROLE_NAME)
    assert member.get_automation_execution(
        AutomationExecutionId=child.execution_id)["AutomationExecution"]["AutomationExecutionStatus"] == "Success"
    with pytest.raises(ClientError):
        _ssm_as(sb, account, "eu-west-1", settings.DELEGATE_MEMBER_READ_ROLE_NAME).get_automation_execution(
            AutomationExecutionId=child.execution_id)

    sb.calls.clear()
    page = Client()
    page.force_login(world.alice)
    drill = page.get(reverse("automations:request_location", args=[request.pk, child.execution_id]))
    assert "findInstances" in drill.content.decode()
    (read,) = sb.calls.of("DescribeAutomationStepExecutions")
    assert read["params"]["AutomationExecutionId"] == child.execution_id
    assert read["region"] == "us-east-1" and f"::{account}:role/DelegateMemberReadOnly" in read["role_arn"]


@pytest.mark.parametrize("parent_status", ["Failed", "CompletedWithFailure", "Success", "CompletedWithSuccess"])
def test_a_failed_location_never_leaves_the_request_succeeded_whatever_the_parent_says(world, sb, fleet,
                                                                                      parent_status):
    """AWS documents no final status for a parent whose locations partly failed (the API lists Success,
    Failed, CompletedWithSuccess and CompletedWithFailure; the User Guide explains none of the last two).
    The sandbox's knob plays each; the request fails naming the locations, and says what AWS reported."""
    version, _ = fleet
    accounts = sandbox_world.MEMBER_ACCOUNTS["Production"][:2]
    for account in accounts:
        TeamLocationGrant.objects.get_or_create(team=world.platform, account=world.account, target_id=account)
    sb.faults.fail_locations = {f"{accounts[1]}:eu-west-1"}
    sb.faults.parent_status_on_location_failure = parent_status
    request = _submit(world, version, location_targets=accounts, location_regions=["eu-west-1"],
                      location_max_errors="1")
    services.request_approve(request=request, actor=world.bob)
    assert services.request_dispatch(request_id=request.pk) == "started"
    request = _run_to_the_end(request)
    assert request.execution.aws_status == parent_status
    assert request.status == Status.FAILED
    assert "1 of 2 locations failed" in request.status_reason
    if parent_status in ("Success", "CompletedWithSuccess"):
        assert f"although AWS reported the run {parent_status}" in request.status_reason


@pytest.mark.django_db(transaction=True)
def test_a_changed_parent_s_steps_are_read_once_per_cycle(world, sb, fleet):
    """The parent's step executions say both what the page shows and where new children run: one
    DescribeAutomationStepExecutions per cycle serves both (it was read twice)."""
    version, _ = fleet
    request = services.request_approve(request=_submit(world, version), actor=world.bob)
    assert services.request_dispatch(request_id=request.pk) == "started"
    parent = AutomationRequest.objects.get(pk=request.pk).execution.execution_id
    sb.calls.clear()
    services.execution_statuses_sync()  # the parent is new to the sync and its children unknown
    reads = [c for c in sb.calls.of("DescribeAutomationStepExecutions")
             if c["params"].get("AutomationExecutionId") == parent]
    assert len(reads) == 1
    assert LocationExecution.objects.filter(request=request).exists()  # the children were found from it
    assert AutomationRequest.objects.get(pk=request.pk).execution.steps  # and the page's steps kept
