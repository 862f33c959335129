"""Logins, logouts, failed logins and lockouts go to the audit log with IP and user agent."""
from axes.signals import user_locked_out
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
        method = "sso" if getattr(user, "backend", "").endswith("OidcBackend") else "password"
        audit.record(action="login.ok", actor=user, client=_client(request), details={"method": method})


@receiver(user_logged_out)
def _logged_out(sender, request, user, **kwargs):
    if user is not None:
        with transaction.atomic():
            audit.record(action="logout", actor=user, client=_client(request))


@receiver(user_login_failed)
def _login_failed(sender, credentials, request=None, **kwargs):
    if "username" not in credentials:
        return  # a single sign-on callback: automations.identity.sso audits it as login.sso_failed, with a reason
    # The attempted username only: never the password (Django already masks it in `credentials`).
    username = str(credentials.get("username", ""))[:150]
    with transaction.atomic():
        audit.record(action="login.fail", actor=None, actor_name=f"anonymous:{username}", client=_client(request),
                     details={"username": username})


@receiver(user_locked_out)
def _locked_out(sender, request, username, ip_address, **kwargs):
    # django-axes: this username+IP pair reached the failure limit (sent again for each attempt while locked).
    username = str(username or "")[:150]
    with transaction.atomic():
        audit.record(action="login.locked_out", actor=None, actor_name=f"anonymous:{username}", client=_client(request),
                     details={"username": username})
