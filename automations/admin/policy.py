"""Admin for approval policy: freeze windows, delegations, webhooks; deliveries read-only.

Every change is audited with before/after (AuditedAdmin). A webhook's secret is never shown
back and never written to the audit log: the snapshot says only whether it changed.
"""
from django import forms
from django.contrib import admin
from django.db import transaction

from automations import audit
from automations.admin.base import AuditedAdmin, ReadOnlyAdmin, _snapshot
from automations.audit import ClientInfo
from automations.models import (
    ApprovalDelegation,
    FreezeWindow,
    NotificationDelivery,
    NotificationWebhook,
    StepApproval,
)

REDACTED = "[redacted]"


@admin.register(FreezeWindow)
class FreezeWindowAdmin(AuditedAdmin):
    list_display = ["name", "team", "starts_at", "ends_at", "enabled"]
    list_filter = ["enabled", "team"]
    search_fields = ["name", "reason"]


@admin.register(ApprovalDelegation)
class ApprovalDelegationAdmin(AuditedAdmin):
    list_display = ["delegator", "delegate", "team", "starts_at", "ends_at", "revoked_at"]
    list_filter = ["team"]
    autocomplete_fields = ["delegator", "delegate"]
    search_fields = ["delegator__username", "delegate__username"]


class WebhookForm(forms.ModelForm):
    url = forms.URLField(max_length=2000, assume_scheme="https",
                         help_text="https:// endpoint, e.g. a Slack incoming webhook.")
    secret = forms.CharField(required=False, max_length=256, widget=forms.PasswordInput(render_value=False),
                             help_text="Shared secret for the X-Delegate-Signature header. Leave empty to keep the current one.")

    class Meta:
        model = NotificationWebhook
        fields = ["name", "url", "secret", "team", "events", "enabled"]

    def clean_secret(self):
        secret = self.cleaned_data.get("secret", "")
        if not secret and self.instance.pk:
            return self.instance.secret  # unchanged
        if len(secret) < 16:
            raise forms.ValidationError("Use at least 16 characters.")
        return secret


def _redacted(obj) -> dict:
    snapshot = _snapshot(obj)
    if "secret" in snapshot:
        snapshot["secret"] = REDACTED
    return snapshot


@admin.register(NotificationWebhook)
class NotificationWebhookAdmin(AuditedAdmin):
    form = WebhookForm
    list_display = ["name", "url", "team", "enabled"]
    list_filter = ["enabled", "team"]

    def save_model(self, request, obj, form, change):
        previous = type(obj).objects.filter(pk=obj.pk).first() if change else None
        with transaction.atomic():
            obj.save()
            audit.record(action="config.changed" if change else "config.created", actor=request.user,
                         client=ClientInfo.from_request(request),
                         details={"model": obj._meta.label, "object_id": obj.pk, "object": str(obj),
                                  "before": _redacted(previous), "after": _redacted(obj),
                                  "secret_changed": previous is None or previous.secret != obj.secret})

    def delete_model(self, request, obj):
        with transaction.atomic():
            audit.record(action="config.deleted", actor=request.user, client=ClientInfo.from_request(request),
                         details={"model": obj._meta.label, "object_id": obj.pk, "object": str(obj),
                                  "before": _redacted(obj)})
            obj.delete()


@admin.register(NotificationDelivery)
class NotificationDeliveryAdmin(ReadOnlyAdmin):
    list_display = ["id", "event", "channel", "request", "state", "attempts", "created_at", "delivered_at"]
    list_filter = ["state", "channel", "event"]
    exclude = ["payload"]


@admin.register(StepApproval)
class StepApprovalAdmin(ReadOnlyAdmin):
    list_display = ["step_name", "execution", "state", "first_seen_at", "closed_at"]
    list_filter = ["state"]
