"""Runbooks, their stored versions (parameter schema, content hash) and which team may request which."""
from django.db import models

from automations.models.policy import TeamRunbookPolicy


class Runbook(models.Model):
    """An SSM Automation document the catalog sync has seen (ListDocuments), in one account and region.

    Never deleted: a document that disappears from SSM is marked unavailable, because requests
    and audit events point at it.
    """

    class Owner(models.TextChoices):
        SELF = "self", "Owned by me"
        PRIVATE = "private", "Shared with me"
        AMAZON = "amazon", "Amazon"

    account = models.ForeignKey("automations.Account", on_delete=models.PROTECT, related_name="runbooks")
    region = models.CharField(max_length=32)
    # The full ARN for documents shared from another account: that is how SSM must be called.
    name = models.CharField(max_length=256)
    display_name = models.CharField(max_length=1024, blank=True)
    owner = models.CharField(max_length=64)  # "Amazon" or an account id, as ListDocuments reports it
    owner_kind = models.CharField(max_length=16, choices=Owner)
    description = models.TextField(blank=True)
    category = models.CharField(max_length=128, blank=True)
    default_version = models.CharField(max_length=16, blank=True)
    latest_version = models.CharField(max_length=16, blank=True)
    available = models.BooleanField(default=True)
    synced_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["account", "region", "name"], name="runbook_unique")]

    def __str__(self) -> str:
        return self.short_name

    @property
    def short_name(self) -> str:
        return self.name.rsplit("/", 1)[-1]


class RunbookVersion(models.Model):
    """One document version: its content and the parameter schema parsed from it (GetDocument)."""

    runbook = models.ForeignKey(Runbook, on_delete=models.PROTECT, related_name="versions")
    version = models.CharField(max_length=16)  # SSM DocumentVersion: "1", "2", ...
    content = models.TextField()
    document_format = models.CharField(max_length=8)  # "JSON" or "YAML"
    content_hash = models.CharField(max_length=64)
    description = models.TextField(blank=True)
    parameters = models.JSONField(default=dict)  # {name: {"type": ..., "required": ..., ...}}
    steps = models.JSONField(default=list)  # [{"name", "action"}] for the approver's preview
    # Patterns RE2 cannot compile, found at sync: such a version is not offered (ReDoS guard).
    problems = models.JSONField(default=list, blank=True)
    synced_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["runbook", "-id"]
        constraints = [models.UniqueConstraint(fields=["runbook", "version"], name="runbook_version_unique")]

    def __str__(self) -> str:
        return f"{self.runbook.short_name} v{self.version}"


class TeamRunbook(TeamRunbookPolicy):
    """Policy: a team may request this runbook, under these rules. Edited by admins; changes are audited.

    Scope, approver pool, escalation and timeouts come from TeamRunbookPolicy (models/policy.py).
    """

    class VersionChoice(models.TextChoices):
        DEFAULT = "default", "Default version (resolved at submit)"
        LATEST = "latest", "Latest version (resolved at submit)"
        PINNED = "pinned", "Pinned version"

    team = models.ForeignKey("automations.Team", on_delete=models.CASCADE, related_name="runbook_policies")
    runbook = models.ForeignKey(Runbook, on_delete=models.CASCADE, related_name="team_policies")
    enabled = models.BooleanField(default=True)
    # 0 = auto-approve (the audit event names this policy); N = N distinct approvers.
    approvals_required = models.PositiveSmallIntegerField(default=1)
    # Which versions requesters may choose from; pinned restricts them to pinned_version.
    version_choice = models.CharField(max_length=10, choices=VersionChoice, default=VersionChoice.DEFAULT)
    pinned_version = models.CharField(max_length=16, blank=True)
    max_targets = models.PositiveIntegerField(default=50)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["team", "runbook"], name="team_runbook_unique")]

    def __str__(self) -> str:
        return f"{self.team} may run {self.runbook}"
