"""manage.py sync_runbooks: sync the runbook catalog from SSM (what the beat task does)."""
from django.core.management.base import BaseCommand

from automations import services


class Command(BaseCommand):
    help = ("Sync the runbook catalog from SSM (ListDocuments, ListDocumentVersions, GetDocument). "
            "Re-runs fetch only versions not seen before. Exits 1 if any account or runbook failed.")

    def add_arguments(self, parser):
        parser.add_argument("--all-content", action="store_true",
                            help="Fetch content of every runbook, not only those offered to a team.")

    def handle(self, *args, all_content=False, **options):
        report = services.runbook_catalog_sync(only_offered=not all_content)
        for change in report.changes:
            self.stdout.write(f"  {change}")
        self.stdout.write(f"{report.documents} documents, {report.new_versions} new versions "
                          f"({report.fetched} fetched), {report.unavailable} marked unavailable")
        for error in report.errors:
            self.stderr.write(f"error: {error}")
        if report.errors:
            raise SystemExit(1)
