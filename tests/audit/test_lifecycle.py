"""Completeness (matrix row 29): each path yields exactly the expected events, with every field."""
import json

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from automations import audit, services
from automations.audit import ClientInfo
from automations.errors import NotAllowed, OutOfScope, ServerOwnedParameter
from automations.models import AuditEvent, AutomationRequest
from tests.audit_helpers import verify

Status = AutomationRequest.Status
REQUESTER = ClientInfo(ip="203.0.113.7", user_agent="requester-browser/1.0")
LEAD = ClientInfo(ip="2001:db8::8", user_agent="lead-browser/2.0")


def events_of(request) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(request=request).order_by("sequence"))


def check(event: AuditEvent, *, action: str, actor=None, request=None, client: ClientInfo | None = None, **fields):
    """One event, every field: who, what, where from, on what, and its place in the chain."""
    assert event.action == action
    assert event.actor_id == (actor.pk if actor else None), action
    assert event.actor_name == (actor.get_username() if actor else "system"), action
    assert event.occurred_at is not None and event.sequence > 0
    assert event.client_ip == (client.ip if client else None), action
    assert event.user_agent == (client.user_agent if client else ""), action
    if request is not None:
        assert event.request_id == request.pk
        assert event.team == request.team.name
        assert event.runbook == request.runbook.name
        assert event.resources == request.resources
        assert event.account_id == request.account.account_id
        assert event.region == request.region
    for name, expected in fields.items():
        assert getattr(event, name) == expected, (action, name)
    assert event.hash == audit.compute_hash(event.prev_hash, audit.chained_fields(event))


def consecutive(events):
    sequences = [event.sequence for event in events]
    assert sequences == list(range(sequences[0], sequences[0] + len(sequences)))
    for earlier, later in zip(events, events[1:]):
        assert later.prev_hash == earlier.hash


class TestRequestPaths:
    def test_submit_approve_dispatch_run_succeed(self, world, submit, sb):
        request = submit(client=REQUESTER, justification="weekly restart")
        services.request_approve(request=request, actor=world.bob, comment="go ahead", client=LEAD)
        old_scale = sb.state.time_scale
        sb.state.time_scale = 5.0  # slow enough to observe the run in progress (about 2 s)
        try:
            services.request_dispatch(request_id=request.pk)
            request.refresh_from_db()
            execution_id = request.execution.execution_id
            sb.wait_for_execution(execution_id, statuses=("InProgress",), timeout=10)
            services.execution_statuses_sync()
        finally:
            sb.state.time_scale = old_scale
        sb.wait_for_execution(execution_id, timeout=30)
        services.execution_statuses_sync()
        request.refresh_from_db()
        assert request.status == Status.SUCCEEDED

        events = events_of(request)
        assert [e.action for e in events] == [
            "request.submitted", "request.approval_added", "request.approved", "dispatch.claimed",
            "dispatch.started", "execution.status_changed", "execution.succeeded",
        ]
        consecutive(events)
        submitted, added, approved, claimed, started, changed, succeeded = events
        check(submitted, action="request.submitted", actor=world.alice, request=request, client=REQUESTER)
        assert submitted.details["fingerprint"] == request.fingerprint
        assert submitted.details["version"] == "1"
        assert submitted.details["parameters"]["InstanceId"] == [world.web1]
        check(added, action="request.approval_added", actor=world.bob, request=request, client=LEAD)
        assert added.details["comment"] == "go ahead"
        assert (added.details["approvals"], added.details["required"]) == (1, 1)
        assert added.details["fingerprint"] == request.fingerprint
        check(approved, action="request.approved", actor=world.bob, request=request, client=LEAD)
        assert (approved.details["from"], approved.details["to"]) == ("submitted", "approved")
        check(claimed, action="dispatch.claimed", request=request)
        assert (claimed.details["from"], claimed.details["to"]) == ("approved", "dispatching")
        start_call = [c for c in sb.calls if c["operation"] == "StartAutomationExecution"
                      and c["client_token"] == str(request.client_token)][-1]
        check(started, action="dispatch.started", request=request,
              role_session_name=f"delegate-req-{request.pk}-alice", source_identity="alice",
              aws_request_id=start_call["aws_request_id"], execution_id=execution_id)
        assert start_call["session_name"] == started.role_session_name  # the CloudTrail join
        check(changed, action="execution.status_changed", request=request, execution_id=execution_id)
        assert (changed.details["previous_aws_status"], changed.details["aws_status"]) == ("Pending", "InProgress")
        check(succeeded, action="execution.succeeded", request=request, execution_id=execution_id)
        assert succeeded.details["aws_status"] == "Success"
        assert (succeeded.details["from"], succeeded.details["to"]) == ("running", "succeeded")
        assert verify("--no-digests")[0] == 0

    def test_two_approvers(self, world, submit):
        world.platform_policy.approvals_required = 2
        world.platform_policy.save()
        request = submit()
        services.request_approve(request=request, actor=world.bob, client=LEAD)
        services.request_approve(request=request, actor=world.frank)
        events = events_of(request)
        assert [e.action for e in events] == ["request.submitted", "request.approval_added",
                                              "request.approval_added", "request.approved"]
        check(events[1], action="request.approval_added", actor=world.bob, request=request, client=LEAD)
        assert (events[1].details["approvals"], events[1].details["required"]) == (1, 2)
        check(events[2], action="request.approval_added", actor=world.frank, request=request)
        check(events[3], action="request.approved", actor=world.frank, request=request)

    def test_reject_and_withdraw(self, world, submit):
        rejected = submit()
        services.request_reject(request=rejected, actor=world.bob, comment="not during the sale", client=LEAD)
        events = events_of(rejected)
        assert [e.action for e in events] == ["request.submitted", "request.rejected"]
        check(events[1], action="request.rejected", actor=world.bob, request=rejected, client=LEAD)
        assert events[1].details["comment"] == "not during the sale"

        withdrawn = submit()
        services.request_withdraw(request=withdrawn, actor=world.alice, client=REQUESTER)
        events = events_of(withdrawn)
        assert [e.action for e in events] == ["request.submitted", "request.withdrawn"]
        check(events[1], action="request.withdrawn", actor=world.alice, request=withdrawn, client=REQUESTER)

    def test_dispatch_failure_names_the_aws_error(self, world, submit, sb):
        request = services.request_approve(request=submit(), actor=world.bob)
        sb.faults.error_next("StartAutomationExecution", "InvalidAutomationExecutionParametersException", n=1)
        services.request_dispatch(request_id=request.pk)
        events = events_of(request)
        assert [e.action for e in events] == ["request.submitted", "request.approval_added", "request.approved",
                                              "dispatch.claimed", "dispatch.failed"]
        check(events[-1], action="dispatch.failed", request=request)
        assert events[-1].details["error"] == "InvalidAutomationExecutionParametersException"
        assert events[-1].details["to"] == "dispatch_failed"

    def test_failed_execution(self, world, submit, sb):
        sb.faults.fail_step = {"stopInstances"}
        request = services.request_approve(request=submit(), actor=world.bob)
        services.request_dispatch(request_id=request.pk)
        request.refresh_from_db()
        sb.wait_for_execution(request.execution.execution_id, timeout=30)
        services.execution_statuses_sync()
        actions = [e.action for e in events_of(request)]
        assert actions[:5] == ["request.submitted", "request.approval_added", "request.approved",
                               "dispatch.claimed", "dispatch.started"]
        assert actions[-1] == "execution.failed"
        assert set(actions[5:-1]) <= {"execution.status_changed"}
        final = events_of(request)[-1]
        check(final, action="execution.failed", request=request, execution_id=request.execution.execution_id)
        assert final.details["aws_status"] == "Failed"

    def test_cancel_of_a_running_execution_names_the_canceller_to_aws(self, world, submit, sb):
        request = services.request_approve(request=submit(), actor=world.bob)
        # Hold the sandbox's engine: on a busy machine the run could finish before the stop arrives.
        sb.engine.stop()
        try:
            services.request_dispatch(request_id=request.pk)
            request.refresh_from_db()
            services.request_cancel(request=request, actor=world.bob, reason="wrong box", client=LEAD)
        finally:
            sb.engine.start()
        event = events_of(request)[-1]
        stop = [c for c in sb.calls if c["operation"] == "StopAutomationExecution"][-1]
        check(event, action="request.cancel_requested", actor=world.bob, request=request, client=LEAD,
              role_session_name=stop["session_name"], source_identity="bob", aws_request_id=stop["aws_request_id"])
        assert event.details["reason"] == "wrong box"

    def test_expiry_is_the_systems_act(self, world, submit):
        import datetime as dt

        from django.utils import timezone

        request = submit()
        services.request_expire_stale(now=timezone.now() + dt.timedelta(days=30))
        events = events_of(request)
        assert [e.action for e in events] == ["request.submitted", "request.expired"]
        check(events[1], action="request.expired", request=request)


class TestRefusals:
    def test_out_of_scope_resource(self, world, submit):
        with pytest.raises(OutOfScope):
            submit(parameters={"InstanceId": [world.etl1]}, client=REQUESTER)
        event = AuditEvent.objects.get(action="request.refused")
        check(event, action="request.refused", actor=world.alice, client=REQUESTER, request_id=None, team="platform",
              runbook=world.runbook.name, resources=[world.etl1], account_id=world.account.account_id,
              region="eu-west-1")
        assert event.details["code"] == "out_of_scope"
        assert AuditEvent.objects.count() == 1

    def test_role_override(self, world, submit):
        with pytest.raises(ServerOwnedParameter):
            submit(parameters={"InstanceId": [world.web1], "AutomationAssumeRole": "arn:aws:iam::999999999999:role/Admin"},
                   client=REQUESTER)
        event = AuditEvent.objects.get(action="request.refused")
        check(event, action="request.refused", actor=world.alice, client=REQUESTER, team="platform",
              runbook=world.runbook.name)
        assert event.details["code"] == "server_owned_parameter"
        assert "AutomationAssumeRole" in json.dumps(event.details)

    def test_self_approval_and_outsiders(self, world, submit):
        request = submit(actor=world.bob)
        with pytest.raises(NotAllowed):
            services.request_approve(request=request, actor=world.bob, client=LEAD)
        with pytest.raises(NotAllowed):
            services.request_approve(request=request, actor=world.erin)
        refusals = list(AuditEvent.objects.filter(action="approval.refused").order_by("sequence"))
        check(refusals[0], action="approval.refused", actor=world.bob, request=request, client=LEAD)
        assert refusals[0].details["code"] == "self_approval"
        check(refusals[1], action="approval.refused", actor=world.erin, request=request)
        assert refusals[1].details["code"] == "not_a_lead"
        assert [e.action for e in events_of(request)] == ["request.submitted", "approval.refused", "approval.refused"]

    def test_idor_probes_are_404_and_audited_in_the_api_and_the_pages(self, world, submit, client, settings):
        settings.TRUSTED_PROXY_COUNT = 1
        request = submit()
        api = APIClient()
        api.force_authenticate(world.dave)
        env = {"REMOTE_ADDR": "10.0.0.2", "HTTP_X_FORWARDED_FOR": "203.0.113.66", "HTTP_USER_AGENT": "probe/1"}
        probes = [
            (api.get, f"/api/v1/requests/{request.pk}/", "api:request_detail"),
            (api.post, f"/api/v1/requests/{request.pk}/approve/", "api:request_approve"),
            (api.post, f"/api/v1/requests/{request.pk}/cancel/", "api:request_cancel"),
        ]
        for method, path, _ in probes:
            response = method(path, {}, format="json", **env)
            assert response.status_code == 404 and response.json()["code"] == "not_found"
        client.force_login(world.dave)
        assert client.get(f"/requests/{request.pk}/", **env).status_code == 404
        assert client.post(f"/requests/{request.pk}/approve/", {"comment": "x"}, **env).status_code == 404
        assert client.get("/requests/999999/", **env).status_code == 404
        denied = list(AuditEvent.objects.filter(action="authz.denied").order_by("sequence"))
        assert len(denied) == 6
        for event, (_, path, route) in zip(denied, probes):
            check(event, action="authz.denied", actor=world.dave, request=request,
                  client=ClientInfo(ip="203.0.113.66", user_agent="probe/1"))
            assert event.details["path"] == path and event.details["route"] == route
            assert event.details["status"] == 404 and event.details["exists"] is True
        assert denied[3].details["route"] == "automations:request_detail" and denied[3].request_id == request.pk
        assert denied[4].details["method"] == "POST"
        missing = denied[5]
        assert missing.request_id is None and missing.details["exists"] is False and missing.team == ""
        # The probed team's lead sees the probe in their own audit view; nothing changed.
        request.refresh_from_db()
        assert request.status == Status.SUBMITTED
        lead = APIClient()
        lead.force_authenticate(world.bob)
        seen = lead.get("/api/v1/audit/", {"action": "authz.denied"}).json()["results"]
        assert {event["actor_name"] for event in seen} == {"dave"}

    def test_a_mistyped_url_is_not_a_probe(self, world, client):
        client.force_login(world.dave)
        assert client.get("/no-such-page/").status_code == 404
        assert not AuditEvent.objects.filter(action="authz.denied").exists()


class TestPeopleAndConfiguration:
    def test_logins_and_failed_logins_with_the_proxy_derived_ip(self, world, client, settings):
        settings.TRUSTED_PROXY_COUNT = 1
        spoofed = {"REMOTE_ADDR": "10.0.0.2", "HTTP_X_FORWARDED_FOR": "6.6.6.6, 198.51.100.23",
                   "HTTP_USER_AGENT": "browser/3"}
        client.post("/accounts/login/", {"username": "alice", "password": "wrong"}, **spoofed)
        client.post("/accounts/login/", {"username": "alice", "password": "delegate-test"}, **spoofed)
        failed = AuditEvent.objects.get(action="login.fail")
        assert failed.actor_id is None and failed.actor_name == "anonymous:alice"
        assert failed.details == {"username": "alice"}  # never the password
        assert failed.client_ip == "198.51.100.23" and failed.user_agent == "browser/3"
        ok = AuditEvent.objects.get(action="login.ok")
        check(ok, action="login.ok", actor=world.alice, client=ClientInfo("198.51.100.23", "browser/3"))
        assert "wrong" not in json.dumps(list(AuditEvent.objects.values("details")))

    def test_without_trusted_proxies_forwarded_for_is_ignored(self, rf, settings):
        settings.TRUSTED_PROXY_COUNT = 0
        request = rf.get("/", REMOTE_ADDR="192.0.2.1", HTTP_X_FORWARDED_FOR="6.6.6.6")
        assert ClientInfo.from_request(request).ip == "192.0.2.1"
        settings.TRUSTED_PROXY_COUNT = 2
        request = rf.get("/", REMOTE_ADDR="10.0.0.9", HTTP_X_FORWARDED_FOR="6.6.6.6, 203.0.113.5, 10.0.0.1")
        assert ClientInfo.from_request(request).ip == "203.0.113.5"
        request = rf.get("/", REMOTE_ADDR="10.0.0.9", HTTP_X_FORWARDED_FOR="not-an-ip, 10.0.0.1")
        assert ClientInfo.from_request(request).ip is None  # garbage is dropped, not stored

    def test_admin_changes_record_before_and_after(self, world, client):
        admin_user = get_user_model().objects.create_superuser("root", "root@example.com", "pw-for-tests")
        client.force_login(admin_user)
        account = world.account
        response = client.post(f"/admin/automations/account/{account.pk}/change/", {
            "account_id": account.account_id, "name": "Production",
            "regions": json.dumps(["eu-west-1", "us-east-1"]),
            "dispatch_role_arn": account.dispatch_role_arn, "automation_role_arn": account.automation_role_arn,
            "_save": "Save",
        }, REMOTE_ADDR="192.0.2.44", HTTP_USER_AGENT="admin-browser")
        assert response.status_code == 302, response.content[:2000]
        event = AuditEvent.objects.get(action="config.changed")
        check(event, action="config.changed", actor=admin_user, client=ClientInfo("192.0.2.44", "admin-browser"))
        assert event.details["model"] == "automations.Account" and event.details["object_id"] == account.pk
        assert event.details["before"]["name"] == "Sandbox" and event.details["after"]["name"] == "Production"
        assert event.details["after"]["regions"] == ["eu-west-1", "us-east-1"]

    def test_actor_snapshot_survives_rename_and_deletion(self, world, client):
        temp = get_user_model().objects.create_user("contractor", password="delegate-test")
        client.post("/accounts/login/", {"username": "contractor", "password": "delegate-test"})
        event = AuditEvent.objects.get(action="login.ok")
        temp.username = "someone-else"
        temp.save()
        temp_pk = temp.pk
        temp.delete()
        event = AuditEvent.objects.get(pk=event.pk)
        assert (event.actor_id, event.actor_name) == (temp_pk, "contractor")
        assert verify("--no-digests")[0] == 0
        carol = APIClient()
        carol.force_authenticate(world.carol)
        rows = carol.get("/api/v1/audit/", {"actor": "contractor"}).json()["results"]
        assert [(row["actor"], row["actor_name"]) for row in rows] == [(temp_pk, "contractor")]
        client.force_login(world.carol)
        page = client.get(f"/audit/events/{event.sequence}/")
        assert page.status_code == 200 and b"contractor" in page.content
