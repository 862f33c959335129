"""Delegate's data model. See DESIGN.md for the lifecycle these models carry."""
from automations.models.audit import AuditEvent, AuditLogIsAppendOnly
from automations.models.requests import (
    TERMINAL_STATUSES,
    TRANSITIONS,
    Approval,
    AutomationRequest,
    DispatchOutbox,
    Execution,
    RequestComment,
)
from automations.models.policy import (
    ApprovalDelegation,
    DelegatedApproval,
    Escalation,
    FreezeOverride,
    FreezeWindow,
    NotificationDelivery,
    NotificationWebhook,
    StepApproval,
    StepDecision,
)
from automations.models.runbooks import ContentRevision, RoleParameter, Runbook, RunbookVersion, TeamRole, TeamRunbook
from automations.models.sso import SsoGroupRule, SsoIdentity
from automations.models.teams import Account, Membership, Team, TeamResource

__all__ = (
    "Account", "Approval", "AuditEvent", "AuditLogIsAppendOnly", "AutomationRequest", "DispatchOutbox",
    "Execution", "Membership", "RequestComment", "Runbook", "RunbookVersion", "TERMINAL_STATUSES", "TRANSITIONS", "Team",
    "TeamRunbook", "ContentRevision", "RoleParameter", "TeamRole", "TeamResource",
    # approval policy (models/policy.py)
    "ApprovalDelegation", "DelegatedApproval", "Escalation", "FreezeOverride", "FreezeWindow", "NotificationDelivery",
    "NotificationWebhook", "StepApproval", "StepDecision",
    # single sign-on (models/sso.py)
    "SsoGroupRule", "SsoIdentity",
)
