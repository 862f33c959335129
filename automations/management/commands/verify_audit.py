from django.core.management.base import BaseCommand

from automations import audit


class Command(BaseCommand):
    help = "Verify the audit log's hash chain; exit 1 and name the first bad event if it is broken."

    def add_arguments(self, parser):
        parser.add_argument("--from", dest="start", type=int, help="First sequence number to check.")
        parser.add_argument("--to", dest="end", type=int, help="Last sequence number to check.")
        parser.add_argument("--anchor", help="Hash of the event before --from (e.g. from an archive manifest).")

    def handle(self, *args, start=None, end=None, anchor=None, **options):
        problem = audit.verify_chain(start=start, end=end, anchor_hash=anchor)
        if problem:
            self.stderr.write(f"FAILED: first bad event is sequence {problem.sequence}: {problem.reason}")
            raise SystemExit(1)
        self.stdout.write(self.style.SUCCESS("OK: the audit chain is intact."))
