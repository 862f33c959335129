"""API shapes. Input serializers are strict: an unknown or read-only key is a 400, never ignored."""
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from automations import policy, selectors
from automations.models import Approval, AuditEvent, AutomationRequest, Execution, Runbook, TeamRunbook
from automations.figures.progress import run_progress
from automations.runbooks.start_body import start_body_for

MAX_ID = 2**63 - 1  # BigAutoField


def _json_type(field) -> tuple[type, ...] | None:
    """The JSON type a body value must already have for `field`; None when any value may do."""
    if isinstance(field, serializers.JSONField):
        return None
    if isinstance(field, serializers.BooleanField):
        return (bool,)
    if isinstance(field, serializers.IntegerField):
        return (int,)
    if isinstance(field, serializers.DictField):
        return (dict,)
    if isinstance(field, serializers.ListField):
        return (list,)
    if isinstance(field, (serializers.CharField, serializers.ChoiceField, serializers.DateTimeField)):
        return (str,)
    return None


class StrictSerializer(serializers.Serializer):
    """Rejects keys it does not declare (no mass assignment of status, requester, fingerprint, ...), and
    values of the wrong JSON type: DRF would read `0` as "0" or False and `"1"` as 1, which the schema
    does not promise and a client should not rely on."""

    # Keys tolerated without being fields: DRF's own `?format=` override on query strings.
    tolerated: frozenset[str] = frozenset()
    strict_types = True  # JSON bodies; query strings are all text

    def to_internal_value(self, data):
        if hasattr(data, "keys"):
            unknown = sorted(set(data.keys()) - set(self.fields) - self.tolerated)
            if unknown:
                raise serializers.ValidationError({key: ["Unknown or read-only field."] for key in unknown})
        if self.strict_types and isinstance(data, dict):
            mistyped = {}
            for name, value in data.items():
                expected = _json_type(self.fields[name]) if name in self.fields else None
                wrong_bool = isinstance(value, bool) and expected is not None and bool not in expected
                if value is not None and expected and (not isinstance(value, expected) or wrong_bool):
                    mistyped[name] = [f"Expected a JSON {_JSON_NAMES[expected[0]]}."]
            if mistyped:
                raise serializers.ValidationError(mistyped)
        return super().to_internal_value(data)


_JSON_NAMES = {bool: "boolean", int: "integer", dict: "object", list: "array", str: "string"}


class StrictQuery(StrictSerializer):
    """Query-string parameters: an unknown or malformed one is a 400, never silently ignored.

    A typo such as `?stauts=failed` would otherwise return everything, which is worse than an error.
    """

    tolerated = frozenset({"format"})
    strict_types = False


class RequestListQuery(StrictQuery):
    status = serializers.ChoiceField(choices=AutomationRequest.Status.choices, required=False)
    team = serializers.SlugField(max_length=64, required=False)
    mine = serializers.BooleanField(required=False, default=False)
    cursor = serializers.CharField(max_length=512, required=False)


class RequestDetailQuery(StrictQuery):
    """Multi-account runs: which part of the matrix `locations.rows` holds (the request page's parameters)."""

    locations_page = serializers.IntegerField(min_value=1, max_value=999999, required=False, default=1,
                                              help_text="Which page of accounts (25 a page); past the end, the last.")
    failed_only = serializers.ChoiceField(choices=["1"], required=False,
                                          help_text="Only the accounts with a failed location (counts stay the whole run's).")
    via = serializers.CharField(max_length=68, required=False,
                                help_text="Only the accounts the request's chosen account/OU `via` covered.")


class RunbookDetailQuery(StrictQuery):
    version = serializers.RegexField(r"^(default|latest|[1-9][0-9]{0,5})$", required=False, default="default",
                                     help_text="default, latest or a version number")


class DecisionInput(StrictSerializer):
    comment = serializers.CharField(max_length=4000, allow_blank=True, required=False, default="")


class ApproveInput(DecisionInput):
    emergency = serializers.BooleanField(required=False, default=False,
                                         help_text="Inside a change freeze: override it (the comment is the reason; "
                                                   "takes effect with two approvers' overrides).")


class BulkApproveItem(StrictSerializer):
    id = serializers.IntegerField(min_value=1, max_value=MAX_ID)
    fingerprint = serializers.RegexField(r"^[0-9a-f]{64}$", help_text="The fingerprint the approver was shown.")


class BulkApproveInput(StrictSerializer):
    requests = BulkApproveItem(many=True, min_length=2, max_length=50,
                               help_text="2–50 identical requests under a low-risk policy.")
    comment = serializers.CharField(max_length=1000, allow_blank=True, required=False, default="")


class BulkApproveResult(serializers.Serializer):
    id = serializers.IntegerField()
    ok = serializers.BooleanField()
    status = serializers.CharField(help_text="The request's status afterwards; empty when not found.")
    code = serializers.CharField(help_text="Why it was not approved (a stable code); empty when it was.")
    detail = serializers.CharField()


class BulkApproveOutput(serializers.Serializer):
    results = BulkApproveResult(many=True)


class CancelInput(StrictSerializer):
    reason = serializers.CharField(max_length=2000, allow_blank=True, required=False, default="")


class RequestCreateInput(StrictSerializer):
    runbook = serializers.IntegerField(min_value=1, max_value=MAX_ID, help_text="Runbook id from /api/v1/runbooks/.")
    team = serializers.SlugField(max_length=64, required=False,
                                 help_text="Team name; needed only when several of your teams offer the runbook.")
    version = serializers.RegexField(r"^(default|latest|[1-9][0-9]{0,5})$", required=False, default="default")
    parameters = serializers.DictField(child=serializers.JSONField(), required=False, default=dict)
    target_parameter_name = serializers.CharField(max_length=50, required=False, allow_blank=True, default="")
    targets = serializers.ListField(child=serializers.DictField(), required=False, default=list, max_length=1)
    max_concurrency = serializers.CharField(max_length=7, required=False, allow_blank=True, default="")
    max_errors = serializers.CharField(max_length=7, required=False, allow_blank=True, default="")
    alarm_name = serializers.CharField(max_length=255, required=False, allow_blank=True, default="")
    justification = serializers.CharField(max_length=4000, required=False, allow_blank=True, default="")
    ticket_reference = serializers.CharField(
        max_length=100, required=False, allow_blank=True, default="",
        help_text="The change ticket, when the runbook's policy asks for one (refused with ticket_required or "
                  "ticket_mismatch); part of the fingerprint.")
    rerun_of = serializers.IntegerField(min_value=1, max_value=MAX_ID, required=False, allow_null=True, default=None)
    run_at = serializers.DateTimeField(required=False, allow_null=True, default=None,
                                       help_text="Approve now, run at this time (ISO 8601 with a time zone).")
    location_targets = serializers.ListField(
        child=serializers.RegexField(r"^(\d{12}|ou-[a-z0-9]{4,32}-[a-z0-9]{8,32})$"), required=False, default=list,
        max_length=50, help_text="Multi-account run: member account ids or OU ids granted to your team.")
    location_regions = serializers.ListField(child=serializers.RegexField(r"^[a-z]{2}(-[a-z]+)+-\d$"), required=False,
                                             default=list, max_length=50, help_text="Multi-account run: the Regions.")
    location_max_concurrency = serializers.CharField(max_length=7, required=False, allow_blank=True, default="")
    location_max_errors = serializers.CharField(max_length=7, required=False, allow_blank=True, default="")
    confirm_overlap = serializers.BooleanField(
        required=False, default=False,
        help_text="Submit although open requests of this runbook share a target; without it such a "
                  "request answers 409 with code overlapping_request and their ids in errors.overlapping_requests.")


class RunbookPolicySerializer(serializers.ModelSerializer):
    id = serializers.IntegerField(source="runbook.id")
    name = serializers.CharField(source="runbook.name")
    team = serializers.CharField(source="team.name")
    owner = serializers.CharField(source="runbook.owner")
    owner_kind = serializers.CharField(source="runbook.owner_kind")
    description = serializers.CharField(source="runbook.description")
    account_id = serializers.CharField(source="runbook.account.account_id")
    region = serializers.CharField(source="runbook.region")
    default_version = serializers.CharField(source="runbook.default_version")
    latest_version = serializers.CharField(source="runbook.latest_version")

    class Meta:
        model = TeamRunbook
        fields = ["id", "name", "team", "owner", "owner_kind", "description", "account_id", "region",
                  "default_version", "latest_version", "approvals_required", "multi_account_threshold",
                  "multi_account_approvals", "multi_target_threshold", "multi_target_approvals", "version_choice",
                  "pinned_version", "max_targets"]


class RunbookDetailSerializer(serializers.ModelSerializer):
    account_id = serializers.CharField(source="account.account_id")
    versions = serializers.SerializerMethodField()
    parameters = serializers.SerializerMethodField()
    version = serializers.SerializerMethodField()
    needs_setup = serializers.SerializerMethodField()
    runs_as = serializers.SerializerMethodField()

    class Meta:
        model = Runbook
        fields = ["id", "name", "owner", "owner_kind", "description", "account_id", "region", "default_version",
                  "latest_version", "versions", "version", "parameters", "runs_as", "needs_setup"]

    def get_needs_setup(self, obj) -> list[str]:
        """What an administrator must configure before this version can be requested (empty: ready)."""
        return list(self.context.get("needs_setup") or [])

    def get_runs_as(self, obj) -> str:
        """The role AWS runs this version's steps as (from its assumeRole)."""
        return self.context.get("runs_as", "")

    def _version(self, obj):
        return self.context.get("version")

    def get_versions(self, obj) -> list[dict]:
        return [{"version": v.version, "is_default": v.version == obj.default_version,
                 "is_latest": v.version == obj.latest_version, "offered": not v.problems}
                for v in obj.versions.order_by("-id")]

    def get_version(self, obj) -> str:
        version = self._version(obj)
        return version.version if version else ""

    def get_parameters(self, obj) -> dict:
        version = self._version(obj)
        return version.parameters if version else {}


class ApprovalSerializer(serializers.ModelSerializer):
    approver = serializers.CharField(source="approver.username")

    class Meta:
        model = Approval
        fields = ["approver", "comment", "fingerprint", "created_at"]


class ExecutionSerializer(serializers.ModelSerializer):
    request = serializers.IntegerField(source="request_id")

    class Meta:
        model = Execution
        fields = ["request", "execution_id", "aws_status", "current_step", "steps", "outputs", "failure_message",
                  "executed_by", "started_at", "ended_at", "last_synced_at"]


class RequestSerializer(serializers.ModelSerializer):
    team = serializers.CharField(source="team.name")
    requester = serializers.CharField(source="requester.username")
    runbook = serializers.IntegerField(source="runbook_id")
    document_name = serializers.CharField(source="runbook.name")
    document_version = serializers.CharField(source="runbook_version.version")
    account_id = serializers.CharField(source="account.account_id")
    # The identity AWS runs the steps as (the automation role, a literal assumeRole, or the
    # dispatch role's session); `automation_role_arn` is kept as an alias of it for old clients.
    runs_as = serializers.CharField(source="run_as")
    runs_as_source = serializers.SerializerMethodField()
    automation_role_arn = serializers.CharField(source="run_as")
    approvals = ApprovalSerializer(many=True, read_only=True)
    execution = serializers.SerializerMethodField()
    locations = serializers.SerializerMethodField(
        help_text="Multi-account runs: the account × Region matrix (each child execution's AWS status, "
                  "counts, progress, summary per Region and per chosen account/OU, failed locations); `rows` is one "
                  "page of accounts (`page`: number, pages, size, accounts), chosen as on the request page with the "
                  "query parameters locations_page, failed_only=1 and via; null for a single-account request.")
    start_call = serializers.SerializerMethodField(
        help_text="The StartAutomationExecution body the worker sends for this request, without ClientToken "
                  "and Tags; built by the same function as the form's preview (automations.runbooks.start_body).")
    execution_preview = serializers.JSONField(
        read_only=True, help_text="AWS's execution preview at submit: {status: Success, figures: {steps: {Mutating, "
        "NonMutating, Undetermined}, regions, total_accounts, targets: [{type, count}]}} (the figures are bound by "
        "the fingerprint), or {status: Failed|Unavailable, message} when AWS could not give one.")
    approvals_needed = serializers.SerializerMethodField(
        help_text="How many distinct approvers this request needs (policy.required_approvals) and why more than the "
                  "policy's own count: {count, reasons: [\"12 targets is above this policy's 10: 2 approvers.\"]}.")
    hold = serializers.SerializerMethodField(
        help_text="Why an approved request waits before dispatch (change freeze, CLOSED change calendar, run-at), "
                  "or null: {reason, message, until, calendars, calendar_state}.")

    class Meta:
        model = AutomationRequest
        fields = ["id", "status", "status_reason", "reason_code", "runs_as", "runs_as_source", "document_hash",
                  "team", "requester", "runbook", "document_name",
                  "document_version", "version_choice", "account_id", "region", "automation_role_arn", "parameters",
                  "target_parameter_name", "targets", "max_concurrency", "max_errors", "alarm_name", "resources", "resource_names",
                  "justification", "ticket_reference", "fingerprint", "client_token", "rerun_of", "created_at", "approved_at",
                  "dispatched_at", "finished_at", "approvals", "execution", "run_at", "start_call", "locations",
                  "execution_preview", "approvals_needed", "hold"]
        read_only_fields = fields

    def get_approvals_needed(self, obj) -> dict:
        required = policy.approvals_required(obj)
        return {"count": int(required), "reasons": list(required.reasons)}

    def get_runs_as_source(self, obj) -> str:
        """automation_role | fixed_role (a literal assumeRole) | dispatch_session (no assumeRole)."""
        if obj.run_as == obj.account.automation_role_arn:
            return "automation_role"
        return "dispatch_session" if obj.run_as == obj.account.dispatch_role_arn else "fixed_role"

    def get_execution(self, obj) -> dict | None:
        execution = getattr(obj, "execution", None) if hasattr(obj, "execution") else None
        try:
            execution = obj.execution
        except Execution.DoesNotExist:
            return None
        return ExecutionSerializer(execution).data

    def get_start_call(self, obj) -> dict:
        return start_body_for(obj)

    def get_locations(self, obj) -> dict | None:
        query = self.context.get("locations_query") or {}
        return selectors.location_matrix(obj, failed_only=query.get("failed_only") == "1", via=query.get("via", ""),
                                         page=query.get("locations_page", 1))

    def get_hold(self, obj) -> dict | None:
        return selectors.request_hold(obj)


def _seconds(value) -> float | None:
    return None if value is None else round(value.total_seconds(), 3)


class StepProgressSerializer(serializers.Serializer):
    name = serializers.CharField()
    action = serializers.CharField()
    status = serializers.CharField(help_text="AWS's StepStatus, verbatim")
    started_at = serializers.DateTimeField(allow_null=True)
    ended_at = serializers.DateTimeField(allow_null=True)
    duration_seconds = serializers.SerializerMethodField()
    is_current = serializers.BooleanField(help_text="The step AWS names as running now")

    def get_duration_seconds(self, obj) -> float | None:
        return _seconds(obj.duration)


class EstimateSerializer(serializers.Serializer):
    past_successful_runs = serializers.IntegerField(source="past_runs", help_text=(
        "Successful runs of this runbook by the request's team it is drawn from; 0 = no estimate"))
    median_seconds = serializers.SerializerMethodField()
    estimated_finish = serializers.DateTimeField(source="finish_at", allow_null=True, help_text=(
        "Start time + median, while the run is still going; null otherwise or with no past runs"))

    def get_median_seconds(self, obj) -> float | None:
        return _seconds(obj.median)


class SessionLinkSerializer(serializers.Serializer):
    purpose = serializers.ChoiceField(choices=["start", "stop", "signal"])
    session_name = serializers.CharField(help_text="The STS RoleSessionName Delegate used (audit log)")
    source_identity = serializers.CharField()
    url = serializers.CharField(help_text="CloudTrail event history in the request's region, User name = session")


class ProgressSerializer(serializers.Serializer):
    execution_id = serializers.CharField()
    console_url = serializers.CharField(help_text="The execution in the AWS console of its region")
    started_at = serializers.DateTimeField(allow_null=True)
    ended_at = serializers.DateTimeField(allow_null=True)
    duration_seconds = serializers.SerializerMethodField()
    current_step = serializers.CharField(help_text="Empty once the request is no longer running")
    steps = StepProgressSerializer(many=True)
    estimate = EstimateSerializer()
    cloudtrail = SessionLinkSerializer(many=True, source="sessions")
    custom_endpoint = serializers.CharField(help_text=(
        "Set when Delegate talks to an endpoint other than AWS (the sandbox): the links then lead nowhere"))

    def get_duration_seconds(self, obj) -> float | None:
        return _seconds(obj.duration)


class RequestDetailSerializer(RequestSerializer):
    """One request, with its run's progress (not in lists: the estimate costs queries per request)."""

    progress = serializers.SerializerMethodField()

    class Meta(RequestSerializer.Meta):
        fields = [*RequestSerializer.Meta.fields, "progress"]
        read_only_fields = fields

    @extend_schema_field(ProgressSerializer(allow_null=True))
    def get_progress(self, obj) -> dict | None:
        progress = run_progress(obj)
        return None if progress is None else ProgressSerializer(progress).data


class RequestPageSerializer(serializers.Serializer):
    """One page of requests, newest first; follow `next` until it is null."""

    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = RequestSerializer(many=True)


class AuditEventSerializer(serializers.ModelSerializer):
    request = serializers.IntegerField(source="request_id", allow_null=True)
    actor = serializers.IntegerField(source="actor_id", allow_null=True)

    class Meta:
        model = AuditEvent
        fields = ["sequence", "occurred_at", "actor", "actor_name", "action", "request", "team", "runbook",
                  "resources", "account_id", "region", "details", "client_ip", "user_agent", "role_session_name",
                  "source_identity", "aws_request_id", "execution_id", "prev_hash", "hash"]
        read_only_fields = fields


class ContentStepSerializer(serializers.Serializer):
    name = serializers.CharField()
    action = serializers.CharField()
    service = serializers.CharField(required=False)
    api = serializers.CharField(required=False)
    inputs = serializers.CharField(help_text="The step's other inputs as JSON text")
    code = serializers.CharField(help_text="Scripts and inline code, in full")


class RequestContentSerializer(serializers.Serializer):
    """What an approver approves: the steps of exactly the content the request bound, and a diff
    against the content of this team's last run of the runbook."""

    document_hash = serializers.CharField()
    content_known = serializers.BooleanField()
    steps = ContentStepSerializer(many=True)
    diff_against_request = serializers.IntegerField(allow_null=True)
    diff = serializers.CharField(help_text="Unified diff; empty when the content is the same or nothing ran before")
    changed_since_submit = serializers.BooleanField()
    current_steps = ContentStepSerializer(many=True)
