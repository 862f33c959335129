"""Automation requests, approvals, executions and the dispatch outbox, with their constraints."""
import uuid

from django.conf import settings
from django.db import models
from django.urls import reverse


class AutomationRequest(models.Model):
    """One request to run one runbook version with fixed parameters, targets and rate control.

    Immutable once submitted: only status and dispatch bookkeeping change, and only through
    automations.services.transitions.transition (see TRANSITIONS). A re-run is a new request.
    `parameters` is exactly what SSM receives ({name: [str, ...]}), AutomationAssumeRole included.
    """

    class Status(models.TextChoices):
        SUBMITTED = "submitted", "Awaiting approval"
        CHANGES_REQUESTED = "changes_requested", "Sent back for changes"
        APPROVED = "approved", "Approved"
        REJECTED = "rejected", "Rejected"
        WITHDRAWN = "withdrawn", "Withdrawn"
        EXPIRED = "expired", "Expired"
        DISPATCHING = "dispatching", "Starting in AWS"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"
        TIMED_OUT = "timed_out", "Timed out"
        DISPATCH_FAILED = "dispatch_failed", "Could not start"

    team = models.ForeignKey("automations.Team", on_delete=models.PROTECT, related_name="requests")
    requester = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="automation_requests")
    runbook = models.ForeignKey("automations.Runbook", on_delete=models.PROTECT, related_name="requests")
    runbook_version = models.ForeignKey("automations.RunbookVersion", on_delete=models.PROTECT, related_name="+")
    # What the requester chose; runbook_version is what it resolved to at submit.
    version_choice = models.CharField(max_length=16, default="default")
    account = models.ForeignKey("automations.Account", on_delete=models.PROTECT, related_name="requests")
    region = models.CharField(max_length=32)
    parameters = models.JSONField(default=dict)
    # Rate control: empty target_parameter_name = a simple execution.
    target_parameter_name = models.CharField(max_length=50, blank=True)
    targets = models.JSONField(default=list, blank=True)  # [{"Key": "ParameterValues"|"tag:K", "Values": [...]}]
    max_concurrency = models.CharField(max_length=7, blank=True)
    max_errors = models.CharField(max_length=7, blank=True)
    alarm_name = models.CharField(max_length=255, blank=True)
    # Multi-account run (TargetLocations): the granted accounts/OUs chosen, the Regions, and the
    # member accounts they resolved to at submit. Empty location_targets = a single-account run.
    location_targets = models.JSONField(default=list, blank=True)
    location_regions = models.JSONField(default=list, blank=True)
    location_accounts = models.JSONField(default=list, blank=True)
    # {account id: [the chosen targets (itself or its OU) that cover it]} at submit, for the matrix's
    # OU filter; derived from the same resolution as location_accounts (which the fingerprint binds).
    location_sources = models.JSONField(default=dict, blank=True)
    location_max_concurrency = models.CharField(max_length=7, blank=True)
    location_max_errors = models.CharField(max_length=7, blank=True)
    # Resource ids the request acts on (from resource-typed parameters and targets): audit and scope checks.
    resources = models.JSONField(default=list, blank=True)
    # Their Name tags when submitted ({id: name}), so pages, mail and exports say "web-1 (i-…)"
    # without asking AWS; not part of the fingerprint (a tag is not what runs).
    resource_names = models.JSONField(default=dict, blank=True)
    justification = models.TextField(blank=True)
    # The change ticket the policy asked for (TeamRunbook.ticket_pattern); part of the fingerprint.
    ticket_reference = models.CharField(max_length=100, blank=True)
    # "Approve now, run at": dispatch waits until this time (None = as soon as approved).
    run_at = models.DateTimeField(null=True, blank=True)
    fingerprint = models.CharField(max_length=64, editable=False)
    # The SSM content hash of the version at submit (RunbookVersion.ssm_hash): bound by the fingerprint.
    document_hash = models.CharField(max_length=256, blank=True)
    # The identity AWS runs the steps as (a role ARN), decided at submit from the document's
    # assumeRole: the automation role, a literal role, or the dispatch role's session.
    run_as = models.CharField(max_length=2048, blank=True)
    # What AWS's execution preview said at submit (StartExecutionPreview/GetExecutionPreview):
    # {"status": "Success", "figures": {...}} (the figures are bound by the fingerprint), or
    # {"status": "Failed" | "Unavailable", "message": ...} when AWS could not give one.
    execution_preview = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=20, choices=Status, default=Status.SUBMITTED, db_index=True)
    status_reason = models.TextField(blank=True)
    # A stable machine-readable reason for the final status (e.g. content_changed).
    reason_code = models.CharField(max_length=40, blank=True)
    # Sent to SSM as ClientToken on every attempt: a retried dispatch cannot start a second execution.
    client_token = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    rerun_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="reruns")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    approved_at = models.DateTimeField(null=True, blank=True)
    dispatched_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        permissions = [("view_all_requests", "Can view every request and the whole audit log (auditors)")]
        indexes = [
            models.Index(fields=["team", "status"], name="request_team_status"),
            # My requests pages by (created_at, id), newest first: read a page, not the requester's all.
            models.Index(fields=["requester", "-created_at", "-id"], name="request_requester_recent"),
            # The approver's "recent runs of this runbook on these targets" (this team's, newest first).
            models.Index(fields=["team", "runbook", "-created_at"], name="request_team_runbook_recent"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.runbook.short_name}"

    def get_absolute_url(self) -> str:
        return reverse("automations:request_detail", args=[self.pk])

    def resource_label(self, resource_id: str) -> str:
        """'web-1 (i-0abc…)' from the Name tag stored at submit, else the bare id."""
        name = (self.resource_names or {}).get(resource_id, "")
        return f"{name} ({resource_id})" if name else str(resource_id)

    @property
    def resource_labels(self) -> list[str]:
        return [self.resource_label(resource_id) for resource_id in self.resources or []]

    @property
    def is_multi_account(self) -> bool:
        return bool(self.location_targets)

    @property
    def location_count(self) -> int:
        return len(self.location_accounts or []) * len(self.location_regions or [])

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def is_active(self) -> bool:
        return self.status in (self.Status.APPROVED, self.Status.DISPATCHING, self.Status.RUNNING)


S = AutomationRequest.Status
TRANSITIONS: dict[str, frozenset[str]] = {
    S.SUBMITTED: frozenset({S.APPROVED, S.REJECTED, S.WITHDRAWN, S.EXPIRED, S.CHANGES_REQUESTED}),
    # Sent back with a comment: the requester amends it (a new fingerprint, approvals cleared) or withdraws.
    S.CHANGES_REQUESTED: frozenset({S.SUBMITTED, S.WITHDRAWN, S.EXPIRED}),
    # approved -> cancelled: the requester or a lead stops it before it reached AWS.
    S.APPROVED: frozenset({S.DISPATCHING, S.EXPIRED, S.CANCELLED}),
    # dispatching -> approved: throttled or over the concurrency limit, put back with a delay.
    # Fingerprint mismatch, targets out of scope, permanent AWS error -> dispatch_failed.
    S.DISPATCHING: frozenset({S.RUNNING, S.DISPATCH_FAILED, S.APPROVED}),
    S.RUNNING: frozenset({S.SUCCEEDED, S.FAILED, S.CANCELLED, S.TIMED_OUT}),
}
TERMINAL_STATUSES = frozenset(S).difference(TRANSITIONS)


class Approval(models.Model):
    """One approver's sign-off on one request, bound to the fingerprint they were shown."""

    request = models.ForeignKey(AutomationRequest, on_delete=models.PROTECT, related_name="approvals")
    approver = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    # Copied from the request by the service so the database itself can refuse self-approval.
    requester = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    fingerprint = models.CharField(max_length=64)
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at"]
        constraints = [
            models.UniqueConstraint(fields=["request", "approver"], name="approval_once_per_approver"),
            models.CheckConstraint(condition=~models.Q(approver=models.F("requester")), name="approval_not_self"),
        ]

    def __str__(self) -> str:
        return f"{self.approver} approved #{self.request_id}"


class RequestComment(models.Model):
    """One message in a request's thread between requester, approvers and auditors (also audited)."""

    request = models.ForeignKey(AutomationRequest, on_delete=models.PROTECT, related_name="comments")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    body = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"comment by {self.author} on #{self.request_id}"


class Execution(models.Model):
    """What AWS reports about the request's automation execution, kept verbatim beside our status."""

    request = models.OneToOneField(AutomationRequest, on_delete=models.PROTECT, related_name="execution")
    execution_id = models.CharField(max_length=36, unique=True)
    aws_status = models.CharField(max_length=40, blank=True)
    current_step = models.CharField(max_length=128, blank=True)
    steps = models.JSONField(default=list, blank=True)
    outputs = models.JSONField(default=dict, blank=True)
    failure_message = models.TextField(blank=True)
    executed_by = models.CharField(max_length=2048, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    last_synced_at = models.DateTimeField(null=True, blank=True)
    # Bumped whenever AWS's view changed, so pages can refresh only what moved.
    revision = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return self.execution_id


class DispatchOutbox(models.Model):
    """The promise to dispatch an approved request, committed with the approval.

    The Celery message is only a wake-up; the sweeper republishes rows whose message was lost.
    """

    class State(models.TextChoices):
        PENDING = "pending", "Waiting to be published"
        ENQUEUED = "enqueued", "Published to the broker"
        CALLING = "calling", "Claimed by a worker"
        STARTED = "started", "Started in AWS"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    request = models.OneToOneField(AutomationRequest, on_delete=models.CASCADE, primary_key=True, related_name="outbox")
    state = models.CharField(max_length=16, choices=State, default=State.PENDING, db_index=True)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(db_index=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"outbox #{self.request_id} {self.state}"
