"""The two admin bases: AuditedAdmin (every write audited with before/after) and ReadOnlyAdmin."""
from django.contrib import admin
from django.db import transaction
from django.forms.models import model_to_dict

from automations import audit
from automations.audit import ClientInfo
from automations.canonical import json_roundtrip


def _snapshot(obj) -> dict:
    return json_roundtrip({key: value for key, value in model_to_dict(obj).items()
                           if not isinstance(value, (list, tuple)) or all(isinstance(v, (str, int)) for v in value)}) \
        if obj is not None and obj.pk else {}


class AuditedAdmin(admin.ModelAdmin):
    """Writes config.changed / config.deleted audit events with before/after snapshots."""

    def save_model(self, request, obj, form, change):
        before = _snapshot(type(obj).objects.filter(pk=obj.pk).first()) if change else {}
        with transaction.atomic():
            super().save_model(request, obj, form, change)
            audit.record(action="config.changed" if change else "config.created", actor=request.user,
                         client=ClientInfo.from_request(request),
                         details={"model": obj._meta.label, "object_id": obj.pk, "object": str(obj),
                                  "before": before, "after": _snapshot(obj)})

    def delete_model(self, request, obj):
        with transaction.atomic():
            audit.record(action="config.deleted", actor=request.user, client=ClientInfo.from_request(request),
                         details={"model": obj._meta.label, "object_id": obj.pk, "object": str(obj),
                                  "before": _snapshot(obj)})
            super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        for obj in queryset:
            self.delete_model(request, obj)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Shown, never added, changed or deleted in the admin (audit log, deliveries, step approvals)."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
