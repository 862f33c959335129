"""Policy rules at their edges: each test here was written against a mutant that survived the
mutation run (bench/mutation.py; docs/testing-property-mutation.md names the mutant each one kills).

Plain calls into automations.policy over factory rows; no AWS.
"""
import datetime as dt

from django.contrib.auth.models import AnonymousUser, Group
from django.utils import timezone

from automations import policy, services
from automations.models import ApprovalDelegation, AutomationRequest, FreezeWindow, Membership
from automations.policy.batch import free_seats
from tests import factories as f

Status = AutomationRequest.Status


def window(team=None, *, starts_in_hours: float, lasts_hours: float, name: str = "freeze") -> FreezeWindow:
    now = timezone.now()
    return FreezeWindow.objects.create(name=name, team=team, starts_at=now + dt.timedelta(hours=starts_in_hours),
                                       ends_at=now + dt.timedelta(hours=starts_in_hours + lasts_hours))


class TestCanDelegate:
    def test_a_named_pool_of_another_teams_runbook_gives_no_right_to_delegate_here(self, world):
        # x_can_delegate__mutmut_6 (team=None) and _8 (team filter dropped).
        board = Group.objects.create(name="data-change-board")
        gina = f.UserFactory(username="gina")
        gina.groups.add(board)
        world.data_policy.approver_group = board
        world.data_policy.save()
        assert policy.can_delegate(gina, world.data)
        assert not policy.can_delegate(gina, world.platform)


class TestActiveFreezes:
    def test_the_time_asked_about_decides_not_the_time_of_asking(self, world):
        # x_active_freezes__mutmut_2 (`at and now()`: the window tomorrow is judged by today).
        tomorrow = window(world.platform, starts_in_hours=20, lasts_hours=8)
        assert list(policy.active_freezes(world.platform, at=timezone.now() + dt.timedelta(hours=24))) == [tomorrow]
        assert list(policy.active_freezes(world.platform)) == []

    def test_without_a_team_only_the_global_windows_count(self, world):
        # x_active_freezes__mutmut_19 (team__isnull=None) and _20 (team__isnull=False).
        everyone = window(None, starts_in_hours=-1, lasts_hours=2, name="global")
        window(world.platform, starts_in_hours=-1, lasts_hours=2, name="platform only")
        assert list(policy.active_freezes(None)) == [everyone]
        assert set(policy.active_freezes(world.platform)) == set(FreezeWindow.objects.all())

    def test_a_disabled_window_does_not_stretch_the_freeze(self, world):
        # x_freeze_at__mutmut_22 (the join of overlapping windows forgets `enabled`).
        now_on = window(world.platform, starts_in_hours=-1, lasts_hours=2, name="on")
        off = window(world.platform, starts_in_hours=0.5, lasts_hours=5, name="off")
        off.enabled = False
        off.save()
        assert policy.freeze_at(world.platform) == (now_on, now_on.ends_at)


def delegate(delegator, delegate_to, team, *, starts_in_hours: float = -1, lasts_hours: float = 24):
    now = timezone.now()
    return ApprovalDelegation.objects.create(delegator=delegator, delegate=delegate_to, team=team,
                                             starts_at=now + dt.timedelta(hours=starts_in_hours),
                                             ends_at=now + dt.timedelta(hours=starts_in_hours + lasts_hours))


def member(world, name: str, *teams, role=Membership.Role.MEMBER):
    user = f.UserFactory(username=name)
    for team in teams:
        Membership.objects.create(user=user, team=team, role=role)
    return user


def set_status(request, status):
    AutomationRequest.objects.filter(pk=request.pk).update(status=status)
    request.refresh_from_db()
    return request


class TestSeats:
    def test_a_delegation_for_one_team_gives_no_seat_on_another_teams_request(self, world, submit):
        # x_seats__mutmut_47 (the delegation's team is not checked): bob leads both teams and hands
        # henry his approvals for data only.
        Membership.objects.create(user=world.bob, team=world.data, role=Membership.Role.LEAD)
        henry = member(world, "henry", world.platform, world.data)
        delegate(world.bob, henry, world.data)
        platform_request = submit()
        assert policy.seats(henry, platform_request) == []
        data_request = submit(actor=world.dave, team=world.data, parameters={"InstanceId": [world.etl1]})
        assert [seat.via for seat in policy.seats(henry, data_request)] == ["delegation"]

    def test_taken_seats_are_the_approvers(self, world, submit):
        # x_taken_by__mutmut_5 (values_list() without the field: approval ids instead of user ids).
        world.platform_policy.approvals_required = 2
        world.platform_policy.save()
        request = services.request_approve(request=submit(), actor=world.bob)
        request = services.request_approve(request=request, actor=world.frank)
        approval_ids = set(request.approvals.values_list("pk", flat=True))
        assert approval_ids != {world.bob.pk, world.frank.pk}  # otherwise the test could not tell them apart
        assert policy.taken_by(request) == {world.bob.pk, world.frank.pk}

    def test_a_revoked_delegation_gives_no_seat_in_the_queue_either(self, world, submit):
        # batch x_free_seats__mutmut_69 (the queue's bulk query forgets revoked_at).
        henry = member(world, "henry", world.platform)
        delegation = delegate(world.bob, henry, world.platform)
        request = submit()
        assert free_seats(henry, [request])[request.pk].via == "delegation"
        ApprovalDelegation.objects.filter(pk=delegation.pk).update(revoked_at=timezone.now())
        request = AutomationRequest.objects.get(pk=request.pk)
        assert free_seats(henry, [request]) == {request.pk: None}


class TestApprovalDecision:
    def test_the_freeze_is_judged_at_the_time_asked_about(self, world, submit):
        # x_approval_decision__mutmut_2 (`at and now()`).
        request = submit()
        tomorrow = window(world.platform, starts_in_hours=20, lasts_hours=8)
        later = timezone.now() + dt.timedelta(hours=24)
        assert policy.approval_decision(world.bob, request, at=later).freeze == (tomorrow, tomorrow.ends_at)
        assert policy.approval_decision(world.bob, request).freeze is None

    def test_a_request_whose_policy_row_was_deleted_needs_one_approval(self, world, submit):
        # x_approval_decision__mutmut_23 (`team_policy.approvals_required` read from None).
        request = submit()
        world.platform_policy.delete()
        request = AutomationRequest.objects.get(pk=request.pk)
        decision = policy.approval_decision(world.bob, request)
        assert decision.team_policy is None and decision.required == 1
        assert decision.seat is not None and decision.seat.via == "lead"


class TestDeciderFilter:
    def visible(self, user, **kwargs) -> set[int]:
        return set(AutomationRequest.objects.filter(policy.decider_filter(user, **kwargs)).values_list("pk", flat=True))

    def test_what_they_approved_stays_visible_and_nothing_else_through_it(self, world, submit):
        # x_decider_filter__mutmut_36 (approver=None) and _37 (the approval's request not matched).
        world.platform_policy.approvals_required = 2
        world.platform_policy.save()
        approved = services.request_approve(request=submit(), actor=world.frank)
        other = submit(actor=world.dave, team=world.data, parameters={"InstanceId": [world.etl1]})
        Membership.objects.filter(user=world.frank).delete()  # frank leads nothing any more
        assert self.visible(world.frank) == {approved.pk}
        assert other.pk not in self.visible(world.frank)

    def test_only_the_users_own_delegation_and_only_once_it_started(self, world, submit):
        # x_decider_filter__mutmut_47 (anyone's delegation) and _49 (a delegation not started yet).
        henry = member(world, "henry", world.platform)
        delegate(world.erin, world.dave, world.data)  # someone else's delegation, for data
        delegate(world.bob, henry, world.platform, starts_in_hours=20)  # henry's, from tomorrow
        platform_request = submit()
        data_request = submit(actor=world.dave, team=world.data, parameters={"InstanceId": [world.etl1]})
        assert self.visible(henry) == set()
        tomorrow = timezone.now() + dt.timedelta(hours=24)
        assert self.visible(henry, at=tomorrow) == {platform_request.pk}
        assert data_request.pk in self.visible(world.dave)


class TestNavigationRoles:
    """policy.navigation_roles: the navigation's sections, in one statement on every page."""

    def test_anonymous_visitors_have_no_roles(self):
        # x_is_any_approver__mutmut_3 (as it was).
        assert policy.navigation_roles(AnonymousUser()) == policy.NavigationRoles(leads_a_team=False, approver=False, auditor=False)

    def test_an_active_delegation_makes_the_delegate_an_approver_and_nobody_else(self, world):
        # x_is_any_approver__mutmut_18 (anyone's delegation) and _6 (`or` read as `and`).
        henry = member(world, "henry", world.platform)
        assert policy.navigation_roles(henry).approver is False
        delegate(world.bob, henry, world.platform)
        assert policy.navigation_roles(henry).approver is True
        assert policy.navigation_roles(henry).decides_beyond_leading is True
        assert policy.navigation_roles(henry).leads_a_team is False
        assert policy.navigation_roles(world.alice).approver is False

    def test_a_delegation_not_yet_started_or_revoked_does_not_count(self, world):
        henry = member(world, "henry", world.platform)
        delegate(world.bob, henry, world.platform, starts_in_hours=20)
        assert policy.navigation_roles(henry).approver is False

    def test_each_role_is_answered_as_the_rules_answer_it(self, world, submit):
        from django.contrib.auth.models import Group, Permission

        from automations.models import Escalation

        pool = Group.objects.create(name="pool")
        gina = member(world, "gina", world.data)
        gina.groups.add(pool)
        world.platform_policy.approver_group = pool
        world.platform_policy.save()
        esc = Group.objects.create(name="escalation")
        ivan = member(world, "ivan", world.data)
        ivan.groups.add(esc)
        Escalation.objects.create(request=submit(), group=esc)
        direct = member(world, "judy", world.data)
        app_label, codename = policy.AUDITOR_PERMISSION.split(".")
        direct.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
        expected = {
            world.alice: (False, False, False),
            world.bob: (True, True, False),
            world.carol: (False, False, True),
            gina: (False, True, False),
            ivan: (False, True, False),
            direct: (False, False, True),
        }
        for user, (lead, approver, auditor) in expected.items():
            roles = policy.navigation_roles(user)
            assert (roles.leads_a_team, roles.approver, roles.auditor) == (lead, approver, auditor), user.username
            assert roles.auditor == (user.is_superuser or policy.is_auditor(user)), user.username
        beyond = {user.username: policy.navigation_roles(user).decides_beyond_leading for user in expected}
        assert beyond == {"alice": False, "bob": False, "carol": False, "gina": True, "ivan": True, "judy": False}
        world.alice.is_superuser = True
        world.alice.save()
        assert policy.navigation_roles(world.alice).auditor is True

    def test_an_escalation_of_a_request_no_longer_waiting_does_not_count(self, world, submit):
        from django.contrib.auth.models import Group

        from automations import services
        from automations.models import Escalation

        esc = Group.objects.create(name="escalation")
        ivan = member(world, "ivan", world.data)
        ivan.groups.add(esc)
        item = submit()
        Escalation.objects.create(request=item, group=esc)
        services.request_withdraw(request=item, actor=world.alice)
        assert policy.navigation_roles(ivan).approver is False

    def test_one_statement(self, world, django_assert_num_queries):
        with django_assert_num_queries(1):
            policy.navigation_roles(world.bob)


class TestScopeProblems:
    def test_each_rule_is_named_with_the_targets_it_refuses(self, world):
        # x_scope_problems__mutmut_24 (the rule's key), _31 (no message), _35 (the list's separator).
        world.platform_policy.max_targets = 1
        world.platform_policy.target_id_patterns = ["^i-nothing-matches$"]
        problems = policy.scope_problems(world.platform_policy, team=world.platform, account=world.account,
                                         region="eu-west-1", resources=[world.web1, world.web2])
        assert problems == {
            "max_targets": "At most 1 targets per request for this runbook.",
            "target_id_patterns": f"Not allowed by this runbook's id patterns: {world.web1}, {world.web2}.",
        }


class TestButtons:
    """can_reject, can_withdraw, can_amend, can_cancel: the request page's buttons, and can_amend
    also guards the amend view (web/requests.py)."""

    def test_reject_needs_a_seat_and_a_submitted_request(self, world, submit):
        # x_can_reject__mutmut_1 (`or`), _2 (`!=`), _6 (seats called without the user).
        request = submit()
        assert policy.can_reject(world.bob, request) is True
        assert policy.can_reject(world.alice, request) is False
        assert policy.can_reject(world.bob, set_status(request, Status.APPROVED)) is False

    def test_only_the_requester_amends_and_only_what_was_sent_back(self, world, submit):
        # x_can_amend__mutmut_3 (`!=` requester).
        request = submit()
        assert policy.can_amend(world.alice, request) is False
        request = set_status(request, Status.CHANGES_REQUESTED)
        assert policy.can_amend(world.alice, request) is True
        assert policy.can_amend(world.bob, request) is False

    def test_only_the_requester_withdraws_a_waiting_request(self, world, submit):
        request = submit()
        assert policy.can_withdraw(world.alice, request) is True
        assert policy.can_withdraw(world.bob, request) is False
        assert policy.can_withdraw(world.alice, set_status(request, Status.APPROVED)) is False

    def test_cancel_is_for_approved_or_running_by_the_requester_or_a_lead(self, world, submit):
        # x_can_cancel__mutmut_1 (`or`: any request of one's own) and _8 (is_lead without the team).
        request = submit()
        assert policy.can_cancel(world.alice, request) is False
        request = set_status(request, Status.APPROVED)
        assert policy.can_cancel(world.alice, request) is True
        assert policy.can_cancel(world.bob, request) is True
        assert policy.can_cancel(world.carol, request) is False
        assert policy.can_cancel(world.erin, set_status(request, Status.RUNNING)) is False
