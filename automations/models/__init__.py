"""Delegate's data model: every table, with the invariants the database itself enforces (constraints)."""
from automations.models.audit import AuditArchiveManifest, AuditDigest, AuditEvent, AuditLogIsAppendOnly
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
from automations.models.locations import LocationExecution, TeamLocationGrant
from automations.models.runbooks import ContentRevision, RoleParameter, Runbook, RunbookVersion, TeamRole, TeamRunbook
from automations.models.sso import SsoGroupRule, SsoIdentity
from automations.models.teams import Account, Membership, Team, TeamResource

__all__ = (
    "Account", "Approval", "AuditArchiveManifest", "AuditDigest", "AuditEvent", "AuditLogIsAppendOnly",
    "AutomationRequest", "ContentRevision", "DispatchOutbox", "Execution", "Membership", "RequestComment",
    "RoleParameter", "Runbook", "RunbookVersion", "TERMINAL_STATUSES", "TRANSITIONS", "Team", "TeamResource",
    "TeamRole", "TeamRunbook",
    # approval policy (models/policy.py)
    "ApprovalDelegation", "DelegatedApproval", "Escalation", "FreezeOverride", "FreezeWindow", "NotificationDelivery",
    "NotificationWebhook", "StepApproval", "StepDecision",
    # multi-account runs (models/locations.py)
    "LocationExecution", "TeamLocationGrant",
    # single sign-on (models/sso.py)
    "SsoGroupRule", "SsoIdentity",
)
