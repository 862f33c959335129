"""Runbooks, their stored versions (parameter schema, content hash) and which team may request which."""
from django.db import models

from automations.models.policy import TeamRunbookPolicy
from automations.models.teams import validate_change_calendars


class Runbook(models.Model):
    """An SSM Automation document the catalog sync has seen (ListDocuments), in one account and region.

    Never deleted: a document that disappears from SSM is marked unavailable, because requests
    and audit events point at it.
    """

    class Owner(models.TextChoices):
        # Whose document it is as SSM says it (Owner=Self is the portal's account), never a person's.
        SELF = "self", "Our account's"
        PRIVATE = "private", "Shared with our account"
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
    # A document whose assumeRole is a literal role or absent runs as something other than the
    # account's automation role: not offered until an admin says so (pages then name that identity).
    allow_unmanaged_identity = models.BooleanField(
        default=False, help_text="Offer this runbook although its assumeRole is a fixed role or absent "
        "(it then runs as that role, or as Delegate's dispatch session).")
    synced_at = models.DateTimeField(null=True, blank=True)
    change_calendars = models.JSONField(
        default=list, blank=True, validators=[validate_change_calendars], help_text="SSM ChangeCalendar documents (names or ARNs) that gate this runbook's runs: while one is "
        "CLOSED at the run's time, dispatch holds the request unless two approvers gave an emergency override.")

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
    # The content hash SSM reports for this version (DescribeDocument Hash/HashType): what
    # approvals bind and what the worker re-reads before Start. Empty until described.
    ssm_hash = models.CharField(max_length=256, blank=True)
    ssm_hash_type = models.CharField(max_length=16, blank=True)
    # CreatedDate from ListDocumentVersions: a deleted and re-created document shows a new one.
    ssm_created = models.CharField(max_length=64, blank=True)
    # How many contents SSM has shown under this version number (ContentRevision rows).
    revision = models.PositiveIntegerField(default=1)
    # Whom the steps run as, from assumeRole (runbooks.identity_of).
    identity = models.JSONField(default=dict, blank=True)
    description = models.TextField(blank=True)
    parameters = models.JSONField(default=dict)  # {name: {"type": ..., "required": ..., ...}}
    steps = models.JSONField(default=list)  # [{"name", "action", "service"?, "api"?}] for the approver's preview
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

    class Risk(models.TextChoices):
        STANDARD = "standard", "Standard: each request approved on its own"
        LOW = "low", "Low: identical requests may be approved together"

    class VersionChoice(models.TextChoices):
        DEFAULT = "default", "Default version (resolved at submit)"
        LATEST = "latest", "Latest version (resolved at submit)"
        PINNED = "pinned", "Pinned version"

    team = models.ForeignKey("automations.Team", on_delete=models.CASCADE, related_name="runbook_policies")
    runbook = models.ForeignKey(Runbook, on_delete=models.CASCADE, related_name="team_policies")
    enabled = models.BooleanField(default=True)
    # 0 = auto-approve (the audit event names this policy); N = N distinct approvers.
    approvals_required = models.PositiveSmallIntegerField(default=1)
    # Multi-account runs: above this many accounts, this many approvers (0 = no extra rule).
    multi_account_threshold = models.PositiveIntegerField(
        default=0, help_text="A multi-account request over more than this many accounts needs the approvals below "
                             "(0: no extra rule).")
    multi_account_approvals = models.PositiveSmallIntegerField(
        default=0, help_text="Approvers needed above the account threshold (when more than approvals_required).")
    # Above this many targets (what the request resolves to: ids, tag targets resolved at submit,
    # AWS's execution preview counts), this many approvers; an unknowable count asks for them too.
    multi_target_threshold = models.PositiveIntegerField(
        default=0, help_text="A request over more than this many targets needs the approvals below (0: no extra "
                             "rule). A request whose target count is not known before the run needs them too.")
    multi_target_approvals = models.PositiveSmallIntegerField(
        default=0, help_text="Approvers needed above the target threshold (when more than approvals_required).")
    # Which versions requesters may choose from; pinned restricts them to pinned_version.
    version_choice = models.CharField(max_length=10, choices=VersionChoice, default=VersionChoice.DEFAULT)
    pinned_version = models.CharField(max_length=16, blank=True)
    max_targets = models.PositiveIntegerField(default=50)
    # A lock per target, like Rundeck's: an approved run waits while another run touches one of its targets.
    one_run_per_target = models.BooleanField(
        default=False, verbose_name="One run per target at a time",
        help_text="An approved request waits to start while another request in this account and region is "
                  "running on any of its targets (any runbook); it starts when that run ends.")
    # On for a new policy row: a request that says "—" tells approvers nothing (an admin may turn it off).
    justification_required = models.BooleanField(
        default=True, help_text="A request must say why it is needed (approvers read it).")
    # e.g. ^CHG[0-9]{7}$ : the request's ticket reference (its own field) must match it whole.
    ticket_pattern = models.CharField(
        max_length=200, blank=True, verbose_name="Ticket reference pattern",
        help_text="Optional regular expression: requests must then give a ticket reference that matches it "
                  "as a whole, e.g. ^CHG[0-9]{7}$ . Checked with a linear-time engine (RE2).")
    # Low risk lets approvers select identical waiting requests and approve them together
    # (automations/policy/queue.py says what identical means); each is still approved on its own.
    risk = models.CharField(
        max_length=8, choices=Risk, default=Risk.STANDARD,
        help_text="Low: the approval queue offers bulk approval of identical requests (same runbook, version, "
                  "parameters, account and region; only the targets differ).")
    ticket_hint = models.CharField(
        max_length=200, blank=True, help_text="How to say it to people, e.g. “a change ticket like CHG-1234”.")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["team", "runbook"], name="team_runbook_unique")]

    def clean(self):
        super().clean()
        if self.ticket_pattern:
            import re2
            from django.core.exceptions import ValidationError

            try:
                re2.compile(self.ticket_pattern)
            except re2.error as error:
                raise ValidationError({"ticket_pattern": f"Not a valid pattern: {error}"}) from error

    def __str__(self) -> str:
        return f"{self.team} may run {self.runbook}"


class ContentRevision(models.Model):
    """One content SSM served under one version number. A document deleted and re-created under
    the same name restarts at version 1 with other content: each content seen is kept here, so a
    request shows (and binds) the exact content it was submitted with."""

    runbook_version = models.ForeignKey(RunbookVersion, on_delete=models.PROTECT, related_name="revisions")
    number = models.PositiveIntegerField()
    ssm_hash = models.CharField(max_length=256)
    content = models.TextField()
    document_format = models.CharField(max_length=8)
    recorded_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["runbook_version", "number"]
        constraints = [
            models.UniqueConstraint(fields=["runbook_version", "ssm_hash"], name="content_revision_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.runbook_version} revision {self.number}"


class RoleParameter(models.Model):
    """An admin's setting for one role-like parameter of one runbook (so of one account).

    `kind` overrides what the document implies (runbooks.role_kind_of); `value` is the role a
    handed-off parameter (LambdaAssumeRole, a stack's role…) gets. Never one value per name for
    the whole account: the same name means different things in different runbooks.
    """

    runbook = models.ForeignKey(Runbook, on_delete=models.CASCADE, related_name="role_parameters")
    parameter = models.CharField(max_length=50)
    kind = models.CharField(max_length=16, blank=True, choices=[("", "As the document implies")] + [
        (k, label) for k, label in (
            ("automation", "Automation role (what the run executes as)"),
            ("handoff", "Role handed to Lambda/CloudFormation (value below)"),
            ("subject", "Role the change acts on (team allowlist)"))])
    value = models.CharField(max_length=2048, blank=True, help_text="The role ARN Delegate fills in (handed-off roles).")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["runbook", "parameter"], name="role_parameter_unique")]

    def __str__(self) -> str:
        return f"{self.runbook.short_name}.{self.parameter}"


class TeamRole(models.Model):
    """A role (or instance profile) a team's requesters may pick for a parameter whose role is the
    subject of the change (a role to attach, a cluster role). Never typed free: a dropdown."""

    team = models.ForeignKey("automations.Team", on_delete=models.CASCADE, related_name="allowed_roles")
    account = models.ForeignKey("automations.Account", on_delete=models.CASCADE, related_name="+")
    arn = models.CharField(max_length=2048, help_text="arn:aws:iam::ACCOUNT:role/Name or …:instance-profile/Name")
    # Empty: offered for every subject-role parameter; otherwise only for this parameter name.
    parameter = models.CharField(max_length=50, blank=True)
    description = models.CharField(max_length=256, blank=True)

    class Meta:
        ordering = ["team", "arn"]
        constraints = [models.UniqueConstraint(fields=["team", "account", "arn", "parameter"], name="team_role_unique")]

    def __str__(self) -> str:
        return f"{self.team} may pick {self.arn}"

    @property
    def name(self) -> str:
        return self.arn.rsplit("/", 1)[-1]
