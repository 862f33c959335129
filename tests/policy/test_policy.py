"""Team policy: scope at submit and again at dispatch, change freezes and the emergency override,
timeouts and run-at, the approver pool (named group, a lead's own request), delegation and escalation.

Factories give the starting state; services do the action; the AuditEvent rows are checked.
"""
import contextlib
import datetime as dt
from unittest import mock
import json

import uuid

import boto3
import pytest
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.utils import timezone

from automations import policy, selectors, services
from automations.errors import InvalidRequest, NotAllowed, OutOfScope
from automations.models import (
    ApprovalDelegation,
    AuditEvent,
    AutomationRequest,
    DispatchOutbox,
    Escalation,
    FreezeWindow,
    Membership,
    NotificationDelivery,
    NotificationWebhook,
)
from automations.services import notifications, policies
from automations.services.requests import requests_release_held
from tests import factories as f

Status = AutomationRequest.Status


def starts(sb, request) -> list[dict]:
    """StartAutomationExecution calls the sandbox saw for this request (its ClientToken)."""
    return [c for c in sb.calls if c["operation"] == "StartAutomationExecution"
            and c["client_token"] == str(request.client_token)]


def actions(request) -> list[str]:
    return list(AuditEvent.objects.filter(request=request).order_by("sequence").values_list("action", flat=True))


@contextlib.contextmanager
def tagged(sb, resource: str, key: str, value: str):
    """Tag a sandbox instance for one block, then set the tag to "removed" (the sandbox has no
    DeleteTags; tests use their own tag key, so what is left behind concerns nobody else)."""
    ec2 = boto3.client("ec2", region_name="eu-west-1", endpoint_url=sb.url)
    ec2.create_tags(Resources=[resource], Tags=[{"Key": key, "Value": value}])
    try:
        yield
    finally:
        ec2.create_tags(Resources=[resource], Tags=[{"Key": key, "Value": "removed"}])


@pytest.fixture
def env_key():
    return f"Environment-{uuid.uuid4().hex[:8]}"


def set_policy(world, **fields):
    for name, value in fields.items():
        setattr(world.platform_policy, name, value)
    world.platform_policy.save()


def freeze(team=None, *, minutes_left: float = 60, name: str = "Year-end freeze") -> FreezeWindow:
    now = timezone.now()
    return FreezeWindow.objects.create(name=name, team=team, starts_at=now - dt.timedelta(hours=1),
                                       ends_at=now + dt.timedelta(minutes=minutes_left))


def end(window: FreezeWindow) -> None:
    FreezeWindow.objects.filter(pk=window.pk).update(ends_at=timezone.now() - dt.timedelta(seconds=1))


def make_due(request) -> None:
    """What the sweeper does when an outbox row's time has come."""
    DispatchOutbox.objects.filter(pk=request.pk).update(next_attempt_at=timezone.now())


@pytest.fixture
def henry(world):
    """A plain member of platform (a delegate candidate)."""
    user = f.UserFactory(username="henry")
    Membership.objects.create(user=user, team=world.platform, role=Membership.Role.MEMBER)
    return user


@pytest.fixture
def change_board(world):
    """A named approver group with one member, gina, who leads no team."""
    group = Group.objects.create(name="change-board")
    gina = f.UserFactory(username="gina")
    gina.groups.add(group)
    return group, gina


class TestScopeAtSubmit:
    def test_region_not_allowed_is_refused_and_audited(self, world, submit):
        set_policy(world, allowed_regions=["us-east-1"])
        with pytest.raises(OutOfScope) as error:
            submit()
        assert error.value.code == "region_not_allowed"
        refusal = AuditEvent.objects.get(action="request.refused")
        assert refusal.details["code"] == "region_not_allowed" and refusal.actor == world.alice
        assert not AutomationRequest.objects.exists()

    def test_account_must_be_in_policy_list_or_team_accounts(self, world, submit):
        set_policy(world, allowed_account_ids=["999999999999"])
        with pytest.raises(OutOfScope) as error:
            submit()
        assert error.value.code == "account_not_allowed"
        set_policy(world, allowed_account_ids=[])
        # Without a policy list the team's accounts apply: a team tied to another account only.
        other = f.AccountFactory(account_id="210987654321", name="Other")
        world.platform.accounts.add(other)
        with pytest.raises(OutOfScope):
            submit()
        world.platform.accounts.add(world.account)
        assert submit().status == Status.SUBMITTED

    def test_required_target_tags(self, world, submit, sb, env_key):
        set_policy(world, target_tags={env_key: ["staging", "dev"]})
        with pytest.raises(OutOfScope) as error:
            submit()
        assert error.value.code == "target_not_allowed" and error.value.errors["resources"] == [world.web1]
        with tagged(sb, world.web1, env_key, "production"):
            with pytest.raises(OutOfScope):
                submit()
        with tagged(sb, world.web1, env_key, "staging"):
            assert submit().status == Status.SUBMITTED
        assert AuditEvent.objects.filter(action="request.refused", details__code="target_not_allowed").count() == 2

    def test_id_patterns(self, world, submit):
        set_policy(world, target_id_patterns=["^i-nothing-like-this$"])
        with pytest.raises(OutOfScope) as error:
            submit()
        assert error.value.code == "target_not_allowed"
        set_policy(world, target_id_patterns=["^i-nothing$", "^" + world.web1[:6]])
        assert submit().status == Status.SUBMITTED

    def test_max_targets(self, world, submit):
        set_policy(world, max_targets=1)
        with pytest.raises(InvalidRequest) as error:
            submit(parameters={"InstanceId": [world.web1, world.web2]})
        assert error.value.code == "too_many_targets"

    def test_preview_refuses_without_auditing(self, world, submit):
        set_policy(world, allowed_regions=["us-east-1"])
        with pytest.raises(OutOfScope):
            submit(preview=True)
        assert not AuditEvent.objects.filter(action="request.refused").exists()

    def test_policy_fields_are_validated_for_admins(self, world):
        team_policy = world.platform_policy
        team_policy.target_id_patterns = ["(a+)+$(?=x)"]  # lookahead: not RE2
        team_policy.allowed_regions = ["Europe"]
        team_policy.escalate_after_hours = 2
        with pytest.raises(ValidationError) as error:
            team_policy.full_clean()
        assert {"target_id_patterns", "allowed_regions", "escalation_group"} <= set(error.value.message_dict)


class TestScopeAtDispatch:
    def test_policy_narrowed_after_approval_refuses_dispatch(self, world, submit, sb):
        request = services.request_approve(request=submit(), actor=world.bob)
        set_policy(world, allowed_regions=["us-east-1"])
        services.request_dispatch(request_id=request.pk)
        request.refresh_from_db()
        assert request.status == Status.DISPATCH_FAILED and "Region eu-west-1" in request.status_reason
        assert not starts(sb, request)
        assert AuditEvent.objects.filter(request=request, action="dispatch.refused").exists()

    def test_target_losing_a_required_tag_refuses_dispatch(self, world, submit, sb, env_key):
        set_policy(world, target_tags={env_key: ["staging"]})
        with tagged(sb, world.web1, env_key, "staging"):
            request = services.request_approve(request=submit(), actor=world.bob)
        # The tag is gone now (tagged() removed it): the target left the policy's scope.
        services.request_dispatch(request_id=request.pk)
        request.refresh_from_db()
        assert request.status == Status.DISPATCH_FAILED and world.web1 in request.status_reason
        assert not starts(sb, request)
        refused = AuditEvent.objects.get(request=request, action="dispatch.refused")
        assert refused.details["resources"] == [world.web1]

    def test_disabled_policy_refuses_dispatch(self, world, submit, sb):
        request = services.request_approve(request=submit(), actor=world.bob)
        set_policy(world, enabled=False)
        services.request_dispatch(request_id=request.pk)
        request.refresh_from_db()
        assert request.status == Status.DISPATCH_FAILED and not starts(sb, request)

    def test_in_scope_still_dispatches(self, world, submit, sb, env_key):
        set_policy(world, target_tags={env_key: ["staging"]}, target_id_patterns=["^i-"],
                   allowed_regions=["eu-west-1"])
        with tagged(sb, world.web1, env_key, "staging"):
            request = services.request_approve(request=submit(), actor=world.bob)
            services.request_dispatch(request_id=request.pk)
        request.refresh_from_db()
        assert request.status == Status.RUNNING and len(starts(sb, request)) == 1


class TestFreeze:
    def test_approval_inside_a_freeze_is_recorded_but_held(self, world, submit, sb):
        window = freeze(world.platform)
        request = services.request_approve(request=submit(), actor=world.bob, comment="fine")
        assert request.status == Status.SUBMITTED
        assert request.approvals.count() == 1
        held = AuditEvent.objects.get(request=request, action="request.approval_held")
        assert held.details["freeze"]["id"] == window.pk and held.details["needed"] == 2
        assert not DispatchOutbox.objects.filter(pk=request.pk).exists()
        # When the freeze ends, the tick makes the approval take effect (naming why).
        assert requests_release_held() == 0  # still frozen: nothing happens, nothing is audited
        end(window)
        assert requests_release_held() == 1
        request.refresh_from_db()
        assert request.status == Status.APPROVED
        approved = AuditEvent.objects.get(request=request, action="request.approved")
        assert approved.details["released"] == "the change freeze ended" and approved.actor_name == "system"
        assert DispatchOutbox.objects.filter(pk=request.pk).exists()

    def test_emergency_override_needs_a_reason_and_two_approvers(self, world, submit, sb):
        window = freeze(world.platform)
        request = submit()
        with pytest.raises(InvalidRequest) as error:
            services.request_approve(request=request, actor=world.bob, emergency=True, comment="   ")
        assert error.value.code == "reason_required"
        request = services.request_approve(request=request, actor=world.bob, emergency=True,
                                           comment="payment service down")
        assert request.status == Status.SUBMITTED  # one override is not enough
        request = services.request_approve(request=request, actor=world.frank, emergency=True,
                                           comment="confirmed outage, INC-42")
        assert request.status == Status.APPROVED
        approved = AuditEvent.objects.get(request=request, action="request.approved")
        assert approved.details["emergency_override"] is True
        assert approved.details["override_reasons"] == {"bob": "payment service down", "frank": "confirmed outage, INC-42"}
        assert approved.details["freeze"]["id"] == window.pk
        # ...and it dispatches inside the freeze.
        services.request_dispatch(request_id=request.pk)
        request.refresh_from_db()
        assert request.status == Status.RUNNING and len(starts(sb, request)) == 1

    def test_earlier_approver_adds_an_override_to_their_approval(self, world, submit):
        set_policy(world, approvals_required=2)
        request = services.request_approve(request=submit(), actor=world.bob)
        freeze()  # a global freeze starts
        request = services.request_approve(request=request, actor=world.frank, emergency=True, comment="outage")
        assert request.status == Status.SUBMITTED
        request = services.request_approve(request=request, actor=world.bob, emergency=True, comment="outage too")
        assert request.status == Status.APPROVED
        assert "request.emergency_override" in actions(request)

    def test_emergency_without_a_freeze_is_refused(self, world, submit):
        with pytest.raises(NotAllowed) as error:
            services.request_approve(request=submit(), actor=world.bob, emergency=True, comment="because")
        assert error.value.code == "no_freeze"

    def test_other_teams_freeze_does_not_apply_but_a_global_one_does(self, world, submit):
        freeze(world.data)
        assert services.request_approve(request=submit(), actor=world.bob).status == Status.APPROVED
        freeze(None, name="global")
        assert services.request_approve(request=submit(), actor=world.bob).status == Status.SUBMITTED

    def test_nothing_dispatches_inside_a_freeze(self, world, submit, sb):
        request = services.request_approve(request=submit(), actor=world.bob)
        window = freeze(world.platform, minutes_left=30)
        outcome = services.request_dispatch(request_id=request.pk)
        request.refresh_from_db()
        assert outcome == "held" and request.status == Status.APPROVED and not starts(sb, request)
        outbox = DispatchOutbox.objects.get(pk=request.pk)
        assert outbox.state == "pending" and outbox.next_attempt_at == window.ends_at
        assert AuditEvent.objects.get(request=request, action="dispatch.held").details["reason"] == "change freeze"
        services.request_dispatch(request_id=request.pk)  # a duplicate message: no second audit event
        assert AuditEvent.objects.filter(request=request, action="dispatch.held").count() == 1
        end(window)
        make_due(request)
        services.request_dispatch(request_id=request.pk)
        request.refresh_from_db()
        assert request.status == Status.RUNNING and len(starts(sb, request)) == 1

    def test_overlapping_windows_hold_until_the_last_one_ends(self, world):
        now = timezone.now()
        FreezeWindow.objects.create(name="a", starts_at=now - dt.timedelta(hours=1), ends_at=now + dt.timedelta(hours=1))
        FreezeWindow.objects.create(name="b", team=world.platform, starts_at=now + dt.timedelta(minutes=30),
                                    ends_at=now + dt.timedelta(hours=5))
        _, until = policy.freeze_at(world.platform)
        assert until == now + dt.timedelta(hours=5)
        assert policy.freeze_at(world.data)[1] == now + dt.timedelta(hours=1)

    def test_auto_approval_waits_for_the_freeze(self, world, submit):
        set_policy(world, approvals_required=0)
        window = freeze(world.platform)
        request = submit()
        assert request.status == Status.SUBMITTED
        end(window)
        from automations import tasks

        assert tasks.approvals_tick() == {"escalated": 0, "released": 1, "steps": 0}  # the beat task
        request.refresh_from_db()
        assert request.status == Status.APPROVED
        event = AuditEvent.objects.get(request=request, action="request.auto_approved")
        assert event.details["rule"] == f"team-runbook-policy:{world.platform_policy.pk}"


class TestTimeouts:
    def test_submitted_request_expires_after_the_policy_time(self, world, submit):
        set_policy(world, request_expiry_hours=2)
        fresh, stale = submit(), submit()
        AutomationRequest.objects.filter(pk=stale.pk).update(created_at=timezone.now() - dt.timedelta(hours=3))
        assert services.request_expire_stale() == 1
        stale.refresh_from_db()
        fresh.refresh_from_db()
        assert stale.status == Status.EXPIRED and fresh.status == Status.SUBMITTED
        assert AuditEvent.objects.get(request=stale, action="request.expired").details["reason"] == "not approved in time"

    def test_approval_validity_runs_out_and_needs_reapproval(self, world, submit, sb):
        set_policy(world, approval_validity_hours=1)
        request = services.request_approve(request=submit(), actor=world.bob)
        AutomationRequest.objects.filter(pk=request.pk).update(approved_at=timezone.now() - dt.timedelta(hours=2))
        # Dispatch re-checks it even if the expiry job has not run yet...
        services.request_dispatch(request_id=request.pk)
        request.refresh_from_db()
        assert request.status == Status.DISPATCH_FAILED and "approval" in request.status_reason
        assert not starts(sb, request)
        # ...and the expiry job turns a stale approval into `expired`.
        other = services.request_approve(request=submit(), actor=world.bob)
        AutomationRequest.objects.filter(pk=other.pk).update(approved_at=timezone.now() - dt.timedelta(hours=2))
        services.request_expire_stale()
        other.refresh_from_db()
        assert other.status == Status.EXPIRED and other.status_reason == "approval validity ran out"
        assert DispatchOutbox.objects.get(pk=other.pk).state == "cancelled"

    def test_approve_now_run_at(self, world, submit, sb):
        run_at = timezone.now() + dt.timedelta(hours=2)
        request = services.request_approve(request=submit(run_at=run_at), actor=world.bob)
        assert request.status == Status.APPROVED and request.run_at == run_at
        assert DispatchOutbox.objects.get(pk=request.pk).next_attempt_at == run_at
        services.request_dispatch(request_id=request.pk)
        make_due(request)  # even a message that arrives early (a due outbox row) waits for run_at
        services.request_dispatch(request_id=request.pk)
        request.refresh_from_db()
        assert request.status == Status.APPROVED and not starts(sb, request)
        # Validity counts from the run-at time, not the approval.
        assert policy.dispatch_deadline(request) == run_at + dt.timedelta(hours=policy.approval_validity_hours(None))
        # Then the run-at time comes (run_at is part of what was approved: the clock moves, not the request).
        make_due(request)
        later = run_at + dt.timedelta(seconds=1)
        with mock.patch("django.utils.timezone.now", return_value=later):
            services.request_dispatch(request_id=request.pk)
        request.refresh_from_db()
        assert request.status == Status.RUNNING and len(starts(sb, request)) == 1

    @pytest.mark.parametrize("offset", [dt.timedelta(hours=-1), dt.timedelta(days=400)])
    def test_run_at_must_be_future_and_near(self, world, submit, offset):
        with pytest.raises(InvalidRequest) as error:
            submit(run_at=timezone.now() + offset)
        assert error.value.code == "invalid_run_at"


class TestPool:
    def test_named_group_approves_instead_of_leads(self, world, submit, change_board):
        group, gina = change_board
        set_policy(world, approver_group=group)
        request = submit()
        with pytest.raises(NotAllowed) as error:
            services.request_approve(request=request, actor=world.bob)
        assert error.value.code == "not_a_lead"
        assert selectors.approval_queue(world.bob).count() == 0
        assert list(selectors.approval_queue(gina)) == [request]
        assert selectors.requests_visible_to(gina).filter(pk=request.pk).exists()
        request = services.request_approve(request=request, actor=gina)
        assert request.status == Status.APPROVED
        assert AuditEvent.objects.get(request=request, action="request.approval_added").details["via"] == "group"

    def test_leads_own_request_goes_to_the_other_leads(self, world, submit):
        request = submit(actor=world.bob)
        assert selectors.approval_queue(world.bob).count() == 0
        assert list(selectors.approval_queue(world.frank)) == [request]
        with pytest.raises(NotAllowed) as error:
            services.request_approve(request=request, actor=world.bob)
        assert error.value.code == "self_approval"
        assert services.request_approve(request=request, actor=world.frank).status == Status.APPROVED

    def test_request_that_could_never_be_approved_is_refused_at_submit(self, world, submit):
        set_policy(world, approvals_required=2)
        with pytest.raises(NotAllowed) as error:
            submit(actor=world.bob)  # only frank is left to approve, and two are needed
        assert error.value.code == "not_enough_approvers"
        assert submit(actor=world.alice).status == Status.SUBMITTED

    def test_group_member_who_requests_cannot_approve(self, world, submit, change_board):
        group, gina = change_board
        set_policy(world, approver_group=group)
        world.bob.groups.add(group)
        request = submit(actor=world.bob)
        assert not policy.can_approve(world.bob, request) and policy.can_approve(gina, request)


class TestDelegation:
    def test_delegate_approves_in_the_delegators_seat(self, world, submit, henry):
        set_policy(world, approvals_required=2)
        delegation = policies.delegation_create(actor=world.bob, team=world.platform, delegate=henry,
                                                ends_at=timezone.now() + dt.timedelta(days=3), reason="holiday")
        created = AuditEvent.objects.get(action="delegation.created")
        assert created.details["delegate"] == "henry" and created.actor == world.bob
        request = submit()
        assert list(selectors.approval_queue(henry)) == [request]
        request = services.request_approve(request=request, actor=henry, comment="for bob")
        added = AuditEvent.objects.get(request=request, action="request.approval_added")
        assert added.details["via"] == "delegation" and added.details["on_behalf_of"] == "bob"
        assert added.details["delegation"] == delegation.pk
        # Bob's seat is taken: he and his delegate count once.
        with pytest.raises(NotAllowed) as error:
            services.request_approve(request=request, actor=world.bob)
        assert error.value.code == "already_approved"
        assert services.request_approve(request=request, actor=world.frank).status == Status.APPROVED

    def test_delegate_never_stands_in_for_the_requester(self, world, submit, henry):
        policies.delegation_create(actor=world.bob, team=world.platform, delegate=henry,
                                   ends_at=timezone.now() + dt.timedelta(days=1))
        request = submit(actor=world.bob)
        with pytest.raises(NotAllowed):
            services.request_approve(request=request, actor=henry)

    def test_revoked_or_ended_delegation_gives_nothing(self, world, submit, henry):
        delegation = policies.delegation_create(actor=world.bob, team=world.platform, delegate=henry,
                                                ends_at=timezone.now() + dt.timedelta(days=1))
        request = submit()
        policies.delegation_revoke(actor=world.bob, delegation=delegation)
        assert AuditEvent.objects.filter(action="delegation.revoked").exists()
        assert not policy.can_approve(henry, request)
        later = policies.delegation_create(actor=world.bob, team=world.platform, delegate=henry,
                                           ends_at=timezone.now() + dt.timedelta(days=1))
        assert policy.can_approve(henry, request)
        ApprovalDelegation.objects.filter(pk=later.pk).update(starts_at=timezone.now() - dt.timedelta(days=2),
                                                              ends_at=timezone.now() - dt.timedelta(seconds=1))
        assert not policy.can_approve(henry, request)
        assert not selectors.requests_visible_to(henry).filter(pk=request.pk).exists()

    def test_only_approvers_delegate_and_only_to_members(self, world, henry):
        ends = timezone.now() + dt.timedelta(days=1)
        with pytest.raises(NotAllowed):
            policies.delegation_create(actor=world.alice, team=world.platform, delegate=henry, ends_at=ends)
        with pytest.raises(InvalidRequest) as error:
            policies.delegation_create(actor=world.bob, team=world.platform, delegate=world.dave, ends_at=ends)
        assert error.value.code == "delegate_not_member"
        with pytest.raises(InvalidRequest):
            policies.delegation_create(actor=world.bob, team=world.platform, delegate=henry,
                                       ends_at=timezone.now() + dt.timedelta(days=365))


class TestEscalation:
    def test_request_pending_too_long_notifies_and_opens_the_next_pool(
            self, world, submit, change_board, django_capture_on_commit_callbacks, monkeypatch):
        group, gina = change_board
        gina.email = "gina@example.com"
        gina.save()
        monkeypatch.setattr(notifications, "publish", lambda delivery_id: True)
        set_policy(world, escalate_after_hours=4, escalation_group=group)
        old, new = submit(), submit()
        AutomationRequest.objects.filter(pk=old.pk).update(created_at=timezone.now() - dt.timedelta(hours=5))
        assert not policy.can_approve(gina, old)
        with django_capture_on_commit_callbacks(execute=True):
            assert policies.requests_escalate_stale() == 1
        assert policies.requests_escalate_stale() == 0  # once per request
        assert Escalation.objects.get().request_id == old.pk
        event = AuditEvent.objects.get(request=old, action="request.escalated")
        assert event.details["group"] == "change-board"
        delivery = NotificationDelivery.objects.get(event="request.escalated")
        assert delivery.recipients == ["gina@example.com"]
        assert policy.can_approve(gina, old) and not policy.can_approve(gina, new)
        assert services.request_approve(request=old, actor=gina).status == Status.APPROVED
        assert AuditEvent.objects.get(request=old, action="request.approval_added").details["via"] == "escalation"


class TestAdmin:
    """Policy configuration through the Django admin is audited with before/after, secrets redacted."""

    @pytest.fixture
    def admin_client(self, client, world):
        admin = f.UserFactory(username="root", is_staff=True, is_superuser=True)
        client.force_login(admin)
        return client

    def test_policy_and_freeze_changes_are_audited_with_before_and_after(self, admin_client, world):
        url = f"/admin/automations/teamrunbook/{world.platform_policy.pk}/change/"
        form = admin_client.get(url)
        assert form.status_code == 200 and b"approver_group" in form.content
        response = admin_client.post("/admin/automations/freezewindow/add/", {
            "name": "Black Friday", "team": world.platform.pk, "starts_at_0": "2026-11-27", "starts_at_1": "00:00:00",
            "ends_at_0": "2026-11-30", "ends_at_1": "00:00:00", "reason": "sales", "enabled": "on"})
        assert response.status_code == 302, response.content[:2000]
        event = AuditEvent.objects.get(action="config.created", details__model="automations.FreezeWindow")
        assert event.details["after"]["name"] == "Black Friday" and event.details["before"] == {}

    def test_webhook_secret_never_reaches_the_audit_log(self, admin_client, world):
        secret = "correct-horse-battery-staple-42"
        response = admin_client.post("/admin/automations/notificationwebhook/add/", {
            "name": "slack", "url": "https://hooks.example.com/x", "secret": secret, "events": "[]", "enabled": "on"})
        assert response.status_code == 302, response.content[:2000]
        webhook = NotificationWebhook.objects.get()
        assert webhook.secret == secret
        page = admin_client.get(f"/admin/automations/notificationwebhook/{webhook.pk}/change/")
        assert secret.encode() not in page.content
        # Saving without typing the secret again keeps it.
        admin_client.post(f"/admin/automations/notificationwebhook/{webhook.pk}/change/", {
            "name": "slack ops", "url": "https://hooks.example.com/x", "secret": "", "events": "[]", "enabled": "on"})
        webhook.refresh_from_db()
        assert webhook.secret == secret and webhook.name == "slack ops"
        events = AuditEvent.objects.filter(details__model="automations.NotificationWebhook").order_by("sequence")
        assert [e.action for e in events] == ["config.created", "config.changed"]
        assert all(secret not in json.dumps(e.details) for e in events)
        assert events[1].details["before"]["name"] == "slack" and events[1].details["after"]["name"] == "slack ops"
        assert events[0].details["secret_changed"] is True and events[1].details["secret_changed"] is False
