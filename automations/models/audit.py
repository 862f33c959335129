"""The audit event table: append-only, hash-chained rows (written only by automations.audit.record)."""
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.utils import timezone


class AuditLogIsAppendOnly(Exception):
    """Raised on any attempt to change or delete an audit event."""


class AuditEventQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise AuditLogIsAppendOnly("Audit events cannot be edited.")

    def delete(self):
        raise AuditLogIsAppendOnly("Audit events cannot be deleted.")

    def bulk_update(self, *args, **kwargs):
        raise AuditLogIsAppendOnly("Audit events cannot be edited.")


class AuditEvent(models.Model):
    """Append-only record of everything that happened, joinable to CloudTrail.

    actor is who acted (None = the system, e.g. a Celery worker); actor_name snapshots the
    username so the row stays readable after renames and deletions. request is what was acted
    on; runbook, resources, team, account and region are copied so searches need no joins.
    For AWS calls, role_session_name, source_identity, aws_request_id and execution_id are the
    CloudTrail join keys. hash covers prev_hash and this row's fields, so editing or deleting
    any row breaks every later hash (manage.py verify_audit finds the first one).
    Only automations.audit.record() creates rows; the model, the admin and a database trigger
    refuse updates and deletes.
    """

    sequence = models.BigIntegerField(unique=True, editable=False)
    occurred_at = models.DateTimeField(default=timezone.now, db_index=True)
    # No database constraint and DO_NOTHING: deleting a user must neither fail on nor touch audit rows.
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.DO_NOTHING, related_name="+",
        db_constraint=False, db_index=False,  # audit_actor_id_seq covers it
    )
    actor_name = models.CharField(max_length=150)
    action = models.CharField(max_length=60)  # "request.approved", "dispatch.started", ...
    request = models.ForeignKey(
        "automations.AutomationRequest", null=True, blank=True, on_delete=models.DO_NOTHING,
        related_name="audit_events", db_constraint=False, db_index=False,  # audit_request_seq covers it
    )
    team = models.CharField(max_length=64, blank=True)
    runbook = models.CharField(max_length=256, blank=True)
    resources = models.JSONField(default=list, blank=True)
    account_id = models.CharField(max_length=12, blank=True)
    region = models.CharField(max_length=32, blank=True)
    details = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)
    client_ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=512, blank=True)
    role_session_name = models.CharField(max_length=64, blank=True)
    source_identity = models.CharField(max_length=256, blank=True)
    aws_request_id = models.CharField(max_length=128, blank=True)
    execution_id = models.CharField(max_length=36, blank=True)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-sequence"]
        # Every search filter has an index that ends in sequence, so "newest first, next page"
        # is one index range scan (keyset pagination, no COUNT, no OFFSET). The time range is
        # turned into a sequence range (occurred_at is monotonic, see audit.record), and
        # resource search uses a GIN index on PostgreSQL (migration 0003). bench/audit.py
        # measures these plans over 1M events.
        indexes = [
            models.Index(fields=["actor_name", "-sequence"], name="audit_actor_seq"),
            models.Index(fields=["actor", "sequence"], name="audit_actor_id_seq"),
            models.Index(fields=["request", "sequence"], name="audit_request_seq"),
            # varchar_pattern_ops (PostgreSQL only; ignored elsewhere) also serves action LIKE 'request.%'.
            models.Index(fields=["action", "sequence"], name="audit_action_seq", opclasses=["varchar_pattern_ops", "int8_ops"]),
            models.Index(fields=["team", "sequence"], name="audit_team_seq"),
            models.Index(fields=["runbook", "sequence"], name="audit_runbook_seq"),
            models.Index(fields=["account_id", "region", "sequence"], name="audit_account_region_seq"),
            models.Index(fields=["aws_request_id"], name="audit_aws_request_id", condition=~models.Q(aws_request_id="")),
            models.Index(fields=["execution_id", "sequence"], name="audit_execution_seq",
                         condition=~models.Q(execution_id="")),
        ]

    def __str__(self) -> str:
        return f"#{self.sequence} {self.action} by {self.actor_name}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise AuditLogIsAppendOnly("Audit events cannot be edited.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AuditLogIsAppendOnly("Audit events cannot be deleted.")
