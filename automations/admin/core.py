"""Django admin for teams, accounts, runbooks and policies. Every change is audited with before/after."""
from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect
from django.urls import path

from automations import services
from automations.admin.base import AuditedAdmin, ReadOnlyAdmin
from automations.admin.policy_form import TeamRunbookPolicyForm
from automations.runbooks import identity as run_identity
from automations.models import (
    Account,
    AuditEvent,
    Membership,
    RoleParameter,
    Runbook,
    RunbookVersion,
    Team,
    TeamResource,
    TeamRole,
    TeamRunbook,
)
from automations.models import SsoGroupRule, SsoIdentity, TeamLocationGrant


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 1
    autocomplete_fields = ["user"]


@admin.register(Team)
class TeamAdmin(AuditedAdmin):
    list_display = ["name", "display_name", "scope_tag_key", "scope_tag_value"]
    search_fields = ["name", "display_name"]
    inlines = [MembershipInline]
    filter_horizontal = ["accounts"]


@admin.register(Account)
class AccountAdmin(AuditedAdmin):
    list_display = ["name", "account_id", "regions", "dispatch_role_arn", "automation_role_arn"]
    search_fields = ["name", "account_id"]


def _report_sync(modeladmin, request, report) -> None:
    level = messages.WARNING if report.errors else messages.SUCCESS
    modeladmin.message_user(request, f"Synced {report.documents} documents, {report.new_versions} new versions, "
                                     f"{report.unavailable} marked unavailable"
                                     f"{'; errors: ' + '; '.join(report.errors[:5]) if report.errors else ''}.", level)


@admin.action(description="Sync the catalog from SSM now")
def sync_catalog(modeladmin, request, queryset):
    _report_sync(modeladmin, request, services.runbook_catalog_sync(actor=request.user))


class TeamRunbookInline(admin.StackedInline):
    model = TeamRunbook
    form = TeamRunbookPolicyForm
    extra = 0


@admin.register(Runbook)
class RunbookAdmin(AuditedAdmin):
    list_display = ["name", "owner_kind", "category", "account", "region", "default_version", "latest_version",
                    "available", "runs_as", "needs_setup"]
    list_filter = ["owner_kind", "available", "category", "region", "allow_unmanaged_identity"]
    search_fields = ["name"]
    readonly_fields = ["name", "owner", "owner_kind", "default_version", "latest_version", "synced_at", "description"]
    inlines = [TeamRunbookInline]
    actions = [sync_catalog]
    # The changelist's "Sync from SSM now" button (templates/admin/automations/runbook/change_list.html).
    change_list_template = "admin/automations/runbook/change_list.html"

    def _default_version(self, obj):
        return obj.versions.filter(version=obj.default_version).first()

    @admin.display(description="Runs as")
    def runs_as(self, obj) -> str:
        version = self._default_version(obj)
        if version is None:
            return "—"
        role = run_identity.run_as_for(version, obj.account)
        return f"{role} (dispatch session: no assumeRole)" if run_identity.runs_as_dispatch_session(version) else role

    @admin.display(description="Needs setup (default version; team allowlists not counted)")
    def needs_setup(self, obj) -> str:
        version = self._default_version(obj)
        if version is None:
            return "—"
        problems = [p for p in run_identity.setup_problems(version, run_identity.effective_schema(version, team=None))
                    if "allowlist" not in p]
        return "; ".join(problems) or "—"

    def get_urls(self):
        sync = path("sync/", self.admin_site.admin_view(self.sync_view), name="automations_runbook_sync")
        return [sync, *super().get_urls()]

    def sync_view(self, request):
        """POST only (admin_view adds CSRF protection); the sync writes its own audit event."""
        if request.method != "POST" or not self.has_change_permission(request):
            raise PermissionDenied
        _report_sync(self, request, services.runbook_catalog_sync(actor=request.user))
        return redirect("admin:automations_runbook_changelist")


@admin.register(RunbookVersion)
class RunbookVersionAdmin(admin.ModelAdmin):
    list_display = ["runbook", "version", "document_format", "synced_at"]
    readonly_fields = [f.name for f in RunbookVersion._meta.fields]

    def has_add_permission(self, request):
        return False  # versions come from SSM only


@admin.register(TeamRunbook)
class TeamRunbookAdmin(AuditedAdmin):
    form = TeamRunbookPolicyForm
    fieldsets = [
        (None, {"fields": ["team", "runbook", "enabled"]}),
        ("Approval", {"fields": ["approvals_required", "risk", "approver_group", "escalation_group", "escalate_after_hours",
                                 "request_expiry_hours", "approval_validity_hours"]}),
        ("More approvers for big runs", {"fields": ["multi_account_threshold", "multi_account_approvals",
                                                    "multi_target_threshold", "multi_target_approvals"]}),
        ("What requesters must say", {"fields": ["justification_required", "ticket_pattern", "ticket_hint"]}),
        ("Scope", {"fields": ["allowed_regions", "allowed_account_ids", "target_tags", "target_id_patterns",
                              "max_targets", "one_run_per_target"]}),
        ("Versions", {"fields": ["version_choice", "pinned_version"]}),
    ]
    list_display = ["team", "runbook", "region", "enabled", "approvals_required", "version_choice", "max_targets",
                    "one_run_per_target", "justification_required"]
    list_filter = ["team", "enabled", "runbook__region"]
    list_select_related = ["team", "runbook"]
    autocomplete_fields = ["runbook"]

    @admin.display(ordering="runbook__region")
    def region(self, obj):
        return obj.runbook.region

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        # Content is fetched only for offered runbooks: fetch it now rather than at the next sync.
        if not obj.runbook.versions.exists():
            _report_sync(self, request, services.runbook_sync(runbook=obj.runbook, actor=request.user))


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    """Read-only: the audit log is append-only at the model, admin and database levels."""

    list_display = ["sequence", "occurred_at", "actor_name", "action", "request_id", "team"]
    list_filter = ["action"]
    search_fields = ["actor_name", "action", "runbook", "execution_id"]
    readonly_fields = [f.name for f in AuditEvent._meta.fields]



@admin.register(SsoGroupRule)
class SsoGroupRuleAdmin(AuditedAdmin):
    """Which provider group grants which team role (member, lead) or global role (auditor, admin)."""

    list_display = ["claim_value", "role", "team"]
    list_filter = ["role", "team"]
    search_fields = ["claim_value"]


@admin.register(SsoIdentity)
class SsoIdentityAdmin(AuditedAdmin):
    """Who each provider subject is here.

    Deleting a row unbinds it; the next login then follows DELEGATE_OIDC_LINK_EXISTING.
    """

    list_display = ["user", "subject", "issuer", "last_login_at"]
    search_fields = ["user__username", "subject"]
    readonly_fields = ["user", "issuer", "subject", "created_at", "last_login_at"]

    def has_add_permission(self, request):
        return False  # bindings are made by signing in



@admin.register(RoleParameter)
class RoleParameterAdmin(AuditedAdmin):
    """Per runbook parameter: the role a handed-off parameter gets, or an override of its kind."""

    list_display = ["runbook", "parameter", "kind", "value"]
    list_filter = ["kind"]
    search_fields = ["runbook__name", "parameter"]
    autocomplete_fields = ["runbook"]


@admin.register(TeamRole)
class TeamRoleAdmin(AuditedAdmin):
    """The roles a team's requesters may pick where a role is the subject of the change."""

    list_display = ["team", "account", "arn", "parameter", "description"]
    list_filter = ["team", "account"]
    search_fields = ["arn", "parameter"]


@admin.register(TeamResource)
class TeamResourceAdmin(AuditedAdmin):
    """Buckets, DB instances and queues a team may name (services whose tags Delegate does not read)."""

    list_display = ["team", "account", "kind", "identifier", "region", "description"]
    list_filter = ["team", "kind"]
    search_fields = ["identifier"]


class TeamLocationGrantForm(forms.ModelForm):
    class Meta:
        model = TeamLocationGrant
        fields = ["team", "account", "target_id", "label"]

    def clean(self):
        cleaned = super().clean()
        account, target = cleaned.get("account"), cleaned.get("target_id")
        if account and target and not self.errors:
            from automations.errors import DomainError
            from automations.services import locations

            try:  # resolved through AWS Organizations now: a typo never becomes a grant
                self.covered = locations.grant_coverage(account=account, target_id=target)
            except DomainError as error:
                raise forms.ValidationError({"target_id": error.detail}) from None
        return cleaned


@admin.register(TeamLocationGrant)
class TeamLocationGrantAdmin(AuditedAdmin):
    """Member accounts and OUs a team may target in multi-account runs (checked against Organizations)."""

    form = TeamLocationGrantForm
    list_display = ["team", "account", "target_id", "label"]
    list_filter = ["team", "account"]
    search_fields = ["target_id", "label"]
