"""manage.py archive_audit: export a closed range with a signed manifest; the DBA purges it afterwards."""
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.utils.dateparse import parse_datetime

from automations.audit import archive as audit_archive
from automations.audit import signing as audit_signing
from automations.models import AuditEvent


class Command(BaseCommand):
    help = ("Export audit events from the oldest through --through (or everything before --before) as JSON"
            " Lines plus a manifest, and record the archive in the chain. Deletes nothing: it prints the SQL"
            " a DBA runs after copying the files to write-once storage (docs/audit.md).")

    def add_arguments(self, parser):
        parser.add_argument("--out", type=Path, required=True, help="Directory for the archive and its manifest.")
        group = parser.add_mutually_exclusive_group(required=True)
        group.add_argument("--through", type=int, help="Last sequence number to archive.")
        group.add_argument("--before", help="Archive every event that occurred before this ISO 8601 time.")

    def handle(self, *args, out, through=None, before=None, **options):
        if before is not None:
            moment = parse_datetime(before)
            if moment is None or moment.tzinfo is None:
                raise CommandError("--before needs an ISO 8601 time with a zone, e.g. 2025-01-01T00:00:00Z.")
            through = (AuditEvent.objects.filter(occurred_at__lt=moment).order_by("-sequence")
                       .values_list("sequence", flat=True).first())
            if through is None:
                raise CommandError("No event occurred before that time.")
        try:
            result = audit_archive.archive(through=through, out_dir=out, signer=audit_signing.configured_signer())
        except (audit_archive.ArchiveError, audit_signing.DigestError) as error:
            raise CommandError(str(error)) from error
        manifest = result.manifest
        self.stdout.write(self.style.SUCCESS(
            f"Archived events {manifest['first_sequence']}..{manifest['last_sequence']}"
            f" ({manifest['event_count']}) to {out / manifest['file']}; manifest {result.manifest_path}"
            f"; recorded as audit event {result.event.sequence}."))
        self.stdout.write("Copy both files to write-once storage, check them there with"
                          f" `manage.py verify_audit --archive {result.manifest_path.name}`, then purge:")
        self.stdout.write(result.purge_sql)
