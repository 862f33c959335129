"""Logins, logouts and failed logins go to the audit log with IP and user agent."""
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.db import transaction
from django.dispatch import receiver

from automations import audit
from automations.audit import ClientInfo


def _client(request):
    return ClientInfo.from_request(request) if request is not None else None


@receiver(user_logged_in)
def _logged_in(sender, request, user, **kwargs):
    with transaction.atomic():
        audit.record(action="login.ok", actor=user, client=_client(request))


@receiver(user_logged_out)
def _logged_out(sender, request, user, **kwargs):
    if user is not None:
        with transaction.atomic():
            audit.record(action="logout", actor=user, client=_client(request))


@receiver(user_login_failed)
def _login_failed(sender, credentials, request=None, **kwargs):
    # The attempted username only: never the password (Django already masks it in `credentials`).
    username = str(credentials.get("username", ""))[:150]
    with transaction.atomic():
        audit.record(action="login.fail", actor=None, actor_name=f"anonymous:{username}", client=_client(request),
                     details={"username": username})
