"""The approval-policy tables: the rules on a runbook, freezes, delegations, escalations and notices.

In full: the rules on a team's runbook, freeze windows, delegations, escalations, aws:approve
steps answered from the portal, and outgoing notifications.

Every row here is configuration (admin, audited with before/after) or a record that a rule was
applied (written by automations.services.policies / requests, audited there).
"""
from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

import re2

REGION_PATTERN = re2.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")
ACCOUNT_PATTERN = re2.compile(r"^\d{12}$")
MAX_ID_PATTERN_LENGTH = 200


class TeamRunbookPolicy(models.Model):
    """The policy fields of TeamRunbook (automations.models.runbooks), kept here with their rules.

    Empty lists mean "no extra restriction". The team's scope tag always applies on top.
    """

    allowed_regions = models.JSONField(default=list, blank=True,
                                       help_text='Regions requests may target, e.g. ["eu-west-1"]. Empty: the account\'s regions.')
    allowed_account_ids = models.JSONField(default=list, blank=True,
                                           help_text="AWS account ids requests may target. Empty: the team's accounts.")
    target_tags = models.JSONField(default=dict, blank=True,
                                   help_text='Tags every target must carry, e.g. {"Environment": ["staging", "dev"]}.')
    target_id_patterns = models.JSONField(default=list, blank=True,
                                          help_text='Every target id must match one of these (RE2), e.g. ["^i-0abc"].')
    approver_group = models.ForeignKey(
        "auth.Group", null=True, blank=True, on_delete=models.PROTECT, related_name="+",
        help_text="Who approves. Empty: the team's leads. The requester never approves their own request.")
    escalation_group = models.ForeignKey(
        "auth.Group", null=True, blank=True, on_delete=models.PROTECT, related_name="+",
        help_text="The next pool: notified, and may approve, once a request waits longer than the escalation time.")
    escalate_after_hours = models.FloatField(null=True, blank=True,
                                             help_text="Escalate a request still pending after this long. Empty: never.")
    request_expiry_hours = models.FloatField(null=True, blank=True,
                                             help_text="A request not approved within this time expires. Empty: the global default.")
    approval_validity_hours = models.FloatField(
        null=True, blank=True,
        help_text="An approval not dispatched within this time (from approval or the run-at time) expires. Empty: the global default.")

    class Meta:
        abstract = True

    def clean(self):
        super().clean()
        errors: dict[str, str] = {}
        if not _is_str_list(self.allowed_regions) or not all(REGION_PATTERN.match(r) for r in self.allowed_regions):
            errors["allowed_regions"] = 'A list of region names, e.g. ["eu-west-1"].'
        if not _is_str_list(self.allowed_account_ids) or not all(ACCOUNT_PATTERN.match(a) for a in self.allowed_account_ids):
            errors["allowed_account_ids"] = "A list of 12-digit account ids."
        if not isinstance(self.target_tags, dict) or not all(
                isinstance(k, str) and 0 < len(k) <= 128 and _is_str_list(v) and v for k, v in self.target_tags.items()):
            errors["target_tags"] = 'A map of tag key to allowed values, e.g. {"Environment": ["staging"]}.'
        if not _is_str_list(self.target_id_patterns):
            errors["target_id_patterns"] = "A list of regular expressions."
        else:
            for pattern in self.target_id_patterns:
                problem = id_pattern_problem(pattern)
                if problem:
                    errors["target_id_patterns"] = f"{pattern!r}: {problem}"
                    break
        for name in ("escalate_after_hours", "request_expiry_hours", "approval_validity_hours"):
            value = getattr(self, name)
            if value is not None and not 0 < value <= 24 * 90:
                errors[name] = "Between a few minutes and 90 days (in hours)."
        if self.escalate_after_hours and not self.escalation_group_id:
            errors["escalation_group"] = "Escalation needs a group to escalate to."
        if errors:
            raise ValidationError(errors)


def _is_str_list(value) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def id_pattern_problem(pattern: str) -> str | None:
    """Why an id pattern cannot be used, or None. RE2 keeps matching linear-time (no ReDoS)."""
    if not pattern or len(pattern) > MAX_ID_PATTERN_LENGTH:
        return f"1–{MAX_ID_PATTERN_LENGTH} characters."
    try:
        re2.compile(pattern)
    except re2.error as error:
        return f"not a valid RE2 pattern ({error})"
    return None


class FreezeWindow(models.Model):
    """A change freeze: no approval takes effect and nothing dispatches while it is active,
    unless two approvers each give an emergency override with a reason."""

    name = models.CharField(max_length=128)
    team = models.ForeignKey("automations.Team", null=True, blank=True, on_delete=models.CASCADE,
                             related_name="freeze_windows", help_text="Empty: every team (a global freeze).")
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    reason = models.TextField(blank=True)
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["starts_at"]
        indexes = [models.Index(fields=["starts_at", "ends_at"], name="freeze_window_period")]
        constraints = [models.CheckConstraint(condition=models.Q(ends_at__gt=models.F("starts_at")),
                                              name="freeze_window_ends_after_start")]

    def __str__(self) -> str:
        return f"{self.name} ({self.team or 'all teams'}, {self.starts_at:%Y-%m-%d %H:%M} – {self.ends_at:%Y-%m-%d %H:%M})"

    def clean(self):
        if self.starts_at and self.ends_at and self.ends_at <= self.starts_at:
            raise ValidationError({"ends_at": "A freeze ends after it starts."})

    def as_dict(self) -> dict:
        return {"id": self.pk, "name": self.name, "team": self.team.name if self.team_id else None,
                "starts_at": self.starts_at, "ends_at": self.ends_at}


class ApprovalDelegation(models.Model):
    """A lead (or pool member) hands their approvals for one team to someone else for a period."""

    delegator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="delegations_given")
    delegate = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="delegations_received")
    team = models.ForeignKey("automations.Team", on_delete=models.CASCADE, related_name="delegations")
    starts_at = models.DateTimeField(default=timezone.now)
    ends_at = models.DateTimeField()
    reason = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-starts_at"]
        constraints = [
            models.CheckConstraint(condition=~models.Q(delegator=models.F("delegate")), name="delegation_not_self"),
            models.CheckConstraint(condition=models.Q(ends_at__gt=models.F("starts_at")), name="delegation_ends_after_start"),
        ]

    def __str__(self) -> str:
        return f"{self.delegator} → {self.delegate} for {self.team} until {self.ends_at:%Y-%m-%d %H:%M}"

    def clean(self):
        if self.delegator_id and self.delegator_id == self.delegate_id:
            raise ValidationError({"delegate": "Delegate to someone else."})
        if self.starts_at and self.ends_at and self.ends_at <= self.starts_at:
            raise ValidationError({"ends_at": "A delegation ends after it starts."})

    def is_active(self, at=None) -> bool:
        at = at or timezone.now()
        return self.revoked_at is None and self.starts_at <= at < self.ends_at


class DelegatedApproval(models.Model):
    """An approval given by a delegate on behalf of a pool member: it takes that member's seat."""

    approval = models.OneToOneField("automations.Approval", on_delete=models.CASCADE, primary_key=True,
                                    related_name="delegated")
    delegation = models.ForeignKey(ApprovalDelegation, on_delete=models.PROTECT, related_name="approvals")
    on_behalf_of = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")


class FreezeOverride(models.Model):
    """An approver's emergency override of a change freeze or a CLOSED change calendar, with their reason."""

    approval = models.OneToOneField("automations.Approval", on_delete=models.CASCADE, primary_key=True,
                                    related_name="freeze_override")
    # What was overridden: a Delegate freeze window, or change calendars AWS reported CLOSED.
    freeze = models.ForeignKey(FreezeWindow, null=True, blank=True, on_delete=models.PROTECT, related_name="overrides")
    calendars = models.JSONField(default=list, blank=True)
    reason = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)


class Escalation(models.Model):
    """A request that waited too long: its policy's next pool was notified and may now approve."""

    request = models.OneToOneField("automations.AutomationRequest", on_delete=models.CASCADE, primary_key=True,
                                   related_name="escalation")
    group = models.ForeignKey("auth.Group", on_delete=models.PROTECT, related_name="+")
    escalated_at = models.DateTimeField(default=timezone.now)


class StepApproval(models.Model):
    """A step of a running execution waiting for the portal's pool: aws:approve (Approve/Reject)
    or aws:pause (Resume), answered with SendAutomationSignal under the answering person's session."""

    class State(models.TextChoices):
        WAITING = "waiting", "Waiting for approval"
        APPROVED = "approved", "Approved"
        REJECTED = "rejected", "Rejected"
        RESUMED = "resumed", "Resumed"
        CLOSED = "closed", "No longer waiting"

    execution = models.ForeignKey("automations.Execution", on_delete=models.CASCADE, related_name="step_approvals")
    step_execution_id = models.CharField(max_length=64)
    step_name = models.CharField(max_length=128)
    # aws:approve or aws:pause: which signals answer it (Approve/Reject or Resume).
    action = models.CharField(max_length=32, default="aws:approve")
    state = models.CharField(max_length=10, choices=State, default=State.WAITING, db_index=True)
    first_seen_at = models.DateTimeField(default=timezone.now)
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["first_seen_at", "id"]
        constraints = [models.UniqueConstraint(fields=["execution", "step_execution_id"], name="step_approval_once")]

    def __str__(self) -> str:
        return f"{self.step_name} of #{self.execution.request_id}"


class StepDecision(models.Model):
    """One pool member's answer to an aws:approve step, sent to AWS as SendAutomationSignal."""

    class Decision(models.TextChoices):
        APPROVE = "Approve", "Approve"
        REJECT = "Reject", "Reject"
        RESUME = "Resume", "Resume"

    step_approval = models.ForeignKey(StepApproval, on_delete=models.CASCADE, related_name="decisions")
    approver = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    # Copied from the request so the database itself refuses a requester answering their own run.
    requester = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    decision = models.CharField(max_length=8, choices=Decision)
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at"]
        constraints = [
            models.UniqueConstraint(fields=["step_approval", "approver"], name="step_decision_once_per_approver"),
            models.CheckConstraint(condition=~models.Q(approver=models.F("requester")), name="step_decision_not_self"),
        ]


class NotificationWebhook(models.Model):
    """An outgoing webhook: a Slack-compatible JSON body, signed with HMAC-SHA256 of the shared secret."""

    EVENTS = (
        ("request.submitted", "Submitted (to approvers)"),
        ("request.approved", "Approved (to the requester)"),
        ("request.rejected", "Rejected (to the requester)"),
        ("request.expired", "Expired"),
        ("request.escalated", "Escalated (to the next pool)"),
        ("execution.finished", "Execution finished"),
        ("execution.failed", "Execution failed"),
        ("step.waiting", "Waiting on an aws:approve step"),
    )

    name = models.CharField(max_length=128)
    url = models.URLField(max_length=2000, help_text="https:// endpoint, e.g. a Slack incoming webhook.")
    # Never shown back, never audited; only used to sign bodies.
    secret = models.CharField(max_length=256, help_text="Shared secret for the X-Delegate-Signature header.")
    team = models.ForeignKey("automations.Team", null=True, blank=True, on_delete=models.CASCADE,
                             related_name="webhooks", help_text="Empty: events of every team.")
    events = models.JSONField(default=list, blank=True, help_text="Event names to send. Empty: all.")
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self):
        known = {name for name, _ in self.EVENTS}
        if not _is_str_list(self.events) or not set(self.events) <= known:
            raise ValidationError({"events": f"A list of event names from: {', '.join(sorted(known))}."})
        if not self.url.startswith(("https://", "http://")):
            raise ValidationError({"url": "Use an http(s) URL."})

    def wants(self, event: str) -> bool:
        return self.enabled and (not self.events or event in self.events)


class NotificationDelivery(models.Model):
    """One message to one channel, rendered when the event happened and delivered by the worker.

    Created after the request's transaction committed, so a notification can never roll a
    request back; the worker retries with backoff and the sweeper republishes lost messages.
    """

    class Channel(models.TextChoices):
        EMAIL = "email", "Email"
        WEBHOOK = "webhook", "Webhook"

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        SENDING = "sending", "Sending"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed"

    event = models.CharField(max_length=32)
    request = models.ForeignKey("automations.AutomationRequest", null=True, blank=True, on_delete=models.CASCADE,
                                related_name="notifications")
    channel = models.CharField(max_length=8, choices=Channel)
    webhook = models.ForeignKey(NotificationWebhook, null=True, blank=True, on_delete=models.CASCADE,
                                related_name="deliveries")
    recipients = models.JSONField(default=list, blank=True)
    subject = models.CharField(max_length=255, blank=True)
    body = models.TextField(blank=True)
    payload = models.JSONField(default=dict, blank=True)
    state = models.CharField(max_length=10, choices=State, default=State.PENDING, db_index=True)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now, db_index=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "notification deliveries"

    def __str__(self) -> str:
        return f"{self.event} via {self.channel} ({self.state})"
