"""manage.py create_api_token USER: print an API token for USER (audited)."""
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from rest_framework.authtoken.models import Token

from automations import audit


class Command(BaseCommand):
    help = "Print an API token for USER (creating it if needed). Use it as `Authorization: Token <token>`."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--rotate", action="store_true", help="Replace an existing token.")

    def handle(self, *args, username, rotate, **options):
        user = get_user_model().objects.filter(username=username, is_active=True).first()
        if user is None:
            raise CommandError(f"No active user named {username!r}.")
        with transaction.atomic():
            if rotate:
                Token.objects.filter(user=user).delete()
            token, created = Token.objects.get_or_create(user=user)
            if created:
                # The token itself never goes to the audit log.
                audit.record(action="api_token.created", actor=None, actor_name="manage.py",
                             details={"user": username})
        self.stdout.write(token.key)
