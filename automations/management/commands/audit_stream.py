"""manage.py audit_stream: re-send a range of audit events to the external stream, from the database."""
from django.core.management.base import BaseCommand, CommandError

from automations.audit import stream as audit_stream
from automations.models import AuditEvent


class Command(BaseCommand):
    help = ("Send events FIRST..LAST (by sequence) to DELEGATE_AUDIT_STREAM now, synchronously: what the sender"
            " does by itself after a gap, for events a killed process never sent (verify_audit --against names"
            " them). Duplicates in the stream are harmless.")

    def add_arguments(self, parser):
        parser.add_argument("first", type=int)
        parser.add_argument("last", type=int)

    def handle(self, *args, first, last, **options):
        target = audit_stream.configured_target()
        if not target:
            raise CommandError("DELEGATE_AUDIT_STREAM is off.")
        sink, sent, after = audit_stream.sink_for(target), 0, first - 1
        try:
            while after < last:
                batch = list(AuditEvent.objects.filter(sequence__gt=after, sequence__lte=last).order_by("sequence")[:500])
                if not batch:
                    break
                sink.send([audit_stream.line_for(event) for event in batch])
                sent, after = sent + len(batch), batch[-1].sequence
        except OSError as error:
            raise CommandError(f"the stream did not take the events: {error}") from error
        finally:
            sink.close()
        self.stdout.write(self.style.SUCCESS(f"sent {sent} events ({first}..{last}) to the audit stream"))
