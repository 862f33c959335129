"""The audit record: events (hash-chained), and copies of the signed digests and archive manifests that vouch for them."""
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.utils import timezone


class AuditLogIsAppendOnly(Exception):
    """Raised on any attempt to change or delete an audit event."""


class AppendOnlyQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise AuditLogIsAppendOnly("Audit records cannot be edited.")

    def delete(self):
        raise AuditLogIsAppendOnly("Audit records cannot be deleted.")

    def bulk_update(self, *args, **kwargs):
        raise AuditLogIsAppendOnly("Audit records cannot be edited.")


AuditEventQuerySet = AppendOnlyQuerySet


class AppendOnlyModel(models.Model):
    """Rows are inserted once; the model, the queryset and database triggers (audit_guards) refuse the rest."""

    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        abstract = True

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise AuditLogIsAppendOnly("Audit records cannot be edited.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AuditLogIsAppendOnly("Audit records cannot be deleted.")


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


class AuditDigest(AppendOnlyModel):
    """A copy of each signed digest file (automations.audit.digests), kept where the files are not.

    The files are the record (outside the database); this copy lets verify_audit notice that the
    newest digest files were removed, which the files' own chain cannot show.
    """

    number = models.BigIntegerField(unique=True)
    last_sequence = models.BigIntegerField()
    document = models.TextField()  # the digest JSON exactly as signed
    recorded_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["number"]

    def __str__(self) -> str:
        return f"digest {self.number} (through event {self.last_sequence})"


class AuditArchiveManifest(AppendOnlyModel):
    """A signed archive manifest (manage.py archive_audit): the only thing that lets events leave the table.

    Anyone who can INSERT can add a row here, so a row proves nothing by itself: verify_audit
    accepts a manifest only when its signature verifies with a trusted digest key. Not unique
    on the range for that reason: a forged row must not be able to block the genuine one.
    """

    first_sequence = models.BigIntegerField()
    last_sequence = models.BigIntegerField()
    document = models.TextField()  # the manifest JSON exactly as signed
    recorded_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["first_sequence", "pk"]

    def __str__(self) -> str:
        return f"archive manifest {self.first_sequence}..{self.last_sequence}"
