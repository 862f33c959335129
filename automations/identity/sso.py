"""Sign-in: single sign-on with OpenID Connect, the switch for local passwords, and the login page.

mozilla-django-oidc speaks the protocol: /oidc/authenticate/ sends the browser to the provider
(authorization code with PKCE, state and nonce); /oidc/callback/ exchanges the code, and
OidcBackend verifies the id token (signature from the JWKS, expiry, nonce, and here also issuer
and audience), reads userinfo, finds the user by the provider's (iss, sub) binding, creates or
updates them, and recomputes their teams and roles from the admin's SsoGroupRule rows.
Every outcome is audited: login.ok (signals.py), sso.user_created, sso.access_changed,
login.sso_failed with a reason code. Nothing from the provider's tokens is stored or logged.
"""
from __future__ import annotations

import logging

import jwt
import requests
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth import views as auth_views
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import Group, Permission
from django.contrib.auth.validators import UnicodeUsernameValidator
from django.core import checks
from django.core.exceptions import SuspiciousOperation, ValidationError
from django.db import transaction
from django.http import Http404
from django.urls import path
from django.utils import timezone
from django.views.generic import View
from mozilla_django_oidc.auth import OIDCAuthenticationBackend
from mozilla_django_oidc.views import OIDCAuthenticationCallbackView, OIDCAuthenticationRequestView

from automations import audit
from automations.audit import ClientInfo
from automations.models import Membership, SsoGroupRule, SsoIdentity, Team

log = logging.getLogger(__name__)

MAX_GROUPS = 1000  # a claim is attacker-influenced input too: bound it


@checks.register(checks.Tags.security)
def _check_sso_settings(app_configs, **kwargs):
    """With SSO on, every endpoint and the issuer must be set, and the signature asymmetric."""
    if not settings.DELEGATE_OIDC_ENABLED:
        return []
    names = ["OIDC_RP_CLIENT_SECRET", "OIDC_OP_ISSUER", "OIDC_OP_AUTHORIZATION_ENDPOINT", "OIDC_OP_TOKEN_ENDPOINT",
             "OIDC_OP_USER_ENDPOINT", "OIDC_OP_JWKS_ENDPOINT"]
    problems = [checks.Error(f"{name} is not set although OIDC_RP_CLIENT_ID is.", id="delegate.E101",
                             hint="manage.py oidc_discover ISSUER prints the provider's values.")
                for name in names if not getattr(settings, name, "")]
    if not settings.OIDC_RP_SIGN_ALGO.startswith(("RS", "ES")):  # what mozilla-django-oidc verifies via JWKS
        problems.append(checks.Error("OIDC_RP_SIGN_ALGO must be an asymmetric algorithm (RS256, ES256, ...).",
                                     id="delegate.E102"))
    return problems


class SsoRefused(Exception):
    """The provider vouched for someone we will not sign in; `reason` is a stable code for the audit log."""

    def __init__(self, reason: str, **details):
        super().__init__(reason)
        self.reason, self.details = reason, details


def client_ip(request) -> str | None:
    """AXES_CLIENT_IP_CALLABLE: the audit log's trusted-proxy rule, so lockouts key on the real client."""
    return ClientInfo.from_request(request).ip


class LocalPasswordBackend(ModelBackend):
    """Django's password check, unless DELEGATE_LOCAL_LOGIN is false (then every password login fails)."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if not settings.DELEGATE_LOCAL_LOGIN:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)


#
# The backend
#

class OidcBackend(OIDCAuthenticationBackend):
    def __init__(self, *args, **kwargs):
        # Django builds every backend for every authenticate() call; without SSO configured the
        # parent's settings lookups would raise, so stay inert.
        self.enabled = settings.DELEGATE_OIDC_ENABLED
        if self.enabled:
            super().__init__(*args, **kwargs)
        else:
            self.UserModel = get_user_model()

    def authenticate(self, request, **kwargs):
        # Only the callback view passes `nonce`; password logins and other calls are not ours.
        if not self.enabled or request is None or "nonce" not in kwargs:
            return None
        try:
            return super().authenticate(request, **kwargs)
        except SsoRefused as refused:
            _audit_failure(request, refused.reason, **refused.details)
        except (SuspiciousOperation, jwt.PyJWTError) as error:
            _audit_failure(request, "token_invalid", error=type(error).__name__)
        except (requests.RequestException, ValueError) as error:
            # Provider unreachable, or an error answer at the token/userinfo/JWKS endpoint. The
            # exception text can quote the provider's response: keep only its class.
            _audit_failure(request, "provider_error", error=type(error).__name__)
        return None

    def verify_token(self, token, **kwargs):
        """The parent checks the signature, `exp` and the nonce; the issuer and audience are checked here."""
        try:
            payload = super().verify_token(token, **kwargs)
        except jwt.PyJWTError as error:  # expired, not yet valid, malformed
            raise SsoRefused("token_invalid", error=type(error).__name__) from error
        issuer = settings.OIDC_OP_ISSUER
        if issuer and payload.get("iss") != issuer:
            raise SsoRefused("wrong_issuer")
        audience = payload.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if self.OIDC_RP_CLIENT_ID not in audiences:
            raise SsoRefused("wrong_audience")
        if len(audiences) > 1 and payload.get("azp") != self.OIDC_RP_CLIENT_ID:
            raise SsoRefused("wrong_audience")
        return payload

    def get_or_create_user(self, access_token, id_token, payload):
        userinfo = self.get_userinfo(access_token, id_token, payload)
        # OIDC Core 5.3.2: the userinfo `sub` must be the id token's, or the answer is someone else's.
        if not payload.get("sub") or str(userinfo.get("sub")) != str(payload["sub"]):
            raise SsoRefused("subject_mismatch")
        claims = {**payload, **userinfo}
        return sign_in(issuer=str(payload.get("iss", "")), claims=claims, request=self.request)


#
# Users and access from claims
#

def _username(claims: dict) -> str:
    value = claims.get(settings.DELEGATE_OIDC_USERNAME_CLAIM)
    if not isinstance(value, str) or not 0 < len(value) <= 150:
        raise SsoRefused("no_username", claim=settings.DELEGATE_OIDC_USERNAME_CLAIM)
    try:
        UnicodeUsernameValidator()(value)
    except ValidationError as error:
        raise SsoRefused("bad_username", claim=settings.DELEGATE_OIDC_USERNAME_CLAIM) from error
    return value


def groups_from(claims: dict) -> list[str]:
    """The groups claim as a list of strings: a JSON array, or one space/comma separated string."""
    raw = claims.get(settings.DELEGATE_OIDC_GROUPS_CLAIM) or []
    if isinstance(raw, str):
        raw = raw.replace(",", " ").split()
    if not isinstance(raw, list):
        return []
    return sorted({str(value)[:256] for value in raw[:MAX_GROUPS] if isinstance(value, (str, int))})


def _text(claims: dict, name: str, limit: int) -> str:
    value = claims.get(name)
    return value[:limit] if isinstance(value, str) else ""


@transaction.atomic
def sign_in(*, issuer: str, claims: dict, request=None):
    """Find or create the user the provider vouched for, refresh their profile and access, audit it."""
    subject = str(claims.get("sub", ""))[:255]
    if not subject or not issuer:
        raise SsoRefused("no_subject")
    User = get_user_model()
    identity = (SsoIdentity.objects.select_for_update().select_related("user")
                .filter(issuer=issuer, subject=subject).first())
    event = None
    if identity is not None:
        user = identity.user
    else:
        username = _username(claims)
        user = User.objects.select_for_update().filter(username=username).first()
        if user is None:
            user = User.objects.create_user(username=username)  # no usable password: SSO only
            event = "sso.user_created"
        elif user.sso_identities.exists() or not settings.DELEGATE_OIDC_LINK_EXISTING:
            # Someone else's account, or a local one nobody allowed SSO to take over.
            raise SsoRefused("username_taken", username=username)
        else:
            event = "sso.user_linked"
        identity = SsoIdentity.objects.create(user=user, issuer=issuer, subject=subject)
    if not user.is_active:
        raise SsoRefused("inactive", username=user.get_username())

    email = _text(claims, "email", 254) if claims.get("email_verified", True) is not False else ""
    user.email = email or user.email
    user.first_name = _text(claims, "given_name", 150) or user.first_name
    user.last_name = _text(claims, "family_name", 150) or user.last_name
    user.save(update_fields=["email", "first_name", "last_name"])
    identity.last_login_at = timezone.now()
    identity.save(update_fields=["last_login_at"])

    client = ClientInfo.from_request(request) if request is not None else None
    if event:
        audit.record(action=event, actor=user, client=client,
                     details={"issuer": issuer, "subject": subject, "username": user.get_username()})
    groups = groups_from(claims)
    changes = sync_access(user, groups)
    if changes:
        audit.record(action="sso.access_changed", actor=user, client=client, details={**changes, "groups": groups})
    return user


def _auditor_group() -> Group:
    group, created = Group.objects.get_or_create(name=settings.DELEGATE_AUDITOR_GROUP)
    if created:
        group.permissions.add(Permission.objects.get(codename="view_all_requests", content_type__app_label="automations"))
    return group


def sync_access(user, groups: list[str]) -> dict:
    """Make the user's memberships and global roles exactly what the matching rules grant.

    Only what the rules manage changes: memberships of teams that have a rule, the auditor
    group once any auditor rule exists, is_staff/is_superuser once any admin rule exists.
    Returns what changed (empty when nothing did).
    """
    rules = list(SsoGroupRule.objects.filter(claim_value__in=groups))
    desired: dict[int, str] = {}
    for rule in rules:
        if rule.team_id:
            lead = rule.role == SsoGroupRule.Role.LEAD or desired.get(rule.team_id) == Membership.Role.LEAD
            desired[rule.team_id] = Membership.Role.LEAD if lead else Membership.Role.MEMBER
    managed = set(SsoGroupRule.objects.filter(team__isnull=False).values_list("team_id", flat=True))
    current = {m.team_id: m for m in Membership.objects.filter(user=user, team_id__in=managed)}
    names = dict(Team.objects.filter(pk__in=managed).values_list("pk", "name"))
    changes: dict[str, list | dict] = {"added": [], "removed": [], "changed": []}
    for team_id, role in sorted(desired.items()):
        membership = current.get(team_id)
        if membership is None:
            Membership.objects.create(user=user, team_id=team_id, role=role)
            changes["added"].append(f"{names[team_id]}:{role}")
        elif membership.role != role:
            changes["changed"].append(f"{names[team_id]}:{membership.role}->{role}")
            membership.role = role
            membership.save(update_fields=["role"])
    for team_id, membership in sorted(current.items()):
        if team_id not in desired:
            changes["removed"].append(f"{names[team_id]}:{membership.role}")
            membership.delete()

    granted = {rule.role for rule in rules}
    managed_roles = set(SsoGroupRule.objects.filter(team__isnull=True).values_list("role", flat=True).distinct())
    if SsoGroupRule.Role.AUDITOR in managed_roles:
        group = _auditor_group()
        has = user.groups.filter(pk=group.pk).exists()
        want = SsoGroupRule.Role.AUDITOR in granted
        if has != want:
            (user.groups.add if want else user.groups.remove)(group)
            changes["auditor"] = {"before": has, "after": want}
    if SsoGroupRule.Role.ADMIN in managed_roles:
        has = user.is_staff and user.is_superuser
        want = SsoGroupRule.Role.ADMIN in granted
        if has != want or user.is_staff != user.is_superuser:
            user.is_staff = user.is_superuser = want
            user.save(update_fields=["is_staff", "is_superuser"])
            changes["admin"] = {"before": has, "after": want}
    return {key: sorted(value) if isinstance(value, list) else value for key, value in changes.items() if value}


def _audit_failure(request, reason: str, **details) -> None:
    log.warning("sso login refused", extra={"reason": reason})
    safe = {key: str(value)[:150] for key, value in details.items()}
    with transaction.atomic():
        audit.record(action="login.sso_failed", actor=None, actor_name="anonymous:sso",
                     client=ClientInfo.from_request(request) if request is not None else None,
                     details={"reason": reason, **safe})


#
# Views
#

class SsoStartView(OIDCAuthenticationRequestView):
    """Sends the browser to the provider. 404 while SSO is not configured."""

    def __init__(self, **kwargs):
        View.__init__(self, **kwargs)  # the parent reads settings here; do it per request instead

    def dispatch(self, request, *args, **kwargs):
        if not settings.DELEGATE_OIDC_ENABLED:
            raise Http404
        self.OIDC_OP_AUTH_ENDPOINT = settings.OIDC_OP_AUTHORIZATION_ENDPOINT
        self.OIDC_RP_CLIENT_ID = settings.OIDC_RP_CLIENT_ID
        return super().dispatch(request, *args, **kwargs)


class SsoCallbackView(OIDCAuthenticationCallbackView):
    """Where the provider sends the browser back. Refusals are audited and land on the login page."""

    def dispatch(self, request, *args, **kwargs):
        if not settings.DELEGATE_OIDC_ENABLED:
            raise Http404
        return super().dispatch(request, *args, **kwargs)

    def get(self, request):
        if request.GET.get("error"):
            _audit_failure(request, "provider_refused", error=request.GET["error"][:64])
        elif "code" not in request.GET or "state" not in request.GET:
            _audit_failure(request, "incomplete_callback")
        elif request.GET["state"] not in request.session.get("oidc_states", {}):
            # A state this browser was never given: forged, replayed, or another browser's.
            _audit_failure(request, "state_mismatch")
            return self.login_failure()
        try:
            return super().get(request)
        except SuspiciousOperation:
            # A state we never issued (forged, replayed, or another browser's): refuse, don't 400.
            _audit_failure(request, "state_mismatch")
            return self.login_failure()


class LoginView(auth_views.LoginView):
    """The password form (unless switched off) and the single sign-on button (when configured)."""

    template_name = "registration/login.html"

    def get_context_data(self, **kwargs):
        return super().get_context_data(
            local_login=settings.DELEGATE_LOCAL_LOGIN, sso_enabled=settings.DELEGATE_OIDC_ENABLED,
            sso_failed=self.request.GET.get("sso") == "failed", **kwargs)

    def post(self, request, *args, **kwargs):
        if not settings.DELEGATE_LOCAL_LOGIN:
            username = str(request.POST.get("username", ""))[:150]
            with transaction.atomic():
                audit.record(action="login.refused", actor=None, actor_name=f"anonymous:{username}",
                             client=ClientInfo.from_request(request),
                             details={"username": username, "reason": "local_login_disabled"})
            return self.render_to_response(self.get_context_data(form=self.get_form()), status=403)
        return super().post(request, *args, **kwargs)


# Names are mozilla-django-oidc's, so its reverse() of the callback finds ours.
urlpatterns = [
    path("authenticate/", SsoStartView.as_view(), name="oidc_authentication_init"),
    path("callback/", SsoCallbackView.as_view(), name="oidc_authentication_callback"),
]
