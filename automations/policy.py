"""Who may do what. Plain functions over the models; services call them before every write."""
from __future__ import annotations

from typing import TYPE_CHECKING

from automations.models import AutomationRequest, Membership, TeamRunbook

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

    from automations.models import Team

AUDITOR_PERMISSION = "automations.view_all_requests"


def is_auditor(user: AbstractBaseUser) -> bool:
    return user.is_active and user.has_perm(AUDITOR_PERMISSION)


def is_member(user: AbstractBaseUser, team: Team) -> bool:
    return Membership.objects.filter(user=user, team=team).exists()


def is_lead(user: AbstractBaseUser, team: Team) -> bool:
    return Membership.objects.filter(user=user, team=team, role=Membership.Role.LEAD).exists()


def team_policy(team: Team, runbook_id: int) -> TeamRunbook | None:
    """The enabled policy that lets `team` request this runbook, if any."""
    return (
        TeamRunbook.objects.select_related("runbook", "runbook__account")
        .filter(team=team, runbook_id=runbook_id, enabled=True, runbook__available=True)
        .first()
    )


def approvals_required(request: AutomationRequest) -> int:
    policy = TeamRunbook.objects.filter(team_id=request.team_id, runbook_id=request.runbook_id).first()
    return policy.approvals_required if policy else 1


def can_approve(user: AbstractBaseUser, request: AutomationRequest) -> bool:
    """A lead of the request's team, never the requester, once per request."""
    return (
        request.status == AutomationRequest.Status.SUBMITTED
        and user.pk != request.requester_id
        and is_lead(user, request.team)
        and not request.approvals.filter(approver=user).exists()
    )


def can_reject(user: AbstractBaseUser, request: AutomationRequest) -> bool:
    return (
        request.status == AutomationRequest.Status.SUBMITTED
        and user.pk != request.requester_id
        and is_lead(user, request.team)
    )


def can_withdraw(user: AbstractBaseUser, request: AutomationRequest) -> bool:
    return request.status == AutomationRequest.Status.SUBMITTED and user.pk == request.requester_id


def can_cancel(user: AbstractBaseUser, request: AutomationRequest) -> bool:
    """The requester or a lead of the team may stop an approved or running request."""
    return request.status in (AutomationRequest.Status.APPROVED, AutomationRequest.Status.RUNNING) and (
        user.pk == request.requester_id or is_lead(user, request.team)
    )
