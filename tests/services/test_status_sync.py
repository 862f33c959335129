"""Status sync against the sandbox: batching, step details only on change, no calls when idle, one
cached read-only session, faithful final statuses, and the live request page."""
import threading
import uuid

import boto3
import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from automations import locks
from automations import aws, services
from automations.models import AuditEvent, AutomationRequest, Execution
from automations.runbooks import AUTOMATION_ROLE_PARAMETER
from automations.services import status as status_sync
from tests import factories as f
from tests.conftest import require_postgres

Status = AutomationRequest.Status
DESCRIBE = "DescribeAutomationExecutions"
STEPS = "DescribeAutomationStepExecutions"

# Describes an instance (a step output), waits, then asserts something false (a failure message).
WATCHED_RUNBOOK = """\
schemaVersion: "0.3"
description: Describe, wait, then fail an assertion. Used by the status sync tests.
assumeRole: "{{ AutomationAssumeRole }}"
parameters:
  AutomationAssumeRole:
    type: AWS::IAM::Role::Arn
    default: ""
  InstanceId:
    type: String
mainSteps:
  - name: describe
    action: aws:executeAwsApi
    inputs:
      Service: ec2
      Api: DescribeInstances
      InstanceIds: ["{{ InstanceId }}"]
    outputs:
      - Name: State
        Selector: $.Reservations[0].Instances[0].State.Name
        Type: String
  - name: wait
    action: aws:sleep
    inputs:
      Duration: PT%(seconds)dS
  - name: insist
    action: aws:assertAwsResourceProperty
    inputs:
      Service: ec2
      Api: DescribeInstances
      InstanceIds: ["{{ InstanceId }}"]
      PropertySelector: $.Reservations[0].Instances[0].State.Name
      DesiredValues: ["terminated"]
outputs:
  - describe.State
"""


@pytest.fixture(autouse=True)
def _fresh_read_session():
    aws.reset_sessions()  # count this test's AssumeRole calls from zero
    yield
    aws.reset_sessions()


@pytest.fixture
def runbook(world, sb):
    """register(content) → a RunbookVersion in our catalog and the sandbox, requestable by platform."""
    def register(content: str, region: str = "eu-west-1"):
        name = f"Delegate-StatusTest-{uuid.uuid4().hex[:8]}"
        ssm = boto3.client("ssm", region_name=region, endpoint_url=sb.url)
        ssm.create_document(Name=name, Content=content, DocumentType="Automation", DocumentFormat="YAML")
        version = f.RunbookVersionFactory(runbook=f.RunbookFactory(account=world.account, name=name, owner="Self",
                                                                   region=region),
                                          version="1", content=content, document_format="YAML")
        f.TeamRunbookFactory(team=world.platform, runbook=version.runbook)
        return version
    return register


@pytest.fixture
def running(world, sb, runbook):
    """running(n, region=, seconds=) → n requests RUNNING with real sandbox executions behind them."""
    def make(n: int, *, region: str = "eu-west-1", seconds: int = 600):
        version = runbook(WATCHED_RUNBOOK % {"seconds": seconds}, region=region)
        ssm = boto3.client("ssm", region_name=region, endpoint_url=sb.url)
        made = []
        for _ in range(n):
            execution_id = ssm.start_automation_execution(
                DocumentName=version.runbook.name, Parameters={"InstanceId": [world.web1]})["AutomationExecutionId"]
            request = AutomationRequest.objects.create(
                team=world.platform, requester=world.alice, runbook=version.runbook, runbook_version=version,
                account=world.account, region=region, status=Status.RUNNING, fingerprint="0" * 64,
                parameters={AUTOMATION_ROLE_PARAMETER: [world.account.automation_role_arn]})
            Execution.objects.create(request=request, execution_id=execution_id)
            made.append(request)
        return made
    return make


def delegate_calls(sb) -> list[dict]:
    """The sandbox's call log without the engine's own calls: a runbook step still running (this
    test's or an earlier one's) calls EC2 with the sandbox engine's key; those are AWS, not Delegate."""
    from sandbox.aws_calls import ENGINE_CREDENTIALS

    engine_key = ENGINE_CREDENTIALS["aws_access_key_id"]
    return [c for c in sb.calls.snapshot() if c["access_key_id"] != engine_key]


class TestCalls:
    def test_nothing_running_means_no_calls(self, world, sb):
        assert services.execution_statuses_sync() == 0
        assert delegate_calls(sb) == []

    def test_describe_is_batched_by_ten_and_steps_fetched_only_on_change(self, running, sb):
        requests = running(23)
        sb.calls.clear()
        assert services.execution_statuses_sync() == 23  # first look: everything is news
        describes = sb.calls.of(DESCRIBE)
        assert len(describes) == 3
        batches = sorted(len(c["params"]["Filters"][0]["Values"]) for c in describes)
        assert batches == [3, 10, 10]
        assert len(sb.calls.of(STEPS)) == 23
        assert all(r.execution.steps for r in AutomationRequest.objects.filter(pk__in=[r.pk for r in requests]))

        sb.calls.clear()
        assert services.execution_statuses_sync() == 0  # all still sleeping in the same step
        assert len(sb.calls.of(DESCRIBE)) == 3
        assert sb.calls.of(STEPS) == []

    def test_polling_shares_one_cached_refreshing_session(self, running, sb):
        running(4, region="eu-west-1")
        running(2, region="us-east-1")
        sb.calls.clear()
        for _ in range(3):
            services.execution_statuses_sync()
        assumed = sb.calls.of("AssumeRole")
        assert len(assumed) == 1, "one AssumeRole for all regions and cycles"
        assert assumed[0]["params"]["RoleSessionName"] == aws.READ_SESSION_NAME
        assert int(assumed[0]["params"]["DurationSeconds"]) == 3600  # above botocore's 15-minute refresh window
        reads = [c for c in sb.calls.snapshot() if c["operation"] in (DESCRIBE, STEPS)]
        assert {c["session_name"] for c in reads} == {aws.READ_SESSION_NAME}
        assert {c["region"] for c in reads} == {"eu-west-1", "us-east-1"}

    def test_a_failed_step_fetch_is_retried_next_cycle(self, running, sb):
        [request] = running(1)
        sb.faults.error_next(STEPS, "InternalServerError", n=10, status=500)
        assert services.execution_statuses_sync() == 0
        request.execution.refresh_from_db()
        assert request.execution.revision == 0 and request.execution.aws_status == ""
        sb.faults.reset()
        assert services.execution_statuses_sync() == 1
        request.execution.refresh_from_db()
        assert request.execution.steps and request.execution.revision == 1

    def test_step_details_past_the_cycle_budget_wait_for_the_next_cycle(self, running, sb, monkeypatch):
        running(3)
        sb.calls.clear()
        monkeypatch.setattr(status_sync, "STEP_BUDGET_SECONDS", -1.0)  # spent before it starts
        assert services.execution_statuses_sync() == 0
        assert len(sb.calls.of(DESCRIBE)) == 1 and sb.calls.of(STEPS) == []
        monkeypatch.setattr(status_sync, "STEP_BUDGET_SECONDS", 25.0)
        assert services.execution_statuses_sync() == 3

    @pytest.mark.postgres(reason="advisory locks")
    def test_only_one_sync_at_a_time(self, running, sb):
        require_postgres("advisory locks")
        running(1)
        sb.calls.clear()
        held, release = threading.Event(), threading.Event()

        def other_sync():
            from django.db import connection as own
            with own.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_lock(%s)", [locks.STATUS_SYNC])
                held.set()
                release.wait(10)
                cursor.execute("SELECT pg_advisory_unlock(%s)", [locks.STATUS_SYNC])
            own.close()
        thread = threading.Thread(target=other_sync)
        thread.start()
        try:
            held.wait(10)
            assert services.execution_statuses_sync() == 0
            assert delegate_calls(sb) == []
        finally:
            release.set()
            thread.join()


class TestFinalStatuses:
    @pytest.mark.parametrize("aws_status, ours", [
        ("Success", Status.SUCCEEDED), ("CompletedWithSuccess", Status.SUCCEEDED),
        ("Failed", Status.FAILED), ("CompletedWithFailure", Status.FAILED), ("Rejected", Status.FAILED),
        ("Exited", Status.FAILED), ("ChangeCalendarOverrideRejected", Status.FAILED),
        ("Cancelled", Status.CANCELLED), ("TimedOut", Status.TIMED_OUT),
        ("Waiting", Status.RUNNING), ("Cancelling", Status.RUNNING), ("PendingApproval", Status.RUNNING),
        ("RunbookInProgress", Status.RUNNING),
    ])
    def test_mapping_keeps_aws_status_verbatim(self, world, monkeypatch, aws_status, ours):
        """Stubbed step/get calls: every AWS status, including ones the sandbox never produces."""
        monkeypatch.setattr(aws, "step_executions", lambda **kw: [{"StepName": "only", "StepStatus": aws_status}])
        monkeypatch.setattr(aws, "get_execution", lambda **kw: {"Outputs": {"only.Out": ["x"]}})
        version = f.RunbookVersionFactory(runbook=f.RunbookFactory(account=world.account))
        request = AutomationRequest.objects.create(
            team=world.platform, requester=world.alice, runbook=version.runbook, runbook_version=version,
            account=world.account, region="eu-west-1", status=Status.RUNNING, fingerprint="0" * 64)
        execution = Execution.objects.create(request=request, execution_id=str(uuid.uuid4()), aws_status="InProgress")
        ended = timezone.now().replace(microsecond=0)
        item = {"AutomationExecutionStatus": aws_status, "FailureMessage": "boom" if ours == Status.FAILED else "",
                "ExecutionEndTime": ended if ours != Status.RUNNING else None}
        assert status_sync._apply(execution, item, account_id="1", region="eu-west-1", role_arn="r") is True
        request.refresh_from_db()
        execution.refresh_from_db()
        assert request.status == ours
        assert execution.aws_status == aws_status
        if ours == Status.RUNNING:
            assert AuditEvent.objects.filter(request=request, action="execution.status_changed").exists()
        else:
            event = AuditEvent.objects.get(request=request, action=f"execution.{ours}")
            assert event.details["aws_status"] == aws_status
            assert request.finished_at == ended
            assert execution.outputs == {"only.Out": ["x"]}
        if ours == Status.FAILED:
            assert request.status_reason == "boom"


class TestLivePage:
    def test_steps_outputs_and_failure_update_on_the_request_page(self, world, running, sb):
        # 30 s at the sandbox's time scale: the first look below must see it in progress even when a
        # busy machine takes many seconds between the start and that look (6 s was not enough).
        [request] = running(1, seconds=1500)
        web = Client()
        web.force_login(world.alice)
        url = reverse("automations:request_status", args=[request.pk])

        services.execution_statuses_sync()
        page = web.get(url).content.decode()
        assert f'hx-get="{url}' in page  # still polling
        assert "describe" in page and "wait" in page  # the steps, as AWS reports them

        sb.wait_for_execution(request.execution.execution_id, timeout=90)
        services.execution_statuses_sync()
        request.refresh_from_db()
        assert request.status == Status.FAILED
        page = web.get(url).content.decode()
        assert "hx-get" not in page  # final: the page stops polling
        assert "Failed" in page
        failure = request.execution.failure_message
        assert failure and failure[:40] in page.replace("&#x27;", "'").replace("&quot;", '"')
        # describe.State, a step output, as AWS reported it. Not a fixed "running": the session's
        # sandbox is shared, and another test may have stopped or restarted web-1 just before.
        [state] = sb.execution(request.execution.execution_id)["StepExecutions"][0]["Outputs"]["State"]
        assert state in page, (state, page[-2000:])

    def test_other_teams_cannot_poll_a_request(self, world, running):
        [request] = running(1)
        web = Client()
        web.force_login(world.dave)
        assert web.get(reverse("automations:request_status", args=[request.pk])).status_code == 404
