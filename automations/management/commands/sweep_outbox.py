"""Run the dispatch outbox sweep once, without Celery beat (after a broker outage, or to check).

    manage.py sweep_outbox            # publish every due row (up to 100 a round, until none is due)
    manage.py sweep_outbox --dry-run  # only list what is due
"""
from django.core.management.base import BaseCommand
from django.db.models import Q
from django.utils import timezone

from automations import services
from automations.models import AutomationRequest, DispatchOutbox


class Command(BaseCommand):
    help = "Publish dispatch outbox rows that are due (what beat's sweep-dispatch-outbox does)."

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="list the due rows, publish nothing")

    def handle(self, *args, dry_run=False, **options):
        State, Status = DispatchOutbox.State, AutomationRequest.Status
        due = DispatchOutbox.objects.filter(
            Q(state__in=(State.PENDING, State.ENQUEUED), request__status=Status.APPROVED)
            | Q(state=State.CALLING, request__status=Status.DISPATCHING),
            next_attempt_at__lte=timezone.now(),
        ).order_by("next_attempt_at")
        if dry_run:
            for row in due:
                self.stdout.write(f"#{row.pk} {row.state} due since {row.next_attempt_at:%Y-%m-%d %H:%M:%S} "
                                  f"attempts={row.attempts} {row.last_error[:80]}")
            self.stdout.write(f"{due.count()} due")
            return
        total = 0
        while published := services.dispatch_outbox_sweep(source="command"):
            total += published
        self.stdout.write(f"published {total}")
