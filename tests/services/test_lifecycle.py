"""The request lifecycle through services: submit → approve → dispatch → track, and every refusal."""
import pytest
from django.db import IntegrityError, transaction

from automations import services
from automations.errors import InvalidRequest, NotAllowed, OutOfScope, ServerOwnedParameter, TransitionNotAllowed
from automations.models import Approval, AuditEvent, AutomationRequest, DispatchOutbox
from automations.runbooks import fingerprint_for

Status = AutomationRequest.Status


def actions_for(request):
    return list(AuditEvent.objects.filter(request=request).order_by("sequence").values_list("action", flat=True))


class TestSubmit:
    def test_submit_resolves_version_fills_role_and_fingerprints(self, world, submit):
        request = submit(justification="nightly restart")
        assert request.status == Status.SUBMITTED
        assert request.runbook_version == world.version
        assert request.parameters == {"InstanceId": [world.web1],
                                      "AutomationAssumeRole": [world.account.automation_role_arn]}
        assert request.resources == [world.web1]
        assert request.fingerprint == fingerprint_for(request)
        event = AuditEvent.objects.get(request=request, action="request.submitted")
        assert event.actor == world.alice and event.actor_name == "alice"
        assert event.resources == [world.web1] and event.team == "platform"
        assert event.account_id == world.account.account_id and event.region == "eu-west-1"

    def test_user_supplied_automation_role_is_refused_and_audited(self, world, submit):
        with pytest.raises(ServerOwnedParameter):
            submit(parameters={"InstanceId": [world.web1], "AutomationAssumeRole": "arn:aws:iam::1:role/Admin"})
        assert not AutomationRequest.objects.exists()
        refusal = AuditEvent.objects.get(action="request.refused")
        assert refusal.details["code"] == "server_owned_parameter"
        assert refusal.actor == world.alice

    def test_other_teams_instance_is_out_of_scope_and_audited(self, world, submit):
        with pytest.raises(OutOfScope):
            submit(parameters={"InstanceId": [world.etl1]})
        assert AuditEvent.objects.filter(action="request.refused", details__code="out_of_scope").exists()
        assert not AutomationRequest.objects.exists()

    def test_untagged_and_unknown_instances_are_out_of_scope(self, world, submit):
        with pytest.raises(OutOfScope) as error:
            submit(parameters={"InstanceId": [world.bastion, "i-0123456789abcdef0"]})
        assert set(error.value.errors["resources"]) == {world.bastion, "i-0123456789abcdef0"}

    def test_non_member_cannot_request_for_a_team(self, world, submit):
        with pytest.raises(NotAllowed):
            submit(actor=world.dave)  # dave is in data, asking as platform

    def test_missing_required_parameter(self, world, submit):
        with pytest.raises(InvalidRequest) as error:
            submit(parameters={})
        assert "InstanceId" in error.value.errors

    def test_unknown_parameter_is_refused(self, world, submit):
        with pytest.raises(InvalidRequest) as error:
            submit(parameters={"InstanceId": [world.web1], "Surprise": "x"})
        assert "Surprise" in error.value.errors

    def test_zero_approval_policy_auto_approves_naming_the_rule(self, world, submit):
        world.platform_policy.approvals_required = 0
        world.platform_policy.save()
        request = submit()
        assert request.status == Status.APPROVED
        event = AuditEvent.objects.get(request=request, action="request.auto_approved")
        assert event.details["rule"] == f"team-runbook-policy:{world.platform_policy.pk}"
        assert DispatchOutbox.objects.filter(pk=request.pk, state="pending").exists()


class TestDecisions:
    def test_lead_approval_commits_outbox_and_publishes_after_commit(self, world, submit, django_capture_on_commit_callbacks, monkeypatch):
        from automations.services import dispatch

        published = []
        monkeypatch.setattr(dispatch, "dispatch_publish_after_approval", published.append)
        request = submit()
        with django_capture_on_commit_callbacks(execute=True):
            request = services.request_approve(request=request, actor=world.bob, comment="ok")
        assert request.status == Status.APPROVED
        assert published == [request.pk]
        assert DispatchOutbox.objects.get(pk=request.pk).state == "pending"
        assert actions_for(request) == ["request.submitted", "request.approval_added", "request.approved"]
        assert Approval.objects.get(request=request).fingerprint == request.fingerprint

    def test_requester_cannot_approve_own_request_even_as_lead(self, world, submit):
        request = submit(actor=world.bob)
        with pytest.raises(NotAllowed) as error:
            services.request_approve(request=request, actor=world.bob)
        assert error.value.code == "self_approval"
        request.refresh_from_db()
        assert request.status == Status.SUBMITTED
        assert not Approval.objects.exists()
        assert AuditEvent.objects.filter(action="approval.refused", details__code="self_approval").exists()
        # ...and the other lead can.
        assert services.request_approve(request=request, actor=world.frank).status == Status.APPROVED

    def test_database_refuses_self_approval_even_if_code_forgets(self, world, submit):
        request = submit()
        with pytest.raises(IntegrityError), transaction.atomic():
            Approval.objects.create(request=request, approver=world.alice, requester=world.alice,
                                    fingerprint=request.fingerprint)

    def test_member_and_other_teams_lead_cannot_approve(self, world, submit):
        request = submit()
        for outsider in (world.dave, world.erin, world.carol):
            with pytest.raises(NotAllowed):
                services.request_approve(request=request, actor=outsider)
        request.refresh_from_db()
        assert request.status == Status.SUBMITTED

    def test_two_distinct_approvers_when_policy_says_so(self, world, submit):
        world.platform_policy.approvals_required = 2
        world.platform_policy.save()
        request = submit()
        request = services.request_approve(request=request, actor=world.bob)
        assert request.status == Status.SUBMITTED
        with pytest.raises(NotAllowed):
            services.request_approve(request=request, actor=world.bob)  # the same lead twice
        request = services.request_approve(request=request, actor=world.frank)
        assert request.status == Status.APPROVED

    def test_reject_withdraw_and_forbidden_transitions(self, world, submit):
        rejected = services.request_reject(request=submit(), actor=world.bob, comment="not today")
        assert rejected.status == Status.REJECTED and rejected.status_reason == "not today"
        with pytest.raises(TransitionNotAllowed):
            services.request_approve(request=rejected, actor=world.frank)
        with pytest.raises(TransitionNotAllowed):
            services.request_withdraw(request=rejected, actor=world.alice)
        withdrawn = services.request_withdraw(request=submit(), actor=world.alice)
        assert withdrawn.status == Status.WITHDRAWN
        with pytest.raises(NotAllowed):
            services.request_withdraw(request=submit(), actor=world.bob)  # only the requester withdraws

    def test_cancel_before_dispatch(self, world, submit):
        request = services.request_approve(request=submit(), actor=world.bob)
        cancelled = services.request_cancel(request=request, actor=world.alice, reason="changed my mind")
        assert cancelled.status == Status.CANCELLED
        assert DispatchOutbox.objects.get(pk=request.pk).state == "cancelled"
        services.request_dispatch(request_id=request.pk)  # a late message is a no-op
        cancelled.refresh_from_db()
        assert cancelled.status == Status.CANCELLED


class TestDispatchAndTrack:
    def _approved(self, world, submit):
        return services.request_approve(request=submit(), actor=world.bob)

    def test_dispatch_starts_once_under_the_central_role_naming_the_requester(self, world, submit, sb):
        request = self._approved(world, submit)
        services.request_dispatch(request_id=request.pk)
        request.refresh_from_db()
        assert request.status == Status.RUNNING
        starts = [c for c in sb.calls if c["operation"] == "StartAutomationExecution"]
        assert len(starts) == 1
        start = starts[0]
        assert start["client_token"] == str(request.client_token)
        assert start["source_identity"] == "alice"
        assert start["session_name"] == f"delegate-req-{request.pk}-alice"
        assert start["role_arn"] == world.account.dispatch_role_arn
        assert start["params"]["Parameters"]["AutomationAssumeRole"] == [world.account.automation_role_arn]
        assert start["params"]["DocumentVersion"] == "1"
        event = AuditEvent.objects.get(request=request, action="dispatch.started")
        assert event.role_session_name == f"delegate-req-{request.pk}-alice"
        assert event.source_identity == "alice"
        assert event.aws_request_id == start["aws_request_id"]
        assert event.execution_id == request.execution.execution_id
        # A redelivered message changes nothing and calls AWS no more.
        services.request_dispatch(request_id=request.pk)
        assert len([c for c in sb.calls if c["operation"] == "StartAutomationExecution"]) == 1

    def test_status_sync_reaches_success_and_records_steps(self, world, submit, sb):
        request = self._approved(world, submit)
        services.request_dispatch(request_id=request.pk)
        request.refresh_from_db()
        sb.wait_for_execution(request.execution.execution_id, timeout=30)
        services.execution_statuses_sync()
        request.refresh_from_db()
        assert request.status == Status.SUCCEEDED
        assert request.execution.aws_status == "Success"
        assert [step["name"] for step in request.execution.steps] == ["stopInstances", "startInstances"]
        assert actions_for(request)[-1] == "execution.succeeded"
        assert sb.state_history(world.web1)[-4:] == ["stopping", "stopped", "pending", "running"]

    def test_no_calls_when_nothing_runs(self, world, sb):
        before = len(sb.calls)
        assert services.execution_statuses_sync() == 0
        assert len(sb.calls) == before

    def test_forced_step_failure_maps_to_failed(self, world, submit, sb):
        sb.faults.fail_step = {"stopInstances"}
        request = self._approved(world, submit)
        services.request_dispatch(request_id=request.pk)
        request.refresh_from_db()
        sb.wait_for_execution(request.execution.execution_id, timeout=30)
        services.execution_statuses_sync()
        request.refresh_from_db()
        assert request.status == Status.FAILED
        assert request.execution.aws_status == "Failed"

    def test_fingerprint_mismatch_refuses_dispatch(self, world, submit, sb):
        request = self._approved(world, submit)
        # Tamper with the stored parameters behind the services' back (e.g. a DB edit).
        AutomationRequest.objects.filter(pk=request.pk).update(parameters={"InstanceId": [world.web2]})
        services.request_dispatch(request_id=request.pk)
        request.refresh_from_db()
        assert request.status == Status.DISPATCH_FAILED
        assert "fingerprint" in request.status_reason
        assert not [c for c in sb.calls if c["operation"] == "StartAutomationExecution"]
        assert AuditEvent.objects.filter(request=request, action="dispatch.refused").exists()

    def test_forged_message_for_unapproved_request_is_refused(self, world, submit, sb):
        request = submit()
        services.request_dispatch(request_id=request.pk)
        request.refresh_from_db()
        assert request.status == Status.SUBMITTED
        assert AuditEvent.objects.filter(request=request, action="dispatch.refused").exists()
        assert not [c for c in sb.calls if c["operation"] == "StartAutomationExecution"]

    def test_target_leaving_scope_before_dispatch_is_refused(self, world, submit, sb):
        import boto3

        request = self._approved(world, submit)
        ec2 = boto3.client("ec2", region_name="eu-west-1", endpoint_url=sb.url)
        ec2.create_tags(Resources=[world.web1], Tags=[{"Key": "Team", "Value": "data"}])
        try:
            services.request_dispatch(request_id=request.pk)
        finally:
            ec2.create_tags(Resources=[world.web1], Tags=[{"Key": "Team", "Value": "platform"}])
        request.refresh_from_db()
        assert request.status == Status.DISPATCH_FAILED
        assert world.web1 in request.status_reason

    def test_throttling_puts_the_request_back_with_a_delay(self, world, submit, sb):
        request = self._approved(world, submit)
        sb.faults.throttle_next("StartAutomationExecution", 10)
        services.request_dispatch(request_id=request.pk)
        request.refresh_from_db()
        assert request.status == Status.APPROVED
        outbox = DispatchOutbox.objects.get(pk=request.pk)
        assert outbox.state == "pending" and outbox.next_attempt_at > request.approved_at
        assert AuditEvent.objects.filter(request=request, action="dispatch.deferred").exists()

    def test_permanent_error_fails_at_once(self, world, submit, sb):
        request = self._approved(world, submit)
        sb.faults.error_next("StartAutomationExecution", "InvalidAutomationExecutionParametersException", n=1)
        services.request_dispatch(request_id=request.pk)
        request.refresh_from_db()
        assert request.status == Status.DISPATCH_FAILED
        assert "InvalidAutomationExecutionParametersException" in request.status_reason

    def test_cancel_running_stops_under_a_session_naming_the_canceller(self, world, submit, sb):
        sb.faults.latency = 0
        request = self._approved(world, submit)
        # Hold the sandbox's engine: on a busy machine the run could finish before the stop arrives.
        sb.engine.stop()
        try:
            services.request_dispatch(request_id=request.pk)
            request.refresh_from_db()
            services.request_cancel(request=request, actor=world.bob, reason="wrong box")
        finally:
            sb.engine.start()
        stop = [c for c in sb.calls if c["operation"] == "StopAutomationExecution"][-1]
        assert stop["source_identity"] == "bob"
        assert stop["session_name"] == f"delegate-cancel-{request.pk}-bob"
        assert AuditEvent.objects.filter(request=request, action="request.cancel_requested",
                                         source_identity="bob").exists()
