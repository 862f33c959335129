"""Who may do what, and which rules apply.

Plain functions over the models; services call them before every write and dispatch calls them
again before AWS is asked to do anything.

The approver pool of a request is its policy's named group, or the team's leads when none is
named, never the requester; plus the escalation group once the request was escalated, plus
delegates standing in for a pool member during their delegation. See docs/approvals-and-policy.md.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

import re2
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from automations.policy import calendars
from automations.models import (
    Approval,
    ApprovalDelegation,
    AutomationRequest,
    Escalation,
    FreezeWindow,
    Membership,
    TeamRunbook,
)

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

    from automations.models import Account, Team

AUDITOR_PERMISSION = "automations.view_all_requests"
# Inside a change freeze an approval takes effect only with this many emergency overrides.
FREEZE_OVERRIDE_APPROVERS = 2


def is_auditor(user: AbstractBaseUser) -> bool:
    return user.is_active and user.has_perm(AUDITOR_PERMISSION)


def is_member(user: AbstractBaseUser, team: Team) -> bool:
    return Membership.objects.filter(user=user, team=team).exists()


def is_lead(user: AbstractBaseUser, team: Team) -> bool:
    return Membership.objects.filter(user=user, team=team, role=Membership.Role.LEAD).exists()


def team_policy(team: Team, runbook_id: int) -> TeamRunbook | None:
    """The enabled policy that lets `team` request this runbook, if any."""
    return (
        TeamRunbook.objects.select_related("runbook", "runbook__account", "approver_group", "escalation_group")
        .filter(team=team, runbook_id=runbook_id, enabled=True, runbook__available=True)
        .first()
    )


def policy_for(request: AutomationRequest) -> TeamRunbook | None:
    """The policy row behind a request, enabled or not (None if an admin deleted it)."""
    cached = getattr(request, "_policy_cache", None)
    if cached is None:
        cached = (TeamRunbook.objects.select_related("approver_group", "escalation_group")
                  .filter(team_id=request.team_id, runbook_id=request.runbook_id).first())
        request._policy_cache = cached
    return cached


def approvals_required(request: AutomationRequest) -> Required:
    return required_approvals(policy_for(request), request)


class Required(int):
    """How many distinct approvers a request needs, carrying why it is more than the policy's own
    count (`reasons`, in words for the request page, the queue and refusals). An int, so every
    caller compares and records it as the count it always was, and nobody recomputes the rule."""

    reasons: tuple[str, ...]

    def __new__(cls, count: int, reasons: tuple[str, ...] = ()):
        value = super().__new__(cls, count)
        value.reasons = tuple(reasons)
        return value


def target_count(request) -> int | None:
    """How many targets the request really covers, as recorded at submit; None when not knowable.

    AWS's execution preview (TargetPreviews, every type summed) and the resource ids Delegate
    resolved (explicit ids, tag targets resolved within the team's scope) are both counts of what
    runs: the larger wins. A multi-account request names no resources (each child finds its own),
    so only AWS's figures can count it. Zero from both is not a count either: the runbook then finds
    what it acts on while it runs.
    """
    preview = getattr(request, "execution_preview", None) or {}
    figures = preview.get("figures") if preview.get("status") == "Success" else None
    previewed = sum(int(t.get("count", 0)) for t in figures.get("targets", [])) if figures else 0
    resolved = 0 if getattr(request, "location_accounts", None) else len(getattr(request, "resources", None) or [])
    return max(previewed, resolved) or None


def required_approvals(policy: TeamRunbook | None, request) -> Required:
    """The one rule for how many distinct approvers a request needs: the policy's count, raised to
    its multi-account count above its account threshold, and to its multi-target count above its
    target threshold or when the target count is not knowable (never silently the lower count)."""
    if policy is None:
        return Required(1)
    required, reasons = policy.approvals_required, []
    accounts = len(getattr(request, "location_accounts", None) or [])
    if policy.multi_account_threshold and accounts > policy.multi_account_threshold:
        required = max(required, policy.multi_account_approvals)
        reasons.append(f"{accounts} accounts is above this policy's {policy.multi_account_threshold}: "
                       f"{policy.multi_account_approvals} approvers.")
    if policy.multi_target_threshold:
        targets = target_count(request)
        if targets is None:
            required = max(required, policy.multi_target_approvals)
            reasons.append("The number of targets is not known before the run (AWS's execution preview counted "
                           "none and the request names none), so this policy's rule above "
                           f"{policy.multi_target_threshold} targets applies: {policy.multi_target_approvals} approvers.")
        elif targets > policy.multi_target_threshold:
            required = max(required, policy.multi_target_approvals)
            reasons.append(f"{targets} targets is above this policy's {policy.multi_target_threshold}: "
                           f"{policy.multi_target_approvals} approvers.")
    return Required(required, tuple(reasons) if required > policy.approvals_required else ())


#
# The approver pool
#

def pool(team: Team, policy: TeamRunbook | None) -> QuerySet:
    """Active users in the base pool: the policy's named group, else the team's leads."""
    users = get_user_model().objects.filter(is_active=True)
    if policy is not None and policy.approver_group_id:
        return users.filter(groups=policy.approver_group_id)
    return users.filter(memberships__team=team, memberships__role=Membership.Role.LEAD)


def in_pool(user: AbstractBaseUser, team: Team, policy: TeamRunbook | None) -> bool:
    return user.is_active and pool(team, policy).filter(pk=user.pk).exists()


def eligible_approver_count(team: Team, policy: TeamRunbook | None, requester: AbstractBaseUser) -> int:
    """How many people other than the requester can approve (delegations and escalation aside)."""
    return pool(team, policy).exclude(pk=requester.pk).distinct().count()


@dataclass(frozen=True)
class Seat:
    """Why a user may decide a request: as a pool member, an escalation member, or a delegate.

    A delegate's approval takes the seat of the person they stand in for: the two of them
    together count once.
    """

    via: str  # "lead", "group", "escalation" or "delegation"
    on_behalf_of: AbstractBaseUser | None = None
    delegation: ApprovalDelegation | None = None

    def as_dict(self) -> dict:
        return {"via": self.via,
                "on_behalf_of": self.on_behalf_of.get_username() if self.on_behalf_of else None,
                "delegation": self.delegation.pk if self.delegation else None}


def seats(user: AbstractBaseUser, request: AutomationRequest, *, at: dt.datetime | None = None) -> list[Seat]:
    """Every way `user` may decide `request`, best first; empty when they may not.

    The requester never has a seat, whatever their role, and nobody stands in for them.
    """
    if not user.is_authenticated or not user.is_active or user.pk == request.requester_id:
        return []
    at = at or timezone.now()
    policy = policy_for(request)
    found: list[Seat] = []
    if in_pool(user, request.team, policy):
        found.append(Seat("group" if policy is not None and policy.approver_group_id else "lead"))
    escalation = Escalation.objects.filter(request=request).first()
    if escalation is not None and user.groups.filter(pk=escalation.group_id).exists():
        found.append(Seat("escalation"))
    delegations = (ApprovalDelegation.objects.select_related("delegator")
                   .filter(delegate=user, team_id=request.team_id, revoked_at=None, starts_at__lte=at, ends_at__gt=at)
                   .exclude(delegator_id=request.requester_id).order_by("starts_at", "pk"))
    for delegation in delegations:
        if in_pool(delegation.delegator, request.team, policy):
            found.append(Seat("delegation", on_behalf_of=delegation.delegator, delegation=delegation))
    return found


def taken_by(request: AutomationRequest) -> set[int]:
    """User ids whose seat is used: every approver and everyone a delegate approved for."""
    taken = set(request.approvals.values_list("approver_id", flat=True))
    taken |= set(request.approvals.filter(delegated__isnull=False).values_list("delegated__on_behalf_of_id", flat=True))
    return taken


def _first_free(user: AbstractBaseUser, found: list[Seat], taken: set[int]) -> Seat | None:
    if user.pk in taken:
        return None
    for seat in found:
        if seat.on_behalf_of is None or seat.on_behalf_of.pk not in taken:
            return seat
    return None


def free_seat(user: AbstractBaseUser, request: AutomationRequest) -> Seat | None:
    """The seat `user` would approve from now, or None (no seat, or every seat of theirs is used)."""
    taken = taken_by(request)
    if user.pk in taken:
        return None
    return _first_free(user, seats(user, request), taken)


@dataclass(frozen=True)
class ApprovalDecision:
    """Policy's one answer for one approver acting on one request, computed once per approval."""

    team_policy: TeamRunbook | None
    required: int  # distinct approvals the policy asks for
    seats: list[Seat]  # every way the approver may decide it (empty: not an approver)
    seat: Seat | None  # the seat they approve from now; None when none is free
    freeze: tuple[FreezeWindow, dt.datetime] | None  # the change freeze in force, and when it ends


def approval_decision(user: AbstractBaseUser, request: AutomationRequest,
                      *, at: dt.datetime | None = None) -> ApprovalDecision:
    """Everything the approve path asks of policy, in one pass (the service consults nothing else)."""
    at = at or timezone.now()
    team_policy = policy_for(request)
    found = seats(user, request, at=at)
    return ApprovalDecision(
        team_policy=team_policy,
        required=required_approvals(team_policy, request),
        seats=found,
        seat=_first_free(user, found, taken_by(request)) if found else None,
        freeze=freeze_at(request.team, at=at),
    )


def can_approve(user: AbstractBaseUser, request: AutomationRequest) -> bool:
    """In the pool (or standing in for someone who is), never the requester, once per seat."""
    return request.status == AutomationRequest.Status.SUBMITTED and free_seat(user, request) is not None


def can_reject(user: AbstractBaseUser, request: AutomationRequest) -> bool:
    return request.status == AutomationRequest.Status.SUBMITTED and bool(seats(user, request))


def can_withdraw(user: AbstractBaseUser, request: AutomationRequest) -> bool:
    return (request.status in (AutomationRequest.Status.SUBMITTED, AutomationRequest.Status.CHANGES_REQUESTED)
            and user.pk == request.requester_id)


def can_amend(user: AbstractBaseUser, request: AutomationRequest) -> bool:
    """The requester may change a request an approver sent back to them."""
    return request.status == AutomationRequest.Status.CHANGES_REQUESTED and user.pk == request.requester_id


def can_cancel(user: AbstractBaseUser, request: AutomationRequest) -> bool:
    """The requester or a lead of the team may stop an approved or running request."""
    return request.status in (AutomationRequest.Status.APPROVED, AutomationRequest.Status.RUNNING) and (
        user.pk == request.requester_id or is_lead(user, request.team)
    )


def decider_filter(user: AbstractBaseUser, *, at: dt.datetime | None = None, decided: bool = True) -> Q:
    """Requests `user` may see because they decide (or decided) them, beyond the team's leads.

    Named-group pools, escalation groups, active delegations, and (`decided`) anything they
    approved. The approval queue leaves `decided` out: it excludes what the user approved anyway,
    and on PostgreSQL that branch reads every approval the user ever gave (44 ms for a lead with
    1,900, docs/benchmarks.md).
    """
    at = at or timezone.now()
    groups = user.groups.values("pk")
    deciding = (
        Q(Exists(TeamRunbook.objects.filter(team=OuterRef("team"), runbook=OuterRef("runbook"),
                                            approver_group__in=groups)))
        | Q(Exists(Escalation.objects.filter(request=OuterRef("pk"), group__in=groups)))
        | Q(team_id__in=ApprovalDelegation.objects.filter(delegate=user, revoked_at=None, starts_at__lte=at,
                                                          ends_at__gt=at).values("team_id"))
    )
    if decided:
        deciding |= Q(Exists(Approval.objects.filter(request=OuterRef("pk"), approver=user)))
    return deciding


@dataclass(frozen=True)
class NavigationRoles:
    """What the navigation shows a user: the sections they have and whether the queue is theirs."""

    leads_a_team: bool
    approver: bool
    auditor: bool
    # Decides beyond the teams they lead: a named approver group, a delegation now, or an escalation.
    decides_beyond_leading: bool = False


NO_ROLES = NavigationRoles(leads_a_team=False, approver=False, auditor=False)


def navigation_roles(user: AbstractBaseUser) -> NavigationRoles:
    """The navigation's questions in one statement, as it runs on every page.

    Approver: leads a team, or is in a runbook's named approver group, or stands in as a delegate
    now, or is in the escalation group of a waiting request. Auditor: the auditors' permission
    (directly or through a group), or a superuser, as is_auditor() and the admin decide.

    Plain SQL on purpose: the same five EXISTS through the ORM cost ~3 ms of query building on
    every page (bench/pages.py --profile); tests/policy/test_rules.py checks each answer against
    the ORM rules on both databases.
    """
    if not user.is_authenticated or not user.is_active:
        return NO_ROLES
    from django.contrib.auth.models import Group, Permission
    from django.contrib.contenttypes.models import ContentType
    from django.db import connection

    User = get_user_model()
    table = {
        "membership": Membership._meta.db_table, "policy": TeamRunbook._meta.db_table,
        "user_groups": User.groups.through._meta.db_table, "delegation": ApprovalDelegation._meta.db_table,
        "escalation": Escalation._meta.db_table, "request": AutomationRequest._meta.db_table,
        "permission": Permission._meta.db_table, "content_type": ContentType._meta.db_table,
        "user_permissions": User.user_permissions.through._meta.db_table,
        "group_permissions": Group.permissions.through._meta.db_table,
    }
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    app_label, codename = AUDITOR_PERMISSION.split(".")
    sql = """SELECT
      EXISTS(SELECT 1 FROM {membership} WHERE user_id = %s AND role = %s),
      EXISTS(SELECT 1 FROM {policy} p JOIN {user_groups} ug ON ug.group_id = p.approver_group_id WHERE ug.user_id = %s),
      EXISTS(SELECT 1 FROM {delegation} WHERE delegate_id = %s AND revoked_at IS NULL AND starts_at <= %s AND ends_at > %s),
      EXISTS(SELECT 1 FROM {escalation} e JOIN {user_groups} ug ON ug.group_id = e.group_id
             JOIN {request} r ON r.id = e.request_id WHERE ug.user_id = %s AND r.status = %s),
      EXISTS(SELECT 1 FROM {permission} p JOIN {content_type} ct ON ct.id = p.content_type_id
             WHERE ct.app_label = %s AND p.codename = %s
               AND (EXISTS(SELECT 1 FROM {user_permissions} up WHERE up.permission_id = p.id AND up.user_id = %s)
                    OR EXISTS(SELECT 1 FROM {group_permissions} gp JOIN {user_groups} ug ON ug.group_id = gp.group_id
                              WHERE gp.permission_id = p.id AND ug.user_id = %s)))""".format(**table)
    with connection.cursor() as cursor:
        cursor.execute(sql, [user.pk, Membership.Role.LEAD.value, user.pk, user.pk, now, now, user.pk,
                             AutomationRequest.Status.SUBMITTED.value, app_label, codename, user.pk, user.pk])
        lead, pool, delegate, escalation, permission = (bool(flag) for flag in cursor.fetchone())
    return NavigationRoles(leads_a_team=lead, approver=lead or pool or delegate or escalation,
                           auditor=user.is_superuser or permission,
                           decides_beyond_leading=pool or delegate or escalation)


def can_delegate(user: AbstractBaseUser, team: Team) -> bool:
    """Leads, and members of a named pool of one of the team's runbooks, may hand their approvals on."""
    return is_lead(user, team) or TeamRunbook.objects.filter(team=team, approver_group__in=user.groups.all()).exists()


#
# Change freezes
#

def active_freezes(team: Team | None, *, at: dt.datetime | None = None) -> QuerySet[FreezeWindow]:
    at = at or timezone.now()
    windows = FreezeWindow.objects.filter(enabled=True, starts_at__lte=at, ends_at__gt=at)
    return windows.filter(Q(team__isnull=True) | Q(team=team)) if team is not None else windows.filter(team__isnull=True)


def freeze_at(team: Team, *, at: dt.datetime | None = None) -> tuple[FreezeWindow, dt.datetime] | None:
    """The freeze covering `team` at `at` and when the frozen stretch ends (overlapping windows joined)."""
    at = at or timezone.now()
    windows = list(active_freezes(team, at=at).order_by("-ends_at"))
    if not windows:
        return None
    until = windows[0].ends_at
    while True:  # a window that starts before this one ends extends the freeze
        later = (FreezeWindow.objects.filter(enabled=True, starts_at__lte=until, ends_at__gt=until)
                 .filter(Q(team__isnull=True) | Q(team=team)).order_by("-ends_at").first())
        if later is None:
            return windows[0], until
        until = later.ends_at


#
# Scope: enforced at submit and again at dispatch
#

def allowed_account_ids(policy: TeamRunbook, team: Team) -> list[str]:
    """The policy's list, else the team's accounts; empty = the runbook's own account only."""
    return list(policy.allowed_account_ids) or list(team.accounts.values_list("account_id", flat=True))


def scope_problems(policy: TeamRunbook, *, team: Team, account: Account, region: str, resources: list[str]) -> dict:
    """Rule violations that need no AWS call, as {rule: message}. Empty when in scope."""
    problems: dict[str, str] = {}
    accounts = allowed_account_ids(policy, team)
    if accounts and account.account_id not in accounts:
        problems["account"] = f"Account {account.account_id} is not allowed for this runbook."
    regions = list(policy.allowed_regions) or list(account.regions or [])
    if regions and region not in regions:
        problems["region"] = f"Region {region} is not allowed for this runbook."
    if len(resources) > policy.max_targets:
        problems["max_targets"] = f"At most {policy.max_targets} targets per request for this runbook."
    unmatched = ids_not_matching(policy, resources)
    if unmatched:
        problems["target_id_patterns"] = f"Not allowed by this runbook's id patterns: {', '.join(unmatched)}."
    return problems


def ids_not_matching(policy: TeamRunbook, resources: list[str]) -> list[str]:
    patterns = [re2.compile(pattern) for pattern in policy.target_id_patterns]
    if not patterns:
        return []
    return [resource for resource in resources if not any(pattern.search(resource) for pattern in patterns)]


def targets_missing_tags(policy: TeamRunbook, *, resources: list[str], region: str, role_arn: str) -> list[str]:
    """Targets that lack one of the policy's required tags (an EC2 read; raises aws.AwsError)."""
    if not policy.target_tags or not resources:
        return []
    from automations.aws import inventory

    missing: list[str] = []
    for resource_id, tags in inventory.resource_tags(resources, region=region, role_arn=role_arn).items():
        if tags is None or any(tags.get(key) not in values for key, values in policy.target_tags.items()):
            missing.append(resource_id)
    return missing


def targets_outside_policy(request: AutomationRequest) -> list[str]:
    """Dispatch re-check of the per-target rules (id patterns, required tags); raises aws.AwsError."""
    policy = policy_for(request)
    if policy is None or not request.resources:
        return []
    outside = ids_not_matching(policy, request.resources)
    outside += [resource for resource in targets_missing_tags(policy, resources=request.resources, region=request.region,
                                                              role_arn=request.account.dispatch_role_arn)
                if resource not in outside]
    return outside


#
# Timeouts
#

def request_expiry_hours(policy: TeamRunbook | None) -> float:
    if policy is not None and policy.request_expiry_hours:
        return policy.request_expiry_hours
    return settings.DELEGATE_REQUEST_EXPIRY_HOURS


def approval_validity_hours(policy: TeamRunbook | None) -> float:
    if policy is not None and policy.approval_validity_hours:
        return policy.approval_validity_hours
    return settings.DELEGATE_APPROVAL_VALIDITY_HOURS


def dispatch_deadline(request: AutomationRequest) -> dt.datetime | None:
    """Until when an approved request may be dispatched: its approval validity, counted from the
    approval or from the run-at time, whichever is later."""
    if request.approved_at is None:
        return None
    start = max(request.approved_at, request.run_at) if request.run_at else request.approved_at
    return start + dt.timedelta(hours=approval_validity_hours(policy_for(request)))


def dispatch_refusal(request: AutomationRequest, *, at: dt.datetime | None = None) -> str | None:
    """Why policy forbids starting this request now, judged from the database alone; None if it may start.

    Per-target tags are re-checked separately (targets_outside_policy) because they need AWS.
    """
    at = at or timezone.now()
    policy = policy_for(request)
    if policy is None or not policy.enabled:
        return "The team may no longer request this runbook (policy removed or disabled)."
    problems = scope_problems(policy, team=request.team, account=request.account, region=request.region,
                              resources=list(request.resources))
    if problems:
        return "Out of the policy's scope: " + " ".join(problems.values())
    deadline = dispatch_deadline(request)
    if deadline is not None and at > deadline:
        return "The approval is no longer valid (approval validity ran out); ask for approval again."
    return None


def emergency_override_count(request: AutomationRequest) -> int:
    return request.approvals.filter(freeze_override__isnull=False).count()


def dispatch_hold(request: AutomationRequest, *, at: dt.datetime | None = None,
                  calendar: dict | None = None) -> tuple[str, dt.datetime, dict] | None:
    """(reason, until, details) when an approved request must wait; None when it may go now.

    A change freeze, and a change calendar AWS reported CLOSED (`calendar`, read by the dispatch
    service before its transaction), hold everything except requests approved with an emergency
    override; a run-at time holds the request until then.
    """
    at = at or timezone.now()
    if request.run_at and request.run_at > at:
        return "scheduled", request.run_at, {"run_at": request.run_at}
    frozen = freeze_at(request.team, at=at)
    if frozen and emergency_override_count(request) < FREEZE_OVERRIDE_APPROVERS:
        window, until = frozen
        return "change freeze", until, {"freeze": window.as_dict()}
    if calendar is not None:
        return calendars.calendar_hold(calendar, at=at, overrides=emergency_override_count(request),
                                       needed=FREEZE_OVERRIDE_APPROVERS)
    return None
