"""Delegate's data model: every table, with the invariants the database itself enforces (constraints)."""
from automations.models.audit import AuditEvent, AuditLogIsAppendOnly
from automations.models.requests import (
    TERMINAL_STATUSES,
    TRANSITIONS,
    Approval,
    AutomationRequest,
    DispatchOutbox,
    Execution,
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
from automations.models.runbooks import Runbook, RunbookVersion, TeamRunbook
from automations.models.sso import SsoGroupRule, SsoIdentity
from automations.models.teams import Account, Membership, Team

__all__ = (
    "Account", "Approval", "AuditEvent", "AuditLogIsAppendOnly", "AutomationRequest", "DispatchOutbox",
    "Execution", "Membership", "Runbook", "RunbookVersion", "TERMINAL_STATUSES", "TRANSITIONS", "Team",
    "TeamRunbook",
    # approval policy (models/policy.py)
    "ApprovalDelegation", "DelegatedApproval", "Escalation", "FreezeOverride", "FreezeWindow", "NotificationDelivery",
    "NotificationWebhook", "StepApproval", "StepDecision",
    # single sign-on (models/sso.py)
    "SsoGroupRule", "SsoIdentity",
)
