"""Policy: who may do what, in rules, their batch form and the approval queue's questions.

The rules (rules), the batch form of the same rules (batch), and what the approval queue asks
(queue: bulk approval of identical requests, escalation reminders).
"""
from automations.policy.rules import (
    AUDITOR_PERMISSION,
    FREEZE_OVERRIDE_APPROVERS,
    is_auditor,
    is_member,
    is_lead,
    team_policy,
    policy_for,
    approvals_required,
    required_approvals,
    Required,
    target_count,
    pool,
    in_pool,
    eligible_approver_count,
    Seat,
    ApprovalDecision,
    approval_decision,
    seats,
    taken_by,
    free_seat,
    can_approve,
    can_reject,
    can_amend,
    can_withdraw,
    can_cancel,
    decider_filter,
    NavigationRoles,
    navigation_roles,
    can_delegate,
    active_freezes,
    freeze_at,
    allowed_account_ids,
    scope_problems,
    ids_not_matching,
    targets_missing_tags,
    targets_outside_policy,
    request_expiry_hours,
    approval_validity_hours,
    dispatch_deadline,
    dispatch_refusal,
    emergency_override_count,
    dispatch_hold,
)
from automations.policy.calendars import CALENDAR_HOLD, calendars_for, request_calendars, run_time
from automations.policy.queue import MAX_BULK, bulk_key, escalation_due

__all__ = [
    "AUDITOR_PERMISSION", "FREEZE_OVERRIDE_APPROVERS", "is_auditor", "is_member", "is_lead",
    "team_policy", "policy_for", "approvals_required", "required_approvals", "Required", "target_count", "pool", "in_pool", "eligible_approver_count",
    "Seat", "ApprovalDecision", "approval_decision", "seats", "taken_by", "free_seat", "can_approve", "can_reject", "can_withdraw", "can_amend", "can_cancel",
    "decider_filter", "NavigationRoles", "navigation_roles", "can_delegate", "active_freezes", "freeze_at",
    "allowed_account_ids", "scope_problems", "ids_not_matching", "targets_missing_tags",
    "targets_outside_policy", "request_expiry_hours", "approval_validity_hours", "dispatch_deadline",
    "dispatch_refusal", "emergency_override_count", "dispatch_hold", "MAX_BULK", "bulk_key", "escalation_due",
    "CALENDAR_HOLD", "calendars_for", "request_calendars", "run_time"
]
